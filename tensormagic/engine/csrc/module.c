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

/* The call's keyword arguments as the Python methods take them: a dict, empty when none. */
static PyObject *kwargs_dict(PyObject *kwargs) {
    return kwargs != NULL ? Py_NewRef(kwargs) : PyDict_New();
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
    PyObject *kw = kwargs_dict(kwargs);
    if (kw != NULL) {
        PyObject *cargs[4] = {func, args, kw, value};
        PyObject *r = PyObject_Vectorcall(self->on_error, cargs, 4, NULL);
        Py_XDECREF(r);
        Py_DECREF(kw);
    }
    PyErr_Clear();  /* the user's exception is the one that matters */
    PyErr_Restore(type, value, tb);
}

/* What the compiled path leaves to Python (find_where has left the line finder's offset at
 * `where`'s, which Tracker._add reads): Tracker.record_write(func, written, v0, args, kwargs, where)
 * and Tracker.record_outputs(func, GENERAL, args, kwargs, r, where).  0, or -1 with an exception. */
static int python_write(Hot *self, PyObject *func, PyObject *w, long long v0, PyObject *args,
                        PyObject *kwargs, PyObject *where) {
    PyObject *pv0 = PyLong_FromLongLong(v0);
    PyObject *kw = kwargs_dict(kwargs);
    PyObject *res = NULL;
    if (pv0 != NULL && kw != NULL) {
        PyObject *cargs[6] = {func, w, pv0, args, kw, where};
        res = PyObject_Vectorcall(self->record_write, cargs, 6, NULL);
    }
    Py_XDECREF(pv0);
    Py_XDECREF(kw);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

static int python_outputs(Hot *self, PyObject *func, PyObject *r, PyObject *args, PyObject *kwargs,
                          PyObject *where) {
    PyObject *kw = kwargs_dict(kwargs);
    if (kw == NULL) return -1;
    PyObject *cargs[6] = {func, self->general, args, kw, r, where};
    PyObject *res = PyObject_Vectorcall(self->record_outputs, cargs, 6, NULL);
    Py_DECREF(kw);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

/* 1 if the call's first argument is a tensor that is neither a leaf nor retains its grad (what a
 * watch marked non_leaf_only looks at), 0 if not, -1 with an exception. */
static int reads_non_leaf(Hot *self, PyObject *args) {
    PyObject *t = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : NULL;
    if (t == NULL || !tmh_is_tensor(self, t)) return 0;
    for (int which = A_IS_LEAF; which <= A_RETAINS_GRAD; which++) {
        PyObject *v = tmh_tensor_attr(t, which);
        int yes = v == NULL ? -1 : PyObject_IsTrue(v);
        Py_XDECREF(v);
        if (yes < 0 && tmh_clear_exception()) yes = 0;  /* describe.flag: unreadable is "no" */
        if (yes != 0) return yes < 0 ? -1 : 0;
    }
    return 1;
}

/* A watched call that records nothing itself (TrackMode._watch): the watch runs first, unless it
 * only looks at non-leaf reads and this is not one. */
static int run_watch(Hot *self, PyObject *func, PyObject *args) {
    PyObject *entry = PyDict_GetItemWithError(self->watched, func);
    if (entry == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, func);
        return -1;
    }
    if (PyTuple_GET_SIZE(entry) > 2 && PyTuple_GET_ITEM(entry, 2) == Py_True) {
        int r = reads_non_leaf(self, args);
        if (r <= 0) return r;
    }
    PyObject *a0 = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : NULL;
    PyObject *r;
    if (a0 != NULL && tmh_is_tensor(self, a0) && !tmh_plain(a0) && tmh_describe_call != NULL) {
        /* a subclass: the watch reads it without the subclass's code (describe.call_unwrapped) */
        PyObject *wargs[5] = {PyTuple_GET_ITEM(entry, 0), self->tracker, func, args, self->where};
        r = PyObject_Vectorcall(tmh_describe_call, wargs, 5, NULL);
    } else {
        PyObject *wargs[4] = {self->tracker, func, args, self->where};
        r = PyObject_Vectorcall(PyTuple_GET_ITEM(entry, 0), wargs, 4, NULL);
    }
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* A call of the kinds the Python path records (moves, views, backward, out=, watched calls):
 * TrackMode._before_call, the call itself from here, TrackMode._after_call.  Run from C, so a
 * warning torch raises inside the call points at the caller's line, not at a tensormagic frame.
 * A backward runs through backward_run.run (its engine with the mode on the stack), as
 * TrackMode._call runs it; that function sets the busy flags itself.
 * Where the mode does not offer the halves, the Python path runs it all. */
static PyObject *run_halves(Hot *self, PyObject *func, long act, PyObject *args, PyObject *kwargs,
                            PyObject *const *a, Py_ssize_t n) {
    static PyObject *s_before, *s_after, *s_backward;
    if (s_before == NULL && ((s_before = PyUnicode_InternFromString("_before_now")) == NULL ||
                             (s_after = PyUnicode_InternFromString("_after_now")) == NULL ||
                             (s_backward = PyUnicode_InternFromString("_backward_now")) == NULL))
        return NULL;
    PyObject *before = PyDict_GetItemWithError(self->state, s_before);  /* borrowed */
    PyObject *after = before == NULL ? NULL : PyDict_GetItemWithError(self->state, s_after);
    PyObject *backward = after == NULL || act != BACKWARD ? NULL : PyDict_GetItemWithError(self->state, s_backward);
    if (after == NULL || (act == BACKWARD && backward == NULL)) {
        if (PyErr_Occurred()) return NULL;
        return PyObject_Vectorcall(self->slow, a + 1, n - 1, NULL);
    }
    Py_INCREF(before);
    Py_INCREF(after);
    Py_XINCREF(backward);
    PyObject *r = NULL, *st = NULL, *pact = PyLong_FromLong(act), *kw = kwargs_dict(kwargs);
    if (pact != NULL && kw != NULL) {
        PyObject *bargs[4] = {func, pact, args, kw};
        st = PyObject_Vectorcall(before, bargs, 4, NULL);  /* raises only as the Python path would */
    }
    if (st != NULL) {
        if (backward != NULL && st != Py_None) {
            PyObject *rargs[3] = {func, args, kw};  /* kw: the dict _before_call saw (and may have filled) */
            r = PyObject_Vectorcall(backward, rargs, 3, NULL);
        } else {
            self->busy = 1;
            r = PyObject_Call(func, args, kwargs);
            self->busy = 0;
        }
        if (r == NULL) {
            user_call_failed(self, func, args, kwargs);
        } else if (st != Py_None) {
            PyObject *aargs[2] = {st, r};
            PyObject *ok = PyObject_Vectorcall(after, aargs, 2, NULL);
            if (ok == NULL && recording_failed(self) < 0) Py_CLEAR(r);
            Py_XDECREF(ok);
        }
    }
    Py_XDECREF(st);
    Py_XDECREF(pact);
    Py_XDECREF(kw);
    Py_DECREF(before);
    Py_DECREF(after);
    Py_XDECREF(backward);
    return r;
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
    /* torch.compiler.is_compiling() outside TorchScript is its flag (frames.py), set while Dynamo
     * compiles and during a non-strict torch.export, whose fake tensors are no user's: the mode's
     * Python entries pass such calls through, and so does this one */
    static PyObject *s_flag;
    if (s_flag == NULL && (s_flag = PyUnicode_InternFromString("_is_compiling_flag")) == NULL) return NULL;
    if (self->compile_flags != NULL && PyDict_GetItemWithError(self->compile_flags, s_flag) == Py_True)
        return PyObject_Call(func, args, kwargs);
    if (PyErr_Occurred()) return NULL;
    PyObject *action = PyDict_GetItemWithError(self->actions, func);
    if (action == NULL) {
        if (PyErr_Occurred()) return NULL;
        /* classified here, then run from C like every later call: a warning torch raises inside
         * the call then points at the caller's line, not at a tensormagic frame */
        static PyObject *s_classify;
        if (s_classify == NULL && (s_classify = PyUnicode_InternFromString("_classify_now")) == NULL) return NULL;
        PyObject *cl = PyDict_GetItemWithError(self->state, s_classify);  /* borrowed */
        PyObject *got = cl == NULL ? NULL : PyObject_CallOneArg(cl, func);
        Py_XDECREF(got);
        action = got == NULL ? NULL : PyDict_GetItemWithError(self->actions, func);
        if (action == NULL) {
            PyErr_Clear();  /* the Python path classifies it (and reports an internal failure once) */
            return PyObject_Vectorcall(self->slow, a + 1, n - 1, NULL);
        }
    }
    long act = PyLong_AsLong(action);
    if (act == -1 && PyErr_Occurred()) return NULL;
    PyObject *busy = PyDict_GetItemWithError(self->state, tmh_s_busy);  /* the Python path's flag */
    if (busy == NULL && PyErr_Occurred()) return NULL;
    /* besides True and False, backward_run.OffThread while backward's engine runs: true on
     * threads other than the one that called backward (their calls pass through) */
    if (act == SKIP || busy == Py_True) return PyObject_Call(func, args, kwargs);
    if (busy != NULL && busy != Py_False) {
        int other = PyObject_IsTrue(busy);
        if (other != 0) {
            if (other < 0) PyErr_Clear();  /* cannot tell: pass the call through, as for a busy mode */
            return PyObject_Call(func, args, kwargs);
        }
    }
    if (act == WATCHED_SKIP) {
        if (run_watch(self, func, args) < 0 && recording_failed(self) < 0) return NULL;
        return PyObject_Call(func, args, kwargs);
    }
    PyObject *a0 = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : NULL;
    int a0_tensor = a0 != NULL && tmh_is_tensor(self, a0);
    if (!((act == GENERAL && (kwargs == NULL || PyDict_GetItemWithError(kwargs, tmh_s_out) == NULL)) ||
          (act == INPLACE && a0_tensor))) {
        if (PyErr_Occurred()) return NULL;
        return run_halves(self, func, act, args, kwargs, a, n);
    }

    /* GENERAL (no out=): mode.py's inlined path and _call's; INPLACE on args[0]: _call's. */
    long long t = tmh_now_ns(self);
    if (t == -1 && PyErr_Occurred()) return NULL;
    long long v0 = -1;
    if (a0_tensor) {
        v0 = tmh_version_of(a0);
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
        long long v1 = act == INPLACE ? -1 : tmh_version_of(a0);  /* record_write looks at INPLACE itself */
        if (v1 == -2) {
            failed = 1;
        } else if (act == INPLACE || v1 != v0) {
            where = tmh_find_where(self, &lasti);
            int c = where == NULL ? -1 : where == Py_Ellipsis ? 1 : tmh_written(self, func, a0, v0, args, kwargs, where, lasti);
            if (c < 0) {
                failed = 1;
            } else if (c == 0) {
                failed = python_write(self, func, a0, v0, args, kwargs, where) < 0;
            }
        }
    } else if (tmh_is_tensor(self, r) || PyTuple_Check(r) || PyList_Check(r)) {
        where = tmh_find_where(self, &lasti);
        int c = where == NULL ? -1 : where == Py_Ellipsis ? 1 : tmh_is_tensor(self, r) ? tmh_created(self, func, args, kwargs, r, where, lasti, t) : 0;
        if (c < 0) {
            failed = 1;
        } else if (c == 0) {
            failed = python_outputs(self, func, r, args, kwargs, where) < 0;
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
    PyObject *r = hot_vectorcall((Hot *)hot, a, nargsf, kwnames);
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
    self->vectorcall = (vectorcallfunc)hot_vectorcall;
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
