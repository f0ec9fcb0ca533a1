/* The EventBuilder (build.c) and what its TensorRef half (snapshots.c) shares with it. */
#ifndef TENSORMAGIC_BUILD_H
#define TENSORMAGIC_BUILD_H
#include "hot.h"

/* the Event fields the loop sets, found by name in event_fields at construction */
enum { F_SEQ, F_KIND, F_OP, F_TENSOR, F_LINE, F_SOURCE, F_CELL, F_FILE, F_MODULE, F_TIME_US, F_INPUTS, F_ORIGIN,
       F_BASE, F_VERSION_BEFORE, F_VERSION_AFTER, F_ALIASES, F_GRADS, F_STATS, F_NOTE, N_FIELDS };

#define BUILDER_FIELDS(X) \
    X(tensors) X(names) X(state) X(merged) X(stats_at) X(place) X(place_cache) X(module_of) X(module_cache) \
    X(dtype) X(dtype_names) X(device) X(device_names) X(ref_maker) X(grad_maker) X(event_maker) X(event_fields) X(event_defaults) \
    X(seen_note) X(unseen_maker) X(other_kw) X(alias_proof)

typedef struct {
    PyObject_HEAD
#define DECL(f) PyObject *f;
    BUILDER_FIELDS(DECL)
#undef DECL
    /* _Refs' caches: tid -> the meta last looked up, and its TensorRef; (tid, id(meta)) -> TensorRef */
    PyObject *cache_meta, *cache_ref, *older;
    PyObject *storages;   /* _by_storage's index, made at the first in-place record */
    PyObject *op_of_src;  /* unseen_maker(src) or "(no visible op)", per source line */
    Py_ssize_t n_event_fields;
    Py_ssize_t at[N_FIELDS];  /* where each field sits in Event's positional arguments */
} Builder;

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif
extern PyObject *tmh_empty_tuple, *tmh_s_id;
PyObject *tmh_cached(PyObject *d, PyObject *key, PyObject *fallback);
PyObject *tmh_item(PyObject *d, PyObject *key);
PyObject *tmh_b_ref(Builder *self, PyObject *tid, PyObject *meta);
PyObject *tmh_ref_all(Builder *self, PyObject *ids, Py_ssize_t from);
PyObject *tmh_aliases(Builder *self, PyObject *tid, Py_ssize_t idx);
PyObject *tmh_grads(Builder *self, PyObject *extra);
PyObject *tmh_final_refs(Builder *self, PyObject *final);
#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
