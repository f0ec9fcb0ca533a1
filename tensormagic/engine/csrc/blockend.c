/* The block's end, compiled: passes over a block's raw records and tables that every tracked cell
 * pays for (a %trackgrad on cell runs each once), each the same loop as its Python twin:
 *
 *   kind_counts    build.Pending._count's kinds and first-seen creates
 *   partial_metas  snapshot._unreadable's look for snapshots describe.partial marks
 *   history_runs   history.remember's pass: the records of the live tensors, a line's repeats as runs
 *   made_before    snapshot.take_snapshot's provenance of the tensors made before the block
 *   dead_keys      identity.prune's dead entries, and the ids of the live ones
 *   grad_names     snapshot._grad_names: each gradient a backward filled in named <leaf>.grad
 *   user_names     naming._user_names: a namespace's names that are not "_…" nor IPython's own
 *   freeze_histories  take_snapshot's copy of each live tensor's history (History.freeze)
 *
 * (autograd.capture, compiled, is capture.c.)
 *
 * A Python loop pays ~1 µs a record or table entry here; these pay tens of ns.  Any value of an
 * unexpected type goes to the Python function the caller passes, or raises a TypeError (the
 * caller's Python twin would fail on it as well). */
#include "hot.h"

static PyObject *s_seen, *s_grad, *s_question, *s_one, *s_two;

static int strings(void) {
    if (s_two != NULL) return 0;
    if ((s_seen = PyUnicode_InternFromString("seen")) == NULL || (s_grad = PyUnicode_InternFromString("grad")) == NULL ||
        (s_question = PyUnicode_InternFromString("?")) == NULL || (s_one = PyLong_FromLong(1)) == NULL ||
        (s_two = PyLong_FromLong(2)) == NULL)
        return -1;
    return 0;
}

static PyObject *record_at(PyObject *raw, Py_ssize_t i) {
    PyObject *r = PyList_GET_ITEM(raw, i);
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) < 8) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected raw record");
        return NULL;
    }
    return r;
}

/* build._first_seen_extra: origin "seen" and a note other than "grad" (create_parts's layout);
 * anything else than a tuple of three with a tuple first goes to the Python function. */
static int first_seen(PyObject *extra, PyObject *fallback) {
    if (PyTuple_Check(extra)) {
        Py_ssize_t n = PyTuple_GET_SIZE(extra);
        if (n == 0 || !PyTuple_CheckExact(PyTuple_GET_ITEM(extra, 0))) return 0;  /* an op's input ids */
        if (n == 3) {
            int seen = PyObject_RichCompareBool(PyTuple_GET_ITEM(extra, 1), s_seen, Py_EQ);
            if (seen <= 0) return seen;
            return PyObject_RichCompareBool(PyTuple_GET_ITEM(extra, 2), s_grad, Py_NE);
        }
    }
    PyObject *got = PyObject_CallOneArg(fallback, extra);
    if (got == NULL) return -1;
    int t = PyObject_IsTrue(got);
    Py_DECREF(got);
    return t;
}

/* kind_counts(raw, first_seen) -> (counts, seen): each kind's records, in first-met order (as
 * Counter counts them), and how many creates are first sightings. */
PyObject *tmh_kind_counts(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyList_Check(a[0])) {
        PyErr_SetString(PyExc_TypeError, "kind_counts(raw: list, first_seen)");
        return NULL;
    }
    if (strings() < 0) return NULL;
    PyObject *raw = a[0], *counts = PyDict_New();
    if (counts == NULL) return NULL;
    Py_ssize_t seen = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *r = record_at(raw, i);
        if (r == NULL) goto fail;
        Py_INCREF(r);
        PyObject *kind = PyTuple_GET_ITEM(r, 0);
        PyObject *old = PyDict_GetItemWithError(counts, kind);
        PyObject *now = NULL;
        if (old == NULL && PyErr_Occurred()) { Py_DECREF(r); goto fail; }
        now = old == NULL ? PyLong_FromLong(1) : PyNumber_Add(old, s_one);
        int rc = now == NULL ? -1 : PyDict_SetItem(counts, kind, now);
        Py_XDECREF(now);
        if (rc == 0 && PyUnicode_Check(kind) && PyUnicode_Compare(kind, tmh_s_create) == 0) {
            rc = first_seen(PyTuple_GET_ITEM(r, 7), a[1]);
            if (rc > 0) seen++;
        }
        Py_DECREF(r);
        if (rc < 0) goto fail;
    }
    return Py_BuildValue("(Nn)", counts, seen);
fail:
    Py_DECREF(counts);
    return NULL;
}

/* describe.partial: version NO_VERSION, "?" for dtype, device or grad_fn, or a None size */
static int partial(PyObject *m, PyObject *no_version, PyObject *fallback) {
    if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) < 6) {
        PyObject *got = PyObject_CallOneArg(fallback, m);
        if (got == NULL) return -1;
        int t = PyObject_IsTrue(got);
        Py_DECREF(got);
        return t;
    }
    int rc = PyObject_RichCompareBool(PyTuple_GET_ITEM(m, 5), no_version, Py_EQ);
    static const int marked[] = {1, 2, 4};
    for (int k = 0; rc == 0 && k < 3; k++) {
        PyObject *v = PyTuple_GET_ITEM(m, marked[k]);
        /* None, or a type that compares as object does (torch.dtype): == "?" is identity, false */
        if (v == Py_None || Py_TYPE(v)->tp_richcompare == PyBaseObject_Type.tp_richcompare) continue;
        rc = PyObject_RichCompareBool(v, s_question, Py_EQ);
    }
    if (rc == 0) rc = PySequence_Contains(PyTuple_GET_ITEM(m, 0), Py_None);
    return rc;
}

/* partial_metas(metas, no_version, partial) -> the set of snapshots describe.partial marks */
PyObject *tmh_partial_metas(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 3 || !PyDict_Check(a[0])) {
        PyErr_SetString(PyExc_TypeError, "partial_metas(metas: dict, no_version, partial)");
        return NULL;
    }
    if (strings() < 0) return NULL;
    PyObject *out = PySet_New(NULL);
    if (out == NULL) return NULL;
    PyObject *keys = PyDict_Keys(a[0]);  /* a fallback could run code: walk a copy */
    if (keys == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *m = PyList_GET_ITEM(keys, i);
        int rc = partial(m, a[1], a[2]);
        if (rc > 0) rc = PySet_Add(out, m);
        if (rc < 0) { Py_DECREF(keys); goto fail; }
    }
    Py_DECREF(keys);
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* history_runs(raw, wanted, verbs, moved, made) -> [[tid, where, func, verb, n], ...]: each run of
 * a live tensor's records with one (where, func, verb), in the order history.remember meets the
 * runs' first records (records of other tensors may come between a run's records). */
PyObject *tmh_history_runs(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 5 || !PyList_Check(a[0]) || !PyAnySet_Check(a[1]) || !PyDict_Check(a[2])) {
        PyErr_SetString(PyExc_TypeError, "history_runs(raw: list, wanted: set, verbs: dict, moved, made)");
        return NULL;
    }
    if (strings() < 0) return NULL;
    PyObject *raw = a[0], *wanted = a[1], *verbs = a[2];
    PyObject *out = PyList_New(0), *last = PyDict_New();  /* last: tid -> its last run */
    if (out == NULL || last == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *r = record_at(raw, i);
        if (r == NULL) goto fail;
        PyObject *tid = PyTuple_GET_ITEM(r, 2), *kind = PyTuple_GET_ITEM(r, 0);
        int rc = PySet_Contains(wanted, tid);
        if (rc <= 0) { if (rc < 0) goto fail; continue; }
        PyObject *verb = PyDict_GetItemWithError(verbs, kind);
        if (verb == NULL) { if (PyErr_Occurred()) goto fail; continue; }
        Py_INCREF(r);
        Py_INCREF(verb);
        rc = PyObject_RichCompareBool(kind, tmh_s_move, Py_EQ);
        if (rc > 0) {  /* in place (Module.to, copy_) it moves the tensor, else it makes a new one */
            PyObject *inplace = PyObject_GetItem(PyTuple_GET_ITEM(r, 7), s_two);  /* r[EXTRA][2] */
            rc = inplace == NULL ? -1 : PyObject_IsTrue(inplace);
            Py_XDECREF(inplace);
            if (rc >= 0) Py_SETREF(verb, Py_NewRef(rc ? a[3] : a[4]));
        }
        PyObject *got = rc < 0 ? NULL : PyDict_GetItemWithError(last, tid);  /* the tensor's last run */
        if (rc < 0 || (got == NULL && PyErr_Occurred())) { Py_DECREF(verb); Py_DECREF(r); goto fail; }
        /* (where, func, verb) == the run's: the tuple comparison, item by item (identity first) */
        PyObject *mine[3] = {PyTuple_GET_ITEM(r, 4), PyTuple_GET_ITEM(r, 1), verb};
        rc = got != NULL;
        for (int k = 0; rc == 1 && k < 3; k++) rc = PyObject_RichCompareBool(PyList_GET_ITEM(got, k + 1), mine[k], Py_EQ);
        if (rc > 0) {  /* the same line again: one more in its run */
            PyObject *more = PyNumber_Add(PyList_GET_ITEM(got, 4), s_one);
            rc = more == NULL ? -1 : PyList_SetItem(got, 4, more);
        } else if (rc == 0) {
            PyObject *run = Py_BuildValue("[OOOOi]", tid, mine[0], mine[1], verb, 1);
            rc = run == NULL || PyList_Append(out, run) < 0 || PyDict_SetItem(last, tid, run) < 0 ? -1 : 0;
            Py_XDECREF(run);
        }
        Py_DECREF(verb);
        Py_DECREF(r);
        if (rc < 0) goto fail;
    }
    Py_DECREF(last);
    return out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(last);
    return NULL;
}

/* made_before(tensors, provenance) -> {tid: provenance.get(tid)} for the entries no record of
 * the block made (first raw index None) */
PyObject *tmh_made_before(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyDict_Check(a[0]) || !PyDict_Check(a[1])) {
        PyErr_SetString(PyExc_TypeError, "made_before(tensors: dict, provenance: dict)");
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *tid, *info;
    while (PyDict_Next(a[0], &pos, &tid, &info)) {
        if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 4) {
            PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected tensor entry");
            goto fail;
        }
        if (PyTuple_GET_ITEM(info, 3) != Py_None) continue;
        PyObject *made = PyDict_GetItemWithError(a[1], tid);
        if (made == NULL && PyErr_Occurred()) goto fail;
        if (PyDict_SetItem(out, tid, made != NULL ? made : Py_None) < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* dead_keys(ids) -> [key of each entry whose weak reference died]; live_tids(ids) -> {ref.tid} */
PyObject *tmh_dead_keys(PyObject *Py_UNUSED(mod), PyObject *ids) {
    if (!PyDict_Check(ids)) {
        PyErr_SetString(PyExc_TypeError, "dead_keys(ids: dict)");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *ref;
    while (PyDict_Next(ids, &pos, &key, &ref)) {
        PyObject *obj = NULL;
        int alive;
        if (PyWeakref_CheckRef(ref) && Py_TYPE(ref)->tp_call == _PyWeakref_RefType.tp_call) {
            alive = tmh_ref_get(ref, &obj);
        } else {  /* anything else is called, as ``ref()`` */
            obj = PyObject_CallNoArgs(ref);
            alive = obj == NULL ? -1 : obj != Py_None;
            if (alive == 0) Py_CLEAR(obj);
        }
        Py_XDECREF(obj);
        if (alive < 0 || (alive == 0 && PyList_Append(out, key) < 0)) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

PyObject *tmh_live_tids(PyObject *Py_UNUSED(mod), PyObject *ids) {
    if (!PyDict_Check(ids)) {
        PyErr_SetString(PyExc_TypeError, "live_tids(ids: dict)");
        return NULL;
    }
    PyObject *out = PySet_New(NULL);
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *ref;
    while (PyDict_Next(ids, &pos, &key, &ref)) {
        PyObject *tid = PyObject_GetAttr(ref, tmh_s_tid);
        int rc = tid == NULL ? -1 : PySet_Add(out, tid);
        Py_XDECREF(tid);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* `<leaf>.grad` for f"{leaf[0]}.grad" */
static PyObject *grad_name(PyObject *leaf) {
    PyObject *first = PySequence_GetItem(leaf, 0);
    if (first == NULL) return NULL;
    PyObject *text = PyUnicode_CheckExact(first) ? Py_NewRef(first) : PyObject_Format(first, NULL);
    Py_DECREF(first);
    if (text == NULL) return NULL;
    static PyObject *s_dot_grad;
    if (s_dot_grad == NULL && (s_dot_grad = PyUnicode_InternFromString(".grad")) == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *out = PyUnicode_Concat(text, s_dot_grad);
    Py_DECREF(text);
    return out;
}

/* grad_names(raw, backwards, names, autograd_grad): snapshot._grad_names, compiled: each
 * gradient a backward (not autograd.grad) filled in is named `<leaf>.grad` after its leaf's first
 * name, unless it has a name already. */
PyObject *tmh_grad_names(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 4 || !PyList_Check(a[0]) || !PyList_Check(a[1]) || !PyDict_Check(a[2])) {
        PyErr_SetString(PyExc_TypeError, "grad_names(raw: list, backwards: list, names: dict, autograd_grad)");
        return NULL;
    }
    PyObject *raw = a[0], *backwards = a[1], *names = a[2];
    for (Py_ssize_t b = 0; b < PyList_GET_SIZE(backwards); b++) {
        Py_ssize_t idx = PyLong_AsSsize_t(PyList_GET_ITEM(backwards, b));
        if (idx == -1 && PyErr_Occurred()) return NULL;
        if (idx < 0 || idx >= PyList_GET_SIZE(raw)) continue;  /* the twin skips idx >= len(raw); none is < 0 */
        PyObject *r = record_at(raw, idx);
        if (r == NULL) return NULL;
        int rc = PyObject_RichCompareBool(PyTuple_GET_ITEM(r, 1), a[3], Py_EQ);
        if (rc != 0) { if (rc < 0) return NULL; continue; }
        Py_INCREF(r);
        PyObject *extra = PyTuple_GET_ITEM(r, 7);
        if (!PyTuple_Check(extra)) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected backward record");
            return NULL;
        }
        for (Py_ssize_t g = 0; rc == 0 && g < PyTuple_GET_SIZE(extra); g++) {
            PyObject *one = PyTuple_GET_ITEM(extra, g);
            if (!PyTuple_Check(one) || PyTuple_GET_SIZE(one) != 4) {
                PyErr_SetString(PyExc_ValueError, "tensormagic: a backward's gradient is not (leaf, meta, accumulated, grad)");
                rc = -1;
                break;
            }
            PyObject *gtid = PyTuple_GET_ITEM(one, 3);
            PyObject *leaf = PyDict_GetItemWithError(names, PyTuple_GET_ITEM(one, 0));
            if (leaf == NULL) { rc = PyErr_Occurred() ? -1 : 0; continue; }
            Py_INCREF(leaf);
            rc = PyObject_IsTrue(leaf);
            if (rc > 0) rc = PyDict_Contains(names, gtid) == 0 ? 1 : (PyErr_Occurred() ? -1 : 0);
            if (rc > 0) {
                PyObject *name = grad_name(leaf);
                PyObject *one_name = name == NULL ? NULL : PyTuple_Pack(1, name);
                rc = one_name == NULL || PyDict_SetItem(names, gtid, one_name) < 0 ? -1 : 0;
                Py_XDECREF(one_name);
                Py_XDECREF(name);
            }
            Py_DECREF(leaf);
        }
        Py_DECREF(r);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* user_names(items, skip) -> [(k, v), ...] of naming._user_names for (key, value) pairs whose keys
 * are all exactly str: not "_…" and not in `skip`; None where a key is of another type (the
 * caller's comprehension then runs, with str.startswith's own behaviour and error). */
PyObject *tmh_user_names(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 2 || !PyList_Check(a[0]) || !PyAnySet_Check(a[1])) {
        PyErr_SetString(PyExc_TypeError, "user_names(items: list, skip: set)");
        return NULL;
    }
    PyObject *items = a[0];
    Py_ssize_t size = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(kv) || PyTuple_GET_SIZE(kv) != 2 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(kv, 0)))
            Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i), *k = PyTuple_GET_ITEM(kv, 0);
        if (PyUnicode_GET_LENGTH(k) > 0 && PyUnicode_READ_CHAR(k, 0) == '_') continue;
        int skip = PySet_Contains(a[1], k);
        if (skip < 0 || (skip == 0 && PyList_Append(out, kv) < 0)) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* freeze_histories(final, histories, history_type) -> {tid: history.freeze()} for the tensors of
 * `final` that have a history: History.freeze's tuples made here for a History itself */
PyObject *tmh_freeze_histories(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 3 || !PyDict_Check(a[0]) || !PyDict_Check(a[1]) || !PyType_Check(a[2])) {
        PyErr_SetString(PyExc_TypeError, "freeze_histories(final: dict, histories: dict, history_type)");
        return NULL;
    }
    static PyObject *s_head, *s_tail, *s_between, *s_freeze;
    if (s_freeze == NULL && ((s_head = PyUnicode_InternFromString("head")) == NULL ||
                             (s_tail = PyUnicode_InternFromString("tail")) == NULL ||
                             (s_between = PyUnicode_InternFromString("between")) == NULL ||
                             (s_freeze = PyUnicode_InternFromString("freeze")) == NULL))
        return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *tid, *meta;
    while (PyDict_Next(a[0], &pos, &tid, &meta)) {
        PyObject *h = PyDict_GetItemWithError(a[1], tid);
        if (h == NULL) { if (PyErr_Occurred()) goto fail; continue; }
        if (h == Py_None) continue;
        Py_INCREF(h);
        PyObject *frozen = NULL;
        if (Py_TYPE(h) != (PyTypeObject *)a[2]) {
            frozen = PyObject_CallMethodNoArgs(h, s_freeze);
        } else {  /* tuple(map(tuple, head)), between, tuple(map(tuple, tail)) */
            PyObject *parts[3] = {PyObject_GetAttr(h, s_head), PyObject_GetAttr(h, s_between), PyObject_GetAttr(h, s_tail)};
            PyObject *head = NULL, *tail = NULL;
            if (parts[0] != NULL && parts[1] != NULL && parts[2] != NULL) {
                PyObject *src[2] = {parts[0], parts[2]}, **dst[2] = {&head, &tail};
                for (int k = 0; k < 2; k++) {
                    PyObject *seq = PySequence_List(src[k]);
                    if (seq == NULL) break;
                    Py_ssize_t m = PyList_GET_SIZE(seq);
                    PyObject *t = PyTuple_New(m);
                    for (Py_ssize_t j = 0; t != NULL && j < m; j++) {
                        PyObject *e = PySequence_Tuple(PyList_GET_ITEM(seq, j));
                        if (e == NULL) Py_CLEAR(t);
                        else PyTuple_SET_ITEM(t, j, e);
                    }
                    Py_DECREF(seq);
                    if (t == NULL) break;
                    *dst[k] = t;
                }
                if (head != NULL && tail != NULL) frozen = PyTuple_Pack(3, head, parts[1], tail);
            }
            Py_XDECREF(head); Py_XDECREF(tail);
            Py_XDECREF(parts[0]); Py_XDECREF(parts[1]); Py_XDECREF(parts[2]);
        }
        Py_DECREF(h);
        int rc = frozen == NULL ? -1 : PyDict_SetItem(out, tid, frozen);
        Py_XDECREF(frozen);
        if (rc < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}
