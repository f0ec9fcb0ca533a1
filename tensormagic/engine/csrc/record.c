/* The records the compiled path makes itself: a new tensor from known ones (Tracker._created),
 * an in-place write of a known tensor by known inputs (Tracker.record_write's common case). */
#include "hot.h"

static PyObject *intern_meta(Hot *self, PyObject *meta);

/* describe.meta(o), interned: a tensor that is not a plain one, or a plain one a read failed on
 * (an inference tensor's version, a nested tensor's shape), as Tracker.meta does */
static PyObject *described_meta(Hot *self, PyObject *o) {
    if (tmh_describe_meta == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tensormagic: describe.meta was not given (set_describe)");
        return NULL;
    }
    PyObject *meta = PyObject_CallOneArg(tmh_describe_meta, o);
    if (meta == NULL) return NULL;
    PyObject *got = intern_meta(self, meta);
    Py_DECREF(meta);
    return got;
}

static PyObject *plain_meta(Hot *self, PyObject *o);

/* Tracker.meta: (shape, dtype, device, requires_grad, grad_fn name, version), interned per block.
 * A new reference, or NULL with an exception. */
PyObject *tmh_make_meta(Hot *self, PyObject *o) {
    if (!tmh_plain(o)) return described_meta(self, o);
    PyObject *got = plain_meta(self, o);
    if (got == NULL && tmh_clear_exception()) return described_meta(self, o);
    return got;
}

static PyObject *intern_meta(Hot *self, PyObject *meta) {
    PyObject *got = PyDict_GetItemWithError(self->metas, meta);
    if (got != NULL) return Py_NewRef(got);
    if (PyErr_Occurred()) return NULL;
    return tmh_intern_new(self, meta);
}

/* Tracker._intern, compiled, for a snapshot the table does not hold yet (each parameter's at each
 * optimizer step: its version): the stored copy holds the shape as a plain tuple shared through
 * the tracker's _shapes, and is filed in _metas.  Anything else goes to the Python method. */
PyObject *tmh_intern_new(Hot *self, PyObject *meta) {
    static PyObject *s_shapes;
    if (s_shapes == NULL && (s_shapes = PyUnicode_InternFromString("_shapes")) == NULL) return NULL;
    PyObject *shapes = PyObject_GetAttr(self->tracker, s_shapes);
    if (shapes == NULL) return NULL;
    PyObject *got = NULL, *shape = NULL;
    if (!PyTuple_CheckExact(meta) || PyTuple_GET_SIZE(meta) != 6 || !PyDict_CheckExact(shapes)) {
        got = PyObject_CallOneArg(self->intern, meta);  /* not the tables this knows: the method */
        goto done;
    }
    shape = Py_XNewRef(PyDict_GetItemWithError(shapes, PyTuple_GET_ITEM(meta, 0)));  /* a torch.Size finds its tuple */
    if (shape == NULL) {
        if (PyErr_Occurred() || (shape = PySequence_Tuple(PyTuple_GET_ITEM(meta, 0))) == NULL) goto done;
        if (PyDict_SetItem(shapes, shape, shape) < 0) goto done;
    }
    if ((got = PyTuple_New(6)) == NULL) goto done;
    PyTuple_SET_ITEM(got, 0, Py_NewRef(shape));
    for (Py_ssize_t i = 1; i < 6; i++) PyTuple_SET_ITEM(got, i, Py_NewRef(PyTuple_GET_ITEM(meta, i)));
    if (PyDict_SetItem(self->metas, got, got) < 0) Py_CLEAR(got);
done:
    Py_DECREF(shapes);
    Py_XDECREF(shape);
    return got;
}

static PyObject *plain_meta(Hot *self, PyObject *o) {
    PyObject *gfname;
    PyObject *gf = tmh_tensor_attr(o, A_GRAD_FN);
    if (gf == NULL) return NULL;
    if (gf == Py_None) {
        gfname = gf;
    } else {
        gfname = PyDict_GetItemWithError(self->gf_names, (PyObject *)Py_TYPE(gf));
        if (gfname != NULL) {
            Py_INCREF(gfname);
        } else if (PyErr_Occurred()) {
            Py_DECREF(gf);
            return NULL;
        } else {
            gfname = PyObject_CallOneArg(self->gf_name, gf);
        }
        Py_DECREF(gf);
        if (gfname == NULL) return NULL;
    }
    PyObject *meta = PyTuple_New(6);
    if (meta == NULL) { Py_DECREF(gfname); return NULL; }
    PyTuple_SET_ITEM(meta, 4, gfname);
    PyObject *f;
    if ((f = tmh_tensor_attr(o, A_SHAPE)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 0, f);
    if ((f = tmh_tensor_attr(o, A_DTYPE)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 1, f);
    if ((f = tmh_tensor_attr(o, A_DEVICE)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 2, f);
    if ((f = tmh_tensor_attr(o, A_REQUIRES_GRAD)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 3, f);
    if ((f = tmh_tensor_attr(o, A_VERSION)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 5, f);
    PyObject *got = intern_meta(self, meta);
    Py_DECREF(meta);
    return got;
fail:
    Py_DECREF(meta);
    return NULL;
}

/* Each record hook, as Tracker._add calls them: hook(tracker, raw index, (tensor,)). */
int tmh_call_hooks(Hot *self, Py_ssize_t n, PyObject *o) {
    if (PyList_GET_SIZE(self->record_hooks) == 0) return 0;
    int rc = -1;
    PyObject *objs = PyTuple_Pack(1, o);
    PyObject *idx = PyLong_FromSsize_t(n);
    /* a snapshot: a hook may change the list (a diagnostic that gives up) */
    PyObject *hooks = PyList_GetSlice(self->record_hooks, 0, PyList_GET_SIZE(self->record_hooks));
    if (objs != NULL && idx != NULL && hooks != NULL) {
        rc = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(hooks); i++) {
            PyObject *hargs[3] = {self->tracker, idx, objs};
            PyObject *r = PyObject_Vectorcall(PyList_GET_ITEM(hooks, i), hargs, 3, NULL);
            if (r == NULL) { rc = -1; break; }
            Py_DECREF(r);
        }
    }
    Py_XDECREF(objs);
    Py_XDECREF(idx);
    Py_XDECREF(hooks);
    return rc;
}

/* raw.append(rec); times.append(t - t0) */
int tmh_append_record(Hot *self, PyObject *rec, long long t) {
    if (PyList_Append(self->raw, rec) < 0) return -1;
    PyObject *dt = PyLong_FromLongLong(t - self->t0);
    if (dt == NULL) return -1;
    PyObject *r = PyObject_CallOneArg(self->times_append, dt);
    Py_DECREF(dt);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* raw.numel: the elements of a recorded shape (0 when a dimension is None), or -1 when it is not
 * a tuple of ints and Nones (or overflows, which no tensor's shape does) */
static long long shape_numel(PyObject *shape) {
    if (!PyTuple_Check(shape)) return -1;
    long long n = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shape); i++) {
        PyObject *s = PyTuple_GET_ITEM(shape, i);
        if (s == Py_None) return 0;
        if (!PyLong_CheckExact(s)) return -1;
        long long d = PyLong_AsLongLong(s);
        if (d == -1 && PyErr_Occurred()) { PyErr_Clear(); return -1; }
        if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
    }
    return n;
}

/* raw.quiet: whether a create of op `name` from the inputs `in_ids` (a sequence of ids) skips the
 * record hooks (the hooks said they need not see it: tracker.quiet_creates): 1, 0, or -1 with an
 * exception.  QUIET_FIT: an elementwise op whose result has no more elements than one of its
 * inputs (the broadcast check looks only at results bigger than all of them). */
int tmh_quiet(Hot *self, PyObject *name, PyObject *in_ids, PyObject *meta) {
    PyObject *q = PyDict_GetItemWithError(self->quiet, name);
    if (q == NULL) return PyErr_Occurred() ? -1 : 0;
    long level = PyLong_AsLong(q);
    if (level == -1 && PyErr_Occurred()) return -1;
    if (level == 0) return 0;
    Py_ssize_t nin = PyObject_Length(in_ids);
    if (nin < 0) return -1;
    if (nin < 2) return 1;
    if (PyTuple_GET_ITEM(meta, 1) == self->f64 || level == 1) return 0;  /* QUIET_ONE */
    if (level != 3) return 1;                                             /* QUIET_ANY */
    long long out = shape_numel(PyTuple_GET_ITEM(meta, 0));
    if (out < 0) return 0;
    PyObject *seq = PySequence_Fast(in_ids, "tensormagic: a create's input ids");
    if (seq == NULL) return -1;
    int fits = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && !fits; i++) {
        PyObject *info = PyDict_GetItemWithError(self->tensors, PySequence_Fast_GET_ITEM(seq, i));
        if (info == NULL) {
            if (PyErr_Occurred()) { Py_DECREF(seq); return -1; }
            continue;
        }
        if (!PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 2 || !PyTuple_Check(PyTuple_GET_ITEM(info, 1)) ||
            PyTuple_GET_SIZE(PyTuple_GET_ITEM(info, 1)) < 1)
            continue;
        long long n = shape_numel(PyTuple_GET_ITEM(PyTuple_GET_ITEM(info, 1), 0));
        fits = n >= 0 && n >= out;
    }
    Py_DECREF(seq);
    return fits;
}

/* Tracker._output's view branch for a view of a known input (``x[i]``: R3's DataLoader indexes
 * every sample, a quarter of its calls; the Python path cost ~60,000 instructions a view, this
 * ~8,000).  Called by tmh_created once it knows every input (tensor arguments only, all
 * registered: their ids in `in_ids`, in order) and that `o` is a plain, unregistered view.  As
 * _output does: the base is the first input on o's storage; o is registered as an alias and a
 * "view" record is added (Tracker._add: tmh_add).  1 recorded, 0 for the Python path (no storage,
 * no input on it, past the fast cap; nothing changed), -1 error. */
static int view_made(Hot *self, PyObject *func, PyObject *args, PyObject *o, PyObject *in_ids, PyObject *where) {
    if (PyList_GET_SIZE(self->raw) >= self->fast_cap) return 0;
    PyObject *okey = PyObject_CallOneArg(self->storage_id, o);
    if (okey == NULL) {
        if (!PyErr_ExceptionMatches(self->no_storage)) return -1;
        PyErr_Clear();
        return 0;
    }
    PyObject *btid = NULL;  /* borrowed from in_ids */
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args) && btid == NULL; i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        if (!tmh_is_tensor(self, a)) continue;
        PyObject *key = PyObject_CallOneArg(self->storage_id, a);  /* identity.storage_key */
        if (key == NULL) {
            if (!PyErr_ExceptionMatches(self->no_storage)) { Py_DECREF(okey); return -1; }
            PyErr_Clear();
        } else {
            int eq = PyObject_RichCompareBool(key, okey, Py_EQ);
            Py_DECREF(key);
            if (eq < 0) { Py_DECREF(okey); return -1; }
            if (eq) btid = PyTuple_GET_ITEM(in_ids, j);
        }
        j++;
    }
    Py_DECREF(okey);
    if (btid == NULL) return 0;  /* a view of no input's storage: _output's create branch */
    PyObject *made = tmh_new_tensor(self, o, 1);
    if (made == NULL) return -1;
    PyObject *objs = PyTuple_Pack(1, o);
    PyObject *r = NULL;
    if (objs != NULL) {
        PyObject *argv[7] = {tmh_s_view, func, PyTuple_GET_ITEM(made, 0), PyTuple_GET_ITEM(made, 1), where, btid, objs};
        r = tmh_add(self, argv, 7);
    }
    Py_XDECREF(objs);
    Py_DECREF(made);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 1;
}

/* Tracker._created: 1 recorded, 0 not this case (nothing changed), -1 error. */
int tmh_created(Hot *self, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *o,
                   PyObject *where, PyObject *lasti, long long t) {
    if (tmh_recheck(self, args, kwargs, NULL, -1) < 0) return -1;
    Py_ssize_t n = PyList_GET_SIZE(self->raw);
    if (n >= self->fast_cap) return 0;
    if (kwargs != NULL) {  /* a tensor passed by keyword: the general path */
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(kwargs, &pos, &k, &v))
            if (tmh_is_tensor(self, v)) return 0;
    }
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    PyObject *in_ids = PyTuple_New(nargs);  /* trimmed to the tensors below */
    if (in_ids == NULL) return -1;
    Py_ssize_t nin = 0;
    int made = 0;
    int quiet = 0;
    int result = -1;
    PyObject *key = NULL, *ref = NULL, *tid = NULL, *meta = NULL, *skey = NULL;
    PyObject *entry = NULL, *name_rec = NULL, *ins = NULL, *module = NULL, *rec = NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        if (tmh_is_tensor(self, a)) {
            PyObject *aref;
            int k = tmh_known_tid(self, a, &aref);
            if (k < 0) goto done;
            if (k == 0) { result = 0; goto done; }  /* first sight of this input: see() records it */
            PyObject *atid = tmh_ref_tid(self, aref);
            if (atid == NULL) goto done;
            PyObject *info = PyDict_GetItemWithError(self->tensors, atid);
            if (info == NULL) {
                Py_DECREF(atid);
                if (PyErr_Occurred()) goto done;
                result = 0;
                goto done;
            }
            if (PyTuple_GET_ITEM(info, 3) != Py_None) made = 1;
            PyTuple_SET_ITEM(in_ids, nin, atid);  /* steals atid */
            nin++;
        } else if (PyList_Check(a) || PyTuple_Check(a)) {
            result = 0;
            goto done;
        }
    }
    key = PyLong_FromVoidPtr(o);  /* its id(): the id table's key, kept in its entry */
    if (key == NULL) goto done;
    {
        PyObject *oref;
        int k = tmh_known_at(self, o, key, &oref);
        if (k < 0) goto done;
        /* an input handed back, or a tensor another (outer) block registered: the general path */
        if (k == 1) { result = 0; goto done; }
    }
    if (!tmh_plain(o)) { result = 0; goto done; }  /* a subclass: read through describe, in Python */
    {  /* o._is_view(), read as `o._base is not None` (a getset: no method call) */
        PyObject *base = tmh_tensor_attr(o, A_BASE);
        if (base == NULL) goto done;
        Py_DECREF(base);
        if (base != Py_None) { result = view_made(self, func, args, o, in_ids, where); goto done; }
    }
    skey = PyObject_CallOneArg(self->storage_id, o);
    if (skey == NULL) {
        if (PyErr_ExceptionMatches(self->no_storage)) { PyErr_Clear(); result = 0; }
        goto done;
    }
    ref = PyObject_CallOneArg(self->ref_type, o);
    if (ref == NULL) goto done;
    untrack(ref);  /* a weak reference with an int slot: nothing for the collector to walk */
    if (PyDict_SetItem(self->ids, key, ref) < 0) goto done;
    tid = PyIter_Next(self->counter);
    if (tid == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "tensormagic: id counter ended");
        goto done;
    }
    if (tmh_set_ref_tid(self, ref, tid) < 0) goto done;
    meta = tmh_make_meta(self, o);
    if (meta == NULL) goto done;
    if (PyDict_SetItem(self->sid_of_key, skey, tid) < 0) goto done;  /* the storage is named after it */
    if (nin == 0 && PySet_GET_SIZE(self->suspects) < TMH_MAX_SUSPECTS) {  /* torch.empty(0): Tracker.recheck */
        PyObject *shape = PyTuple_GET_ITEM(meta, 0);
        if (PyTuple_Check(shape) && PyTuple_GET_SIZE(shape) == 1 && PyLong_CheckExact(PyTuple_GET_ITEM(shape, 0)) &&
            PyLong_AsLong(PyTuple_GET_ITEM(shape, 0)) == 0 && PySet_Add(self->suspects, tid) < 0)
            goto done;
    }
    {
        PyObject *idx = PyLong_FromSsize_t(n);
        if (idx == NULL) goto done;
        entry = PyTuple_Pack(4, key, meta, tid, idx);
        Py_DECREF(idx);
        if (entry == NULL) goto done;
        untrack(entry);
        if (PyDict_SetItem(self->tensors, tid, entry) < 0) goto done;
    }
    if (_PyTuple_Resize(&in_ids, nin) < 0) goto done;
    untrack(in_ids);  /* ints */
    if (made) {
        ins = in_ids;
        Py_INCREF(ins);
    } else {  /* a loop passes the same weights again: one tuple for all its records */
        ins = PyDict_SetDefault(self->inputs, in_ids, in_ids);
        if (ins == NULL) goto done;
        Py_INCREF(ins);
    }
    name_rec = PyDict_GetItemWithError(self->names, func);
    if (name_rec == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, func);
        goto done;
    }
    module = tmh_get(self->current, self->modules, tmh_s_current);
    if (module == NULL) goto done;
    rec = PyTuple_Pack(8, tmh_s_create, name_rec, tid, meta, where, module, lasti ? lasti : Py_None, ins);
    if (rec == NULL) goto done;
    untrack(rec);
    if ((quiet = tmh_quiet(self, name_rec, ins, meta)) < 0) goto done;
    if (tmh_append_record(self, rec, t) < 0) goto done;
    if (!quiet && tmh_call_hooks(self, n, o) < 0) goto done;
    result = 1;
done:
    Py_XDECREF(in_ids);
    Py_XDECREF(key);
    Py_XDECREF(ref);
    Py_XDECREF(tid);
    Py_XDECREF(meta);
    Py_XDECREF(skey);
    Py_XDECREF(entry);
    Py_XDECREF(ins);
    Py_XDECREF(module);
    Py_XDECREF(rec);
    return result;
}

/* Tracker.record_write for a tensor the block knows, written by an op whose inputs it knows:
 * 1 recorded (or nothing to record), 0 for the Python path (first sights, copy_ and __setitem__,
 * folding, stats), -1 error. */
int tmh_written(Hot *self, PyObject *func, PyObject *w, long long v0, PyObject *args, PyObject *kwargs,
                   PyObject *where, PyObject *lasti) {
    PyObject *name = PyDict_GetItemWithError(self->names, func);
    if (name == NULL) return PyErr_Occurred() ? -1 : 0;
    int special = PyUnicode_CompareWithASCIIString(name, "torch.Tensor.copy_") == 0 ||
                  PyUnicode_CompareWithASCIIString(name, "torch.Tensor.__setitem__") == 0;
    /* a cross-device copy_ is a move; __setitem__ is recorded unchanged; a subclass's write goes to
     * Tracker._add, whose hooks read it without the subclass's code */
    if (special || !tmh_plain(w)) return 0;
    if (tmh_recheck(self, args, kwargs, w, v0) < 0) return -1;
    long long v1 = tmh_version_of(w);
    if (v1 == -2) return -1;
    if (v1 == v0 && v1 != -1) return 1;  /* no version counter (inference): a writing op wrote */
    Py_ssize_t n = PyList_GET_SIZE(self->raw);
    if (n >= self->fast_cap) return 0;
    int result = -1;
    PyObject *tid = NULL, *inputs = NULL, *extra = NULL, *meta = NULL, *module = NULL, *rec = NULL;
    tid = tmh_registered_tid(self, w);
    if (tid == NULL) { result = PyErr_Occurred() ? -1 : 0; goto done; }
    inputs = tmh_tensors_in(self, args, kwargs, w);
    if (inputs == NULL) goto done;
    extra = PyTuple_New(1 + PyList_GET_SIZE(inputs));
    if (extra == NULL) goto done;
    PyObject *pv0 = PyLong_FromLongLong(v0);
    if (pv0 == NULL) goto done;
    PyTuple_SET_ITEM(extra, 0, pv0);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(inputs); i++) {
        PyObject *itid = tmh_registered_tid(self, PyList_GET_ITEM(inputs, i));
        if (itid == NULL) { result = PyErr_Occurred() ? -1 : 0; goto done; }
        PyTuple_SET_ITEM(extra, i + 1, itid);
    }
    meta = tmh_make_meta(self, w);
    if (meta == NULL) goto done;
    module = tmh_get(self->current, self->modules, tmh_s_current);
    if (module == NULL) goto done;
    rec = PyTuple_Pack(8, tmh_s_inplace, name, tid, meta, where, module, lasti ? lasti : Py_None, extra);
    if (rec == NULL) goto done;
    untrack(rec);
    long long t = tmh_now_ns(self);
    if (t == -1 && PyErr_Occurred()) goto done;
    if (tmh_append_record(self, rec, t) < 0) goto done;
    if (PyList_GET_SIZE(self->record_hooks) > 0) {  /* Tracker._add asks the write gate the same */
        int need = tmh_write_needed(self->write_gate, n, tid, w);
        if (need < 0 || (need && tmh_call_hooks(self, n, w) < 0)) goto done;
    }
    result = 1;
done:
    Py_XDECREF(tid);
    Py_XDECREF(inputs);
    Py_XDECREF(extra);
    Py_XDECREF(meta);
    Py_XDECREF(module);
    Py_XDECREF(rec);
    return result;
}
