/* LineEncoder: a cell's event lines for the log, encoded straight from the Event objects.
 *
 * logrecords.cell_lines writes each event as `head + dumps(event.to_dict(refs=memo)) + "}"`: a
 * dict per event and per new TensorRef, then orjson over ~700 bytes that mostly repeat snapshots
 * already encoded.  This object writes the same bytes without the dicts, and encodes each
 * TensorRef once per cell (tests/test_encode.py holds its lines byte for byte equal to the Python
 * path's).  It handles what the event model holds in practice (None, bools, 64-bit ints, floats
 * in [1e-4, 1e16), strings without lone surrogates, tuples of those); an event holding anything
 * else (statistics, a huge int, a tiny or non-finite float, a lone surrogate) is handed back for
 * the Python path to encode.  Used only where orjson encodes the log (the stdlib
 * escapes non-ASCII text, this does not). */
#include "hot.h"

/* what the encoder knows of one class: its fields (with their kinds) and their encoded keys */
typedef struct {
    Fields f;
    PyObject *keys;  /* tuple of bytes: ',"name":' per field */
} Spec;

typedef struct {
    PyObject_HEAD
    Spec event, ref, grad;
    PyObject *memo;  /* id(TensorRef) -> its encoding (one cell: the events keep the refs alive) */
} Encoder;

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Buf;

/* 0, or -1 with MemoryError */
static int reserve(Buf *b, Py_ssize_t more) {
    if (b->n + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p, b->cap = cap;
    return 0;
}

static int put(Buf *b, const char *s, Py_ssize_t len) {
    if (reserve(b, len) < 0) return -1;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    return 0;
}

/* Encoding results: 0 written; 1 not a value this encoder writes (the Python path will); -1 error. */
#define UNSUPPORTED 1

/* a JSON string as orjson writes it: UTF-8, `"` and `\` escaped, control characters as \b \t \n
 * \f \r or \u00xx (lower-case hex), everything else as is */
static int put_str(Buf *b, PyObject *s) {
    Py_ssize_t len;
    const char *u = PyUnicode_AsUTF8AndSize(s, &len);
    if (u == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
        PyErr_Clear();  /* a lone surrogate: orjson refuses it, the stdlib escapes it */
        return UNSUPPORTED;
    }
    if (reserve(b, 6 * len + 2) < 0) return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '\b': *o++ = 'b'; break;
            case '\t': *o++ = 't'; break;
            case '\n': *o++ = 'n'; break;
            case '\f': *o++ = 'f'; break;
            case '\r': *o++ = 'r'; break;
            default:
                *o++ = 'u', *o++ = '0', *o++ = '0';
                *o++ = "0123456789abcdef"[c >> 4], *o++ = "0123456789abcdef"[c & 15];
        }
    }
    *o++ = '"';
    b->n = o - b->p;
    return 0;
}

static int put_plain(Buf *b, PyObject *v) {
    if (v == Py_None) return put(b, "null", 4);
    if (v == Py_True) return put(b, "true", 4);
    if (v == Py_False) return put(b, "false", 5);
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) return UNSUPPORTED;  /* past 64 bits: the stdlib writes it */
        if (x == -1 && PyErr_Occurred()) return -1;
        char tmp[24], *end = tmp + sizeof tmp, *o = end;  /* digits from the right: snprintf is slow */
        unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        do *--o = (char)('0' + u % 10); while ((u /= 10) != 0);
        if (x < 0) *--o = '-';
        return put(b, o, end - o);
    }
    if (PyFloat_CheckExact(v)) {
        double x = PyFloat_AS_DOUBLE(v), a = x < 0 ? -x : x;
        /* repr and orjson write the same shortest digits, and the same text in [1e-4, 1e16), where
         * repr uses no exponent; below it they differ (5e-05 / 0.00005, 1.5e-07 / 1.5e-7).  Times
         * and sizes are in the range; anything else goes the Python way. */
        if (!(x == 0.0 || (a >= 1e-4 && a < 1e16))) return UNSUPPORTED;
        char *s = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (s == NULL) return -1;
        int rc = put(b, s, (Py_ssize_t)strlen(s));
        PyMem_Free(s);
        return rc;
    }
    if (PyUnicode_CheckExact(v)) return put_str(b, v);
    if (PyTuple_CheckExact(v) || PyList_CheckExact(v)) {
        if (put(b, "[", 1) < 0) return -1;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(v); i++) {
            if (i && put(b, ",", 1) < 0) return -1;
            int rc = put_plain(b, PySequence_Fast_GET_ITEM(v, i));
            if (rc) return rc;
        }
        return put(b, "]", 1);
    }
    return UNSUPPORTED;
}

static int put_obj(Encoder *self, Buf *b, Spec *s, PyObject *obj);

/* a TensorRef: its encoding from the memo, or encoded now and remembered */
static int put_ref(Encoder *self, Buf *b, PyObject *r) {
    if (Py_TYPE(r) != self->ref.f.cls) return UNSUPPORTED;
    PyObject *key = PyLong_FromVoidPtr(r);
    if (key == NULL) return -1;
    PyObject *got = PyDict_GetItemWithError(self->memo, key);
    int rc;
    if (got != NULL) {
        rc = put(b, PyBytes_AS_STRING(got), PyBytes_GET_SIZE(got));
    } else if (PyErr_Occurred()) {
        rc = -1;
    } else {
        Py_ssize_t start = b->n;
        rc = put_obj(self, b, &self->ref, r);
        if (rc == 0) {
            PyObject *enc = PyBytes_FromStringAndSize(b->p + start, b->n - start);
            rc = enc == NULL || PyDict_SetItem(self->memo, key, enc) < 0 ? -1 : 0;
            Py_XDECREF(enc);
        }
    }
    Py_DECREF(key);
    return rc;
}

/* [each item] of a tuple field: TensorRefs (K_REFS) or objects of `sub` (K_DICTS) */
static int put_list(Encoder *self, Buf *b, PyObject *v, Spec *sub) {
    if (!PyTuple_CheckExact(v)) return UNSUPPORTED;
    if (put(b, "[", 1) < 0) return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); i++) {
        if (i && put(b, ",", 1) < 0) return -1;
        PyObject *x = PyTuple_GET_ITEM(v, i);
        int rc = sub == NULL ? put_ref(self, b, x) : Py_TYPE(x) == sub->f.cls ? put_obj(self, b, sub, x) : UNSUPPORTED;
        if (rc) return rc;
    }
    return put(b, "]", 1);
}

/* an object as its to_dict writes it: fields in order, those at their default left out */
static int put_obj(Encoder *self, Buf *b, Spec *s, PyObject *obj) {
    int first = 1;
    if (put(b, "{", 1) < 0) return -1;
    for (Py_ssize_t i = 0; i < s->f.n; i++) {
        PyObject *v = *(PyObject **)((char *)obj + s->f.offsets[i]);
        if (v == NULL) return UNSUPPORTED;  /* the Python path raises its own AttributeError */
        int skip = tmh_field_at_default(&s->f, i, v);  /* as SlotDict leaves a field out */
        if (skip < 0) return -1;
        if (skip) continue;
        PyObject *key = PyTuple_GET_ITEM(s->keys, i);  /* ',"name":'; the first field without the comma */
        if (put(b, PyBytes_AS_STRING(key) + first, PyBytes_GET_SIZE(key) - first) < 0) return -1;
        first = 0;
        int rc;
        switch (s->f.kinds[i]) {
            case TMH_K_REF: rc = put_ref(self, b, v); break;
            case TMH_K_REFS: rc = put_list(self, b, v, NULL); break;
            case TMH_K_DICTS: rc = put_list(self, b, v, &self->grad); break;
            case TMH_K_DICT: rc = UNSUPPORTED; break;  /* statistics: rare, and floats of any size */
            default: rc = put_plain(b, v);
        }
        if (rc) return rc;
    }
    return put(b, "}", 1);
}

/* Spec from (cls, names, defaults, required, kinds), as fastinit.dict_spec gives it */
static int spec_init(Spec *s, PyObject *t) {
    if (!PyTuple_Check(t)) {
        PyErr_SetString(PyExc_TypeError, "LineEncoder: each spec is fastinit.dict_spec's tuple");
        return -1;
    }
    if (tmh_fields_init(&s->f, "LineEncoder", t, NULL, 1) < 0 || (s->keys = PyTuple_New(s->f.n)) == NULL) return -1;
    for (Py_ssize_t i = 0; i < s->f.n; i++) {
        const char *u = PyUnicode_AsUTF8(PyTuple_GET_ITEM(s->f.names, i));
        PyObject *key = u == NULL ? NULL : PyBytes_FromFormat(",\"%s\":", u);  /* slot names: nothing to escape */
        if (key == NULL) return -1;
        PyTuple_SET_ITEM(s->keys, i, key);
    }
    return 0;
}

static void spec_clear(Spec *s) {
    tmh_fields_clear(&s->f);
    Py_CLEAR(s->keys);
}

static int enc_traverse(Encoder *self, visitproc visit, void *arg) {
    Spec *specs[] = {&self->event, &self->ref, &self->grad};
    for (int i = 0; i < 3; i++) {
        int rc = tmh_fields_traverse(&specs[i]->f, visit, arg);
        if (rc) return rc;
    }
    Py_VISIT(self->memo);
    return 0;
}

static int enc_clear(Encoder *self) {
    spec_clear(&self->event);
    spec_clear(&self->ref);
    spec_clear(&self->grad);
    Py_CLEAR(self->memo);
    return 0;
}

static void enc_dealloc(Encoder *self) {
    PyObject_GC_UnTrack(self);
    enc_clear(self);
    tmh_fields_free(&self->event.f);
    tmh_fields_free(&self->ref.f);
    tmh_fields_free(&self->grad.f);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* LineEncoder(event_spec, ref_spec, grad_spec) */
static PyObject *enc_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *e, *r, *g;
    if ((kw != NULL && PyDict_GET_SIZE(kw)) || !PyArg_ParseTuple(args, "O!O!O!:LineEncoder", &PyTuple_Type, &e,
                                                                 &PyTuple_Type, &r, &PyTuple_Type, &g)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "LineEncoder takes three positional specs");
        return NULL;
    }
    Encoder *self = (Encoder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (spec_init(&self->event, e) < 0 || spec_init(&self->ref, r) < 0 || spec_init(&self->grad, g) < 0 ||
        (self->memo = PyDict_New()) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* lines(events, start, stop, head, tail): for events[start:stop], `head + encoding + tail` as bytes,
 * or the event itself where the Python path has to encode it */
static PyObject *enc_lines(Encoder *self, PyObject *const *a, Py_ssize_t n) {
    if (n != 5 || !PyTuple_Check(a[0]) || !PyBytes_Check(a[3]) || !PyBytes_Check(a[4])) {
        PyErr_SetString(PyExc_TypeError, "LineEncoder.lines(events: tuple, start, stop, head: bytes, tail: bytes)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(a[1]), stop = PyLong_AsSsize_t(a[2]);
    if ((start == -1 || stop == -1) && PyErr_Occurred()) return NULL;
    PyObject *events = a[0], *head = a[3], *tail = a[4];
    if (start < 0) start = 0;
    if (stop > PyTuple_GET_SIZE(events)) stop = PyTuple_GET_SIZE(events);
    PyObject *out = PyList_New(stop > start ? stop - start : 0);
    Buf b = {NULL, 0, 0};
    for (Py_ssize_t i = start; out != NULL && i < stop; i++) {
        PyObject *e = PyTuple_GET_ITEM(events, i), *line = NULL;
        b.n = 0;
        int rc = put(&b, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
        if (rc == 0) rc = Py_TYPE(e) == self->event.f.cls ? put_obj(self, &b, &self->event, e) : UNSUPPORTED;
        if (rc == 0) rc = put(&b, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail));
        if (rc == 0) line = PyBytes_FromStringAndSize(b.p, b.n);
        else if (rc == UNSUPPORTED) line = Py_NewRef(e);
        if (line == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i - start, line);
    }
    PyMem_Free(b.p);
    return out;
}

static PyMethodDef enc_methods[] = {
    {"lines", (PyCFunction)(void (*)(void))enc_lines, METH_FASTCALL,
     "lines(events, start, stop, head, tail): the log lines of events[start:stop] (an event the Python "
     "path must encode is returned as is)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject tmh_LineEncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tensormagic.engine._hotpath.LineEncoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "LineEncoder(event_spec, ref_spec, grad_spec): one cell's event lines, encoded from the events "
              "(see logrecords.cell_lines).",
    .tp_new = enc_new,
    .tp_dealloc = (destructor)enc_dealloc,
    .tp_traverse = (traverseproc)enc_traverse,
    .tp_clear = (inquiry)enc_clear,
    .tp_methods = enc_methods,
};
