/* The block's end, compiled: passes over a block's raw records and tables that every tracked cell
 * pays for (a %trackgrad on cell runs each once), each the same loop as its Python twin:
 *
 *   kind_counts    build.Pending._count's kinds and first-seen creates
 *   partial_metas  snapshot._unreadable's look for snapshots describe.partial marks
 *   history_runs   history.remember's pass: the records of the live tensors, a line's repeats as runs
 *   made_before    snapshot.take_snapshot's provenance of the tensors made before the block
 *   dead_keys      identity.prune's dead entries, and the ids of the live ones
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
        if (v == Py_None) continue;
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
    PyObject *out = PyList_New(0), *last = PyDict_New();  /* last: tid -> (key, its run) */
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
        PyObject *key = rc < 0 ? NULL : PyTuple_Pack(3, PyTuple_GET_ITEM(r, 4), PyTuple_GET_ITEM(r, 1), verb);
        PyObject *got = key == NULL ? NULL : PyDict_GetItemWithError(last, tid);
        if (key == NULL || (got == NULL && PyErr_Occurred())) {
            Py_XDECREF(key); Py_DECREF(verb); Py_DECREF(r); goto fail;
        }
        rc = got == NULL ? 0 : PyObject_RichCompareBool(PyTuple_GET_ITEM(got, 0), key, Py_EQ);
        if (rc > 0) {  /* the same line again: one more in its run */
            PyObject *run = PyTuple_GET_ITEM(got, 1);
            PyObject *more = PyNumber_Add(PyList_GET_ITEM(run, 4), s_one);
            rc = more == NULL ? -1 : PyList_SetItem(run, 4, more);
        } else if (rc == 0) {
            PyObject *run = Py_BuildValue("[OOOOi]", tid, PyTuple_GET_ITEM(r, 4), PyTuple_GET_ITEM(r, 1), verb, 1);
            PyObject *ent = run == NULL ? NULL : PyTuple_Pack(2, key, run);
            rc = ent == NULL || PyList_Append(out, run) < 0 || PyDict_SetItem(last, tid, ent) < 0 ? -1 : 0;
            Py_XDECREF(ent);
            Py_XDECREF(run);
        }
        Py_DECREF(key);
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
