/* naming._walk, compiled: what torch's named_parameters() or named_buffers() names in a plain module
 * tree, read from the modules' own dicts.  The namespace walk runs at every tracked cell's start and
 * end; in Python each module cost ~6k instructions and each parameter ~10k (two torch getters
 * called from Python, and Tensor.__hash__ for the memo). */
#include "hot.h"

/* is `o` of one of the types in the tuple `plain` (describe.PLAIN: torch.Tensor, nn.Parameter) */
static int exact_type_in(PyObject *o, PyObject *plain) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plain); i++)
        if ((PyObject *)Py_TYPE(o) == PyTuple_GET_ITEM(plain, i)) return 1;
    return 0;
}

/* getter(v) through a getset descriptor's own function; NULL with an exception on failure */
static PyObject *get(PyObject *descr, PyObject *v) {
    PyGetSetDef *g = ((PyGetSetDescrObject *)descr)->d_getset;
    return g->get(v, g->closure);
}

/* naming._add_tensor for a plain tensor: (name, v), then (name.grad, g) for a leaf holding one; a
 * getter that raises (an Exception) names no gradient, as the Python try/except does.  0, or -1
 * with an exception (a failed append, or an exception that is not an Exception). */
static int add_plain(PyObject *out, PyObject *name, PyObject *v, PyObject *is_leaf, PyObject *grad) {
    PyObject *pair = PyTuple_Pack(2, name, v);
    if (pair == NULL) return -1;
    int rc = PyList_Append(out, pair);
    Py_DECREF(pair);
    if (rc < 0) return -1;
    PyObject *g = NULL, *leaf = get(is_leaf, v);
    if (leaf != NULL) {
        int yes = PyObject_IsTrue(leaf);
        Py_DECREF(leaf);
        if (yes > 0) g = get(grad, v);
        else if (yes == 0) return 0;
    }
    if (g == NULL) return tmh_clear_exception() ? 0 : -1;
    if (g == Py_None) { Py_DECREF(g); return 0; }
    static PyObject *s_grad;
    if (s_grad == NULL && (s_grad = PyUnicode_InternFromString(".grad")) == NULL) { Py_DECREF(g); return -1; }
    PyObject *text = PyObject_Format(name, NULL);  /* f"{name}.grad" */
    PyObject *gname = text == NULL ? NULL : PyUnicode_Concat(text, s_grad);
    Py_XDECREF(text);
    pair = gname == NULL ? NULL : PyTuple_Pack(2, gname, g);
    Py_XDECREF(gname);
    Py_DECREF(g);
    if (pair == NULL) return -1;
    rc = PyList_Append(out, pair);
    Py_DECREF(pair);
    return rc;
}

/* one module's `table` entries, as _walk's inner loop: 0, or -1 with an exception */
static int walk_table(PyObject *out, PyObject *prefix, PyObject *module, PyObject *table, int params,
                      PyObject *memo, PyObject *memo_ids, PyObject *const *a) {
    PyObject *dict = PyObject_GetAttr(module, table);
    PyObject *items = dict == NULL ? NULL : PyMapping_Items(dict);
    Py_XDECREF(dict);
    if (items == NULL) return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && rc == 0; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i), *k, *v;
        if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
            PyErr_SetString(PyExc_ValueError, "tensormagic: a module table's items() are not pairs");
            rc = -1;
            break;
        }
        k = PyTuple_GET_ITEM(kv, 0);
        v = PyTuple_GET_ITEM(kv, 1);
        if (v == Py_None) continue;
        /* memo: a set of the entries met, as torch's; a plain tensor's hash is its id() (Tensor.__hash__),
         * so it is kept by address and its Python __hash__ is not called */
        int plain = exact_type_in(v, a[4]);
        PyObject *key = plain ? PyLong_FromVoidPtr(v) : Py_NewRef(v);
        PyObject *set = plain ? memo_ids : memo;
        int seen = key == NULL ? -1 : PySet_Contains(set, key);
        if (seen == 0) seen = PySet_Add(set, key) < 0 ? -1 : 0;
        Py_XDECREF(key);
        if (seen != 0) { rc = seen < 0 ? -1 : 0; continue; }
        PyObject *name = PyNumber_Add(prefix, k);  /* prefix + k, as Python adds them */
        if (name == NULL) { rc = -1; break; }
        if (!params) {
            PyObject *pair = PyTuple_Pack(2, name, v);
            rc = pair == NULL ? -1 : PyList_Append(out, pair);
            Py_XDECREF(pair);
        } else if (plain) {
            rc = add_plain(out, name, v, a[5], a[6]);
        } else {  /* a tensor subclass: _add_tensor; anything else: out.extend(_expand(name, v, 1)) */
            int tensor = PyObject_IsInstance(v, PyTuple_GET_ITEM(a[4], 0));
            PyObject *r = tensor < 0 ? NULL : PyObject_CallFunctionObjArgs(tensor ? a[8] : a[9], out, name, v, NULL);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        Py_DECREF(name);
    }
    Py_DECREF(items);
    return rc;
}

/* walk_modules(out, prefix, root, table, params, plain, is_leaf, grad, named_modules, add_tensor,
 * expand_into) -> True once `out` holds naming._walk's pairs; False where a module below has a
 * named_modules of its own (_walk raises _NotPlain there: the caller drops what was added).
 * is_leaf and grad: TensorBase's getset descriptors; named_modules: nn.Module.named_modules;
 * add_tensor: naming._add_tensor; expand_into(out, name, v): out.extend(_expand(name, v, 1)). */
PyObject *tmh_walk_modules(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t n) {
    if (n != 11 || !PyList_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyUnicode_Check(args[3]) ||
        !PyTuple_Check(args[5]) || PyTuple_GET_SIZE(args[5]) < 1 || !Py_IS_TYPE(args[6], &PyGetSetDescr_Type) ||
        !Py_IS_TYPE(args[7], &PyGetSetDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "walk_modules(out: list, prefix: str, root, table: str, params, plain: tuple, "
                                         "is_leaf, grad (getset descriptors), named_modules, add_tensor, expand_into)");
        return NULL;
    }
    PyObject *out = args[0], *table = args[3];
    int params = PyObject_IsTrue(args[4]);
    if (params < 0) return NULL;
    /* a[4..9]: plain, is_leaf, grad, named_modules, add_tensor, expand_into (walk_table's view) */
    PyObject *const *a = args + 1;
    static PyObject *s_modules, *s_named_modules, *s_dot;
    if (s_dot == NULL && ((s_modules = PyUnicode_InternFromString("_modules")) == NULL ||
                          (s_named_modules = PyUnicode_InternFromString("named_modules")) == NULL ||
                          (s_dot = PyUnicode_InternFromString(".")) == NULL))
        return NULL;
    PyObject *memo = PySet_New(NULL), *memo_ids = PySet_New(NULL), *modules = PySet_New(NULL);
    PyObject *stack = PyList_New(0), *result = NULL;
    if (memo == NULL || memo_ids == NULL || modules == NULL || stack == NULL) goto done;
    PyObject *top = PyTuple_Pack(2, args[1], args[2]);
    if (top == NULL || PyList_Append(stack, top) < 0) { Py_XDECREF(top); goto done; }
    Py_DECREF(top);
    while (PyList_GET_SIZE(stack) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(stack) - 1;
        PyObject *item = Py_NewRef(PyList_GET_ITEM(stack, last));
        if (PyList_SetSlice(stack, last, last + 1, NULL) < 0) { Py_DECREF(item); goto done; }
        PyObject *prefix = PyTuple_GET_ITEM(item, 0), *module = PyTuple_GET_ITEM(item, 1);
        int known = PySet_Contains(modules, module);  /* checked when reached, as torch's recursion does */
        if (known != 0 || PySet_Add(modules, module) < 0 ||
            walk_table(out, prefix, module, table, params, memo, memo_ids, a) < 0) {
            Py_DECREF(item);
            if (known > 0) continue;
            goto done;
        }
        PyObject *children = PyObject_GetAttr(module, s_modules);
        PyObject *items = children == NULL ? NULL : PyMapping_Items(children);
        Py_XDECREF(children);
        if (items == NULL) { Py_DECREF(item); goto done; }
        Py_ssize_t at = PyList_GET_SIZE(stack);  /* pushed in reverse: popped in order, each module before its children */
        int failed = 0, own = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && !failed && !own; i++) {
            PyObject *kv = PyList_GET_ITEM(items, i);
            if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
                PyErr_SetString(PyExc_ValueError, "tensormagic: a module's _modules.items() are not pairs");
                failed = 1;
                break;
            }
            PyObject *c = PyTuple_GET_ITEM(kv, 1);
            if (c == Py_None) continue;
            PyObject *nm = PyObject_GetAttr((PyObject *)Py_TYPE(c), s_named_modules);
            if (nm == NULL) { failed = 1; break; }
            own = nm != a[7];
            Py_DECREF(nm);
            if (own) break;
            PyObject *key = PyObject_Format(PyTuple_GET_ITEM(kv, 0), NULL);  /* f"{prefix}{n}." */
            PyObject *p1 = key == NULL ? NULL : PyUnicode_Concat(prefix, key);
            PyObject *p2 = p1 == NULL ? NULL : PyUnicode_Concat(p1, s_dot);
            PyObject *pair = p2 == NULL ? NULL : PyTuple_Pack(2, p2, c);
            if (pair == NULL || PyList_Insert(stack, at, pair) < 0) failed = 1;
            Py_XDECREF(key);
            Py_XDECREF(p1);
            Py_XDECREF(p2);
            Py_XDECREF(pair);
        }
        Py_DECREF(items);
        Py_DECREF(item);
        if (failed) goto done;
        if (own) {
            result = Py_NewRef(Py_False);
            goto done;
        }
    }
    result = Py_NewRef(Py_True);
done:
    Py_XDECREF(memo);
    Py_XDECREF(memo_ids);
    Py_XDECREF(modules);
    Py_XDECREF(stack);
    return result;
}
