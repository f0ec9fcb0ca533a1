/* The SavedIndex object, shared by saved.c (the index: the type, filing records) and gate.c (what
 * one in-place write needs: its roots, the write gate).  diagnostics/saved_index.py is its twin. */
#ifndef TENSORMAGIC_SAVED_H
#define TENSORMAGIC_SAVED_H
#include "hot.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

typedef struct {
    PyObject_HEAD
    PyObject *raw;          /* tracker.raw */
    PyObject *tensors;      /* tracker.tensors: tid -> (id key, meta, storage id, raw index) */
    PyObject *ids;          /* identity._ids: id(t) -> Ref */
    PyObject *by_storage;   /* storage id -> [tid, ...] */
    PyObject *own_counter;  /* set of tids */
    PyObject *freed;        /* tid -> version */
    PyObject *saved_attrs;  /* saved_index._saved_attrs: node type -> ((raw attr, attr), ...) */
    PyObject *learn_attrs;  /* saved_index.saved_attrs: fills it for a type not seen yet */
    PyObject *storage_id;   /* identity.storage_id */
    Py_ssize_t keep, max_roots, filed;
    long long budget, spent;
} SavedIndex;
#define SAVED_FIELDS(X) X(raw) X(tensors) X(ids) X(by_storage) X(own_counter) X(freed) X(saved_attrs) X(learn_attrs) X(storage_id)

extern PyObject *tmh_s_data;  /* "data" */

/* saved.c */
PyObject *tmh_saved_entry(SavedIndex *self, PyObject *tid);
int tmh_saved_alive(SavedIndex *self, PyObject *tid, PyObject **obj);
int tmh_saved_catch_up(SavedIndex *self, Py_ssize_t end);

/* gate.c */
PyObject *tmh_saved_roots(SavedIndex *self, Py_ssize_t idx, PyObject *tid, PyObject *t, int want_list);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
