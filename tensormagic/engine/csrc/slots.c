/* SlotMaker and SlotDict: the event model's frozen, slotted dataclasses (Event, TensorRef,
 * GradRecord) built, and made into the log's dicts, in one C call each (fastinit.py).
 *
 * SlotMaker is the constructor: fastinit.py's pure-Python one fills the slots through their member
 * descriptors, one call per field; this one stores every field at its slot's offset (an Event has
 * 26 fields and a report or a log builds one per event).  The object is the one the dataclass's
 * own __init__ would make: object.__new__(cls), every field set, the same defaults, equal and
 * hashable (tests/test_fastinit.py compares them). */
#include "hot.h"

/* What SlotMaker, SlotDict and encode.c's LineEncoder know of a class: Fields (hot.h). */
int tmh_fields_traverse(Fields *f, visitproc visit, void *arg) {
    Py_VISIT(f->cls);
    Py_VISIT(f->names);
    Py_VISIT(f->defaults);
    Py_VISIT(f->required);
    return 0;
}

void tmh_fields_clear(Fields *f) {
    Py_CLEAR(f->cls);
    Py_CLEAR(f->names);
    Py_CLEAR(f->defaults);
    Py_CLEAR(f->required);
}

void tmh_fields_free(Fields *f) {
    PyMem_Free(f->offsets);
    PyMem_Free(f->kinds);
    f->offsets = NULL, f->kinds = NULL;
}

/* Whether field i's value v is at its default, which a to_dict leaves out: 1, 0, or -1 with an
 * exception.  By ==, as the hand-written to_dicts compare (`is not None` where the default is
 * None: nothing the model holds equals None but None). */
int tmh_field_at_default(const Fields *f, Py_ssize_t i, PyObject *v) {
    PyObject *d = PyTuple_GET_ITEM(f->defaults, i);
    if (d == f->required) return 0;
    if (v == d) return 1;
    return d == Py_None ? 0 : PyObject_RichCompareBool(v, d, Py_EQ);
}

/* Fill `f` from (cls, names, defaults, required[, kinds]) (with_kinds: the kinds too, each
 * 0..TMH_K_LAST): every name an object slot of cls, each once.  0, or -1 with an exception (f then
 * holds nothing). */
int tmh_fields_init(Fields *f, const char *who, PyObject *args, PyObject *kw, int with_kinds) {
    PyTypeObject *cls;
    PyObject *names, *defaults, *required, *kinds = NULL;
    if (kw != NULL && PyDict_GET_SIZE(kw) > 0) {
        PyErr_Format(PyExc_TypeError, "%s takes positional arguments only", who);
        return -1;
    }
    int ok = !with_kinds
                 ? PyArg_ParseTuple(args, "O!O!O!O", &PyType_Type, &cls, &PyTuple_Type, &names, &PyTuple_Type,
                                    &defaults, &required)
                 : PyArg_ParseTuple(args, "O!O!O!OO!", &PyType_Type, &cls, &PyTuple_Type, &names, &PyTuple_Type,
                                    &defaults, &required, &PyTuple_Type, &kinds);
    if (!ok) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n == 0 || n > 64 || PyTuple_GET_SIZE(defaults) != n || (kinds != NULL && PyTuple_GET_SIZE(kinds) != n)) {
        PyErr_Format(PyExc_ValueError, "%s: 1 to 64 fields, one default (or the marker) each%s", who,
                     kinds != NULL ? " and one kind" : "");
        return -1;
    }
    if (cls->tp_dictoffset != 0 || cls->tp_alloc == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: %s has a __dict__", who, cls->tp_name);
        return -1;
    }
    Py_ssize_t *offsets = PyMem_Malloc(sizeof(Py_ssize_t) * n);
    int *kind_of = kinds != NULL ? PyMem_Malloc(sizeof(int) * n) : NULL;
    if (offsets == NULL || (kinds != NULL && kind_of == NULL)) {
        PyMem_Free(offsets);
        PyMem_Free(kind_of);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        Py_ssize_t off = PyUnicode_Check(name) ? tmh_member_offset(cls, name) : 0;
        for (Py_ssize_t j = 0; off > 0 && j < i; j++)
            if (offsets[j] == off) off = 0;
        long k = 0;
        if (kinds != NULL) {
            PyObject *ko = PyTuple_GET_ITEM(kinds, i);
            k = PyLong_Check(ko) ? PyLong_AsLong(ko) : -1;
        }
        if (off == 0 || k < 0 || k > TMH_K_LAST) {
            PyMem_Free(offsets);
            PyMem_Free(kind_of);
            if (PyErr_Occurred()) return -1;
            if (off == 0)
                PyErr_Format(PyExc_TypeError, "%s: %R is not an object slot of %s, or is given twice", who, name,
                             cls->tp_name);
            else
                PyErr_Format(PyExc_ValueError, "%s: unknown kind %R for %R", who, PyTuple_GET_ITEM(kinds, i), name);
            return -1;
        }
        offsets[i] = off;
        if (kind_of != NULL) kind_of[i] = (int)k;
    }
    f->cls = (PyTypeObject *)Py_NewRef(cls);
    f->names = Py_NewRef(names);
    f->defaults = Py_NewRef(defaults);
    f->required = Py_NewRef(required);
    f->offsets = offsets;
    f->kinds = kind_of;
    f->n = n;
    return 0;
}

/* -- SlotMaker ------------------------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Fields f;
} SlotMaker;

static int maker_traverse(SlotMaker *self, visitproc visit, void *arg) { return tmh_fields_traverse(&self->f, visit, arg); }

static int maker_clear(SlotMaker *self) {
    tmh_fields_clear(&self->f);
    return 0;
}

static void maker_dealloc(SlotMaker *self) {
    PyObject_GC_UnTrack(self);
    maker_clear(self);
    tmh_fields_free(&self->f);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The field a keyword names: its index, or -1 (an interned name is found by identity first). */
static Py_ssize_t field_index(SlotMaker *self, PyObject *kw) {
    for (Py_ssize_t i = 0; i < self->f.n; i++)
        if (PyTuple_GET_ITEM(self->f.names, i) == kw) return i;
    for (Py_ssize_t i = 0; i < self->f.n; i++) {
        int eq = PyUnicode_Compare(PyTuple_GET_ITEM(self->f.names, i), kw);
        if (eq == 0) return i;
        if (eq == -1 && PyErr_Occurred()) return -2;
    }
    return -1;
}

static PyObject *maker_vectorcall(SlotMaker *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t npos = PyVectorcall_NARGS(nargsf);
    const char *cname = self->f.cls->tp_name;
    if (npos > self->f.n) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments but %zd were given", cname, self->f.n, npos);
        return NULL;
    }
    PyObject *vals[64];  /* the event model's largest class has 26 fields (checked at construction) */
    for (Py_ssize_t i = 0; i < self->f.n; i++) vals[i] = i < npos ? args[i] : NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = field_index(self, name);
        if (i == -2) return NULL;
        if (i < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", cname, name);
            return NULL;
        }
        if (vals[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", cname, name);
            return NULL;
        }
        vals[i] = args[npos + k];
    }
    for (Py_ssize_t i = 0; i < self->f.n; i++) {
        if (vals[i] != NULL) continue;
        PyObject *d = PyTuple_GET_ITEM(self->f.defaults, i);
        if (d == self->f.required) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument: '%U'", cname,
                         PyTuple_GET_ITEM(self->f.names, i));
            return NULL;
        }
        vals[i] = d;
    }
    /* object.__new__(cls) for a class without __dict__, __init__ or abstract methods */
    PyObject *obj = self->f.cls->tp_alloc(self->f.cls, 0);
    if (obj == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->f.n; i++)
        *(PyObject **)((char *)obj + self->f.offsets[i]) = Py_NewRef(vals[i]);
    return obj;
}

/* SlotMaker(cls, names, defaults, required): `defaults[i] is required` marks a field without one. */
static PyObject *maker_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    SlotMaker *self = (SlotMaker *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (tmh_fields_init(&self->f, "SlotMaker", args, kw, 0) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)maker_vectorcall;
    return (PyObject *)self;
}

PyTypeObject tmh_SlotMakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic.engine._hotpath.SlotMaker",
    .tp_basicsize = sizeof(SlotMaker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "SlotMaker(cls, names, defaults, required): a compiled constructor of a slotted dataclass.",
    .tp_new = maker_new,
    .tp_dealloc = (destructor)maker_dealloc,
    .tp_traverse = (traverseproc)maker_traverse,
    .tp_clear = (inquiry)maker_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(SlotMaker, vectorcall),
};

/* -- SlotDict ------------------------------------------------------------------------------- */
/* SlotDict: a slotted dataclass's JSON-ready dict, as its hand-written to_dict makes it (the log
 * writes one per event): fields in order, a field at its default left out, and by `kinds`:
 *   0 the value;  1 refs(value);  2 [refs(x) for x in value];
 *   3 [x.to_dict(refs=refs) for x in value];  4 value.to_dict()
 * (tests/test_fastinit.py holds it equal to Event.to_dict, key order included). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Fields f;  /* with its kinds */
} SlotDict;

static PyObject *s_to_dict, *s_refs;  /* interned "to_dict", "refs" */

static int sd_traverse(SlotDict *self, visitproc visit, void *arg) { return tmh_fields_traverse(&self->f, visit, arg); }

static int sd_clear(SlotDict *self) {
    tmh_fields_clear(&self->f);
    return 0;
}

static void sd_dealloc(SlotDict *self) {
    PyObject_GC_UnTrack(self);
    sd_clear(self);
    tmh_fields_free(&self->f);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* [f(x) for x in seq] where f is refs(x), or x.to_dict(refs=refs) */
static PyObject *map_list(PyObject *seq, PyObject *refs, int kind) {
    PyObject *fast = PySequence_Fast(seq, "tensormagic: a sequence field");
    if (fast == NULL) return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(fast);
    PyObject *out = PyList_New(m);
    if (out == NULL) { Py_DECREF(fast); return NULL; }
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *x = PySequence_Fast_GET_ITEM(fast, j), *y;
        if (kind == TMH_K_REFS) {
            y = PyObject_CallOneArg(refs, x);
        } else {
            PyObject *meth = PyObject_GetAttr(x, s_to_dict);
            if (meth == NULL) { Py_DECREF(out); Py_DECREF(fast); return NULL; }
            PyObject *kwnames = PyTuple_Pack(1, s_refs);
            PyObject *argv[1] = {refs};
            y = kwnames == NULL ? NULL : PyObject_Vectorcall(meth, argv, 0, kwnames);
            Py_XDECREF(kwnames);
            Py_DECREF(meth);
        }
        if (y == NULL) { Py_DECREF(out); Py_DECREF(fast); return NULL; }
        PyList_SET_ITEM(out, j, y);
    }
    Py_DECREF(fast);
    return out;
}

static PyObject *sd_vectorcall(SlotDict *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "SlotDict(obj, refs) takes two positional arguments");
        return NULL;
    }
    PyObject *obj = args[0], *refs = args[1];
    if (!PyObject_TypeCheck(obj, self->f.cls)) {
        PyErr_Format(PyExc_TypeError, "SlotDict: expected %s, got %s", self->f.cls->tp_name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->f.n; i++) {
        PyObject *v = *(PyObject **)((char *)obj + self->f.offsets[i]);
        PyObject *name = PyTuple_GET_ITEM(self->f.names, i);
        if (v == NULL) {
            PyErr_Format(PyExc_AttributeError, "%s has no value for %R", self->f.cls->tp_name, name);
            goto fail;
        }
        int skip = tmh_field_at_default(&self->f, i, v);
        if (skip < 0) goto fail;
        if (skip) continue;
        PyObject *w;
        switch (self->f.kinds[i]) {
            case TMH_K_REF: w = PyObject_CallOneArg(refs, v); break;
            case TMH_K_REFS: case TMH_K_DICTS: w = map_list(v, refs, self->f.kinds[i]); break;
            case TMH_K_DICT: w = PyObject_CallMethodNoArgs(v, s_to_dict); break;
            default: w = Py_NewRef(v);
        }
        if (w == NULL) goto fail;
        int rc = PyDict_SetItem(out, name, w);
        Py_DECREF(w);
        if (rc < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* SlotDict(cls, names, defaults, required, kinds) */
static PyObject *sd_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (s_to_dict == NULL && ((s_to_dict = PyUnicode_InternFromString("to_dict")) == NULL ||
                              (s_refs = PyUnicode_InternFromString("refs")) == NULL))
        return NULL;
    SlotDict *self = (SlotDict *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (tmh_fields_init(&self->f, "SlotDict", args, kw, 1) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)sd_vectorcall;
    return (PyObject *)self;
}

PyTypeObject tmh_SlotDictType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic.engine._hotpath.SlotDict",
    .tp_basicsize = sizeof(SlotDict),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "SlotDict(cls, names, defaults, required, kinds): a compiled to_dict of a slotted dataclass.",
    .tp_new = sd_new,
    .tp_dealloc = (destructor)sd_dealloc,
    .tp_traverse = (traverseproc)sd_traverse,
    .tp_clear = (inquiry)sd_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(SlotDict, vectorcall),
};
