/* What a record is made of: tensor attributes, the clock, the user's frame, the id table. */
#include "hot.h"
#include <structmember.h>

#if defined(__linux__)
#include <time.h>
#endif

/* Where instances of `type` keep `name`, if it is a writable object slot (a __slots__ member of
 * `type` or a base): its offset, else 0.  (The Slot helpers and slots.c use it.) */
Py_ssize_t tmh_member_offset(PyTypeObject *type, PyObject *name) {
    if (!PyType_Check((PyObject *)type)) return 0;
    PyObject *d = _PyType_Lookup(type, name);  /* borrowed */
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) return 0;
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset <= 0) return 0;
    return PyType_IsSubtype(type, ((PyDescrObject *)d)->d_type) ? m->offset : 0;
}

/* The getters tmh_tensor_attr (hot.h) calls directly, looked up once on torch.Tensor. */
PyTypeObject *tmh_getset_type, *tmh_param_type;
PyGetSetDef *tmh_getsets[N_ATTRS];
PyObject *tmh_describe_attr, *tmh_describe_meta, *tmh_describe_call;

/* set_describe(attr, meta, call_unwrapped, parameter_type): describe.attr, describe.meta,
 * describe.call_unwrapped and nn.Parameter, given once by mode.py (held for the process) */
PyObject *tmh_set_describe(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 4 || !PyCallable_Check(a[0]) || !PyCallable_Check(a[1]) || !PyCallable_Check(a[2]) || !PyType_Check(a[3])) {
        PyErr_SetString(PyExc_TypeError, "set_describe(attr, meta, call_unwrapped, parameter_type)");
        return NULL;
    }
    Py_XSETREF(tmh_describe_attr, Py_NewRef(a[0]));
    Py_XSETREF(tmh_describe_meta, Py_NewRef(a[1]));
    Py_XSETREF(tmh_describe_call, Py_NewRef(a[2]));
    Py_XSETREF(tmh_param_type, (PyTypeObject *)Py_NewRef(a[3]));
    Py_RETURN_NONE;
}

/* describe.attr(o, name): a tensor that is not a plain one, or an attribute without a getset */
PyObject *tmh_attr_slow(PyObject *o, int which) {
    if (tmh_describe_attr == NULL) return PyObject_GetAttr(o, tmh_attr_names[which]);
    return PyObject_CallFunctionObjArgs(tmh_describe_attr, o, tmh_attr_names[which], NULL);
}

/* An Exception set now is cleared (1): a read that failed is described, not raised.  Anything else
 * (KeyboardInterrupt) stays set (0). */
int tmh_clear_exception(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return 0;
    PyErr_Clear();
    return 1;
}

void tmh_learn_getsets(PyTypeObject *tensor_type) {
    if (tmh_getset_type == tensor_type) return;
    tmh_getset_type = tensor_type;
    for (int i = 0; i < N_ATTRS; i++) {
        PyObject *d = _PyType_Lookup(tensor_type, tmh_attr_names[i]);  /* borrowed; held by the type */
        tmh_getsets[i] = d != NULL && Py_IS_TYPE(d, &PyGetSetDescr_Type) && ((PyGetSetDescrObject *)d)->d_getset->get != NULL
                             ? ((PyGetSetDescrObject *)d)->d_getset : NULL;
    }
}

static long long now_ns_python(Hot *self);

/* perf_counter_ns as a C integer; -1 with an exception set on failure.  On Linux, CPython's
 * perf_counter is clock_gettime(CLOCK_MONOTONIC): read it directly (the test suite checks that
 * both clocks agree); elsewhere ask time.perf_counter_ns. */
#if defined(__linux__)
long long tmh_now_ns(Hot *self) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    return now_ns_python(self);  /* GCOVR_EXCL_LINE: CLOCK_MONOTONIC does not fail on Linux */
}
#else
long long tmh_now_ns(Hot *self) { return now_ns_python(self); }
#endif

/* GCOVR_EXCL_START: on Linux, reached only if clock_gettime fails (docs/testing.md) */
static long long now_ns_python(Hot *self) {
    PyObject *t = PyObject_CallNoArgs(self->now);
    if (t == NULL) return -1;
    long long v = PyLong_AsLongLong(t);
    Py_DECREF(t);
    return v;
}
/* GCOVR_EXCL_STOP */

/* t._version (describe.version): -1 (NO_VERSION) for a tensor that keeps none (an inference
 * tensor) or whose version cannot be read; -2 with an exception set when one that is not an
 * Exception (KeyboardInterrupt) arrived meanwhile */
long long tmh_version_of(PyObject *t) {
    PyObject *v = tmh_tensor_attr(t, A_VERSION);
    long long r = -1;
    if (v != NULL) {
        r = PyLong_AsLongLong(v);
        Py_DECREF(v);
    }
    if (PyErr_Occurred()) return tmh_clear_exception() ? -1 : -2;
    return r;
}

/* Tracker._recheck(args, kwargs, written, v0) when the block has suspects (tensors made empty
 * that an unseen set_ may have filled): 0, or -1 with an exception */
int tmh_recheck(Hot *self, PyObject *args, PyObject *kwargs, PyObject *written, long long v0) {
    if (PySet_GET_SIZE(self->suspects) == 0) return 0;
    PyObject *kw = tmh_kwargs_dict(kwargs);
    PyObject *pv0 = PyLong_FromLongLong(v0);
    PyObject *r = NULL;
    if (kw != NULL && pv0 != NULL) {
        PyObject *cargs[4] = {args, kw, written != NULL ? written : Py_None, pv0};
        r = PyObject_Vectorcall(self->recheck, cargs, 4, NULL);
    }
    Py_XDECREF(kw);
    Py_XDECREF(pv0);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static int frame_lasti(PyFrameObject *frame) {
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetLasti(frame);
#else
    PyObject *v = PyObject_GetAttr((PyObject *)frame, tmh_s_f_lasti);
    if (v == NULL) return -2;
    long r = PyLong_AsLong(v);
    Py_DECREF(v);
    return (int)r;
#endif
}

/* LineFinder.find from the innermost Python frame (the caller of the torch function).
 * Returns a new reference to the place ((filename, line) or None) and sets *lasti (a new
 * reference, or NULL when no user frame was found); NULL with an exception on failure.
 * A cache hit is answered here; anything else goes to the Python LineFinder, which fills the cache.
 * The place is Py_Ellipsis for a torch call a compiled graph makes (compiled.py): not recorded. */
static inline PyObject **skip_slot(Hot *self, PyCodeObject *code) {
    uintptr_t a = (uintptr_t)code;
    return &self->skip_codes[((a >> 4) ^ (a >> 10)) & (TMH_SKIP_CODES - 1)];
}

PyObject *tmh_find_where(Hot *self, PyObject **lasti) {
    *lasti = NULL;
    PyFrameObject *frame = PyEval_GetFrame();
    Py_XINCREF(frame);
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        PyObject **slot = skip_slot(self, code);
        if (*slot == (PyObject *)code) {  /* a frame the finder skips, known without the lookup */
            Py_DECREF(code);
            PyFrameObject *back = PyFrame_GetBack(frame);
            Py_DECREF(frame);
            frame = back;
            continue;
        }
        PyObject *key = PyLong_FromVoidPtr(code);
        if (key == NULL) { Py_DECREF(code); Py_DECREF(frame); return NULL; }
        PyObject *ent = PyDict_GetItemWithError(self->line_cache, key);
        Py_DECREF(key);
        if (ent != NULL) {
            Py_INCREF(ent);
        } else if (PyErr_Occurred()) {
            Py_DECREF(code); Py_DECREF(frame); return NULL;
        } else {
            ent = PyObject_CallFunctionObjArgs(self->learn, (PyObject *)code, (PyObject *)frame, NULL);
            if (ent == NULL) { Py_DECREF(code); Py_DECREF(frame); return NULL; }
        }
        if (PyTuple_Check(ent) && PyTuple_GET_SIZE(ent) >= 3 && PyTuple_GET_ITEM(ent, 1) == Py_False)
            Py_XSETREF(*slot, Py_NewRef((PyObject *)code));  /* not the user's: remembered */
        Py_DECREF(code);
        if (!PyTuple_Check(ent) || PyTuple_GET_SIZE(ent) < 3) {
            Py_DECREF(ent); Py_DECREF(frame);
            PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected line-cache entry");
            return NULL;
        }
        if (PyTuple_GET_ITEM(ent, 1) == Py_None) {
            /* a compiled graph's code (source.py's LineFinder.find decides per call, compiled.py):
             * Ellipsis when the call belongs to a compiled call's one event */
            Py_DECREF(ent);
            PyObject *where = PyObject_CallOneArg(self->find, (PyObject *)frame);
            Py_DECREF(frame);
            if (where == NULL) return NULL;
            *lasti = tmh_get(self->lasti, self->lines, tmh_s_lasti);
            if (*lasti == NULL) { Py_DECREF(where); return NULL; }
            return where;
        }
        if (PyTuple_GET_ITEM(ent, 1) == Py_True) {
            PyObject *hit = NULL;
            int li = frame_lasti(frame);
            if (li == -2 && PyErr_Occurred()) { Py_DECREF(ent); Py_DECREF(frame); return NULL; }
            PyObject *k = PyLong_FromLong(li);
            if (k == NULL) { Py_DECREF(ent); Py_DECREF(frame); return NULL; }
            hit = PyDict_GetItemWithError(PyTuple_GET_ITEM(ent, 2), k);
            Py_DECREF(k);
            if (hit == NULL) {
                Py_DECREF(ent);
                if (PyErr_Occurred()) { Py_DECREF(frame); return NULL; }
                /* a new offset: the Python finder learns it (and sets lines.lasti) */
                PyObject *where = PyObject_CallOneArg(self->find, (PyObject *)frame);
                Py_DECREF(frame);
                if (where == NULL) return NULL;
                *lasti = tmh_get(self->lasti, self->lines, tmh_s_lasti);
                if (*lasti == NULL) { Py_DECREF(where); return NULL; }
                return where;
            }
            Py_DECREF(frame);
            PyObject *where = Py_NewRef(PyTuple_GET_ITEM(hit, 0));
            PyObject *off = Py_NewRef(PyTuple_GET_ITEM(hit, 1));
            Py_DECREF(ent);  /* hit was borrowed from it */
            if (tmh_set(self->lasti, self->lines, tmh_s_lasti, off) < 0) { Py_DECREF(where); Py_DECREF(off); return NULL; }
            *lasti = off;
            return where;
        }
        Py_DECREF(ent);
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    /* no user frame: the record keeps the last offset found, as LineFinder leaves it */
    *lasti = tmh_get(self->lasti, self->lines, tmh_s_lasti);
    if (*lasti == NULL) return NULL;
    Py_RETURN_NONE;
}

/* 1 if the id table holds `t` (its Ref, borrowed, in *ref_out), 0 if not (unknown, or its id()
 * belongs to a dead tensor's entry), -1 with an exception on failure. */
int tmh_known_tid(Hot *self, PyObject *t, PyObject **ref_out) {
    *ref_out = NULL;
    PyObject *key = PyLong_FromVoidPtr(t);
    if (key == NULL) return -1;
    int r = tmh_known_at(self, t, key, ref_out);
    Py_DECREF(key);
    return r;
}

/* tmh_known_tid with the id() key already made */
int tmh_known_at(Hot *self, PyObject *t, PyObject *key, PyObject **ref_out) {
    *ref_out = NULL;
    PyObject *ref = PyDict_GetItemWithError(self->ids, key);
    if (ref == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyWeakref_Check(ref)) return 0;
    PyObject *obj;
    if (tmh_ref_get(ref, &obj) < 0) return -1;
    Py_XDECREF(obj);  /* only compared: t itself is alive (the caller holds it) */
    if (obj != t) return 0;
    *ref_out = ref;  /* borrowed */
    return 1;
}

/* The tensors of a call's arguments, as raw._tensors_in gives them (a list or tuple argument
 * is looked into, one level), without `skip`: a new list, or NULL with an exception. */
PyObject *tmh_tensors_in(Hot *self, PyObject *args, PyObject *kwargs, PyObject *skip) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        if (tmh_is_tensor(self, a)) {
            if (a != skip && PyList_Append(out, a) < 0) goto fail;
        } else if (PyList_Check(a) || PyTuple_Check(a)) {
            PyObject *seq = PySequence_Fast(a, "");
            if (seq == NULL) goto fail;
            for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(seq); j++) {
                PyObject *x = PySequence_Fast_GET_ITEM(seq, j);
                if (tmh_is_tensor(self, x) && x != skip && PyList_Append(out, x) < 0) { Py_DECREF(seq); goto fail; }
            }
            Py_DECREF(seq);
        }
    }
    if (kwargs != NULL) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(kwargs, &pos, &k, &v))
            if (tmh_is_tensor(self, v) && v != skip && PyList_Append(out, v) < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* The id of a tensor this block has registered (Tracker.tensors), as a new reference; NULL and no
 * exception if it has none (Tracker.see would record its first sight: the Python path's job). */
PyObject *tmh_registered_tid(Hot *self, PyObject *t) {
    PyObject *ref;
    int k = tmh_known_tid(self, t, &ref);
    if (k <= 0) return NULL;
    PyObject *tid = tmh_ref_tid(self, ref);
    if (tid == NULL) return NULL;
    int has = PyDict_Contains(self->tensors, tid);
    if (has != 1) { Py_DECREF(tid); return NULL; }
    return tid;
}

/* The tensor an entry of Tracker.tensors names (its id() key, its id), while that entry's Ref in
 * the id table is still its own and the tensor lives (Tracker.alive): 1 and a new reference in
 * *obj, 0 (dead, or the key now names another tensor), -1 with an exception. */
static Slot ref_tid;  /* identity.Ref's "tid": the type of the first Ref met (held), and its offset */

int tmh_entry_alive(PyObject *ids, PyObject *key, PyObject *tid, PyObject **obj) {
    *obj = NULL;
    PyObject *ref = PyDict_GetItemWithError(ids, key);
    if (ref == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyWeakref_Check(ref)) return 0;
    Py_INCREF(ref);
    if (ref_tid.type == NULL) {  /* ref.tid at its slot from now on (~700 instructions a read less):
                                  * the block's end checks every tensor it made, the write gate
                                  * each candidate of a write */
        Py_ssize_t off = tmh_member_offset(Py_TYPE(ref), tmh_s_tid);
        if (off > 0) {
            ref_tid.type = (PyTypeObject *)Py_NewRef((PyObject *)Py_TYPE(ref));
            ref_tid.offset = off;
        }
    }
    PyObject *rtid = tmh_get(ref_tid, ref, tmh_s_tid);
    int rc = rtid == NULL ? -1 : PyObject_RichCompareBool(rtid, tid, Py_EQ);
    Py_XDECREF(rtid);
    if (rc == 1) rc = tmh_ref_get(ref, obj);
    Py_DECREF(ref);
    return rc;
}

/* Tracker.live_tensors (tracker.py says what it does; this is the same loop for the compiled engine):
 * live_tensors(tensors, ids, merged) -> [(tid, tensor), ...] for the block's tensors still alive,
 * without `merged`; a dead tensor's entry loses its id() key (a new tuple, key None).  A block of
 * 10,000 tensors ends here: this loop in Python was most of W1's block end. */
PyObject *tmh_live_tensors(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 3 || !PyDict_Check(a[0]) || !PyDict_Check(a[1]) || !PyAnySet_Check(a[2])) {
        PyErr_SetString(PyExc_TypeError, "live_tensors(tensors: dict, ids: dict, merged: set)");
        return NULL;
    }
    PyObject *tensors = a[0], *ids = a[1], *merged = a[2];
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *tid, *info;
    while (PyDict_Next(tensors, &pos, &tid, &info)) {
        if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 1) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected tensor entry");
            goto fail;
        }
        PyObject *key = PyTuple_GET_ITEM(info, 0);
        if (key == Py_None) continue;
        PyObject *t;
        int alive = tmh_entry_alive(ids, key, tid, &t);
        if (alive < 0) goto fail;
        if (alive) {
            int m = PySet_Contains(merged, tid);
            if (m == 0) {
                PyObject *pair = PyTuple_Pack(2, tid, t);
                if (pair == NULL || PyList_Append(out, pair) < 0) { Py_XDECREF(pair); Py_DECREF(t); goto fail; }
                Py_DECREF(pair);
            }
            Py_DECREF(t);
            if (m < 0) goto fail;
            continue;
        }
        /* dead: its id() key can find nothing any more.  Replacing a value keeps the keys, which
         * PyDict_Next allows during the walk. */
        Py_ssize_t size = PyTuple_GET_SIZE(info);
        PyObject *dead = PyTuple_New(size);
        if (dead == NULL) goto fail;
        PyTuple_SET_ITEM(dead, 0, Py_NewRef(Py_None));
        for (Py_ssize_t i = 1; i < size; i++) PyTuple_SET_ITEM(dead, i, Py_NewRef(PyTuple_GET_ITEM(info, i)));
        int rc = PyDict_SetItem(tensors, tid, dead);
        Py_DECREF(dead);
        if (rc < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}
