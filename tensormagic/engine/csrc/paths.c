/* The module hooks' push and pop, compiled (engine/modules.py: _push and _pop are their Python
 * twins, which tests/test_engines.py holds equal).  The hooks themselves stay Python functions:
 * their first line, the compile check, is what Dynamo reads and folds while it traces a module's
 * call, so that it never reaches this call.  Everything after it runs at every module call of a
 * tracked block (twice: before and after the module runs), ~3,000 instructions of bytecode each
 * time in Python.  A module path not cached yet is made by the stack's own _path_of. */
#include "hot.h"
#include <pythread.h>

static PyObject *s_stack, *s_child_paths, *s_path_of;

static int init_names(void) {
    if (s_stack != NULL) return 0;
    if ((s_child_paths = PyUnicode_InternFromString("_child_paths")) == NULL ||
        (s_path_of = PyUnicode_InternFromString("_path_of")) == NULL ||
        (s_stack = PyUnicode_InternFromString("_stack")) == NULL)
        return -1;
    return 0;
}

/* running.get(threading.get_ident()), as a new reference; NULL (no exception) when absent */
static PyObject *stacks_of(PyObject *running) {
    if (!PyDict_Check(running)) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: the running stacks are a dict");
        return NULL;
    }
    PyObject *key = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (key == NULL) return NULL;
    PyObject *stacks = PyDict_GetItemWithError(running, key);
    Py_DECREF(key);
    return Py_XNewRef(stacks);
}

/* st._stack, checked to be the list ModuleStack keeps */
static PyObject *stack_of(PyObject *st) {
    PyObject *stack = PyObject_GetAttr(st, s_stack);
    if (stack != NULL && !PyList_Check(stack)) {
        Py_DECREF(stack);
        PyErr_SetString(PyExc_TypeError, "tensormagic: ModuleStack._stack is a list");
        return NULL;
    }
    return stack;
}

/* stack[-1], the (module, path) pair on top: borrowed, NULL with an exception if not a pair */
static PyObject *top_of(PyObject *stack) {
    PyObject *top = PyList_GET_ITEM(stack, PyList_GET_SIZE(stack) - 1);
    if (!PyTuple_Check(top) || PyTuple_GET_SIZE(top) != 2) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: ModuleStack._stack holds (module, path) pairs");
        return NULL;
    }
    return top;
}

/* The path of `mod` called inside the module on top of `stack`, as cached in st._child_paths when
 * it was found under the same parent path; NULL without an exception when it must be made. */
static PyObject *cached_path(PyObject *st, PyObject *stack, PyObject *mod) {
    PyObject *top = top_of(stack);
    if (top == NULL) return NULL;
    PyObject *paths = PyObject_GetAttr(st, s_child_paths);
    if (paths == NULL) return NULL;
    PyObject *path = NULL, *key = NULL, *a = NULL, *b = NULL;
    if (!PyDict_Check(paths)) {
        PyErr_SetString(PyExc_TypeError, "tensormagic: ModuleStack._child_paths is a dict");
    } else if ((a = PyLong_FromVoidPtr(PyTuple_GET_ITEM(top, 0))) != NULL && (b = PyLong_FromVoidPtr(mod)) != NULL &&
               (key = PyTuple_Pack(2, a, b)) != NULL) {  /* (id(parent), id(mod)) */
        PyObject *got = PyDict_GetItemWithError(paths, key);  /* (parent's path, path) */
        if (got != NULL && PyTuple_Check(got) && PyTuple_GET_SIZE(got) == 2 &&
            PyTuple_GET_ITEM(got, 0) == PyTuple_GET_ITEM(top, 1))
            path = Py_NewRef(PyTuple_GET_ITEM(got, 1));
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(key);
    Py_DECREF(paths);
    return path;
}

/* An iterator over the module stacks of this thread's blocks, for push and pop(running, mod)
 * (`for st in stacks`, as Python walks it); NULL with an exception, or without one where this
 * thread runs no block */
static PyObject *thread_stacks(PyObject *const *a, Py_ssize_t n, const char *usage) {
    if (n != 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    if (init_names() < 0) return NULL;
    PyObject *stacks = stacks_of(a[0]);
    if (stacks == NULL) return NULL;
    PyObject *it = PyObject_GetIter(stacks);
    Py_DECREF(stacks);
    return it;
}

/* modules._push(running, mod): each stack of this thread's blocks takes `mod` on top */
PyObject *tmh_module_push(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    PyObject *it = thread_stacks(a, n, "module_push(running, mod)");
    if (it == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *mod = a[1];
    PyObject *st;
    int failed = 0;
    while (!failed && (st = PyIter_Next(it)) != NULL) {
        PyObject *stack = stack_of(st), *path = NULL, *pair = NULL;
        failed = 1;
        if (stack == NULL) goto next;
        if (PyList_GET_SIZE(stack) > 0) {
            path = cached_path(st, stack, mod);
            if (path == NULL && PyErr_Occurred()) goto next;
        }
        if (path == NULL && (path = PyObject_CallMethodOneArg(st, s_path_of, mod)) == NULL) goto next;
        if ((pair = PyTuple_Pack(2, mod, path)) == NULL || PyList_Append(stack, pair) < 0) goto next;
        failed = PyObject_SetAttr(st, tmh_s_current, path) < 0;
    next:
        Py_XDECREF(stack);
        Py_XDECREF(path);
        Py_XDECREF(pair);
        Py_DECREF(st);
    }
    Py_DECREF(it);
    if (failed || PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* modules._pop(running, mod): each stack of this thread's blocks drops `mod` from its top */
PyObject *tmh_module_pop(PyObject *Py_UNUSED(m), PyObject *const *a, Py_ssize_t n) {
    PyObject *it = thread_stacks(a, n, "module_pop(running, mod)");
    if (it == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *mod = a[1];
    PyObject *st;
    int failed = 0;
    while (!failed && (st = PyIter_Next(it)) != NULL) {
        PyObject *stack = stack_of(st), *top;
        failed = 1;
        if (stack == NULL) goto next;
        if (PyList_GET_SIZE(stack) > 0) {
            if ((top = top_of(stack)) == NULL) goto next;
            if (PyTuple_GET_ITEM(top, 0) == mod && PyList_SetSlice(stack, PyList_GET_SIZE(stack) - 1, PyList_GET_SIZE(stack), NULL) < 0)
                goto next;
        }
        PyObject *current = Py_None;
        if (PyList_GET_SIZE(stack) > 0) {
            if ((top = top_of(stack)) == NULL) goto next;
            current = PyTuple_GET_ITEM(top, 1);
        }
        failed = PyObject_SetAttr(st, tmh_s_current, current) < 0;
    next:
        Py_XDECREF(stack);
        Py_DECREF(st);
    }
    Py_DECREF(it);
    if (failed || PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}
