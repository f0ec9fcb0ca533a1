/* The tracker's own methods, compiled: CompiledTrackMode puts them on its tracker while the block
 * runs (Tracker.meta, ._new, ._add, BackwardRecords._grads_filled), so that what the Python path
 * still records (views, moves, backward's gradients and records, first sights) is filed without
 * Python bytecode.  Each does what its Python twin does (tests/test_engines.py holds them equal). */
#include "hot.h"

static int check_open(Hot *self) {
    if (self->tensors != NULL) return 0;
    PyErr_SetString(PyExc_RuntimeError, "tensormagic: the block's compiled recorder is closed");
    return -1;
}

/* Tracker.meta */
PyObject *tmh_meta(Hot *self, PyObject *t) {
    if (check_open(self) < 0) return NULL;
    return tmh_make_meta(self, t);
}

/* Tracker._new: register a tensor an op just made (its Ref and id, its snapshot, its storage's
 * name, its entry); (tid, meta), or NULL with an exception.  alias (a view): the storage keeps
 * the name it has.  backward's gradients are registered here: four a step on an MLP. */
PyObject *tmh_new_tensor(Hot *self, PyObject *t, int alias) {
    if (check_open(self) < 0) return NULL;
    PyObject *key = NULL, *ref = NULL, *tid = NULL, *meta = NULL, *skey = NULL, *sid = NULL;
    PyObject *idx = NULL, *entry = NULL, *out = NULL, *known;
    if ((key = PyLong_FromVoidPtr(t)) == NULL) goto done;
    int k = tmh_known_at(self, t, key, &known);  /* identity.assign_ref: its Ref, or a new one */
    if (k < 0) goto done;
    if (k == 1) {
        ref = Py_NewRef(known);
    } else {
        if ((ref = PyObject_CallOneArg(self->ref_type, t)) == NULL) goto done;
        untrack(ref);
        if (PyDict_SetItem(self->ids, key, ref) < 0) goto done;
        PyObject *fresh = PyIter_Next(self->counter);
        if (fresh == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "tensormagic: id counter ended");
            goto done;
        }
        int rc = tmh_set_ref_tid(self, ref, fresh);
        Py_DECREF(fresh);
        if (rc < 0) goto done;
    }
    if ((tid = tmh_ref_tid(self, ref)) == NULL || (meta = tmh_make_meta(self, t)) == NULL) goto done;
    if ((skey = PyObject_CallOneArg(self->storage_id, t)) == NULL) {  /* Tracker._storage */
        if (!PyErr_ExceptionMatches(self->no_storage)) goto done;
        PyErr_Clear();
        sid = Py_NewRef(Py_None);
    } else {
        if (alias && (sid = Py_XNewRef(PyDict_GetItemWithError(self->sid_of_key, skey))) == NULL && PyErr_Occurred())
            goto done;
        if (sid == NULL) {
            if (PyDict_SetItem(self->sid_of_key, skey, tid) < 0) goto done;
            sid = Py_NewRef(tid);
        }
    }
    if ((idx = PyLong_FromSsize_t(PyList_GET_SIZE(self->raw))) == NULL) goto done;
    if ((entry = PyTuple_Pack(4, key, meta, sid, idx)) == NULL) goto done;
    untrack(entry);
    if (PyDict_SetItem(self->tensors, tid, entry) < 0) goto done;
    out = PyTuple_Pack(2, tid, meta);
done:
    Py_XDECREF(key);
    Py_XDECREF(ref);
    Py_XDECREF(tid);
    Py_XDECREF(meta);
    Py_XDECREF(skey);
    Py_XDECREF(sid);
    Py_XDECREF(idx);
    Py_XDECREF(entry);
    return out;
}

/* Tracker._add itself (the class's function, not this object): folding past fast_cap, stats, an
 * op name not cached yet, anything unusual */
static PyObject *python_add(Hot *self, PyObject *const *a, Py_ssize_t n) {
    PyObject *fn = PyObject_GetAttrString((PyObject *)Py_TYPE(self->tracker), "_add");
    if (fn == NULL) return NULL;
    PyObject *argv[8] = {self->tracker};
    for (Py_ssize_t i = 0; i < n; i++) argv[i + 1] = a[i];
    PyObject *r = PyObject_Vectorcall(fn, argv, n + 1, NULL);
    Py_DECREF(fn);
    return r;
}

/* Tracker._add: append a record the Python path made (a view, a move, backward's records, a first
 * sight) and call the record hooks, as Tracker._add does (the same quiet creates and write gate). */
PyObject *tmh_add(Hot *self, PyObject *const *a, Py_ssize_t n) {
    if (check_open(self) < 0) return NULL;
    if (n != 7) {
        PyErr_SetString(PyExc_TypeError, "add(kind, func, tid, meta, where, extra, objs)");
        return NULL;
    }
    PyObject *kind = a[0], *func = a[1], *tid = a[2], *meta = a[3], *where = a[4], *extra = a[5], *objs = a[6];
    /* compiled.INSIDE_COMPILED (``...``): a compiled graph's torch call is its compiled call's event,
     * and a tensor first seen there (checkpoint's recomputation) is no record of its own */
    if (where == Py_Ellipsis) Py_RETURN_NONE;
    Py_ssize_t idx = PyList_GET_SIZE(self->raw);
    PyObject *name = func == Py_None ? Py_None : PyDict_GetItemWithError(self->names, func);
    if (name == NULL && PyErr_Occurred()) return NULL;
    if (idx >= self->fast_cap || name == NULL || !PyTuple_CheckExact(objs) || PyTuple_GET_SIZE(objs) != 1 ||
        !PyTuple_Check(meta) || PyTuple_GET_SIZE(meta) < 2 || !tmh_plain(PyTuple_GET_ITEM(objs, 0)))
        return python_add(self, a, n);  /* a subclass: its hooks run without its code (describe) */
    PyObject *o = PyTuple_GET_ITEM(objs, 0);
    PyObject *module = NULL, *lasti = NULL, *rec = NULL, *result = NULL;
    if ((module = tmh_get(self->current, self->modules, tmh_s_current)) == NULL) goto done;
    if ((lasti = tmh_get(self->lasti, self->lines, tmh_s_lasti)) == NULL) goto done;
    if ((rec = PyTuple_Pack(8, kind, name, tid, meta, where, module, lasti, extra)) == NULL) goto done;
    long long t = tmh_now_ns(self);
    if ((t == -1 && PyErr_Occurred()) || tmh_append_record(self, rec, t) < 0) goto done;
    if (PyList_GET_SIZE(self->record_hooks) > 0) {  /* HOOKED_KINDS */
        int need = 0;
        if (tmh_same_str(kind, tmh_s_create)) {  /* quiet: what the hooks said they need not see */
            PyObject *ids = extra;  /* create_parts: (in_ids, origin, note), or the in_ids */
            if (PyTuple_Check(extra) && PyTuple_GET_SIZE(extra) > 0 && PyTuple_CheckExact(PyTuple_GET_ITEM(extra, 0)))
                ids = PyTuple_GET_ITEM(extra, 0);
            int quiet = tmh_quiet(self, name, ids, meta);
            if (quiet < 0) goto done;
            need = !quiet;
        } else if (tmh_same_str(kind, tmh_s_inplace)) {
            if ((need = tmh_write_needed(self->write_gate, idx, tid, o)) < 0) goto done;
        } else {
            need = tmh_same_str(kind, tmh_s_view) || tmh_same_str(kind, tmh_s_move);
        }
        if (need && tmh_call_hooks(self, idx, o) < 0) goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(module);
    Py_XDECREF(lasti);
    Py_XDECREF(rec);
    return result;
}

/* describe.flag: a boolean attribute, 0 when it cannot be read; -1 only for an exception that is
 * not an Exception (KeyboardInterrupt) */
static int read_flag(PyObject *t, int which) {
    PyObject *v = tmh_tensor_attr(t, which);
    int yes = v == NULL ? -1 : PyObject_IsTrue(v);
    Py_XDECREF(v);
    if (yes < 0) return tmh_clear_exception() ? 0 : -1;
    return yes;
}

/* Tracker.grad_extra(ltid), compiled: the extra of a gradient's "seen" create record, one shared
 * tuple per leaf in the tracker's _grad_extras (a loop fills each leaf's gradient once a step).
 * Where _grad_extras is not a plain dict, the method itself. */
static PyObject *grad_extra(Hot *self, PyObject *ltid, PyObject *s_method) {
    static PyObject *s_table, *s_seen, *s_grad;
    if (s_table == NULL && ((s_table = PyUnicode_InternFromString("_grad_extras")) == NULL ||
                            (s_seen = PyUnicode_InternFromString("seen")) == NULL ||
                            (s_grad = PyUnicode_InternFromString("grad")) == NULL))
        return NULL;
    PyObject *table = PyObject_GetAttr(self->tracker, s_table);
    if (table == NULL) return NULL;
    PyObject *extra = NULL, *ids = NULL;
    if (!PyDict_CheckExact(table)) {
        extra = PyObject_CallMethodOneArg(self->tracker, s_method, ltid);
    } else if ((extra = Py_XNewRef(PyDict_GetItemWithError(table, ltid))) == NULL && !PyErr_Occurred()) {
        if ((ids = PyTuple_Pack(1, ltid)) != NULL && (extra = PyTuple_Pack(3, ids, s_seen, s_grad)) != NULL &&
            PyDict_SetItem(table, ltid, extra) < 0)
            Py_CLEAR(extra);
    }
    Py_XDECREF(ids);
    Py_DECREF(table);
    return extra;
}

/* BackwardRecords._grads_filled, compiled: grads_filled(func, leaves, prev_nonzero, where) -> the
 * backward record's entries, with each new gradient's create record made on the way.  A leaf
 * the block has not seen yet, and each gradient's record extra, go through the tracker's own
 * see() and grad_extra(). */
PyObject *tmh_grads_filled(Hot *self, PyObject *const *a, Py_ssize_t n) {
    if (check_open(self) < 0) return NULL;
    if (n != 4 || !PyList_Check(a[1]) || !PyList_Check(a[2])) {
        PyErr_SetString(PyExc_TypeError, "grads_filled(func, leaves: list, prev_nonzero: list, where)");
        return NULL;
    }
    static PyObject *s_see, *s_grad_extra, *s_preexisting;
    if (s_see == NULL && ((s_preexisting = PyUnicode_InternFromString("preexisting")) == NULL ||
                          (s_see = PyUnicode_InternFromString("see")) == NULL ||
                           (s_grad_extra = PyUnicode_InternFromString("grad_extra")) == NULL))
        return NULL;
    PyObject *func = a[0], *leaves = a[1], *prev = a[2], *where = a[3];
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(leaves) && i < PyList_GET_SIZE(prev); i++) {
        PyObject *lf = Py_NewRef(PyList_GET_ITEM(leaves, i)), *was = Py_NewRef(PyList_GET_ITEM(prev, i));
        PyObject *g = NULL, *ltid = NULL, *gtid = NULL, *made = NULL, *extra = NULL, *objs = NULL;
        PyObject *r = NULL, *lmeta = NULL, *entry = NULL;
        int ok = 0;
        /* _held_grad: only a leaf or a tensor that retains its grad has one; a read that fails
         * (describe.flag, describe.attr) is "no" */
        int held = read_flag(lf, A_IS_LEAF);
        if (held == 0) held = read_flag(lf, A_RETAINS_GRAD);
        if (held < 0) goto next;
        if (held == 1 && (g = tmh_tensor_attr(lf, A_GRAD)) == NULL) {
            if (!tmh_clear_exception()) goto next;
            g = Py_NewRef(Py_None);
        }
        if (held == 0 || g == Py_None) { ok = 1; goto next; }
        if ((ltid = tmh_registered_tid(self, lf)) == NULL) {  /* first sight: Tracker.see records it */
            if (PyErr_Occurred() || (ltid = PyObject_CallMethodObjArgs(self->tracker, s_see, lf, where, NULL)) == NULL)
                goto next;
        }
        PyObject *gref;  /* identity.lookup(g), and whether this block registered it */
        int k = tmh_known_tid(self, g, &gref);
        if (k < 0) goto next;
        if (k == 1 && (gtid = tmh_ref_tid(self, gref)) == NULL) goto next;
        int known = gtid != NULL ? PyDict_Contains(self->tensors, gtid) : 0;
        if (known < 0) goto next;
        if (!known && gtid != NULL) {
            /* a gradient left from before the block (an earlier cell's backward): seen, not new */
            PyObject *pre = PyObject_GetAttr(self->tracker, s_preexisting);
            int before = pre == NULL ? -1 : PySet_Contains(pre, gtid);
            Py_XDECREF(pre);
            if (before < 0) goto next;
            if (before) {
                Py_CLEAR(gtid);
                if ((gtid = PyObject_CallMethodObjArgs(self->tracker, s_see, g, where, NULL)) == NULL) goto next;
                known = 1;
            }
        }
        if (!known) {
            Py_CLEAR(gtid);
            if ((made = tmh_new_tensor(self, g, 0)) == NULL) goto next;
            gtid = Py_NewRef(PyTuple_GET_ITEM(made, 0));
            if ((extra = grad_extra(self, ltid, s_grad_extra)) == NULL) goto next;
            if ((objs = PyTuple_Pack(1, g)) == NULL) goto next;
            PyObject *argv[7] = {tmh_s_create, func, gtid, PyTuple_GET_ITEM(made, 1), where, extra, objs};
            if ((r = tmh_add(self, argv, 7)) == NULL) goto next;
        }
        if ((lmeta = tmh_make_meta(self, lf)) == NULL) goto next;
        int acc = PyObject_IsTrue(was);
        if (acc < 0) goto next;
        if ((entry = PyTuple_Pack(4, ltid, lmeta, acc ? Py_True : Py_False, gtid)) == NULL) goto next;
        ok = PyList_Append(out, entry) == 0;
    next:
        Py_DECREF(lf);
        Py_DECREF(was);
        Py_XDECREF(g);
        Py_XDECREF(ltid);
        Py_XDECREF(gtid);
        Py_XDECREF(made);
        Py_XDECREF(extra);
        Py_XDECREF(objs);
        Py_XDECREF(r);
        Py_XDECREF(lmeta);
        Py_XDECREF(entry);
        if (!ok) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}


/* The node of a next_functions entry, unpacked as `for n, _ in ...` does: borrowed from the
 * entry's sequence, which `*hold` keeps; NULL with an exception. */
static PyObject *next_node(PyObject *pair, PyObject **hold) {
    PyObject *seq = PySequence_Fast(pair, "cannot unpack non-iterable object");  /* a tuple: itself */
    if (seq == NULL) return NULL;
    if (PySequence_Fast_GET_SIZE(seq) != 2) {
        PyErr_Format(PyExc_ValueError, "expected 2 values to unpack, got %zd", PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return NULL;
    }
    *hold = seq;
    return PySequence_Fast_GET_ITEM(seq, 0);
}

/* t.grad_fn as autograd._grad_fn reads it: None for a non-tensor or where the read fails (an
 * Exception); NULL only for anything else (KeyboardInterrupt) */
static PyObject *root_grad_fn(PyObject *t) {
    if (!PyObject_TypeCheck(t, tmh_getset_type)) return Py_NewRef(Py_None);
    PyObject *gf = tmh_tensor_attr(t, A_GRAD_FN);
    if (gf == NULL && tmh_clear_exception()) gf = Py_NewRef(Py_None);
    return gf;
}

/* autograd.leaves_of, compiled: leaves_of(has_variable, roots) -> the leaf tensors whose .grad a
 * backward from `roots` (a list) fills, in the Python walk's order (the same stack, popped from
 * its end).  has_variable is autograd's cache: node type -> whether it has .variable.  Runs at
 * every backward; an MLP's graph has about a dozen nodes. */
PyObject *tmh_leaves_of(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyDict_Check(a[0]) || !PyList_Check(a[1])) {
        PyErr_SetString(PyExc_TypeError, "leaves_of(has_variable: dict, roots: list)");
        return NULL;
    }
    if (tmh_getset_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tensormagic: leaves_of before any compiled recorder was made");
        return NULL;
    }
    static PyObject *s_variable, *s_next_functions;
    if (s_variable == NULL && ((s_variable = PyUnicode_InternFromString("variable")) == NULL ||
                               (s_next_functions = PyUnicode_InternFromString("next_functions")) == NULL))
        return NULL;
    PyObject *has_variable = a[0], *roots = a[1];
    PyObject *out = PyList_New(0), *seen = PySet_New(NULL), *keep = PyList_New(0), *stack = PyList_New(0);
    PyObject *result = NULL;
    if (out == NULL || seen == NULL || keep == NULL || stack == NULL) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(roots); i++) {
        PyObject *gf = root_grad_fn(PyList_GET_ITEM(roots, i));
        if (gf == NULL) goto done;
        int rc = PyList_Append(stack, gf);
        Py_DECREF(gf);
        if (rc < 0) goto done;
    }
    while (PyList_GET_SIZE(stack) > 0) {
        Py_ssize_t top = PyList_GET_SIZE(stack) - 1;
        PyObject *node = Py_NewRef(PyList_GET_ITEM(stack, top));
        if (PyList_SetSlice(stack, top, top + 1, NULL) < 0) { Py_DECREF(node); goto done; }
        int ok = 0;
        PyObject *key = NULL, *has = NULL, *var = NULL, *nexts = NULL, *seq = NULL;
        if (node == Py_None) { ok = 1; goto next; }
        if ((key = PyLong_FromVoidPtr(node)) == NULL) goto next;
        int s = PySet_Contains(seen, key);
        if (s != 0) { ok = s > 0; goto next; }
        if (PySet_Add(seen, key) < 0 || PyList_Append(keep, node) < 0) goto next;
        PyObject *kind = (PyObject *)Py_TYPE(node);
        has = Py_XNewRef(PyDict_GetItemWithError(has_variable, kind));
        if (has == NULL) {  /* only AccumulateGrad nodes have one (hasattr, cached per type) */
            if (PyErr_Occurred()) goto next;
            PyObject *probe = PyObject_GetAttr(node, s_variable);  /* hasattr: only AttributeError is "no" */
            if (probe == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError)) goto next;
            int h = probe != NULL;
            if (probe == NULL) PyErr_Clear();
            Py_XDECREF(probe);
            has = Py_NewRef(h ? Py_True : Py_False);
            if (PyDict_SetItem(has_variable, kind, has) < 0) goto next;
        }
        int yes = PyObject_IsTrue(has);
        if (yes < 0) goto next;
        if (yes) {
            if ((var = PyObject_GetAttr(node, s_variable)) == NULL) goto next;
            if (var != Py_None && PyList_Append(out, var) < 0) goto next;
        }
        if ((nexts = PyObject_GetAttr(node, s_next_functions)) == NULL) goto next;
        if ((seq = PySequence_Fast(nexts, "next_functions is not iterable")) == NULL) goto next;
        Py_ssize_t k = 0;
        for (; k < PySequence_Fast_GET_SIZE(seq); k++) {
            PyObject *hold = NULL;
            PyObject *child = next_node(PySequence_Fast_GET_ITEM(seq, k), &hold);
            int rc = child == NULL ? -1 : child == Py_None ? 0 : PyList_Append(stack, child);
            Py_XDECREF(hold);
            if (rc < 0) break;
        }
        ok = k == PySequence_Fast_GET_SIZE(seq);
    next:
        Py_DECREF(node);
        Py_XDECREF(key);
        Py_XDECREF(has);
        Py_XDECREF(var);
        Py_XDECREF(nexts);
        Py_XDECREF(seq);
        if (!ok) goto done;
    }
    /* a leaf given as root (out = x; out.backward(...)) fills its own grad */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(roots); i++) {
        PyObject *r = PyList_GET_ITEM(roots, i);
        if (!PyObject_TypeCheck(r, tmh_getset_type)) continue;
        Py_INCREF(r);
        PyObject *gf = root_grad_fn(r);
        int want = gf == NULL ? -1 : gf == Py_None ? read_flag(r, A_REQUIRES_GRAD) : 0;
        Py_XDECREF(gf);
        int rc = want > 0 ? PyList_Append(out, r) : want;
        Py_DECREF(r);
        if (rc < 0) goto done;
    }
    result = Py_NewRef(out);
done:
    Py_XDECREF(out);
    Py_XDECREF(seen);
    Py_XDECREF(keep);
    Py_XDECREF(stack);
    return result;
}

/* backward._held_grad over a list: each tensor's .grad where it can have one (a leaf, or a tensor
 * that retains its grad), else None; a read that fails (describe.flag, describe.attr) is None.
 * held_grads(leaves) -> list, read before each backward runs. */
PyObject *tmh_held_grads(PyObject *Py_UNUSED(mod), PyObject *leaves) {
    if (!PyList_Check(leaves)) {
        PyErr_SetString(PyExc_TypeError, "held_grads(leaves: list)");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(leaves); i++) {
        PyObject *lf = Py_NewRef(PyList_GET_ITEM(leaves, i)), *g = NULL;
        int held = read_flag(lf, A_IS_LEAF);
        if (held == 0) held = read_flag(lf, A_RETAINS_GRAD);
        if (held == 1 && (g = tmh_tensor_attr(lf, A_GRAD)) == NULL && tmh_clear_exception()) g = Py_NewRef(Py_None);
        if (held == 0) g = Py_NewRef(Py_None);
        Py_DECREF(lf);
        int rc = g == NULL ? -1 : PyList_Append(out, g);
        Py_XDECREF(g);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}
