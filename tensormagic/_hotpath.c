/* The compiled hot path of tensormagic's TorchFunctionMode (see mode.py: ``CompiledTrackMode``).
 *
 * torch calls ``mode.__torch_function__(func, types, args[, kwargs])`` for every torch call a
 * tracked block makes.  This object answers the common calls itself: calls that record nothing
 * (SKIP: metadata reads, quiet methods; watched calls such as ``.grad`` reads, after their
 * watch), an op (no ``out=``) that makes one new tensor from tensors the block already knows,
 * and an in-place op on its first argument whose inputs the block knows.  Anything else a call
 * turns out to need goes to the same Python methods as before (``Tracker.record_outputs``,
 * ``Tracker.record_write``), and every other kind of call to the Python
 * ``TrackMode.__torch_function__`` unchanged.  What it records is, field for field, what the
 * Python path records (tests/test_engines.py runs its scenarios through both and compares the
 * recordings), so the two must change together.
 *
 * It never holds a user tensor: the raw record, the id table and the tracker's tables get the
 * same objects the Python path would put there (ints, strings, shared tuples, weak references).
 * Every failure inside the recording part is handed to ``mode._internal`` (recording stops for
 * the block), never to the user's code; a failure of the user's call is the user's exception,
 * passed through unchanged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <stddef.h>

/* action codes, as in ops.py */
#define SKIP 0
#define GENERAL 1
#define INPLACE 2
#define WATCHED_SKIP -2  /* mode.py: a watched call that records nothing itself */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    /* every object below is given by mode.py at construction (no imports here) */
    PyObject *actions;        /* dict: func -> action (the mode's cache; slow() fills it) */
    PyObject *state;          /* the mode's __dict__: its "_busy" is the Python path's flag */
    PyObject *slow;           /* TrackMode.__torch_function__ bound to the mode */
    PyObject *watched;        /* the mode's _watched: func -> (watch, action) */
    PyObject *where;          /* mode._where: the zero-argument place finder a watch is given */
    PyObject *on_error;       /* mode._on_error(func, args, kwargs, exc) */
    PyObject *internal;       /* mode._internal(exc) */
    PyObject *tracker;
    PyObject *error_hooks;    /* list */
    PyObject *record_hooks;   /* list */
    PyObject *quiet;          /* tracker.quiet_creates: op names whose plain creates no hook needs */
    PyObject *raw;            /* list of raw records */
    PyObject *times_append;   /* tracker.times.append */
    PyObject *tensors;        /* dict: tid -> (key, meta, storage id, raw index) */
    PyObject *sid_of_key;     /* dict */
    PyObject *metas;          /* dict: the interned metadata tuples */
    PyObject *intern;         /* tracker._intern(meta) */
    PyObject *inputs;         /* dict: interned input-id tuples */
    PyObject *gf_names;       /* dict: grad_fn class -> name */
    PyObject *gf_name;        /* tracker._gf_name(gf) */
    PyObject *names;          /* ops._names: func -> op name */
    PyObject *ids;            /* identity._ids: id(t) -> Ref */
    PyObject *counter;        /* identity._counter */
    PyObject *ref_type;       /* identity.Ref */
    PyObject *storage_id;     /* identity.storage_id */
    PyObject *no_storage;     /* identity.NO_STORAGE: exceptions meaning "no storage" */
    PyObject *modules;        /* tracker.modules (ModuleStack): .current */
    PyObject *lines;          /* tracker.lines (LineFinder): .lasti */
    PyObject *line_cache;     /* lines._cache: id(code) -> (code, ok, {lasti: hit}, {line: where}) */
    PyObject *learn;          /* lines._learn(code) */
    PyObject *find;           /* lines.find(frame) */
    PyObject *record_write;   /* tracker.record_write */
    PyObject *record_outputs; /* tracker.record_outputs */
    PyObject *tensor_type;    /* torch.Tensor */
    PyObject *now;            /* time.perf_counter_ns */
    PyObject *general;        /* the int GENERAL */
    long long t0;
    Py_ssize_t fast_cap;
    int busy;      /* a call this object started is running (the Python path's flag is in state) */
    int disabled;
} Hot;

#define HOT_FIELDS(X) \
    X(actions) X(state) X(slow) X(watched) X(where) X(on_error) X(internal) X(tracker) X(error_hooks) X(record_hooks) X(quiet) X(raw) \
    X(times_append) X(tensors) X(sid_of_key) X(metas) X(intern) X(inputs) X(gf_names) X(gf_name) \
    X(names) X(ids) X(counter) X(ref_type) X(storage_id) X(no_storage) X(modules) X(lines) \
    X(line_cache) X(learn) X(find) X(record_write) X(record_outputs) X(tensor_type) X(now) X(general)

static PyObject *s_tid, *s_current, *s_lasti, *s_create, *s_f_lasti, *s_busy, *s_inplace, *s_out;

static int hot_traverse(Hot *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    HOT_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int hot_clear(Hot *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    HOT_FIELDS(CLEAR)
#undef CLEAR
    self->disabled = 1;  /* a closed object only passes calls through */
    return 0;
}

static void hot_dealloc(Hot *self) {
    PyObject_GC_UnTrack(self);
    hot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static long long now_ns_python(Hot *self);

/* The metadata attributes read on every recorded tensor.  On a plain torch.Tensor they are
 * getset descriptors of torch._C.TensorBase: calling their getter directly skips the generic
 * attribute lookup (~20 ns a read, seven reads per op).  A subclass (which may override one) and
 * any attribute that is not a getset go through PyObject_GetAttr. */
enum { A_SHAPE, A_DTYPE, A_DEVICE, A_REQUIRES_GRAD, A_GRAD_FN, A_VERSION, A_BASE, N_ATTRS };
static PyObject *attr_names[N_ATTRS];
static PyTypeObject *getset_type;  /* the exact type the getters below were looked up on */
static PyGetSetDef *getsets[N_ATTRS];

static void learn_getsets(PyTypeObject *tensor_type) {
    if (getset_type == tensor_type) return;
    getset_type = tensor_type;
    for (int i = 0; i < N_ATTRS; i++) {
        PyObject *d = _PyType_Lookup(tensor_type, attr_names[i]);  /* borrowed; held by the type */
        getsets[i] = d != NULL && Py_IS_TYPE(d, &PyGetSetDescr_Type) && ((PyGetSetDescrObject *)d)->d_getset->get != NULL
                         ? ((PyGetSetDescrObject *)d)->d_getset : NULL;
    }
}

static PyObject *tensor_attr(PyObject *o, int which) {
    PyGetSetDef *g = getsets[which];
    if (g != NULL && Py_TYPE(o) == getset_type) return g->get(o, g->closure);
    return PyObject_GetAttr(o, attr_names[which]);
}

static int is_tensor(Hot *self, PyObject *o) {
    return PyObject_TypeCheck(o, (PyTypeObject *)self->tensor_type);
}

/* perf_counter_ns as a C integer; -1 with an exception set on failure.  On Linux, CPython's
 * perf_counter is clock_gettime(CLOCK_MONOTONIC): read it directly (the test suite checks that
 * both clocks agree); elsewhere ask time.perf_counter_ns. */
#if defined(__linux__)
#include <time.h>
static long long now_ns(Hot *self) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    return now_ns_python(self);
}
#else
static long long now_ns(Hot *self) { return now_ns_python(self); }
#endif

static PyObject *hot_now(Hot *self, PyObject *Py_UNUSED(ignored)) {
    long long t = now_ns(self);
    if (t == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLongLong(t);
}

static long long now_ns_python(Hot *self) {
    PyObject *t = PyObject_CallNoArgs(self->now);
    if (t == NULL) return -1;
    long long v = PyLong_AsLongLong(t);
    Py_DECREF(t);
    return v;
}

/* t._version; -2 with an exception set on failure */
static long long version_of(PyObject *t) {
    PyObject *v = tensor_attr(t, A_VERSION);
    if (v == NULL) return -2;
    long long r = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (r == -1 && PyErr_Occurred()) return -2;
    return r;
}

static int frame_lasti(PyFrameObject *frame) {
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetLasti(frame);
#else
    PyObject *v = PyObject_GetAttr((PyObject *)frame, s_f_lasti);
    if (v == NULL) return -2;
    long r = PyLong_AsLong(v);
    Py_DECREF(v);
    return (int)r;
#endif
}

/* LineFinder.find from the innermost Python frame (the caller of the torch function).
 * Returns a new reference to the place ((filename, line) or None) and sets *lasti (a new
 * reference, or NULL when no user frame was found); NULL with an exception on failure.
 * A cache hit is answered here; anything else goes to the Python LineFinder, which fills the cache. */
static PyObject *find_where(Hot *self, PyObject **lasti) {
    *lasti = NULL;
    PyFrameObject *frame = PyEval_GetFrame();
    Py_XINCREF(frame);
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        PyObject *key = PyLong_FromVoidPtr(code);
        if (key == NULL) { Py_DECREF(code); Py_DECREF(frame); return NULL; }
        PyObject *ent = PyDict_GetItemWithError(self->line_cache, key);
        Py_DECREF(key);
        if (ent != NULL) {
            Py_INCREF(ent);
        } else if (PyErr_Occurred()) {
            Py_DECREF(code); Py_DECREF(frame); return NULL;
        } else {
            ent = PyObject_CallOneArg(self->learn, (PyObject *)code);
            if (ent == NULL) { Py_DECREF(code); Py_DECREF(frame); return NULL; }
        }
        Py_DECREF(code);
        if (!PyTuple_Check(ent) || PyTuple_GET_SIZE(ent) < 3) {
            Py_DECREF(ent); Py_DECREF(frame);
            PyErr_SetString(PyExc_TypeError, "tensormagic: unexpected line-cache entry");
            return NULL;
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
                *lasti = PyObject_GetAttr(self->lines, s_lasti);
                if (*lasti == NULL) { Py_DECREF(where); return NULL; }
                return where;
            }
            Py_DECREF(frame);
            PyObject *where = Py_NewRef(PyTuple_GET_ITEM(hit, 0));
            PyObject *off = Py_NewRef(PyTuple_GET_ITEM(hit, 1));
            Py_DECREF(ent);  /* hit was borrowed from it */
            if (PyObject_SetAttr(self->lines, s_lasti, off) < 0) { Py_DECREF(where); Py_DECREF(off); return NULL; }
            *lasti = off;
            return where;
        }
        Py_DECREF(ent);
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    /* no user frame: the record keeps the last offset found, as LineFinder leaves it */
    *lasti = PyObject_GetAttr(self->lines, s_lasti);
    if (*lasti == NULL) return NULL;
    Py_RETURN_NONE;
}

/* 1 if the id table holds `t` (its Ref, borrowed, in *ref_out), 0 if not (unknown, or its id()
 * belongs to a dead tensor's entry), -1 with an exception on failure. */
static int known_tid(Hot *self, PyObject *t, PyObject **ref_out) {
    *ref_out = NULL;
    PyObject *key = PyLong_FromVoidPtr(t);
    if (key == NULL) return -1;
    PyObject *ref = PyDict_GetItemWithError(self->ids, key);
    Py_DECREF(key);
    if (ref == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyWeakref_Check(ref)) return 0;
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj;
    if (PyWeakref_GetRef(ref, &obj) < 0) return -1;
    Py_XDECREF(obj);  /* only compared: t itself is alive (the caller holds it) */
    if (obj != t) return 0;
#else
    if (PyWeakref_GET_OBJECT(ref) != t) return 0;
#endif
    *ref_out = ref;  /* borrowed */
    return 1;
}

/* Tracker.meta: (shape, dtype, device, requires_grad, grad_fn name, version), interned per block.
 * A new reference, or NULL with an exception; *no_gf says whether grad_fn was None. */
static PyObject *make_meta(Hot *self, PyObject *o, int *no_gf) {
    PyObject *gfname;
    PyObject *gf = tensor_attr(o, A_GRAD_FN);
    if (gf == NULL) return NULL;
    *no_gf = gf == Py_None;
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
    if ((f = tensor_attr(o, A_SHAPE)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 0, f);
    if ((f = tensor_attr(o, A_DTYPE)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 1, f);
    if ((f = tensor_attr(o, A_DEVICE)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 2, f);
    if ((f = tensor_attr(o, A_REQUIRES_GRAD)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 3, f);
    if ((f = tensor_attr(o, A_VERSION)) == NULL) goto fail;
    PyTuple_SET_ITEM(meta, 5, f);
    PyObject *got = PyDict_GetItemWithError(self->metas, meta);
    if (got != NULL) {
        Py_INCREF(got);
    } else if (PyErr_Occurred()) {
        goto fail;
    } else {
        got = PyObject_CallOneArg(self->intern, meta);
    }
    Py_DECREF(meta);
    return got;
fail:
    Py_DECREF(meta);
    return NULL;
}

/* Each record hook, as Tracker._add calls them: hook(tracker, raw index, (tensor,)). */
static int call_hooks(Hot *self, Py_ssize_t n, PyObject *o) {
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
static int append_record(Hot *self, PyObject *rec, long long t) {
    if (PyList_Append(self->raw, rec) < 0) return -1;
    PyObject *dt = PyLong_FromLongLong(t - self->t0);
    if (dt == NULL) return -1;
    PyObject *r = PyObject_CallOneArg(self->times_append, dt);
    Py_DECREF(dt);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* Tracker._created: 1 recorded, 0 not this case (nothing changed), -1 error. */
static int created(Hot *self, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *o,
                   PyObject *where, PyObject *lasti, long long t) {
    Py_ssize_t n = PyList_GET_SIZE(self->raw);
    if (n >= self->fast_cap) return 0;
    if (kwargs != NULL) {  /* a tensor passed by keyword: the general path */
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(kwargs, &pos, &k, &v))
            if (is_tensor(self, v)) return 0;
    }
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    PyObject *in_ids = PyTuple_New(nargs);  /* trimmed to the tensors below */
    if (in_ids == NULL) return -1;
    Py_ssize_t nin = 0;
    int made = 0;
    int no_gf = 0;
    int quiet = 0;
    int result = -1;
    PyObject *key = NULL, *ref = NULL, *tid = NULL, *meta = NULL, *skey = NULL;
    PyObject *entry = NULL, *name_rec = NULL, *ins = NULL, *module = NULL, *rec = NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        if (is_tensor(self, a)) {
            PyObject *aref;
            int k = known_tid(self, a, &aref);
            if (k < 0) goto done;
            if (k == 0) { result = 0; goto done; }  /* first sight of this input: see() records it */
            PyObject *atid = PyObject_GetAttr(aref, s_tid);
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
    {
        PyObject *oref;
        int k = known_tid(self, o, &oref);
        if (k < 0) goto done;
        if (k == 1) { result = 0; goto done; }  /* an input handed back: the general path says which */
    }
    {  /* o._is_view(), read as `o._base is not None` (a getset: no method call) */
        PyObject *base = tensor_attr(o, A_BASE);
        if (base == NULL) goto done;
        Py_DECREF(base);
        if (base != Py_None) { result = 0; goto done; }
    }
    skey = PyObject_CallOneArg(self->storage_id, o);
    if (skey == NULL) {
        if (PyErr_ExceptionMatches(self->no_storage)) { PyErr_Clear(); result = 0; }
        goto done;
    }
    key = PyLong_FromVoidPtr(o);
    if (key == NULL) goto done;
    ref = PyObject_CallOneArg(self->ref_type, o);
    if (ref == NULL) goto done;
    if (PyDict_SetItem(self->ids, key, ref) < 0) goto done;
    tid = PyIter_Next(self->counter);
    if (tid == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "tensormagic: id counter ended");
        goto done;
    }
    if (PyObject_SetAttr(ref, s_tid, tid) < 0) goto done;
    meta = make_meta(self, o, &no_gf);
    if (meta == NULL) goto done;
    if (PyDict_SetItem(self->sid_of_key, skey, tid) < 0) goto done;  /* the storage is named after it */
    {
        PyObject *idx = PyLong_FromSsize_t(n);
        if (idx == NULL) goto done;
        entry = PyTuple_Pack(4, key, meta, tid, idx);
        Py_DECREF(idx);
        if (entry == NULL) goto done;
        if (PyDict_SetItem(self->tensors, tid, entry) < 0) goto done;
    }
    if (_PyTuple_Resize(&in_ids, nin) < 0) goto done;
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
    module = PyObject_GetAttr(self->modules, s_current);
    if (module == NULL) goto done;
    rec = PyTuple_Pack(8, s_create, name_rec, tid, meta, where, module, lasti ? lasti : Py_None, ins);
    if (rec == NULL) goto done;
    if (no_gf && nin < 2) {  /* a create the hooks said they need not see (Tracker.quiet_creates) */
        PyObject *q = PyDict_GetItemWithError(self->quiet, name_rec);
        if (q == NULL && PyErr_Occurred()) goto done;
        quiet = q != NULL && PyObject_IsTrue(q) == 1;
    }
    if (append_record(self, rec, t) < 0) goto done;
    if (!quiet && call_hooks(self, n, o) < 0) goto done;
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

/* A failure inside recording: an Exception goes to mode._internal (recording stops, the user's
 * result is returned); anything else (KeyboardInterrupt) propagates, as in the Python path.
 * Returns 0 when handled, -1 when the exception must propagate. */
static int recording_failed(Hot *self) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) PyException_SetTraceback(value, tb);
    PyObject *r = self->internal ? PyObject_CallOneArg(self->internal, value) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception)) return -1;
        PyErr_Clear();
    }
    Py_XDECREF(r);
    self->disabled = 1;
    return 0;
}

/* The user's call failed: let the error hooks see it (as the Python path does), then re-raise it
 * unchanged. */
static void user_call_failed(Hot *self, PyObject *func, PyObject *args, PyObject *kwargs) {
    if (self->error_hooks == NULL || PyList_GET_SIZE(self->error_hooks) == 0) return;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) PyException_SetTraceback(value, tb);
    PyObject *kw = kwargs != NULL ? Py_NewRef(kwargs) : PyDict_New();
    if (kw != NULL) {
        PyObject *cargs[4] = {func, args, kw, value};
        PyObject *r = PyObject_Vectorcall(self->on_error, cargs, 4, NULL);
        Py_XDECREF(r);
        Py_DECREF(kw);
    }
    PyErr_Clear();  /* the user's exception is the one that matters */
    PyErr_Restore(type, value, tb);
}

/* The tensors of a call's arguments, as tracker._tensors_in gives them (a list or tuple argument
 * is looked into, one level), without `skip`: a new list, or NULL with an exception. */
static PyObject *tensors_in(Hot *self, PyObject *args, PyObject *kwargs, PyObject *skip) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        if (is_tensor(self, a)) {
            if (a != skip && PyList_Append(out, a) < 0) goto fail;
        } else if (PyList_Check(a) || PyTuple_Check(a)) {
            PyObject *seq = PySequence_Fast(a, "");
            if (seq == NULL) goto fail;
            for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(seq); j++) {
                PyObject *x = PySequence_Fast_GET_ITEM(seq, j);
                if (is_tensor(self, x) && x != skip && PyList_Append(out, x) < 0) { Py_DECREF(seq); goto fail; }
            }
            Py_DECREF(seq);
        }
    }
    if (kwargs != NULL) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(kwargs, &pos, &k, &v))
            if (is_tensor(self, v) && v != skip && PyList_Append(out, v) < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* The id of a tensor this block has registered (Tracker.tensors), as a new reference; NULL and no
 * exception if it has none (Tracker.see would record its first sight: the Python path's job). */
static PyObject *registered_tid(Hot *self, PyObject *t) {
    PyObject *ref;
    int k = known_tid(self, t, &ref);
    if (k <= 0) return NULL;
    PyObject *tid = PyObject_GetAttr(ref, s_tid);
    if (tid == NULL) return NULL;
    int has = PyDict_Contains(self->tensors, tid);
    if (has != 1) { Py_DECREF(tid); return NULL; }
    return tid;
}

/* Tracker.record_write for a tensor the block knows, written by an op whose inputs it knows:
 * 1 recorded (or nothing to record), 0 for the Python path (first sights, copy_ and __setitem__,
 * folding, stats), -1 error. */
static int written(Hot *self, PyObject *func, PyObject *w, long long v0, PyObject *args, PyObject *kwargs,
                   PyObject *where, PyObject *lasti) {
    PyObject *name = PyDict_GetItemWithError(self->names, func);
    if (name == NULL) return PyErr_Occurred() ? -1 : 0;
    int special = PyUnicode_CompareWithASCIIString(name, "torch.Tensor.copy_") == 0 ||
                  PyUnicode_CompareWithASCIIString(name, "torch.Tensor.__setitem__") == 0;
    if (special) return 0;  /* a cross-device copy_ is a move; __setitem__ is recorded unchanged */
    long long v1 = version_of(w);
    if (v1 == -2) return -1;
    if (v1 == v0) return 1;
    Py_ssize_t n = PyList_GET_SIZE(self->raw);
    if (n >= self->fast_cap) return 0;
    int result = -1, no_gf;
    PyObject *tid = NULL, *inputs = NULL, *extra = NULL, *meta = NULL, *module = NULL, *rec = NULL;
    tid = registered_tid(self, w);
    if (tid == NULL) { result = PyErr_Occurred() ? -1 : 0; goto done; }
    inputs = tensors_in(self, args, kwargs, w);
    if (inputs == NULL) goto done;
    extra = PyTuple_New(1 + PyList_GET_SIZE(inputs));
    if (extra == NULL) goto done;
    PyObject *pv0 = PyLong_FromLongLong(v0);
    if (pv0 == NULL) goto done;
    PyTuple_SET_ITEM(extra, 0, pv0);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(inputs); i++) {
        PyObject *itid = registered_tid(self, PyList_GET_ITEM(inputs, i));
        if (itid == NULL) { result = PyErr_Occurred() ? -1 : 0; goto done; }
        PyTuple_SET_ITEM(extra, i + 1, itid);
    }
    meta = make_meta(self, w, &no_gf);
    if (meta == NULL) goto done;
    module = PyObject_GetAttr(self->modules, s_current);
    if (module == NULL) goto done;
    rec = PyTuple_Pack(8, s_inplace, name, tid, meta, where, module, lasti ? lasti : Py_None, extra);
    if (rec == NULL) goto done;
    long long t = now_ns(self);
    if (t == -1 && PyErr_Occurred()) goto done;
    if (append_record(self, rec, t) < 0) goto done;
    if (call_hooks(self, n, w) < 0) goto done;
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

/* Python's record_write / record_outputs, for what the compiled path leaves to them (find_where
 * has left the line finder's offset at `where`'s, which Tracker._add reads). */
static int call_python(Hot *self, PyObject *method, PyObject *func, PyObject *second, PyObject *third,
                       PyObject *args, PyObject *kwargs, PyObject *where) {
    PyObject *kw = kwargs;
    if (kw == NULL && (kw = PyDict_New()) == NULL) return -1;
    else if (kwargs != NULL) Py_INCREF(kw);
    PyObject *cargs[6] = {func, second, third, args, kw, where};
    PyObject *res;
    if (method == self->record_write) {  /* record_write(func, written, v0, args, kwargs, where) */
        res = PyObject_Vectorcall(method, cargs, 6, NULL);
    } else {  /* record_outputs(func, action, args, kwargs, r, where) */
        PyObject *oargs[6] = {func, second, args, kw, third, where};
        res = PyObject_Vectorcall(method, oargs, 6, NULL);
    }
    Py_DECREF(kw);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

/* A watched call that records nothing itself (TrackMode._watch): the watch runs first. */
static int run_watch(Hot *self, PyObject *func, PyObject *args) {
    PyObject *entry = PyDict_GetItemWithError(self->watched, func);
    if (entry == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, func);
        return -1;
    }
    PyObject *wargs[4] = {self->tracker, func, args, self->where};
    PyObject *r = PyObject_Vectorcall(PyTuple_GET_ITEM(entry, 0), wargs, 4, NULL);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* __torch_function__(mode, func, types, args=(), kwargs=None), called through a bound method */
static PyObject *hot_vectorcall(Hot *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (self->slow == NULL) {  /* closed: the block has ended; behave like the plain function */
        if (n >= 2 && n <= 5 && kwnames == NULL) {
            PyObject *kwargs = n == 5 && a[4] != Py_None ? a[4] : NULL;
            if (n < 4) {
                PyObject *empty = PyTuple_New(0);
                if (empty == NULL) return NULL;
                PyObject *r = PyObject_Call(a[1], empty, kwargs);
                Py_DECREF(empty);
                return r;
            }
            return PyObject_Call(a[1], a[3], kwargs);
        }
        PyErr_SetString(PyExc_RuntimeError, "tensormagic: the tracking mode was closed");
        return NULL;
    }
    if (kwnames != NULL || n < 4 || n > 5 || !PyTuple_Check(a[3]) ||
        (n == 5 && a[4] != Py_None && !PyDict_Check(a[4])))
        return PyObject_Vectorcall(self->slow, a + 1, (n - 1) | (nargsf & PY_VECTORCALL_ARGUMENTS_OFFSET), kwnames);
    PyObject *func = a[1], *args = a[3];
    PyObject *kwargs = n == 5 && a[4] != Py_None && PyDict_GET_SIZE(a[4]) > 0 ? a[4] : NULL;
    /* a call made by a running torch call (inside nn.init, say) is part of that call: this
     * object's own flag first, so that such a call never reaches the Python path */
    if (self->disabled || self->busy) return PyObject_Call(func, args, kwargs);
    PyObject *action = PyDict_GetItemWithError(self->actions, func);
    if (action == NULL) {
        if (PyErr_Occurred()) return NULL;
        return PyObject_Vectorcall(self->slow, a + 1, n - 1, NULL);  /* classifies it */
    }
    long act = PyLong_AsLong(action);
    if (act == -1 && PyErr_Occurred()) return NULL;
    PyObject *busy = PyDict_GetItemWithError(self->state, s_busy);  /* the Python path's flag */
    if (busy == NULL && PyErr_Occurred()) return NULL;
    if (act == SKIP || busy == Py_True) return PyObject_Call(func, args, kwargs);
    if (act == WATCHED_SKIP) {
        if (run_watch(self, func, args) < 0 && recording_failed(self) < 0) return NULL;
        return PyObject_Call(func, args, kwargs);
    }
    PyObject *a0 = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : NULL;
    int a0_tensor = a0 != NULL && is_tensor(self, a0);
    if (!((act == GENERAL && (kwargs == NULL || PyDict_GetItemWithError(kwargs, s_out) == NULL)) ||
          (act == INPLACE && a0_tensor))) {
        if (PyErr_Occurred()) return NULL;
        return PyObject_Vectorcall(self->slow, a + 1, n - 1, NULL);
    }

    /* GENERAL (no out=): mode.py's inlined path and _call's; INPLACE on args[0]: _call's. */
    long long t = now_ns(self);
    if (t == -1 && PyErr_Occurred()) return NULL;
    long long v0 = -1;
    if (a0_tensor) {
        v0 = version_of(a0);
        if (v0 == -2) return NULL;
    }
    Py_XINCREF(a0);  /* the call may drop the args tuple's last reference elsewhere: keep ours */
    /* Python code never runs inside this call through the mode (a nested torch call comes here
     * first and sees the flag), so the flag need not be written to the mode's state. */
    self->busy = 1;
    PyObject *r = PyObject_Call(func, args, kwargs);
    self->busy = 0;
    if (r == NULL) {
        user_call_failed(self, func, args, kwargs);
        Py_XDECREF(a0);
        return NULL;
    }
    if (self->disabled || self->raw == NULL) { Py_XDECREF(a0); return r; }
    PyObject *lasti = NULL, *where = NULL;
    int failed = 0;
    if (act == INPLACE || (r == a0 && a0_tensor)) {
        /* an in-place op, or one that wrote its input and handed it back (dropout inplace) */
        long long v1 = act == INPLACE ? -1 : version_of(a0);  /* record_write looks at INPLACE itself */
        if (v1 == -2) {
            failed = 1;
        } else if (act == INPLACE || v1 != v0) {
            where = find_where(self, &lasti);
            int c = where == NULL ? -1 : written(self, func, a0, v0, args, kwargs, where, lasti);
            if (c < 0) {
                failed = 1;
            } else if (c == 0) {
                PyObject *pv0 = PyLong_FromLongLong(v0);
                failed = pv0 == NULL ||
                         call_python(self, self->record_write, func, a0, pv0, args, kwargs, where) < 0;
                Py_XDECREF(pv0);
            }
        }
    } else if (is_tensor(self, r) || PyTuple_Check(r) || PyList_Check(r)) {
        where = find_where(self, &lasti);
        int c = where == NULL ? -1 : is_tensor(self, r) ? created(self, func, args, kwargs, r, where, lasti, t) : 0;
        if (c < 0) {
            failed = 1;
        } else if (c == 0) {
            failed = call_python(self, self->record_outputs, func, self->general, r, args, kwargs, where) < 0;
        }
    }
    Py_XDECREF(where);
    Py_XDECREF(lasti);
    Py_XDECREF(a0);
    if (failed && recording_failed(self) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *hot_close(Hot *self, PyObject *Py_UNUSED(ignored)) {
    hot_clear(self);
    Py_RETURN_NONE;
}

static PyObject *hot_disable(Hot *self, PyObject *Py_UNUSED(ignored)) {
    self->disabled = 1;
    Py_RETURN_NONE;
}

static PyMethodDef hot_methods[] = {
    {"close", (PyCFunction)hot_close, METH_NOARGS, "Drop every reference (the block has ended)."},
    {"disable", (PyCFunction)hot_disable, METH_NOARGS, "Record nothing more: every call passes through."},
    {"now", (PyCFunction)hot_now, METH_NOARGS, "The clock the records' times come from (perf_counter_ns)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *hot_get_disabled(Hot *self, void *closure) { return PyBool_FromLong(self->disabled); }

static PyGetSetDef hot_getset[] = {
    {"disabled", (getter)hot_get_disabled, NULL, "Recording stopped (an internal error or close()).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static char *hot_kwlist[] = {
    "actions", "state", "slow", "watched", "where", "on_error", "internal", "tracker", "error_hooks", "record_hooks", "quiet", "raw",
    "times_append", "tensors", "sid_of_key", "metas", "intern", "inputs", "gf_names", "gf_name",
    "names", "ids", "counter", "ref_type", "storage_id", "no_storage", "modules", "lines",
    "line_cache", "learn", "find", "record_write", "record_outputs", "tensor_type", "now", "general",
    "t0", "fast_cap", NULL,
};

static PyObject *hot_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Hot *self = (Hot *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = (vectorcallfunc)hot_vectorcall;
    PyObject *o[36];
    long long t0;
    Py_ssize_t cap;
    if (!PyArg_ParseTupleAndKeywords(args, kw,
            "O!O!OO!OOOO" "O!O!O!O!" "O" "O!O!O!" "O" "O!O!" "O" "O!O!" "OOOOOO" "O!" "OOOO" "O!" "OO" "Ln:Hot", hot_kwlist,
            &PyDict_Type, &o[0], &PyDict_Type, &o[1], &o[2], &PyDict_Type, &o[3], &o[4], &o[5], &o[6], &o[7],
            &PyList_Type, &o[8], &PyList_Type, &o[9], &PyDict_Type, &o[10], &PyList_Type, &o[11], &o[12],
            &PyDict_Type, &o[13], &PyDict_Type, &o[14], &PyDict_Type, &o[15], &o[16],
            &PyDict_Type, &o[17], &PyDict_Type, &o[18], &o[19], &PyDict_Type, &o[20],
            &PyDict_Type, &o[21], &o[22], &o[23], &o[24], &o[25], &o[26], &o[27], &PyDict_Type, &o[28],
            &o[29], &o[30], &o[31], &o[32], &PyType_Type, &o[33], &o[34], &o[35], &t0, &cap)) {
        Py_DECREF(self);
        return NULL;
    }
    int i = 0;
#define SET(f) self->f = Py_NewRef(o[i]); i++;
    HOT_FIELDS(SET)
#undef SET
    self->t0 = t0;
    self->fast_cap = cap;
    learn_getsets((PyTypeObject *)self->tensor_type);
    return (PyObject *)self;
}

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic._hotpath.Hot",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The compiled __torch_function__ of a tracking mode: SKIP calls and new-tensor ops.",
    .tp_new = hot_new,
    .tp_dealloc = (destructor)hot_dealloc,
    .tp_traverse = (traverseproc)hot_traverse,
    .tp_clear = (inquiry)hot_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Hot, vectorcall),
    .tp_methods = hot_methods,
    .tp_getset = hot_getset,
};

static struct PyModuleDef hotpath_module = {
    PyModuleDef_HEAD_INIT, "_hotpath",
    "The compiled hot path of tensormagic's tracking mode (optional: mode.py falls back to Python).",
    -1, NULL,
};

PyMODINIT_FUNC PyInit__hotpath(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL;
    INTERN(s_tid, "tid") INTERN(s_current, "current")
    INTERN(s_lasti, "lasti") INTERN(s_create, "create") INTERN(s_f_lasti, "f_lasti")
    INTERN(s_busy, "_busy") INTERN(s_inplace, "inplace") INTERN(s_out, "out")
    INTERN(attr_names[A_SHAPE], "shape") INTERN(attr_names[A_DTYPE], "dtype")
    INTERN(attr_names[A_DEVICE], "device") INTERN(attr_names[A_REQUIRES_GRAD], "requires_grad")
    INTERN(attr_names[A_GRAD_FN], "grad_fn") INTERN(attr_names[A_VERSION], "_version")
    INTERN(attr_names[A_BASE], "_base")
#undef INTERN
    if (PyType_Ready(&HotType) < 0) return NULL;
    PyObject *m = PyModule_Create(&hotpath_module);
    if (m == NULL) return NULL;
    Py_INCREF(&HotType);
    if (PyModule_AddObject(m, "Hot", (PyObject *)&HotType) < 0) {
        Py_DECREF(&HotType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
