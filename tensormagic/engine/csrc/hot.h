/* Shared by the compiled hot path's files (see module.c for what it does and why).
 *
 *   lookup.c  what a record is made of: tensor attributes, the clock, the user's frame, the id table
 *   record.c  the records the compiled path makes itself (a new tensor, an in-place write)
 *   tracker.c the tracker's own methods, compiled, for what the Python path still records
 *   module.c  the Hot type: its __torch_function__ dispatch, failures, construction, module init
 *   slots.c   SlotMaker, SlotDict: the event model's dataclasses built / made into dicts in one call
 *   saved.c   SavedIndex (saved.h): inplace-saved's index of what graphs may have saved
 *   gate.c    what one in-place write needs: its roots, and the write gate before the record hooks
 *   build.c   EventBuilder: the block's end, the raw records made into the event model's objects
 *   snapshots.c  the EventBuilder's TensorRefs (build.h)
 *   encode.c  LineEncoder: a cell's event lines for the log, encoded from the events
 *   paths.c   the module hooks' push and pop (modules.py)
 *   blockend.c  the block's end: its passes over the records and tables (counts, histories, ids)
 *   capture.c  the block's end: the live tensors' autograd graphs (autograd.capture)
 */
#ifndef TENSORMAGIC_HOT_H
#define TENSORMAGIC_HOT_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <stddef.h>

/* action codes, as in ops.py */
#define SKIP 0
#define GENERAL 1
#define INPLACE 2
#define BACKWARD 4
#define WATCHED_SKIP -2  /* mode.py: a watched call that records nothing itself */
#define TMH_MAX_SUSPECTS 256  /* tracker.py's MAX_SUSPECTS */
#define TMH_SKIP_CODES 64     /* Hot.skip_codes: a power of two */

/* An object slot (a __slots__ member) of one type, read and written at its offset. */
typedef struct {
    PyTypeObject *type;  /* borrowed: the objects below keep it alive */
    Py_ssize_t offset;   /* 0: not a plain object slot; use attribute access */
} Slot;

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
    PyObject *gf_name;        /* raw._gf_name(gf) */
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
    PyObject *f64;            /* torch.float64 (raw.quiet: a float64 result is not quiet) */
    PyObject *write_gate;     /* tracker.write_gate: which in-place records the record hooks need */
    PyObject *suspects;       /* tracker.suspects: set of ids of tensors made empty (see Tracker.recheck) */
    PyObject *recheck;        /* tracker._recheck(args, kwargs[, written, v0]) */
    /* torch.compiler's __dict__, where is_compiling()'s flag lives (the mode's _compile_flags when
     * this object was made; the mode never rebinds it), or NULL where torch has no such flag */
    PyObject *compile_flags;
    long long t0;
    Py_ssize_t fast_cap;
    Slot tid;      /* identity.Ref's "tid" */
    Slot current;  /* ModuleStack's "current" */
    Slot lasti;    /* LineFinder's "lasti" */
    int busy;      /* a call this object started is running (the Python path's flag is in state) */
    int disabled;
    /* code objects the line finder skips (not the user's: torch's, tensormagic's), direct-mapped by
     * address and held, so an address cannot be reused while it is here: tmh_find_where passes
     * over their frames without the line cache's lookup (six such frames above an op inside a
     * module).  A code's entry never changes within a block (LineFinder._learn runs once per code). */
    PyObject *skip_codes[TMH_SKIP_CODES];
} Hot;

/* indices of the metadata attributes tmh_tensor_attr reads */
enum { A_SHAPE, A_DTYPE, A_DEVICE, A_REQUIRES_GRAD, A_GRAD_FN, A_VERSION, A_BASE, A_IS_LEAF, A_RETAINS_GRAD, A_GRAD, N_ATTRS };

#define HOT_FIELDS(X) \
    X(actions) X(state) X(slow) X(watched) X(where) X(on_error) X(internal) X(tracker) X(error_hooks) X(record_hooks) X(quiet) X(raw) \
    X(times_append) X(tensors) X(sid_of_key) X(metas) X(intern) X(inputs) X(gf_names) X(gf_name) \
    X(names) X(ids) X(counter) X(ref_type) X(storage_id) X(no_storage) X(modules) X(lines) \
    X(line_cache) X(learn) X(find) X(record_write) X(record_outputs) X(tensor_type) X(now) X(general) X(f64) X(write_gate) X(suspects) X(recheck)

/* Nothing below is exported from the shared object: only PyInit__hotpath is. */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* interned strings, made in module.c's init */
extern PyObject *tmh_s_tid, *tmh_s_current, *tmh_s_lasti, *tmh_s_create, *tmh_s_f_lasti, *tmh_s_busy,
    *tmh_s_inplace, *tmh_s_out, *tmh_s_view, *tmh_s_move, *tmh_attr_names[N_ATTRS];

/* The metadata attributes read on every recorded tensor.  On a plain torch.Tensor (or an
 * nn.Parameter: describe.PLAIN) they are getset descriptors of torch._C.TensorBase: calling their
 * getter directly skips the generic attribute lookup (~20 ns a read, seven reads per op).  Any
 * other type goes through describe.attr (never a subclass's __torch_function__), and so does
 * everything when describe has not been given (lookup.c fills the table; set_describe the rest). */
extern PyTypeObject *tmh_getset_type, *tmh_param_type;
extern PyGetSetDef *tmh_getsets[N_ATTRS];
extern PyObject *tmh_describe_attr, *tmh_describe_meta, *tmh_describe_call;
PyObject *tmh_attr_slow(PyObject *o, int which);

static inline int tmh_plain(PyObject *o) {
    return Py_TYPE(o) == tmh_getset_type || (tmh_param_type != NULL && Py_TYPE(o) == tmh_param_type);
}

static inline PyObject *tmh_tensor_attr(PyObject *o, int which) {
    PyGetSetDef *g = tmh_getsets[which];
    if (g != NULL && tmh_plain(o)) return g->get(o, g->closure);
    return tmh_attr_slow(o, which);
}

/* obj.name and obj.name = v for a __slots__ member: at the slot's offset when obj is of the type
 * it was found on, as its member descriptor would (a generic attribute lookup costs ~40 ns, and
 * every recorded op reads or writes four: a Ref's tid, the module path, the line offset).
 * Anything else goes through the attribute.  (module.c's tmh_slot_of finds the offsets.) */
static inline PyObject *tmh_get(Slot s, PyObject *obj, PyObject *name) {
    if (s.offset > 0 && Py_TYPE(obj) == s.type) {
        PyObject *v = *(PyObject **)((char *)obj + s.offset);
        if (v != NULL) return Py_NewRef(v);
    }
    return PyObject_GetAttr(obj, name);
}

static inline int tmh_set(Slot s, PyObject *obj, PyObject *name, PyObject *v) {
    if (s.offset > 0 && Py_TYPE(obj) == s.type) {
        Py_XSETREF(*(PyObject **)((char *)obj + s.offset), Py_NewRef(v));
        return 0;
    }
    return PyObject_SetAttr(obj, name, v);
}

#define tmh_ref_tid(self, ref) tmh_get((self)->tid, (ref), tmh_s_tid)
#define tmh_set_ref_tid(self, ref, v) tmh_set((self)->tid, (ref), tmh_s_tid, (v))

/* What a weak reference points to: 1 and a new reference in *obj, 0 (and NULL) once it died,
 * -1 with an exception (PyWeakref_GetRef's contract; it is new in 3.13). */
static inline int tmh_ref_get(PyObject *ref, PyObject **obj) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyWeakref_GetRef(ref, obj);
#else
    PyObject *o = PyWeakref_GET_OBJECT(ref);
    *obj = o == Py_None ? NULL : Py_NewRef(o);
    return *obj != NULL;
#endif
}

/* A record or tensor entry holds strings, ints, None and the block's interned tuples, a Ref an
 * int slot: none can be part of a reference cycle, and the collector need not walk them.  CPython
 * untracks such a tuple itself, but only once a collection has visited it (every young collection
 * of a long block walked the last few hundred ops' records), and never a weak reference (one per
 * recorded tensor, walked by every collection after).  (An untracked object that did sit in a
 * cycle would only keep that cycle alive while it lives, never free it early.) */
static inline void untrack(PyObject *o) {
    if (PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
}

/* The call's keyword arguments as the Python methods take them: a dict (new reference), empty
 * when none. */
static inline PyObject *tmh_kwargs_dict(PyObject *kwargs) {
    return kwargs != NULL ? Py_NewRef(kwargs) : PyDict_New();
}

/* a == interned, by value: an interned `a` (every kind and op name a record holds, in practice) is
 * compared by address alone */
static inline int tmh_same_str(PyObject *a, PyObject *interned) {
    if (a == interned) return 1;
    if (!PyUnicode_CheckExact(a) || PyUnicode_CHECK_INTERNED(a)) return 0;
    return PyUnicode_Compare(a, interned) == 0;
}

static inline int tmh_is_tensor(Hot *self, PyObject *o) {
    return PyObject_TypeCheck(o, (PyTypeObject *)self->tensor_type);
}

/* lookup.c */
void tmh_learn_getsets(PyTypeObject *tensor_type);
Py_ssize_t tmh_member_offset(PyTypeObject *type, PyObject *name);
long long tmh_now_ns(Hot *self);
long long tmh_version_of(PyObject *t);
PyObject *tmh_find_where(Hot *self, PyObject **lasti);
/* dispatch.c: the mode's __torch_function__, torch's vectorcall convention */
PyObject *tmh_hot_vectorcall(Hot *self, PyObject *const *a, size_t nargsf, PyObject *kwnames);
int tmh_known_tid(Hot *self, PyObject *t, PyObject **ref_out);
int tmh_known_at(Hot *self, PyObject *t, PyObject *key, PyObject **ref_out);
PyObject *tmh_registered_tid(Hot *self, PyObject *t);
PyObject *tmh_tensors_in(Hot *self, PyObject *args, PyObject *kwargs, PyObject *skip);
int tmh_entry_alive(PyObject *ids, PyObject *key, PyObject *tid, PyObject **obj);
PyObject *tmh_live_tensors(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_leaves_of(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_kind_counts(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_partial_metas(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_history_runs(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_made_before(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_dead_keys(PyObject *mod, PyObject *ids);
PyObject *tmh_live_tids(PyObject *mod, PyObject *ids);
PyObject *tmh_grad_names(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_capture_graph(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_user_names(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_walk_modules(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_freeze_histories(PyObject *mod, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_held_grads(PyObject *mod, PyObject *leaves);
PyObject *tmh_intern_new(Hot *self, PyObject *meta);
PyObject *tmh_set_describe(PyObject *mod, PyObject *const *a, Py_ssize_t n);
int tmh_clear_exception(void);
int tmh_recheck(Hot *self, PyObject *args, PyObject *kwargs, PyObject *written, long long v0);

/* slots.c: SlotMaker, SlotDict, and what they (and encode.c) know of a slotted dataclass */
extern PyTypeObject tmh_SlotMakerType, tmh_SlotDictType;
/* how a field is written, as fastinit.py numbers them: the value; a TensorRef; a tuple of them; a
 * tuple of objects with their own to_dict(refs=); an object with its own to_dict() */
enum { TMH_K_PLAIN, TMH_K_REF, TMH_K_REFS, TMH_K_DICTS, TMH_K_DICT, TMH_K_LAST = TMH_K_DICT };
typedef struct {
    PyTypeObject *cls;
    PyObject *names;     /* tuple of the field names, in order */
    PyObject *defaults;  /* tuple: a field's default, or `required` for none */
    PyObject *required;  /* the marker object for "no default" */
    Py_ssize_t *offsets;
    int *kinds;          /* NULL where the kinds were not asked for */
    Py_ssize_t n;
} Fields;
int tmh_fields_init(Fields *f, const char *who, PyObject *args, PyObject *kw, int with_kinds);
int tmh_fields_traverse(Fields *f, visitproc visit, void *arg);
void tmh_fields_clear(Fields *f);
void tmh_fields_free(Fields *f);
int tmh_field_at_default(const Fields *f, Py_ssize_t i, PyObject *v);

/* saved.c, gate.c */
extern PyTypeObject tmh_SavedIndexType;
int tmh_saved_init(void);
int tmh_write_needed(PyObject *gate, Py_ssize_t idx, PyObject *tid, PyObject *t);

/* build.c, encode.c */
extern PyTypeObject tmh_EventBuilderType, tmh_LineEncoderType;
int tmh_build_init(void);

/* record.c (and what tracker.c shares of it) */
PyObject *tmh_make_meta(Hot *self, PyObject *o);
int tmh_call_hooks(Hot *self, Py_ssize_t n, PyObject *o);
int tmh_append_record(Hot *self, PyObject *rec, long long t);
int tmh_quiet(Hot *self, PyObject *name, PyObject *in_ids, PyObject *meta);
int tmh_created(Hot *self, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *o,
                PyObject *where, PyObject *lasti, long long t);
int tmh_written(Hot *self, PyObject *func, PyObject *w, long long v0, PyObject *args, PyObject *kwargs,
                PyObject *where, PyObject *lasti);

/* paths.c: the module hooks' push and pop (modules.py's _push, _pop) */
PyObject *tmh_module_push(PyObject *m, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_module_pop(PyObject *m, PyObject *const *a, Py_ssize_t n);

/* tracker.c */
PyObject *tmh_meta(Hot *self, PyObject *t);
PyObject *tmh_new_tensor(Hot *self, PyObject *t, int alias);
PyObject *tmh_add(Hot *self, PyObject *const *a, Py_ssize_t n);
PyObject *tmh_grads_filled(Hot *self, PyObject *const *a, Py_ssize_t n);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
