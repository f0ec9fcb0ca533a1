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
#include "hot.h"

PyObject *tmh_s_tid, *tmh_s_current, *tmh_s_lasti, *tmh_s_create, *tmh_s_f_lasti, *tmh_s_busy,
    *tmh_s_inplace, *tmh_s_out, *tmh_s_view, *tmh_s_move, *tmh_attr_names[N_ATTRS];

static int hot_traverse(Hot *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    HOT_FIELDS(VISIT)
#undef VISIT
    for (int i = 0; i < TMH_SKIP_CODES; i++) Py_VISIT(self->skip_codes[i]);
    Py_VISIT(self->compile_flags);
    return 0;
}

static int hot_clear(Hot *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    HOT_FIELDS(CLEAR)
#undef CLEAR
    for (int i = 0; i < TMH_SKIP_CODES; i++) Py_CLEAR(self->skip_codes[i]);
    Py_CLEAR(self->compile_flags);
    self->disabled = 1;  /* a closed object only passes calls through */
    return 0;
}

static void hot_dealloc(Hot *self) {
    PyObject_GC_UnTrack(self);
    hot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *hot_now(Hot *self, PyObject *Py_UNUSED(ignored)) {
    long long t = tmh_now_ns(self);
    if (t == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLongLong(t);
}

/* The compiled mode's __torch_function__ (mode.py: CompiledTrackMode) is a Python function with
 * TrackMode.__torch_function__'s code, so that torch.compile sees (and guards on) that code and
 * inlines it, and whose calls through vectorcall (torch's dispatch from C++) come here: the Hot
 * object kept in the function's __dict__ answers them.  A caller the interpreter runs the
 * function's code for directly (a Python caller on CPython 3.11) gets the Python path, which
 * records the same events. */
static PyObject *tmh_s_hot;
static vectorcallfunc function_vectorcall;  /* what a Python function's calls ran before set_dispatch */

static PyObject *dispatch_vectorcall(PyObject *fn, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    PyObject *d = ((PyFunctionObject *)fn)->func_dict;
    PyObject *hot = d != NULL ? PyDict_GetItemWithError(d, tmh_s_hot) : NULL;
    if (hot == NULL) {
        if (PyErr_Occurred()) return NULL;
        return function_vectorcall(fn, a, nargsf, kwnames);  /* closed: the Python body */
    }
    Py_INCREF(hot);
    PyObject *r = tmh_hot_vectorcall((Hot *)hot, a, nargsf, kwnames);
    Py_DECREF(hot);
    return r;
}

static PyTypeObject HotType;

static PyObject *set_dispatch(PyObject *module, PyObject *const *args, Py_ssize_t n) {
    if (n != 2 || !PyFunction_Check(args[0]) || !PyObject_TypeCheck(args[1], &HotType)) {
        PyErr_SetString(PyExc_TypeError, "set_dispatch(function, hot)");
        return NULL;
    }
    vectorcallfunc own = ((PyFunctionObject *)args[0])->vectorcall;
    if (own != dispatch_vectorcall) {
        if (function_vectorcall != NULL && own != function_vectorcall) {
            PyErr_SetString(PyExc_TypeError, "set_dispatch: a function with its own vectorcall");
            return NULL;
        }
        function_vectorcall = own;
    }
    PyObject *d = PyObject_GenericGetDict(args[0], NULL);
    if (d == NULL) return NULL;
    int rc = PyDict_SetItem(d, tmh_s_hot, args[1]);
    Py_DECREF(d);
    if (rc < 0) return NULL;
#if PY_VERSION_HEX >= 0x030C0000
    PyFunction_SetVectorcall((PyFunctionObject *)args[0], dispatch_vectorcall);
#else
    ((PyFunctionObject *)args[0])->vectorcall = dispatch_vectorcall;
#endif
    Py_RETURN_NONE;
}

static PyObject *hot_close(Hot *self, PyObject *Py_UNUSED(ignored)) {
    hot_clear(self);
    Py_RETURN_NONE;
}

/* TrackMode._where, compiled: the user's place of the running call (LineFinder.find from the
 * caller's frame up: tensormagic's own frames are skipped as the Python finder skips them), with
 * lines.lasti set as find sets it. */
static PyObject *hot_where(Hot *self, PyObject *Py_UNUSED(ignored)) {
    if (self->line_cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tensormagic: the block's compiled recorder is closed");
        return NULL;
    }
    PyObject *lasti = NULL;
    PyObject *where = tmh_find_where(self, &lasti);
    Py_XDECREF(lasti);
    return where;
}

static PyObject *hot_disable(Hot *self, PyObject *Py_UNUSED(ignored)) {
    self->disabled = 1;
    Py_RETURN_NONE;
}

static PyObject *hot_new_tensor(Hot *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"t", "alias", NULL};
    PyObject *t;
    int alias = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$p:new_tensor", kwlist, &t, &alias)) return NULL;
    return tmh_new_tensor(self, t, alias);
}

static PyMethodDef hot_methods[] = {
    {"meta", (PyCFunction)tmh_meta, METH_O, "Tracker.meta, compiled: a tensor's interned metadata snapshot."},
    {"new_tensor", (PyCFunction)(void (*)(void))hot_new_tensor, METH_VARARGS | METH_KEYWORDS,
     "Tracker._new, compiled: new_tensor(t, *, alias=False) -> (tid, meta)."},
    {"add", (PyCFunction)(void (*)(void))tmh_add, METH_FASTCALL,
     "Tracker._add, compiled: add(kind, func, tid, meta, where, extra, objs)."},
    {"grads_filled", (PyCFunction)(void (*)(void))tmh_grads_filled, METH_FASTCALL,
     "BackwardRecords._grads_filled, compiled: grads_filled(func, leaves, prev_nonzero, where)."},
    {"where", (PyCFunction)hot_where, METH_NOARGS, "TrackMode._where, compiled: the user's place of the running call."},
    {"close", (PyCFunction)hot_close, METH_NOARGS, "Drop every reference (the block has ended)."},
    {"disable", (PyCFunction)hot_disable, METH_NOARGS, "Record nothing more: every call passes through."},
    {"now", (PyCFunction)hot_now, METH_NOARGS, "The clock the records' times come from (perf_counter_ns)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *hot_get_disabled(Hot *self, void *closure) { return PyBool_FromLong(self->disabled); }

static PyObject *hot_get_fast_slots(Hot *self, void *closure) {
    return Py_BuildValue("(NNN)", PyBool_FromLong(self->tid.offset > 0), PyBool_FromLong(self->current.offset > 0),
                         PyBool_FromLong(self->lasti.offset > 0));
}

static PyGetSetDef hot_getset[] = {
    {"disabled", (getter)hot_get_disabled, NULL, "Recording stopped (an internal error or close()).", NULL},
    {"fast_slots", (getter)hot_get_fast_slots, NULL,
     "Whether Ref.tid, ModuleStack.current and LineFinder.lasti are read at their slots' offsets.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static char *hot_kwlist[] = {
    "actions", "state", "slow", "watched", "where", "on_error", "internal", "tracker", "error_hooks", "record_hooks", "quiet", "raw",
    "times_append", "tensors", "sid_of_key", "metas", "intern", "inputs", "gf_names", "gf_name",
    "names", "ids", "counter", "ref_type", "storage_id", "no_storage", "modules", "lines",
    "line_cache", "learn", "find", "record_write", "record_outputs", "tensor_type", "now", "general", "f64",
    "write_gate", "suspects", "recheck", "t0", "fast_cap", NULL,
};

/* `name` of instances of `type`, at its slot's offset where it is one (tmh_get, tmh_set) */
static Slot tmh_slot_of(PyTypeObject *type, PyObject *name) {
    Slot s = {type, tmh_member_offset(type, name)};
    return s;
}

static PyObject *hot_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Hot *self = (Hot *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = (vectorcallfunc)tmh_hot_vectorcall;
    PyObject *o[40];
    long long t0;
    Py_ssize_t cap;
    if (!PyArg_ParseTupleAndKeywords(args, kw,
            "O!O!OO!OOOO" "O!O!O!O!" "O" "O!O!O!" "O" "O!O!" "O" "O!O!" "OOOOOO" "O!" "OOOO" "O!" "OOO" "O" "O!O" "Ln:Hot", hot_kwlist,
            &PyDict_Type, &o[0], &PyDict_Type, &o[1], &o[2], &PyDict_Type, &o[3], &o[4], &o[5], &o[6], &o[7],
            &PyList_Type, &o[8], &PyList_Type, &o[9], &PyDict_Type, &o[10], &PyList_Type, &o[11], &o[12],
            &PyDict_Type, &o[13], &PyDict_Type, &o[14], &PyDict_Type, &o[15], &o[16],
            &PyDict_Type, &o[17], &PyDict_Type, &o[18], &o[19], &PyDict_Type, &o[20],
            &PyDict_Type, &o[21], &o[22], &o[23], &o[24], &o[25], &o[26], &o[27], &PyDict_Type, &o[28],
            &o[29], &o[30], &o[31], &o[32], &PyType_Type, &o[33], &o[34], &o[35], &o[36], &o[37],
            &PySet_Type, &o[38], &o[39], &t0, &cap)) {
        Py_DECREF(self);
        return NULL;
    }
    int i = 0;
#define SET(f) self->f = Py_NewRef(o[i]); i++;
    HOT_FIELDS(SET)
#undef SET
    self->t0 = t0;
    self->fast_cap = cap;
    /* read once here, not from the mode's state at every call (one dict lookup a call less) */
    static PyObject *s_flags;
    if (s_flags == NULL && (s_flags = PyUnicode_InternFromString("_compile_flags")) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject *flags = PyDict_GetItemWithError(self->state, s_flags);  /* borrowed; str keys: never raises */
    if (flags != NULL && PyDict_CheckExact(flags)) self->compile_flags = Py_NewRef(flags);
    self->tid = tmh_slot_of((PyTypeObject *)self->ref_type, tmh_s_tid);
    self->current = tmh_slot_of(Py_TYPE(self->modules), tmh_s_current);
    self->lasti = tmh_slot_of(Py_TYPE(self->lines), tmh_s_lasti);
    tmh_learn_getsets((PyTypeObject *)self->tensor_type);
    return (PyObject *)self;
}

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic.engine._hotpath.Hot",
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

static PyMethodDef module_methods[] = {
    {"live_tensors", (PyCFunction)(void (*)(void))tmh_live_tensors, METH_FASTCALL,
     "live_tensors(tensors, ids, merged): Tracker.live_tensors, compiled."},
    {"held_grads", (PyCFunction)tmh_held_grads, METH_O, "held_grads(leaves): backward._held_grad of each, compiled."},
    {"leaves_of", (PyCFunction)(void (*)(void))tmh_leaves_of, METH_FASTCALL,
     "leaves_of(has_variable, roots): autograd.leaves_of, compiled."},
    {"kind_counts", (PyCFunction)(void (*)(void))tmh_kind_counts, METH_FASTCALL,
     "kind_counts(raw, first_seen): build.Pending._count's kinds and first-seen creates, compiled."},
    {"partial_metas", (PyCFunction)(void (*)(void))tmh_partial_metas, METH_FASTCALL,
     "partial_metas(metas, no_version, partial): the snapshots describe.partial marks, compiled."},
    {"history_runs", (PyCFunction)(void (*)(void))tmh_history_runs, METH_FASTCALL,
     "history_runs(raw, wanted, verbs, moved, made): history.remember's pass over the records, compiled."},
    {"made_before", (PyCFunction)(void (*)(void))tmh_made_before, METH_FASTCALL,
     "made_before(tensors, provenance): the provenance of the block's tensors made before it, compiled."},
    {"grad_names", (PyCFunction)(void (*)(void))tmh_grad_names, METH_FASTCALL,
     "grad_names(raw, backwards, names, autograd_grad): snapshot._grad_names, compiled."},
    {"capture_graph", (PyCFunction)(void (*)(void))tmh_capture_graph, METH_FASTCALL,
     "capture_graph(tensors, names, ids, has_variable, grad_fn, grad_node, roots, nodes, edges, max_nodes): "
     "autograd.capture, compiled."},
    {"walk_modules", (PyCFunction)(void (*)(void))tmh_walk_modules, METH_FASTCALL,
     "walk_modules(out, prefix, root, table, params, plain, is_leaf, grad, named_modules, add_tensor, expand_into): "
     "naming._walk, compiled (False: a module below walks its own way)."},
    {"user_names", (PyCFunction)(void (*)(void))tmh_user_names, METH_FASTCALL,
     "user_names(items, skip): naming._user_names for str keys, compiled (None: another key type)."},
    {"freeze_histories", (PyCFunction)(void (*)(void))tmh_freeze_histories, METH_FASTCALL,
     "freeze_histories(final, histories, history_type): each live tensor's History.freeze(), compiled."},
    {"dead_keys", (PyCFunction)tmh_dead_keys, METH_O, "dead_keys(ids): identity.prune's dead entries, compiled."},
    {"live_tids", (PyCFunction)tmh_live_tids, METH_O, "live_tids(ids): the ids of identity's live entries, compiled."},
    {"set_describe", (PyCFunction)(void (*)(void))tmh_set_describe, METH_FASTCALL,
     "set_describe(attr, meta, call_unwrapped, parameter_type): how tensors that are not plain ones are read (describe.py)."},
    {"module_push", (PyCFunction)(void (*)(void))tmh_module_push, METH_FASTCALL,
     "module_push(running, mod): modules._push, compiled: this thread's module stacks take mod on top."},
    {"module_pop", (PyCFunction)(void (*)(void))tmh_module_pop, METH_FASTCALL,
     "module_pop(running, mod): modules._pop, compiled: this thread's module stacks drop mod from their top."},
    {"set_dispatch", (PyCFunction)(void (*)(void))set_dispatch, METH_FASTCALL,
     "set_dispatch(function, hot): the function's vectorcalls go to the Hot object (kept in its "
     "__dict__ as '_tensormagic_hot'; without it, to the function's own code)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef hotpath_module = {
    PyModuleDef_HEAD_INIT, "_hotpath",
    "The compiled hot path of tensormagic's tracking mode (optional: mode.py falls back to Python).",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__hotpath(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL;
    INTERN(tmh_s_tid, "tid") INTERN(tmh_s_current, "current")
    INTERN(tmh_s_lasti, "lasti") INTERN(tmh_s_create, "create") INTERN(tmh_s_f_lasti, "f_lasti")
    INTERN(tmh_s_busy, "_busy") INTERN(tmh_s_inplace, "inplace") INTERN(tmh_s_out, "out")
    INTERN(tmh_s_view, "view") INTERN(tmh_s_move, "move") INTERN(tmh_s_hot, "_tensormagic_hot")
    INTERN(tmh_attr_names[A_SHAPE], "shape") INTERN(tmh_attr_names[A_DTYPE], "dtype")
    INTERN(tmh_attr_names[A_DEVICE], "device") INTERN(tmh_attr_names[A_REQUIRES_GRAD], "requires_grad")
    INTERN(tmh_attr_names[A_GRAD_FN], "grad_fn") INTERN(tmh_attr_names[A_VERSION], "_version")
    INTERN(tmh_attr_names[A_BASE], "_base") INTERN(tmh_attr_names[A_IS_LEAF], "is_leaf")
    INTERN(tmh_attr_names[A_RETAINS_GRAD], "retains_grad") INTERN(tmh_attr_names[A_GRAD], "grad")
#undef INTERN
    if (PyType_Ready(&HotType) < 0 || PyType_Ready(&tmh_SlotMakerType) < 0 || PyType_Ready(&tmh_SlotDictType) < 0 ||
        tmh_saved_init() < 0 || tmh_build_init() < 0 || PyType_Ready(&tmh_LineEncoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&hotpath_module);
    if (m == NULL) return NULL;
    Py_INCREF(&HotType);
    if (PyModule_AddObject(m, "Hot", (PyObject *)&HotType) < 0) {
        Py_DECREF(&HotType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "SlotMaker", (PyObject *)&tmh_SlotMakerType) < 0 ||
        PyModule_AddObjectRef(m, "SlotDict", (PyObject *)&tmh_SlotDictType) < 0 ||
        PyModule_AddObjectRef(m, "SavedIndex", (PyObject *)&tmh_SavedIndexType) < 0 ||
        PyModule_AddObjectRef(m, "EventBuilder", (PyObject *)&tmh_EventBuilderType) < 0 ||
        PyModule_AddObjectRef(m, "LineEncoder", (PyObject *)&tmh_LineEncoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
