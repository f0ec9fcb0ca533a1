/* autograd.capture, compiled: the block's end reads the live tensors' autograd graphs into a
 * GraphTable's dicts (capture_graph), the same walk as its Python twin (snapshot.take_snapshot picks
 * the engine's; tests/test_blockend_twins.py compares them). */
#include "hot.h"

typedef struct {
    PyObject *names, *ids, *has_variable, *grad_fn_py, *nids, *keep;
} Capture;

static PyObject *s_name, *s_variable, *s_next_functions, *s_colons, *s_rsplit, *s_leaf;

static int capture_strings(void) {
    if (s_leaf != NULL) return 0;
#define CINTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1;
    CINTERN(s_name, "name") CINTERN(s_variable, "variable") CINTERN(s_next_functions, "next_functions")
    CINTERN(s_colons, "::") CINTERN(s_rsplit, "rsplit") CINTERN(s_leaf, "leaf")
#undef CINTERN
    return 0;
}

/* snapshot._name_of: the first name of a tensor the id table knows (new reference), else None */
static PyObject *name_of(Capture *c, PyObject *t) {
    PyObject *key = PyLong_FromVoidPtr(t);
    if (key == NULL) return NULL;
    PyObject *ref = PyDict_GetItemWithError(c->ids, key);
    Py_DECREF(key);
    if (ref == NULL || ref == Py_None) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Py_INCREF(ref);
    PyObject *obj = PyObject_CallNoArgs(ref);  /* ref() is t */
    PyObject *tid = obj == t ? PyObject_GetAttr(ref, tmh_s_tid) : NULL;
    int failed = obj == NULL || (obj == t && tid == NULL);
    Py_XDECREF(obj);
    Py_DECREF(ref);
    if (failed) return NULL;
    if (tid == NULL) return Py_NewRef(Py_None);
    PyObject *n = PyDict_GetItemWithError(c->names, tid);
    Py_DECREF(tid);
    if (n == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    Py_INCREF(n);
    int truth = PyObject_IsTrue(n);
    PyObject *out = truth < 0 ? NULL : truth ? PySequence_GetItem(n, 0) : Py_NewRef(Py_None);
    Py_DECREF(n);
    return out;
}

/* autograd._grad_fn: t.grad_fn through TensorBase's getter, None where that raises */
static PyObject *grad_fn_of(Capture *c, PyObject *t) {
    PyGetSetDef *g = tmh_getsets[A_GRAD_FN];
    if (g == NULL || !tmh_plain(t)) return PyObject_CallOneArg(c->grad_fn_py, t);
    PyObject *gf = g->get(t, g->closure);
    if (gf == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        gf = Py_NewRef(Py_None);
    }
    return gf;
}

/* nid_of: the node's number in this capture (1, 2, …), the node kept so its id() is not reused */
static PyObject *nid_of(Capture *c, PyObject *node) {
    PyObject *key = PyLong_FromVoidPtr(node);
    if (key == NULL) return NULL;
    PyObject *n = PyDict_GetItemWithError(c->nids, key);
    if (n != NULL || PyErr_Occurred()) {
        Py_DECREF(key);
        return n == NULL ? NULL : Py_NewRef(n);
    }
    n = PyLong_FromSsize_t(PyDict_GET_SIZE(c->nids) + 1);
    if (n == NULL || PyDict_SetItem(c->nids, key, n) < 0 || PyList_Append(c->keep, node) < 0) Py_CLEAR(n);
    Py_DECREF(key);
    return n;
}

/* autograd._variable: the leaf an AccumulateGrad node fills (new reference), else None */
static PyObject *variable_of(Capture *c, PyObject *node) {
    PyObject *kind = (PyObject *)Py_TYPE(node);
    PyObject *has = PyDict_GetItemWithError(c->has_variable, kind);
    if (has == NULL) {
        if (PyErr_Occurred()) return NULL;
        PyObject *v = PyObject_GetAttr(node, s_variable);  /* hasattr: only an AttributeError means no */
        if (v == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
            PyErr_Clear();
        }
        has = v != NULL ? Py_True : Py_False;
        Py_XDECREF(v);
        if (PyDict_SetItem(c->has_variable, kind, has) < 0) return NULL;
    }
    return has == Py_True ? PyObject_GetAttr(node, s_variable) : Py_NewRef(Py_None);
}

/* autograd.node_name: node.name() after its last "::" */
static PyObject *node_name(PyObject *node) {
    PyObject *full = PyObject_CallMethodNoArgs(node, s_name);
    if (full == NULL) return NULL;
    if (!PyUnicode_CheckExact(full)) {
        PyObject *parts = PyObject_CallMethod(full, "rsplit", "Oi", s_colons, 1);
        Py_DECREF(full);
        if (parts == NULL) return NULL;
        PyObject *last = PySequence_GetItem(parts, -1);
        Py_DECREF(parts);
        return last;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(full);
    Py_ssize_t at = PyUnicode_Find(full, s_colons, 0, len, -1);
    if (at == -2) { Py_DECREF(full); return NULL; }
    if (at == -1) return full;
    PyObject *tail = PyUnicode_Substring(full, at + 2, len);
    Py_DECREF(full);
    return tail;
}

/* capture_graph(tensors, names, ids, has_variable, grad_fn, grad_node, roots, nodes, edges,
 * max_nodes) -> truncated: autograd.capture's walk (its twin) into the GraphTable's dicts. */
PyObject *tmh_capture_graph(PyObject *Py_UNUSED(mod), PyObject *const *a, Py_ssize_t n) {
    if (n != 10 || !PyList_Check(a[0]) || !PyDict_Check(a[1]) || !PyDict_Check(a[2]) || !PyDict_Check(a[3]) ||
        !PyDict_Check(a[6]) || !PyDict_Check(a[7]) || !PyDict_Check(a[8])) {
        PyErr_SetString(PyExc_TypeError, "capture_graph(tensors: list, names: dict, ids: dict, has_variable: dict, "
                                         "grad_fn, grad_node, roots: dict, nodes: dict, edges: dict, max_nodes)");
        return NULL;
    }
    if (capture_strings() < 0) return NULL;
    Py_ssize_t max_nodes = PyLong_AsSsize_t(a[9]);
    if (max_nodes == -1 && PyErr_Occurred()) return NULL;
    PyObject *tensors = a[0], *grad_node = a[5], *roots = a[6], *nodes = a[7], *edges = a[8];
    Capture c = {a[1], a[2], a[3], a[4], PyDict_New(), PyList_New(0)};
    PyObject *produced = PyDict_New(), *pending = PyList_New(0), *stack = PyList_New(0), *done = PySet_New(NULL);
    PyObject *result = NULL;
    int truncated = 0;
    if (c.nids == NULL || c.keep == NULL || produced == NULL || pending == NULL || stack == NULL || done == NULL) goto end;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tensors); i++) {
        PyObject *pair = PyList_GET_ITEM(tensors, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "capture_graph: (tensor id, tensor) pairs");
            goto end;
        }
        PyObject *t = PyTuple_GET_ITEM(pair, 1);
        PyObject *gf = grad_fn_of(&c, t);
        if (gf == NULL) goto end;
        if (gf == Py_None) { Py_DECREF(gf); continue; }
        PyObject *ent = PyTuple_Pack(2, PyTuple_GET_ITEM(pair, 0), gf);
        PyObject *name = ent == NULL || PyList_Append(pending, ent) < 0 ? NULL : name_of(&c, t);
        Py_XDECREF(ent);
        int rc = name == NULL ? -1 : 0;
        if (rc == 0 && name != Py_None) {
            PyObject *key = PyLong_FromVoidPtr(gf);
            PyObject *made = key == NULL ? NULL : PyDict_GetItemWithError(produced, key);
            if (made == NULL && key != NULL && !PyErr_Occurred()) {
                made = PyList_New(0);
                if (made != NULL && PyDict_SetItem(produced, key, made) < 0) Py_CLEAR(made);
                Py_XDECREF(made);  /* the dict holds it */
            }
            rc = made == NULL ? -1 : PyList_Append(made, name);
            Py_XDECREF(key);
        }
        Py_XDECREF(name);
        Py_DECREF(gf);
        if (rc < 0) goto end;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++) {
        PyObject *ent = PyList_GET_ITEM(pending, i);
        PyObject *nid = nid_of(&c, PyTuple_GET_ITEM(ent, 1));
        int rc = nid == NULL || PyDict_SetItem(roots, PyTuple_GET_ITEM(ent, 0), nid) < 0 ? -1 : 0;
        Py_XDECREF(nid);
        if (rc < 0 || PyList_Append(stack, PyTuple_GET_ITEM(ent, 1)) < 0) goto end;
    }
    while (PyList_GET_SIZE(stack) > 0) {
        Py_ssize_t top = PyList_GET_SIZE(stack) - 1;
        PyObject *node = Py_NewRef(PyList_GET_ITEM(stack, top));
        if (PyList_SetSlice(stack, top, top + 1, NULL) < 0) { Py_DECREF(node); goto end; }
        PyObject *nid = nid_of(&c, node);
        int rc = nid == NULL ? -1 : PySet_Contains(done, nid);
        if (rc == 0) rc = PySet_Add(done, nid);
        else if (rc == 1) { Py_DECREF(nid); Py_DECREF(node); continue; }
        if (rc == 0 && PySet_GET_SIZE(done) > max_nodes) {
            truncated = 1;
            Py_DECREF(nid);
            Py_DECREF(node);
            break;
        }
        PyObject *var = rc < 0 ? NULL : variable_of(&c, node);
        PyObject *leaf = NULL, *name = NULL, *made = NULL, *gnode = NULL, *kids = NULL, *kid_ids = NULL;
        if (var == NULL) goto node_fail;
        if (var == Py_None) leaf = Py_NewRef(Py_None);
        else {
            leaf = name_of(&c, var);
            if (leaf == NULL) goto node_fail;
            int truth = PyObject_IsTrue(leaf);
            if (truth < 0) goto node_fail;
            if (!truth) Py_SETREF(leaf, Py_NewRef(s_leaf));
        }
        {
            PyObject *key = PyLong_FromVoidPtr(node);
            PyObject *got = key == NULL ? NULL : PyDict_GetItemWithError(produced, key);
            Py_XDECREF(key);
            if (got == NULL && (key == NULL || PyErr_Occurred())) goto node_fail;
            if (got != NULL && PyList_GET_SIZE(got) > 0) {  /* tuple(dict.fromkeys(made)) */
                PyObject *once = PyDict_New();
                for (Py_ssize_t k = 0; once != NULL && k < PyList_GET_SIZE(got); k++)
                    if (PyDict_SetItem(once, PyList_GET_ITEM(got, k), Py_None) < 0) Py_CLEAR(once);
                PyObject *keys = once == NULL ? NULL : PyDict_Keys(once);
                Py_XDECREF(once);
                made = keys == NULL ? NULL : PyList_AsTuple(keys);
                Py_XDECREF(keys);
            } else {
                made = PyTuple_New(0);
            }
        }
        if (made == NULL || (name = node_name(node)) == NULL) goto node_fail;
        {
            PyObject *args[4] = {nid, name, made, leaf};
            gnode = PyObject_Vectorcall(grad_node, args, 4, NULL);
        }
        if (gnode == NULL || PyDict_SetItem(nodes, nid, gnode) < 0) goto node_fail;
        {
            PyObject *nf = PyObject_GetAttr(node, s_next_functions);
            PyObject *it = nf == NULL ? NULL : PyObject_GetIter(nf);
            Py_XDECREF(nf);
            if (it == NULL || (kids = PyList_New(0)) == NULL) { Py_XDECREF(it); goto node_fail; }
            PyObject *item;
            while ((item = PyIter_Next(it)) != NULL) {
                PyObject *pair = PySequence_Tuple(item);
                Py_DECREF(item);
                if (pair == NULL) break;
                if (PyTuple_GET_SIZE(pair) != 2) {
                    PyErr_Format(PyExc_ValueError, "tensormagic: next_functions entry of %zd values, not 2",
                                 PyTuple_GET_SIZE(pair));
                    Py_DECREF(pair);
                    break;
                }
                PyObject *kid = PyTuple_GET_ITEM(pair, 0);
                int bad = kid != Py_None && PyList_Append(kids, kid) < 0;
                Py_DECREF(pair);
                if (bad) break;
            }
            Py_DECREF(it);
            if (PyErr_Occurred()) goto node_fail;
        }
        Py_ssize_t nk = PyList_GET_SIZE(kids);
        if ((kid_ids = PyTuple_New(nk)) == NULL) goto node_fail;
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *kn = nid_of(&c, PyList_GET_ITEM(kids, k));
            if (kn == NULL) goto node_fail;
            PyTuple_SET_ITEM(kid_ids, k, kn);
        }
        if (PyDict_SetItem(edges, nid, kid_ids) < 0 || PyList_Reverse(kids) < 0) goto node_fail;
        {
            Py_ssize_t at = PyList_GET_SIZE(stack);
            if (PyList_SetSlice(stack, at, at, kids) < 0) goto node_fail;
        }
        Py_DECREF(kid_ids); Py_DECREF(kids); Py_DECREF(gnode); Py_DECREF(name); Py_DECREF(made);
        Py_DECREF(leaf); Py_DECREF(var); Py_DECREF(nid); Py_DECREF(node);
        continue;
    node_fail:
        Py_XDECREF(kid_ids); Py_XDECREF(kids); Py_XDECREF(gnode); Py_XDECREF(name); Py_XDECREF(made);
        Py_XDECREF(leaf); Py_XDECREF(var); Py_XDECREF(nid); Py_DECREF(node);
        goto end;
    }
    result = PyBool_FromLong(truncated);
end:
    Py_XDECREF(c.nids); Py_XDECREF(c.keep); Py_XDECREF(produced); Py_XDECREF(pending); Py_XDECREF(stack); Py_XDECREF(done);
    return result;
}
