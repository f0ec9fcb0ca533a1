/* The compiled mode's dispatch: ``__torch_function__`` for every torch call a tracked block makes
 * (module.c's header says what it answers itself and what it hands to Python), with the helpers
 * that record a call or pass it on.  Split from module.c, which keeps the Hot type and the
 * extension module.
 */
#include "hot.h"

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
    PyObject *kw = tmh_kwargs_dict(kwargs);
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
    PyObject *kw = tmh_kwargs_dict(kwargs);
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
    PyObject *kw = tmh_kwargs_dict(kwargs);
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
    PyObject *r = NULL, *st = NULL, *pact = PyLong_FromLong(act), *kw = tmh_kwargs_dict(kwargs);
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
PyObject *tmh_hot_vectorcall(Hot *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
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
