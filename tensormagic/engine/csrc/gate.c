/* What one in-place write needs from inplace-saved (saved_index.py's SavedIndex.roots and .needs,
 * compiled): the roots whose nodes it may have made stale, and the write gate the compiled engine
 * asks before it calls the record hooks (tmh_write_needed), which also settles the writes whose
 * roots a backward freed (an optimizer step's), as on_write would. */
#include "saved.h"

/* t.grad_fn, or None where torch refuses to read it (saved_index.py's grad_fn): a view made under
 * no_grad whose base was then written raises on the read (nn.Embedding(padding_idx=...)'s weight[i]). */
static PyObject *grad_fn_or_none(PyObject *t) {
    PyObject *gf = tmh_tensor_attr(t, A_GRAD_FN);
    if (gf == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        gf = Py_NewRef(Py_None);
    }
    return gf;
}

/* A saved tensor still held by `node` (inplace.py's _inspect finds it the same way): 1 yes, 0 none
 * (backward freed them all), 2 a node saving nothing (on_write walks below it), -1 error. */
static int holds_saved(SavedIndex *self, PyObject *node) {
    PyObject *attrs = PyDict_GetItemWithError(self->saved_attrs, (PyObject *)Py_TYPE(node));
    if (attrs != NULL) {
        Py_INCREF(attrs);
    } else if (PyErr_Occurred() || (attrs = PyObject_CallOneArg(self->learn_attrs, (PyObject *)Py_TYPE(node))) == NULL) {
        return -1;
    }
    if (!PyTuple_Check(attrs) || PyTuple_GET_SIZE(attrs) == 0) {
        Py_DECREF(attrs);
        return 2;
    }
    int rc = 0;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(attrs) && rc == 0; k++) {
        PyObject *pair = PyTuple_GET_ITEM(attrs, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) < 1) { rc = 2; break; }
        PyObject *raw = PyObject_GetAttr(node, PyTuple_GET_ITEM(pair, 0));  /* getattr(node, a, None) */
        if (raw == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) { rc = -1; break; }
            PyErr_Clear();
            continue;
        }
        int many = PyList_Check(raw) || PyTuple_Check(raw);
        Py_ssize_t n = many ? PySequence_Size(raw) : 1;
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            PyObject *sv = many ? PySequence_GetItem(raw, i) : Py_NewRef(raw);
            if (sv == NULL) { rc = -1; break; }
            if (sv != Py_None) {
                PyObject *d = PyObject_GetAttr(sv, tmh_s_data);
                if (d == NULL) rc = -1;
                else { rc = d != Py_None; Py_DECREF(d); }
            }
            Py_DECREF(sv);
        }
        Py_DECREF(raw);
    }
    Py_DECREF(attrs);
    return rc;
}

/* on_write's walk when no root's node holds a saved tensor any more (a backward freed the graph:
 * an optimizer step writes parameters whose users' graphs are gone).  It would inspect each
 * distinct node at depth 0, mark its root freed at the root's version and count the nodes as
 * spent; done here: 1.  0: on_write must walk (a node holds something, or is not known here),
 * and nothing was changed.  -1 error.  `ri` indexes the roots in tids/objs, in on_write's order. */
static int settle_freed(SavedIndex *self, PyObject *t, PyObject **tids, PyObject **objs, Py_ssize_t *ri,
                        Py_ssize_t nr) {
    PyObject *key = PyObject_CallOneArg(self->storage_id, t);  /* none: on_write stops before the walk */
    if (key == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(key);
    PyObject **nodes = PyMem_Malloc(nr * (sizeof(PyObject *) + sizeof(Py_ssize_t)) + 1);
    if (nodes == NULL) { PyErr_NoMemory(); return -1; }
    Py_ssize_t *owner = (Py_ssize_t *)(nodes + nr);
    Py_ssize_t nn = 0;
    int rc = 1;
    for (Py_ssize_t k = 0; k < nr && rc == 1; k++) {
        PyObject *node = grad_fn_or_none(objs[ri[k]]);
        if (node == NULL) { rc = -1; break; }
        int skip = node == Py_None;
        for (Py_ssize_t j = 0; j < nn && !skip; j++) skip = nodes[j] == node;
        if (skip) { Py_DECREF(node); continue; }
        int held = holds_saved(self, node);
        if (held != 0) { Py_DECREF(node); rc = held < 0 ? -1 : 0; break; }
        nodes[nn] = node;
        owner[nn++] = ri[k];
    }
    for (Py_ssize_t j = 0; j < nn; j++) {
        if (rc == 1) {
            PyObject *version = tmh_tensor_attr(objs[owner[j]], A_VERSION);
            if (version == NULL || PyDict_SetItem(self->freed, tids[owner[j]], version) < 0) rc = -1;
            Py_XDECREF(version);
        }
        Py_DECREF(nodes[j]);
    }
    if (rc == 1) self->spent += nn;
    PyMem_Free(nodes);
    return rc;
}

/* roots (want_list) or whether there are any: a new list, Py_True (roots, not listed), Py_None
 * (nothing to inspect; new references), or NULL with an exception.  The gate asks without the list:
 * the candidates' liveness is kept in arrays, and nothing is allocated unless the storage's list
 * loses its dead. */
PyObject *tmh_saved_roots(SavedIndex *self, Py_ssize_t idx, PyObject *tid, PyObject *t, int want_list) {
    if (tmh_saved_catch_up(self, idx) < 0) return NULL;
    PyObject *info = tmh_saved_entry(self, tid);
    if (info == NULL) return NULL;
    PyObject *sid = PyTuple_GET_ITEM(info, 2);
    PyObject *cands = NULL;
    if (sid != Py_None) {
        cands = PyDict_GetItemWithError(self->by_storage, sid);
        if (cands == NULL && PyErr_Occurred()) return NULL;
        if (cands != NULL && !PyList_Check(cands)) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: SavedIndex.by_storage holds lists");
            return NULL;
        }
    }
    PyObject *gf = grad_fn_or_none(t);
    if (gf == NULL) return NULL;
    int own = gf != Py_None;
    Py_DECREF(gf);
    Py_ssize_t n = cands != NULL ? PyList_GET_SIZE(cands) : 0;
    if ((n == 0 && !own) || self->spent > self->budget) return Py_NewRef(Py_None);
    if (n == 0 && !want_list) return Py_NewRef(Py_True);

    Py_INCREF(cands);
    PyObject *result = NULL, *roots = NULL;
    PyObject *stack_tids[32], *stack_objs[32];  /* the live candidates (new references), in order */
    Py_ssize_t stack_ri[32];                    /* which of them are roots, in on_write's order */
    PyObject **tids = stack_tids, **objs = stack_objs;
    Py_ssize_t *ri = stack_ri;
    Py_ssize_t nl = 0;
    if (n > 32) {
        tids = PyMem_Malloc(2 * n * sizeof(PyObject *) + n * sizeof(Py_ssize_t));
        if (tids == NULL) { PyErr_NoMemory(); goto done; }
        objs = tids + n;
        ri = (Py_ssize_t *)(objs + n);
    }
    for (Py_ssize_t i = 0; i < n && i < PyList_GET_SIZE(cands); i++) {
        PyObject *c = PyList_GET_ITEM(cands, i), *obj;
        int a = tmh_saved_alive(self, c, &obj);
        if (a < 0) goto done;
        if (a == 1) {
            tids[nl] = Py_NewRef(c);
            objs[nl++] = obj;
        }
    }
    if (nl != n || nl > self->keep) {  /* cands[:] = the newest `keep` live ones */
        Py_ssize_t from = nl > self->keep ? nl - self->keep : 0;
        PyObject *kept = PyList_New(nl - from);
        if (kept == NULL) goto done;
        for (Py_ssize_t i = from; i < nl; i++) PyList_SET_ITEM(kept, i - from, Py_NewRef(tids[i]));
        int s = PyList_SetSlice(cands, 0, PyList_GET_SIZE(cands), kept);
        Py_DECREF(kept);
        if (s < 0) goto done;
    }
    if (want_list) {
        if ((roots = PyList_New(0)) == NULL) goto done;
        if (own) {
            PyObject *pair = PyTuple_Pack(2, tid, t);
            if (pair == NULL || PyList_Append(roots, pair) < 0) { Py_XDECREF(pair); goto done; }
            Py_DECREF(pair);
        }
    }
    Py_ssize_t found = own;
    Py_ssize_t stop = nl > self->max_roots ? nl - self->max_roots : 0;
    for (Py_ssize_t i = nl - 1; i >= stop; i--) {
        int other = PyObject_RichCompareBool(tids[i], tid, Py_NE);
        if (other < 0) goto done;
        if (!other) continue;
        PyObject *was = PyDict_GetItemWithError(self->freed, tids[i]);
        if (was == NULL && PyErr_Occurred()) goto done;
        int changed = 1;
        if (was != NULL) {
            PyObject *version = tmh_tensor_attr(objs[i], A_VERSION);
            if (version == NULL) goto done;
            changed = PyObject_RichCompareBool(was, version, Py_NE);
            Py_DECREF(version);
            if (changed < 0) goto done;
        }
        if (!changed) continue;
        ri[found - own] = i;
        found++;
        if (want_list) {
            PyObject *pair = PyTuple_Pack(2, tids[i], objs[i]);
            if (pair == NULL || PyList_Append(roots, pair) < 0) { Py_XDECREF(pair); goto done; }
            Py_DECREF(pair);
        }
    }
    if (!found || want_list) {
        result = Py_NewRef(!found ? Py_None : roots);
    } else if (own) {
        result = Py_NewRef(Py_True);
    } else {  /* candidates only: settled here when backward freed all their nodes */
        int settled = settle_freed(self, t, tids, objs, ri, found);
        if (settled < 0) goto done;
        result = Py_NewRef(settled ? Py_None : Py_True);
    }
done:
    for (Py_ssize_t i = 0; i < nl; i++) {
        Py_DECREF(tids[i]);
        Py_DECREF(objs[i]);
    }
    if (tids != stack_tids) PyMem_Free(tids);
    Py_DECREF(cands);
    Py_XDECREF(roots);
    return result;
}

/* Tracker.write_gate, as Tracker._add asks it: 1 the record hooks need in-place record `idx`,
 * 0 they do not, -1 error.  None: every one; False: none; a SavedIndex: its roots; else .needs(). */
int tmh_write_needed(PyObject *gate, Py_ssize_t idx, PyObject *tid, PyObject *t) {
    if (gate == Py_None) return 1;
    if (gate == Py_False) return 0;
    if (Py_TYPE(gate) == &tmh_SavedIndexType) {
        PyObject *roots = tmh_saved_roots((SavedIndex *)gate, idx, tid, t, 0);
        if (roots == NULL) return -1;
        int need = roots != Py_None;
        Py_DECREF(roots);
        return need;
    }
    PyObject *r = PyObject_CallMethod(gate, "needs", "nOO", idx, tid, t);
    if (r == NULL) return -1;
    int need = PyObject_IsTrue(r);
    Py_DECREF(r);
    return need;
}
