/* EventBuilder: build.py's _python_events in C, for the block's end.
 *
 * A block's events are made from its raw records the first time someone reads them (a log writes
 * every cell's; the panel and the report read them): one Event per record and a TensorRef per new
 * metadata snapshot, about 5 µs a record in Python.  This object makes the same objects, in the same
 * order, sharing the same TensorRefs (tests/test_build_twins.py holds the two equal, object sharing
 * included).  What it leaves to Python: a move's fields and a NumPy record's (other_kw), the note
 * of a tensor seen without an op (seen_note), the maker named on its line (unseen_maker), and
 * every cache miss of the place, module, dtype and device lookups.  Its TensorRefs (_Refs.ref and
 * the fields made of them) are in snapshots.c. */
#include "build.h"

static const char *field_names[N_FIELDS] = {
    "seq", "kind", "op", "tensor", "line", "source", "cell", "file", "module", "time_us", "inputs", "origin",
    "base", "version_before", "version_after", "aliases", "grads", "stats", "note"};
#define MAX_EVENT_FIELDS 64

static PyObject *s_seen, *s_backward, *s_no_op, *s_question;

static int b_traverse(Builder *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    BUILDER_FIELDS(VISIT)
#undef VISIT
    Py_VISIT(self->cache_meta);
    Py_VISIT(self->cache_ref);
    Py_VISIT(self->older);
    Py_VISIT(self->storages);
    Py_VISIT(self->op_of_src);
    return 0;
}

static int b_clear(Builder *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    BUILDER_FIELDS(CLEAR)
#undef CLEAR
    Py_CLEAR(self->cache_meta);
    Py_CLEAR(self->cache_ref);
    Py_CLEAR(self->older);
    Py_CLEAR(self->storages);
    Py_CLEAR(self->op_of_src);
    return 0;
}

static void b_dealloc(Builder *self) {
    PyObject_GC_UnTrack(self);
    b_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *b_ref_method(Builder *self, PyObject *const *a, Py_ssize_t n) {
    if (n != 2) {
        PyErr_SetString(PyExc_TypeError, "EventBuilder.ref(tid, meta)");
        return NULL;
    }
    return tmh_b_ref(self, a[0], a[1]);
}

/* the op a "seen" create without one is shown under: the call on its line that makes tensors
 * no op shows (statements.unseen_maker), or "(no visible op)" */
static PyObject *seen_op(Builder *self, PyObject *src) {
    PyObject *op = PyDict_GetItemWithError(self->op_of_src, src);
    if (op != NULL || PyErr_Occurred()) return Py_XNewRef(op);
    if ((op = PyObject_CallOneArg(self->unseen_maker, src)) == NULL) return NULL;
    int t = PyObject_IsTrue(op);
    if (t <= 0) Py_SETREF(op, t < 0 ? NULL : Py_NewRef(s_no_op));
    if (op != NULL && PyDict_SetItem(self->op_of_src, src, op) < 0) Py_CLEAR(op);
    return op;
}

/* the fields of one record's kind into vals (new references); 0, or -1 with an exception */
static int kind_fields(Builder *self, PyObject *rec, Py_ssize_t i, PyObject **vals, PyObject **op, PyObject *src) {
    PyObject *kind = PyTuple_GET_ITEM(rec, 0), *tid = PyTuple_GET_ITEM(rec, 2), *meta = PyTuple_GET_ITEM(rec, 3);
    PyObject *extra = PyTuple_GET_ITEM(rec, 7);
    Py_ssize_t *at = self->at;
    if (tmh_same_str(kind, tmh_s_create)) {
        PyObject *ids = extra, *origin = NULL, *note = Py_None;
        if (PyTuple_Check(extra) && PyTuple_GET_SIZE(extra) && PyTuple_CheckExact(PyTuple_GET_ITEM(extra, 0))) {
            if (PyTuple_GET_SIZE(extra) != 3) {
                PyErr_SetString(PyExc_TypeError, "tensormagic: a create's extra is ids or (ids, origin, note)");
                return -1;
            }
            ids = PyTuple_GET_ITEM(extra, 0), origin = PyTuple_GET_ITEM(extra, 1), note = PyTuple_GET_ITEM(extra, 2);
        }
        if ((vals[at[F_INPUTS]] = tmh_ref_all(self, ids, 0)) == NULL) return -1;
        if (origin == NULL) return 0;  /* "op": the default */
        vals[at[F_ORIGIN]] = Py_NewRef(origin);
        if (tmh_same_str(origin, s_seen)) {
            if (*op == Py_None) {
                PyObject *named = seen_op(self, src);
                if (named == NULL) return -1;
                Py_SETREF(*op, named);
            }
            PyObject *args[3] = {*op, note, vals[at[F_INPUTS]]};
            if ((vals[at[F_NOTE]] = PyObject_Vectorcall(self->seen_note, args, 3, NULL)) == NULL) return -1;
        }
        return 0;
    }
    if (tmh_same_str(kind, tmh_s_view)) {
        PyObject *m = tmh_item(self->state, extra);
        return m == NULL || (vals[at[F_BASE]] = tmh_b_ref(self, extra, m)) == NULL ? -1 : 0;
    }
    if (tmh_same_str(kind, tmh_s_inplace)) {
        if (!PyTuple_Check(extra) || PyTuple_GET_SIZE(extra) < 1 || !PyTuple_Check(meta) || PyTuple_GET_SIZE(meta) < 6) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: an in-place record is (version before, *input ids)");
            return -1;
        }
        vals[at[F_VERSION_BEFORE]] = Py_NewRef(PyTuple_GET_ITEM(extra, 0));
        if ((vals[at[F_VERSION_AFTER]] = PyNumber_Long(PyTuple_GET_ITEM(meta, 5))) == NULL ||
            (vals[at[F_INPUTS]] = tmh_ref_all(self, extra, 1)) == NULL || (vals[at[F_ALIASES]] = tmh_aliases(self, tid, i)) == NULL)
            return -1;
        return 0;
    }
    if (tmh_same_str(kind, s_backward)) return (vals[at[F_GRADS]] = tmh_grads(self, extra)) == NULL ? -1 : 0;
    /* a move, a NumPy record: build.py's _other_kw, as keyword fields */
    PyObject *args[2] = {(PyObject *)self, rec}, *kw = PyObject_Vectorcall(self->other_kw, args, 2, NULL), *k, *v;
    if (kw == NULL) return -1;
    if (!PyDict_Check(kw)) {
        Py_DECREF(kw);
        PyErr_SetString(PyExc_TypeError, "tensormagic: _other_kw returns a dict");
        return -1;
    }
    Py_ssize_t pos = 0;
    while (PyDict_Next(kw, &pos, &k, &v)) {
        PyObject *fields = self->event_fields;
        Py_ssize_t j = 0, n = PyTuple_GET_SIZE(fields);
        while (j < n && PyUnicode_Compare(PyTuple_GET_ITEM(fields, j), k) != 0) j++;
        if (j == n) {
            PyErr_Format(PyExc_TypeError, "tensormagic: Event has no field %R", k);
            Py_DECREF(kw);
            return -1;
        }
        Py_XSETREF(vals[j], Py_NewRef(v));
    }
    Py_DECREF(kw);
    return 0;
}

/* one record's Event; new reference */
static PyObject *event(Builder *self, PyObject *rec, Py_ssize_t i, long long t_ns) {
    if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) < 8) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: a raw record is an 8-tuple");
        return NULL;
    }
    PyObject *vals[MAX_EVENT_FIELDS] = {NULL}, *out = NULL, *place = NULL, *op = NULL;
    Py_ssize_t *at = self->at, n = self->n_event_fields;
    PyObject *tid = PyTuple_GET_ITEM(rec, 2), *meta = PyTuple_GET_ITEM(rec, 3);
    if ((place = tmh_cached(self->place_cache, PyTuple_GET_ITEM(rec, 4), self->place)) == NULL) goto done;
    if (!PyTuple_Check(place) || PyTuple_GET_SIZE(place) != 4) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: a place is (cell, file, line, source)");
        goto done;
    }
    op = Py_NewRef(PyTuple_GET_ITEM(rec, 1));
    if (kind_fields(self, rec, i, vals, &op, PyTuple_GET_ITEM(place, 3)) < 0) goto done;
    if (PyDict_SetItem(self->state, tid, meta) < 0) goto done;
    int has_op = PyObject_IsTrue(op);
    if (has_op < 0) goto done;
    vals[at[F_SEQ]] = PyLong_FromSsize_t(i);
    vals[at[F_KIND]] = Py_NewRef(PyTuple_GET_ITEM(rec, 0));
    vals[at[F_OP]] = Py_NewRef(has_op ? op : s_question);
    vals[at[F_LINE]] = Py_NewRef(PyTuple_GET_ITEM(place, 2));
    vals[at[F_SOURCE]] = Py_NewRef(PyTuple_GET_ITEM(place, 3));
    vals[at[F_CELL]] = Py_NewRef(PyTuple_GET_ITEM(place, 0));
    vals[at[F_FILE]] = Py_NewRef(PyTuple_GET_ITEM(place, 1));
    vals[at[F_TENSOR]] = tmh_b_ref(self, tid, meta);
    vals[at[F_MODULE]] = tmh_cached(self->module_cache, PyTuple_GET_ITEM(rec, 5), self->module_of);
    vals[at[F_TIME_US]] = PyFloat_FromDouble((double)t_ns / 1000.0);  /* times[i] / 1000.0 */
    if (vals[at[F_SEQ]] == NULL || vals[at[F_TENSOR]] == NULL || vals[at[F_MODULE]] == NULL || vals[at[F_TIME_US]] == NULL)
        goto done;
    if (PyDict_GET_SIZE(self->stats_at)) {
        PyObject *s = PyDict_GetItemWithError(self->stats_at, vals[at[F_SEQ]]);
        if (s == NULL && PyErr_Occurred()) goto done;
        if (s != NULL) vals[at[F_STATS]] = Py_NewRef(s);
    }
    /* every other field at its default: positional, in Event's field order */
    PyObject *args[MAX_EVENT_FIELDS];
    for (Py_ssize_t j = 0; j < n; j++) args[j] = vals[j] != NULL ? vals[j] : PyTuple_GET_ITEM(self->event_defaults, j);
    out = PyObject_Vectorcall(self->event_maker, args, n, NULL);
    /* Events, TensorRefs, GradRecords and their tuples are frozen and hold strings, numbers and
     * each other: no cycle can run through them, and a log's collections (after the build) would
     * walk the ~10,000 of a W2 block for nothing (1 ms; snapshots.c untracks its own the same way) */
    if (out != NULL) untrack(out);
done:
    for (Py_ssize_t j = 0; j < n; j++) Py_XDECREF(vals[j]);
    Py_XDECREF(place);
    Py_XDECREF(op);
    return out;
}

/* EventBuilder.events(raw, times): one Event per raw record, as a list */
static PyObject *b_events(Builder *self, PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyList_Check(a[0])) {
        PyErr_SetString(PyExc_TypeError, "EventBuilder.events(raw: list, times: int64 array)");
        return NULL;
    }
    PyObject *raw = a[0];
    Py_buffer times;
    if (PyObject_GetBuffer(a[1], &times, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    PyObject *out = NULL;
    Py_ssize_t count = PyList_GET_SIZE(raw);
    if (times.itemsize != 8 || times.format == NULL || (strcmp(times.format, "q") && strcmp(times.format, "l")) ||
        times.len / 8 < count) {
        PyErr_SetString(PyExc_TypeError, "EventBuilder.events: times is an int64 array with one entry per record");
        goto done;
    }
    if ((out = PyList_New(count)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        /* the loop calls back into Python (caches' misses): the list may not shrink under it */
        if (i >= PyList_GET_SIZE(raw)) {
            PyErr_SetString(PyExc_RuntimeError, "tensormagic: the raw records changed during the build");
            Py_CLEAR(out);
            break;
        }
        PyObject *rec = Py_NewRef(PyList_GET_ITEM(raw, i));
        PyObject *e = event(self, rec, i, ((const long long *)times.buf)[i]);
        Py_DECREF(rec);
        if (e == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, e);
    }
done:
    PyBuffer_Release(&times);
    return out;
}

static PyMethodDef b_methods[] = {
    {"ref", (PyCFunction)(void (*)(void))b_ref_method, METH_FASTCALL, "_Refs.ref(tid, meta), compiled."},
    {"final_refs", (PyCFunction)tmh_final_refs, METH_O, "_final_refs(tr, self, state, final), compiled."},
    {"events", (PyCFunction)(void (*)(void))b_events, METH_FASTCALL,
     "events(raw, times): build.py's _python_events, compiled: one Event per raw record."},
    {NULL, NULL, 0, NULL},
};

static char *b_kwlist[] = {
#define NAME(f) #f,
    BUILDER_FIELDS(NAME)
#undef NAME
    NULL,
};

static PyObject *b_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
#define ONE(f) +1
    enum { N = 0 BUILDER_FIELDS(ONE) };
#undef ONE
    _Static_assert(N == 22, "one &o[i] below per field");
    PyObject *o[N];
    char fmt[N + 16];
    memset(fmt, 'O', N);
    strcpy(fmt + N, ":EventBuilder");
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "EventBuilder takes keyword arguments only");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, b_kwlist,
            &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11], &o[12], &o[13],
            &o[14], &o[15], &o[16], &o[17], &o[18], &o[19], &o[20], &o[21]))
        return NULL;
    Builder *self = (Builder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    int i = 0;
#define SET(f) self->f = Py_NewRef(o[i]); i++;
    BUILDER_FIELDS(SET)
#undef SET
    PyObject *dicts[] = {self->tensors, self->names, self->state, self->stats_at, self->place_cache, self->module_cache,
                         self->dtype_names, self->device_names};
    for (size_t d = 0; d < sizeof dicts / sizeof *dicts; d++)
        if (!PyDict_Check(dicts[d])) {
            PyErr_SetString(PyExc_TypeError, "EventBuilder: tensors, names, state, stats_at and the caches are dicts");
            goto fail;
        }
    if (!PyAnySet_Check(self->merged) || !PyTuple_Check(self->event_fields) || !PyTuple_Check(self->event_defaults) ||
        PyTuple_GET_SIZE(self->event_fields) != PyTuple_GET_SIZE(self->event_defaults) ||
        PyTuple_GET_SIZE(self->event_fields) > MAX_EVENT_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "EventBuilder: merged is a set; event_fields and event_defaults are tuples, "
                                         "one default per field");
        goto fail;
    }
    self->n_event_fields = PyTuple_GET_SIZE(self->event_fields);
    for (int f = 0; f < N_FIELDS; f++) {
        Py_ssize_t j = 0;
        while (j < self->n_event_fields &&
               PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(self->event_fields, j), field_names[f]) != 0)
            j++;
        if (j == self->n_event_fields) {
            PyErr_Format(PyExc_TypeError, "EventBuilder: Event has no field %s", field_names[f]);
            goto fail;
        }
        self->at[f] = j;
    }
    if ((self->cache_meta = PyDict_New()) == NULL || (self->cache_ref = PyDict_New()) == NULL ||
        (self->older = PyDict_New()) == NULL || (self->op_of_src = PyDict_New()) == NULL)
        goto fail;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

PyTypeObject tmh_EventBuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic.engine._hotpath.EventBuilder",
    .tp_basicsize = sizeof(Builder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "EventBuilder(**parts): build.py's event loop and _Refs.ref, compiled (see build._compiled_builder).",
    .tp_new = b_new,
    .tp_dealloc = (destructor)b_dealloc,
    .tp_traverse = (traverseproc)b_traverse,
    .tp_clear = (inquiry)b_clear,
    .tp_methods = b_methods,
};

int tmh_build_init(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1;
    INTERN(s_seen, "seen") INTERN(s_backward, "backward")
    INTERN(s_no_op, "(no visible op)") INTERN(s_question, "?")
#undef INTERN
    if ((tmh_empty_tuple = PyTuple_New(0)) == NULL || (tmh_s_id = PyUnicode_InternFromString("id")) == NULL) return -1;
    return PyType_Ready(&tmh_EventBuilderType);
}

