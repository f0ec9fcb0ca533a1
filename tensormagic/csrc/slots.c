/* SlotMaker: the constructor of a frozen, slotted dataclass of the event model (Event, TensorRef,
 * GradRecord), compiled.  fastinit.py's pure-Python constructor fills the slots through their
 * member descriptors, one call per field; this one stores every field at its slot's offset in
 * one call (an Event has 26 fields and a report or a log builds one per event).  The object is
 * the one the dataclass's own __init__ would make: object.__new__(cls), every field set,
 * the same defaults, equal and hashable (tests/test_fastinit.py compares them). */
#include "hot.h"
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    PyObject *names;     /* tuple of the field names (interned strings), in order */
    PyObject *defaults;  /* tuple: a field's default, or NULL-marker `required` */
    PyObject *required;  /* the marker object for "no default" */
    Py_ssize_t *offsets;
    Py_ssize_t n;
} SlotMaker;

static int maker_traverse(SlotMaker *self, visitproc visit, void *arg) {
    Py_VISIT(self->cls);
    Py_VISIT(self->names);
    Py_VISIT(self->defaults);
    Py_VISIT(self->required);
    return 0;
}

static int maker_clear(SlotMaker *self) {
    Py_CLEAR(self->cls);
    Py_CLEAR(self->names);
    Py_CLEAR(self->defaults);
    Py_CLEAR(self->required);
    return 0;
}

static void maker_dealloc(SlotMaker *self) {
    PyObject_GC_UnTrack(self);
    maker_clear(self);
    PyMem_Free(self->offsets);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The field a keyword names: its index, or -1 (an interned name is found by identity first). */
static Py_ssize_t field_index(SlotMaker *self, PyObject *kw) {
    for (Py_ssize_t i = 0; i < self->n; i++)
        if (PyTuple_GET_ITEM(self->names, i) == kw) return i;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        int eq = PyUnicode_Compare(PyTuple_GET_ITEM(self->names, i), kw);
        if (eq == 0) return i;
        if (eq == -1 && PyErr_Occurred()) return -2;
    }
    return -1;
}

static PyObject *maker_vectorcall(SlotMaker *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t npos = PyVectorcall_NARGS(nargsf);
    const char *cname = self->cls->tp_name;
    if (npos > self->n) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments but %zd were given", cname, self->n, npos);
        return NULL;
    }
    PyObject *vals[64];  /* the event model's largest class has 26 fields (checked at construction) */
    for (Py_ssize_t i = 0; i < self->n; i++) vals[i] = i < npos ? args[i] : NULL;
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
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (vals[i] != NULL) continue;
        PyObject *d = PyTuple_GET_ITEM(self->defaults, i);
        if (d == self->required) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument: '%U'", cname,
                         PyTuple_GET_ITEM(self->names, i));
            return NULL;
        }
        vals[i] = d;
    }
    /* object.__new__(cls) for a class without __dict__, __init__ or abstract methods */
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++)
        *(PyObject **)((char *)obj + self->offsets[i]) = Py_NewRef(vals[i]);
    return obj;
}

/* SlotMaker(cls, names, defaults, required): `defaults[i] is required` marks a field without one. */
static PyObject *maker_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyTypeObject *cls;
    PyObject *names, *defaults, *required;
    if (kw != NULL && PyDict_GET_SIZE(kw) > 0) {
        PyErr_SetString(PyExc_TypeError, "SlotMaker takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O:SlotMaker", &PyType_Type, &cls, &PyTuple_Type, &names, &PyTuple_Type,
                          &defaults, &required))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n == 0 || n > 64 || PyTuple_GET_SIZE(defaults) != n) {
        PyErr_SetString(PyExc_ValueError, "SlotMaker: 1 to 64 fields, one default (or the marker) each");
        return NULL;
    }
    if (cls->tp_dictoffset != 0 || cls->tp_alloc == NULL) {
        PyErr_Format(PyExc_TypeError, "SlotMaker: %s has a __dict__", cls->tp_name);
        return NULL;
    }
    Py_ssize_t *offsets = PyMem_Malloc(sizeof(Py_ssize_t) * n);
    if (offsets == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *d = PyUnicode_Check(name) ? _PyType_Lookup(cls, name) : NULL;  /* borrowed */
        PyMemberDef *m = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) ? ((PyMemberDescrObject *)d)->d_member : NULL;
        if (m == NULL || m->type != T_OBJECT_EX || m->offset <= 0 ||
            !PyType_IsSubtype(cls, ((PyDescrObject *)d)->d_type)) {
            PyMem_Free(offsets);
            PyErr_Format(PyExc_TypeError, "SlotMaker: %R is not an object slot of %s", name, cls->tp_name);
            return NULL;
        }
        for (Py_ssize_t j = 0; j < i; j++)
            if (offsets[j] == m->offset) {
                PyMem_Free(offsets);
                PyErr_Format(PyExc_ValueError, "SlotMaker: field %R given twice", name);
                return NULL;
            }
        offsets[i] = m->offset;
    }
    SlotMaker *self = (SlotMaker *)type->tp_alloc(type, 0);
    if (self == NULL) { PyMem_Free(offsets); return NULL; }
    self->vectorcall = (vectorcallfunc)maker_vectorcall;
    self->cls = (PyTypeObject *)Py_NewRef(cls);
    self->names = Py_NewRef(names);
    self->defaults = Py_NewRef(defaults);
    self->required = Py_NewRef(required);
    self->offsets = offsets;
    self->n = n;
    return (PyObject *)self;
}

PyTypeObject tmh_SlotMakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic._hotpath.SlotMaker",
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

/* SlotDict: a slotted dataclass's JSON-ready dict, as its hand-written to_dict makes it (the log
 * writes one per event): fields in order, a field at its default left out, and by `kinds`:
 *   0 the value;  1 refs(value);  2 [refs(x) for x in value];
 *   3 [x.to_dict(refs=refs) for x in value];  4 value.to_dict()
 * (tests/test_fastinit.py holds it equal to Event.to_dict, key order included). */
enum { K_PLAIN, K_REF, K_REFS, K_DICTS, K_DICT };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    PyObject *names, *defaults, *required;
    Py_ssize_t *offsets;
    int *kinds;
    Py_ssize_t n;
} SlotDict;

static PyObject *s_to_dict, *s_refs;  /* interned "to_dict", "refs" */

static int sd_traverse(SlotDict *self, visitproc visit, void *arg) {
    Py_VISIT(self->cls);
    Py_VISIT(self->names);
    Py_VISIT(self->defaults);
    Py_VISIT(self->required);
    return 0;
}

static int sd_clear(SlotDict *self) {
    Py_CLEAR(self->cls);
    Py_CLEAR(self->names);
    Py_CLEAR(self->defaults);
    Py_CLEAR(self->required);
    return 0;
}

static void sd_dealloc(SlotDict *self) {
    PyObject_GC_UnTrack(self);
    sd_clear(self);
    PyMem_Free(self->offsets);
    PyMem_Free(self->kinds);
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
        if (kind == K_REFS) {
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
    if (!PyObject_TypeCheck(obj, self->cls)) {
        PyErr_Format(PyExc_TypeError, "SlotDict: expected %s, got %s", self->cls->tp_name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *v = *(PyObject **)((char *)obj + self->offsets[i]);
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        if (v == NULL) {
            PyErr_Format(PyExc_AttributeError, "%s has no value for %R", self->cls->tp_name, name);
            goto fail;
        }
        PyObject *d = PyTuple_GET_ITEM(self->defaults, i);
        if (d != self->required) {
            int same = PyObject_RichCompareBool(v, d, Py_EQ);
            if (same < 0) goto fail;
            if (same) continue;
        }
        PyObject *w;
        switch (self->kinds[i]) {
            case K_REF: w = PyObject_CallOneArg(refs, v); break;
            case K_REFS: case K_DICTS: w = map_list(v, refs, self->kinds[i]); break;
            case K_DICT: w = PyObject_CallMethodNoArgs(v, s_to_dict); break;
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
    PyTypeObject *cls;
    PyObject *names, *defaults, *required, *kinds;
    if (kw != NULL && PyDict_GET_SIZE(kw) > 0) {
        PyErr_SetString(PyExc_TypeError, "SlotDict takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!OO!:SlotDict", &PyType_Type, &cls, &PyTuple_Type, &names, &PyTuple_Type,
                          &defaults, &required, &PyTuple_Type, &kinds))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n == 0 || PyTuple_GET_SIZE(defaults) != n || PyTuple_GET_SIZE(kinds) != n) {
        PyErr_SetString(PyExc_ValueError, "SlotDict: one default (or the marker) and one kind per field");
        return NULL;
    }
    if (s_to_dict == NULL && ((s_to_dict = PyUnicode_InternFromString("to_dict")) == NULL ||
                              (s_refs = PyUnicode_InternFromString("refs")) == NULL))
        return NULL;
    Py_ssize_t *offsets = PyMem_Malloc(sizeof(Py_ssize_t) * n);
    int *ks = PyMem_Malloc(sizeof(int) * n);
    if (offsets == NULL || ks == NULL) { PyMem_Free(offsets); PyMem_Free(ks); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *d = PyUnicode_Check(name) ? _PyType_Lookup(cls, name) : NULL;  /* borrowed */
        PyMemberDef *m = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) ? ((PyMemberDescrObject *)d)->d_member : NULL;
        long k = PyLong_Check(PyTuple_GET_ITEM(kinds, i)) ? PyLong_AsLong(PyTuple_GET_ITEM(kinds, i)) : -1;
        if (m == NULL || m->type != T_OBJECT_EX || m->offset <= 0 || k < K_PLAIN || k > K_DICT ||
            !PyType_IsSubtype(cls, ((PyDescrObject *)d)->d_type)) {
            PyMem_Free(offsets);
            PyMem_Free(ks);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "SlotDict: %R is not an object slot of %s with a known kind", name,
                             cls->tp_name);
            return NULL;
        }
        offsets[i] = m->offset;
        ks[i] = (int)k;
    }
    SlotDict *self = (SlotDict *)type->tp_alloc(type, 0);
    if (self == NULL) { PyMem_Free(offsets); PyMem_Free(ks); return NULL; }
    self->vectorcall = (vectorcallfunc)sd_vectorcall;
    self->cls = (PyTypeObject *)Py_NewRef(cls);
    self->names = Py_NewRef(names);
    self->defaults = Py_NewRef(defaults);
    self->required = Py_NewRef(required);
    self->offsets = offsets;
    self->kinds = ks;
    self->n = n;
    return (PyObject *)self;
}

PyTypeObject tmh_SlotDictType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic._hotpath.SlotDict",
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
