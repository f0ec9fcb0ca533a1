/* SavedIndex: diagnostics/saved_index.py's SavedIndex, compiled (that file says what it does; this
 * is the same code, so that the compiled engine can ask it about a write without a call into
 * Python).  Here: the type and the filing of raw records; gate.c: what one write needs. */
#include "saved.h"
#include <structmember.h>

static PyObject *s_data_get;  /* the kinds are hot.h's interned strings */
PyObject *tmh_s_data;

#define FIELDS(X) X(raw) X(tensors) X(ids) X(by_storage) X(own_counter) X(freed) X(saved_attrs) X(learn_attrs) X(storage_id)

/* A raw record: a tuple of 8 (tracker.py's layout). */
static int check_record(PyObject *r) {
    if (PyTuple_Check(r) && PyTuple_GET_SIZE(r) >= 8) return 0;
    PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected raw record");
    return -1;
}

/* tensors[tid], borrowed; KeyError as in Python when it is not there */
PyObject *tmh_saved_entry(SavedIndex *self, PyObject *tid) {
    PyObject *info = PyDict_GetItemWithError(self->tensors, tid);
    if (info == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, tid);
        return NULL;
    }
    if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 3) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected tensor entry");
        return NULL;
    }
    return info;
}

/* _alive: 1 and a new reference in *obj while tensor `tid` lives, 0 when dead or unknown, -1 error */
int tmh_saved_alive(SavedIndex *self, PyObject *tid, PyObject **obj) {
    *obj = NULL;
    PyObject *info = PyDict_GetItemWithError(self->tensors, tid);
    if (info == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 1) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected tensor entry");
        return -1;
    }
    return tmh_entry_alive(self->ids, PyTuple_GET_ITEM(info, 0), tid, obj);
}

static int file_tid(SavedIndex *self, PyObject *sid, PyObject *tid) {
    if (sid == Py_None) return 0;
    PyObject *lst = PyDict_GetItemWithError(self->by_storage, sid);
    if (lst == NULL && PyErr_Occurred()) return -1;
    if (lst == NULL || PyObject_Length(lst) == 0) {
        PyObject *fresh = PyList_New(1);
        if (fresh == NULL) return -1;
        PyList_SET_ITEM(fresh, 0, Py_NewRef(tid));
        int rc = PyDict_SetItem(self->by_storage, sid, fresh);
        Py_DECREF(fresh);
        return rc;
    }
    if (!PyList_Check(lst)) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: SavedIndex.by_storage holds lists");
        return -1;
    }
    Py_INCREF(lst);
    int rc = -1;
    int differs = PyObject_RichCompareBool(PyList_GET_ITEM(lst, PyList_GET_SIZE(lst) - 1), tid, Py_NE);
    if (differs <= 0) { rc = differs; goto done; }
    if (PyList_Append(lst, tid) < 0) goto done;
    Py_ssize_t n = PyList_GET_SIZE(lst);
    if (n > 4 * self->keep) {  /* drop the dead, keep the newest `keep` */
        PyObject *kept = PyList_New(0);
        if (kept == NULL) goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *c = PyList_GET_ITEM(lst, i), *obj;
            int a = tmh_saved_alive(self, c, &obj);
            if (a < 0 || (a == 1 && PyList_Append(kept, c) < 0)) { Py_XDECREF(obj); Py_DECREF(kept); goto done; }
            Py_XDECREF(obj);
        }
        Py_ssize_t k = PyList_GET_SIZE(kept);
        Py_ssize_t from = k > self->keep ? k - self->keep : 0;
        PyObject *tail = PyList_GetSlice(kept, from, k);
        Py_DECREF(kept);
        if (tail == NULL) goto done;
        int s = PyList_SetSlice(lst, 0, PyList_GET_SIZE(lst), tail);
        Py_DECREF(tail);
        if (s < 0) goto done;
    }
    rc = 0;
done:
    Py_DECREF(lst);
    return rc;
}

static int register_tid(SavedIndex *self, PyObject *tid, PyObject *in_ids) {
    PyObject *info = tmh_saved_entry(self, tid);
    if (info == NULL || file_tid(self, PyTuple_GET_ITEM(info, 2), tid) < 0) return -1;
    if (in_ids == NULL) return 0;
    PyObject *seq = PySequence_Fast(in_ids, "tensormagic: input ids must be a sequence");
    if (seq == NULL) return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++) {
        PyObject *itid = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *iinfo = tmh_saved_entry(self, itid);
        rc = iinfo == NULL ? -1 : file_tid(self, PyTuple_GET_ITEM(iinfo, 2), tid);
    }
    Py_DECREF(seq);
    return rc;
}

/* one raw record into the index (catch_up's loop body) */
static int file_record(SavedIndex *self, PyObject *r) {
    if (check_record(r) < 0) return -1;
    PyObject *kind = PyTuple_GET_ITEM(r, 0), *meta = PyTuple_GET_ITEM(r, 3);
    PyObject *tid = PyTuple_GET_ITEM(r, 2), *extra = PyTuple_GET_ITEM(r, 7);
    if (!PyTuple_Check(meta) || PyTuple_GET_SIZE(meta) < 5) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected record metadata");
        return -1;
    }
    int has_grad = PyTuple_GET_ITEM(meta, 4) != Py_None;
    if (tmh_same_str(kind, tmh_s_create)) {
        if (!has_grad) return 0;
        PyObject *in_ids = extra;  /* create_parts: (in_ids, origin, note) or the in_ids themselves */
        if (PyTuple_Check(extra) && PyTuple_GET_SIZE(extra) > 0 && PyTuple_CheckExact(PyTuple_GET_ITEM(extra, 0)))
            in_ids = PyTuple_GET_ITEM(extra, 0);
        return register_tid(self, tid, in_ids);
    }
    if (tmh_same_str(kind, tmh_s_view)) {
        int own = PySet_Contains(self->own_counter, extra);
        if (own < 0) return -1;
        if (own || tmh_same_str(PyTuple_GET_ITEM(r, 1), s_data_get))
            if (PySet_Add(self->own_counter, tid) < 0) return -1;
        return has_grad ? register_tid(self, tid, NULL) : 0;
    }
    if (tmh_same_str(kind, tmh_s_move)) {
        if (!PyTuple_Check(extra) || PyTuple_GET_SIZE(extra) < 3) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected move record");
            return -1;
        }
        int in_place = PyObject_IsTrue(PyTuple_GET_ITEM(extra, 2));
        if (in_place < 0) return -1;
        return !in_place && has_grad ? register_tid(self, tid, NULL) : 0;
    }
    return 0;
}

int tmh_saved_catch_up(SavedIndex *self, Py_ssize_t end) {
    for (Py_ssize_t i = self->filed; i < end && i < PyList_GET_SIZE(self->raw); i++) {
        PyObject *r = Py_NewRef(PyList_GET_ITEM(self->raw, i));
        int rc = file_record(self, r);
        Py_DECREF(r);
        if (rc < 0) return -1;
    }
    if (end > self->filed) self->filed = end;
    return 0;
}

static PyObject *si_catch_up(SavedIndex *self, PyObject *arg) {
    Py_ssize_t end = PyLong_AsSsize_t(arg);
    if (end == -1 && PyErr_Occurred()) return NULL;
    if (tmh_saved_catch_up(self, end) < 0) return NULL;
    Py_RETURN_NONE;
}

static int parse_write(PyObject *const *a, Py_ssize_t n, Py_ssize_t *idx) {
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "expected (idx, tid, t)");
        return -1;
    }
    *idx = PyLong_AsSsize_t(a[0]);
    return *idx == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *si_roots(SavedIndex *self, PyObject *const *a, Py_ssize_t n) {
    Py_ssize_t idx;
    if (parse_write(a, n, &idx) < 0) return NULL;
    return tmh_saved_roots(self, idx, a[1], a[2], 1);
}

static PyObject *si_needs(SavedIndex *self, PyObject *const *a, Py_ssize_t n) {
    Py_ssize_t idx;
    if (parse_write(a, n, &idx) < 0) return NULL;
    int need = tmh_write_needed((PyObject *)self, idx, a[1], a[2]);
    return need < 0 ? NULL : PyBool_FromLong(need);
}

static PyMethodDef si_methods[] = {
    {"catch_up", (PyCFunction)si_catch_up, METH_O, "File the raw records before index `end`."},
    {"roots", (PyCFunction)(void (*)(void))si_roots, METH_FASTCALL,
     "roots(idx, tid, t): the (tid, tensor) a write may have made stale, or None."},
    {"needs", (PyCFunction)(void (*)(void))si_needs, METH_FASTCALL,
     "needs(idx, tid, t): whether the write has anything to inspect (the write gate)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef si_members[] = {
    {"raw", T_OBJECT, offsetof(SavedIndex, raw), READONLY, NULL},
    {"tensors", T_OBJECT, offsetof(SavedIndex, tensors), READONLY, NULL},
    {"ids", T_OBJECT, offsetof(SavedIndex, ids), READONLY, NULL},
    {"by_storage", T_OBJECT, offsetof(SavedIndex, by_storage), READONLY, NULL},
    {"own_counter", T_OBJECT, offsetof(SavedIndex, own_counter), READONLY, NULL},
    {"freed", T_OBJECT, offsetof(SavedIndex, freed), READONLY, NULL},
    {"keep", T_PYSSIZET, offsetof(SavedIndex, keep), READONLY, NULL},
    {"max_roots", T_PYSSIZET, offsetof(SavedIndex, max_roots), READONLY, NULL},
    {"budget", T_LONGLONG, offsetof(SavedIndex, budget), READONLY, NULL},
    {"filed", T_PYSSIZET, offsetof(SavedIndex, filed), 0, NULL},
    {"spent", T_LONGLONG, offsetof(SavedIndex, spent), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *si_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"raw", "tensors", "ids", "keep", "max_roots", "budget", "saved_attrs", "learn_attrs",
                             "storage_id", NULL};
    PyObject *raw, *tensors, *ids, *attrs, *learn, *storage_id;
    Py_ssize_t keep, max_roots;
    long long budget;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!nnLO!OO:SavedIndex", kwlist, &PyList_Type, &raw,
                                     &PyDict_Type, &tensors, &PyDict_Type, &ids, &keep, &max_roots, &budget,
                                     &PyDict_Type, &attrs, &learn, &storage_id))
        return NULL;
    SavedIndex *self = (SavedIndex *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->raw = Py_NewRef(raw);
    self->tensors = Py_NewRef(tensors);
    self->ids = Py_NewRef(ids);
    self->saved_attrs = Py_NewRef(attrs);
    self->learn_attrs = Py_NewRef(learn);
    self->storage_id = Py_NewRef(storage_id);
    self->keep = keep;
    self->max_roots = max_roots;
    self->budget = budget;
    if ((self->by_storage = PyDict_New()) == NULL || (self->own_counter = PySet_New(NULL)) == NULL ||
        (self->freed = PyDict_New()) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int si_traverse(SavedIndex *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    SAVED_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int si_clear(SavedIndex *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    SAVED_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void si_dealloc(SavedIndex *self) {
    PyObject_GC_UnTrack(self);
    si_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject tmh_SavedIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic.engine._hotpath.SavedIndex",
    .tp_basicsize = sizeof(SavedIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "diagnostics.saved_index.SavedIndex, compiled: storage id -> tids whose grad_fn may save it.",
    .tp_new = si_new,
    .tp_dealloc = (destructor)si_dealloc,
    .tp_traverse = (traverseproc)si_traverse,
    .tp_clear = (inquiry)si_clear,
    .tp_methods = si_methods,
    .tp_members = si_members,
};

int tmh_saved_init(void) {
    if ((s_data_get = PyUnicode_InternFromString("torch.Tensor.data.__get__")) == NULL ||
        (tmh_s_data = PyUnicode_InternFromString("data")) == NULL)
        return -1;
    return PyType_Ready(&tmh_SavedIndexType);
}
