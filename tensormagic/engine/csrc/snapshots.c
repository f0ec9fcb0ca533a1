/* The EventBuilder's TensorRefs (build.h): build.py's _Refs.ref, ref_all, _aliases and a
 * backward record's GradRecords, in C.  Same objects, made in the same order, as the Python twins. */
#include "build.h"

PyObject *tmh_empty_tuple, *tmh_s_id;

/* d[key], or fallback(key) when d has no entry (the fallback fills d: build.py's caches); new ref */
PyObject *tmh_cached(PyObject *d, PyObject *key, PyObject *fallback) {
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v != NULL) return Py_NewRef(v);
    if (PyErr_Occurred()) return NULL;
    return PyObject_CallOneArg(fallback, key);
}

/* d[key] as Python's subscript would: KeyError when missing; borrowed */
PyObject *tmh_item(PyObject *d, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
    return v;
}

/* _Refs.ref(tid, meta): the TensorRef of a tensor at one metadata snapshot; new reference */
PyObject *tmh_b_ref(Builder *self, PyObject *tid, PyObject *meta) {
    PyObject *m = PyDict_GetItemWithError(self->cache_meta, tid);
    if (m == meta) {  /* cache_ref lacks it only where storing it failed: then made again below */
        PyObject *cached = PyDict_GetItemWithError(self->cache_ref, tid);
        if (cached != NULL) return Py_NewRef(cached);
    }
    if (PyErr_Occurred()) return NULL;
    PyObject *r = NULL, *key = NULL, *mid = PyLong_FromVoidPtr(meta);
    if (mid == NULL || (key = PyTuple_Pack(2, tid, mid)) == NULL) goto done;
    r = Py_XNewRef(PyDict_GetItemWithError(self->older, key));
    if (r == NULL) {
        if (PyErr_Occurred()) goto done;
        if (!PyTuple_Check(meta) || PyTuple_GET_SIZE(meta) < 6) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: a metadata snapshot is a 6-tuple");
            goto done;
        }
        PyObject *info = PyDict_GetItemWithError(self->tensors, tid), *sid = Py_None, *names;
        if (info == NULL && PyErr_Occurred()) goto done;
        if (info != NULL && (sid = PySequence_GetItem(info, 2)) == NULL) goto done;
        if (info == NULL) Py_INCREF(sid);
        if ((names = PyDict_GetItemWithError(self->names, tid)) == NULL && PyErr_Occurred()) {
            Py_DECREF(sid);
            goto done;
        }
        PyObject *gf = PyTuple_GET_ITEM(meta, 4);
        PyObject *args[10] = {
            PyUnicode_FromFormat("t%S", tid), sid == Py_None ? Py_NewRef(Py_None) : PyUnicode_FromFormat("s%S", sid),
            Py_NewRef(names != NULL ? names : tmh_empty_tuple), PySequence_Tuple(PyTuple_GET_ITEM(meta, 0)),
            tmh_cached(self->dtype_names, PyTuple_GET_ITEM(meta, 1), self->dtype),
            tmh_cached(self->device_names, PyTuple_GET_ITEM(meta, 2), self->device), NULL,
            Py_NewRef(gf == Py_None ? Py_True : Py_False), Py_NewRef(gf), PyNumber_Long(PyTuple_GET_ITEM(meta, 5))};
        Py_DECREF(sid);
        int rg = PyObject_IsTrue(PyTuple_GET_ITEM(meta, 3));
        if (rg >= 0) args[6] = Py_NewRef(rg ? Py_True : Py_False);
        int ok = 1;
        for (int i = 0; i < 10; i++) ok = ok && args[i] != NULL;
        /* positional, in TensorRef's field order: id, storage_id, names, shape, dtype, device,
         * requires_grad, is_leaf, grad_fn, version */
        if (ok && (r = PyObject_Vectorcall(self->ref_maker, args, 10, NULL)) != NULL) untrack(r);
        for (int i = 0; i < 10; i++) Py_XDECREF(args[i]);
        if (r == NULL || PyDict_SetItem(self->older, key, r) < 0) goto done;
    }
    if (PyDict_SetItem(self->cache_meta, tid, meta) < 0 || PyDict_SetItem(self->cache_ref, tid, r) < 0) Py_CLEAR(r);
done:
    Py_XDECREF(mid);
    Py_XDECREF(key);
    if (PyErr_Occurred()) Py_CLEAR(r);
    return r;
}

/* the TensorRefs of the ids that have a snapshot so far (ref_all), as a tuple */
PyObject *tmh_ref_all(Builder *self, PyObject *ids, Py_ssize_t from) {
    PyObject *fast = PySequence_Fast(ids, "tensormagic: a record's input ids");
    if (fast == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), k = 0;
    PyObject *out = PyTuple_New(n > from ? n - from : 0);
    for (Py_ssize_t j = from; out != NULL && j < n; j++) {
        PyObject *t = PySequence_Fast_GET_ITEM(fast, j), *m = PyDict_GetItemWithError(self->state, t), *r;
        if (m == NULL) {
            if (PyErr_Occurred()) Py_CLEAR(out);
            continue;
        }
        if ((r = tmh_b_ref(self, t, m)) == NULL) Py_CLEAR(out);
        else PyTuple_SET_ITEM(out, k++, r);
    }
    Py_DECREF(fast);
    if (out != NULL && k < PyTuple_GET_SIZE(out) && _PyTuple_Resize(&out, k) < 0) return NULL;
    if (out != NULL) untrack(out);
    return out;
}

/* _by_storage: storage id -> [(tid, entry), ...] in the tracker's order; new reference */
static PyObject *by_storage(Builder *self) {
    PyObject *out = PyDict_New(), *tid, *info;
    Py_ssize_t pos = 0;
    while (out != NULL && PyDict_Next(self->tensors, &pos, &tid, &info)) {
        PyObject *sid = PySequence_GetItem(info, 2), *lst = NULL, *pair = NULL;
        if (sid == NULL) {
            Py_CLEAR(out);
            break;
        }
        if (sid != Py_None) {
            lst = Py_XNewRef(PyDict_GetItemWithError(out, sid));
            if (lst == NULL && !PyErr_Occurred() && (lst = PyList_New(0)) != NULL && PyDict_SetItem(out, sid, lst) < 0)
                Py_CLEAR(lst);
            if (lst == NULL || (pair = PyTuple_Pack(2, tid, info)) == NULL || PyList_Append(lst, pair) < 0) Py_CLEAR(out);
        }
        Py_DECREF(sid);
        Py_XDECREF(lst);
        Py_XDECREF(pair);
    }
    return out;
}

/* _aliases: the other tensors on the written tensor's storage, as they were at record idx, that
 * the write is proven to have changed (alias_proof(idx): a set of ids, asked at the first one) */
PyObject *tmh_aliases(Builder *self, PyObject *tid, Py_ssize_t idx) {
    if (self->storages == NULL && (self->storages = by_storage(self)) == NULL) return NULL;
    PyObject *info = tmh_item(self->tensors, tid), *sid;
    if (info == NULL || (sid = PySequence_GetItem(info, 2)) == NULL) return NULL;
    PyObject *same = sid == Py_None ? NULL : PyDict_GetItemWithError(self->storages, sid);
    Py_DECREF(sid);
    if (same == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(tmh_empty_tuple);
    PyObject *out = PyList_New(0), *changed = NULL;
    PyObject *fast = out == NULL ? NULL : PySequence_Fast(same, "tensormagic: a storage's tensors");
    Py_ssize_t n = fast == NULL ? 0 : PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t j = 0; fast != NULL && j < n; j++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(fast, j), *other, *oinfo, *first, *m;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: a storage's tensors are (tid, entry) pairs");
            break;
        }
        other = PyTuple_GET_ITEM(pair, 0);
        oinfo = PyTuple_GET_ITEM(pair, 1);
        int same_tid = PyObject_RichCompareBool(other, tid, Py_EQ), merged;
        if (same_tid < 0 || (!same_tid && (merged = PySet_Contains(self->merged, other)) < 0)) break;
        if (same_tid || merged) continue;
        if ((first = PySequence_GetItem(oinfo, 3)) == NULL) break;
        Py_ssize_t f = first == Py_None ? -1 : PyLong_AsSsize_t(first);
        Py_DECREF(first);
        if (f == -1 && PyErr_Occurred()) break;
        if (f > idx) continue;
        if (changed == NULL) {
            PyObject *pidx = PyLong_FromSsize_t(idx);
            changed = pidx == NULL ? NULL : PyObject_CallOneArg(self->alias_proof, pidx);
            Py_XDECREF(pidx);
            if (changed == NULL) break;
            if (!PyAnySet_Check(changed)) {
                PyErr_SetString(PyExc_TypeError, "tensormagic: alias_proof returns a set");
                break;
            }
        }
        int proven = PySet_Contains(changed, other);
        if (proven < 0) break;
        if (!proven) continue;
        if ((m = PyDict_GetItemWithError(self->state, other)) == NULL) {
            if (PyErr_Occurred() || (m = PySequence_GetItem(oinfo, 1)) == NULL) break;
        } else {
            Py_INCREF(m);
        }
        PyObject *r = tmh_b_ref(self, other, m);
        Py_DECREF(m);
        if (r == NULL || PyList_Append(out, r) < 0) {
            Py_XDECREF(r);
            break;
        }
        Py_DECREF(r);
    }
    Py_XDECREF(fast);
    Py_XDECREF(changed);
    PyObject *tup = out != NULL && !PyErr_Occurred() ? PyList_AsTuple(out) : NULL;
    Py_XDECREF(out);
    if (tup != NULL) untrack(tup);
    return tup;
}

/* a backward record's GradRecords: one per (leaf id, leaf meta, accumulated, gradient id) */
PyObject *tmh_grads(Builder *self, PyObject *extra) {
    PyObject *fast = PySequence_Fast(extra, "tensormagic: a backward record's gradients");
    if (fast == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *out = PyTuple_New(n);
    for (Py_ssize_t j = 0; out != NULL && j < n; j++) {
        PyObject *g = PySequence_Fast_GET_ITEM(fast, j), *ginfo, *gmeta = NULL, *x = NULL;
        if (!PyTuple_Check(g) || PyTuple_GET_SIZE(g) != 4) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: a gradient is (leaf id, leaf meta, accumulated, id)");
        } else if ((ginfo = tmh_item(self->tensors, PyTuple_GET_ITEM(g, 3))) != NULL &&
                   (gmeta = PySequence_GetItem(ginfo, 1)) != NULL) {
            if (!PyTuple_Check(gmeta) || PyTuple_GET_SIZE(gmeta) < 2) {
                PyErr_SetString(PyExc_TypeError, "tensormagic: a metadata snapshot is a 6-tuple");
            } else {
                /* positional, in GradRecord's field order: tensor, shape, dtype, accumulated, grad_id */
                PyObject *args[5] = {tmh_b_ref(self, PyTuple_GET_ITEM(g, 0), PyTuple_GET_ITEM(g, 1)),
                                     PySequence_Tuple(PyTuple_GET_ITEM(gmeta, 0)),
                                     tmh_cached(self->dtype_names, PyTuple_GET_ITEM(gmeta, 1), self->dtype),
                                     Py_NewRef(PyTuple_GET_ITEM(g, 2)),
                                     PyUnicode_FromFormat("t%S", PyTuple_GET_ITEM(g, 3))};
                if (args[0] && args[1] && args[2] && args[4] && (x = PyObject_Vectorcall(self->grad_maker, args, 5, NULL)))
                    untrack(x);
                for (int i = 0; i < 5; i++) Py_XDECREF(args[i]);
            }
            Py_DECREF(gmeta);
        }
        if (x == NULL) Py_CLEAR(out);
        else PyTuple_SET_ITEM(out, j, x);
    }
    Py_DECREF(fast);
    if (out != NULL) untrack(out);
    return out;
}


/* _final_refs: each tensor's snapshot when the block ended (its live metadata then, else its last
 * event's), by TensorRef id, in the tracker's order */
PyObject *tmh_final_refs(Builder *self, PyObject *final) {
    if (!PyDict_Check(final)) {
        PyErr_SetString(PyExc_TypeError, "EventBuilder.final_refs(final: dict)");
        return NULL;
    }
    PyObject *out = PyDict_New(), *tid, *info;
    Py_ssize_t pos = 0;
    while (out != NULL && PyDict_Next(self->tensors, &pos, &tid, &info)) {
        int merged = PySet_Contains(self->merged, tid);
        if (merged) {
            if (merged < 0) Py_CLEAR(out);
            continue;
        }
        PyObject *m = PyDict_GetItemWithError(final, tid), *r = NULL, *id = NULL;
        int live = m == NULL ? 0 : PyObject_IsTrue(m);  /* final.get(tid) or ... */
        if (live < 0 || (m == NULL && PyErr_Occurred())) {
            Py_CLEAR(out);
            break;
        }
        if (!live && (m = PyDict_GetItemWithError(self->state, tid)) == NULL && PyErr_Occurred()) {
            Py_CLEAR(out);
            break;
        }
        if (m != NULL) Py_INCREF(m);
        else if ((m = PySequence_GetItem(info, 1)) == NULL) {
            Py_CLEAR(out);
            break;
        }
        r = tmh_b_ref(self, tid, m);
        Py_DECREF(m);
        if (r == NULL || (id = PyObject_GetAttr(r, tmh_s_id)) == NULL || PyDict_SetItem(out, id, r) < 0) Py_CLEAR(out);
        Py_XDECREF(r);
        Py_XDECREF(id);
    }
    return out;
}
