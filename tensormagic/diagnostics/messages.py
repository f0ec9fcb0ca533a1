"""The words of each diagnostic, written once the Recording has names and lines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..engine import identity, naming
from ..engine.ops import op_name
from ..engine.raw import EXTRA
from ..model.events import Diagnostic
from ..views.common import fmt_shape
from . import grads, inplace
from .context import Context, Finding, op_words

if TYPE_CHECKING:  # pragma: no cover
    from .checks import Checks

Words = tuple[str, str | None, tuple[str, ...], tuple[Any, ...]]  # message, fix, names, other lines


def render_all(ctx: Context, checks: Checks) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    saved = checks.saved
    backward_idx = list(checks.tr.backwards)
    failures = saved.backward_errors if saved is not None else []
    explained: set[Any] = set()
    for f in checks.findings.values():
        if f.id == "inplace-saved":
            words = inplace.message(ctx, f, backward_idx, failures)
            if words is not None:
                explained.update(w for n, w, _m in failures if n > f.data["idx"])
        else:
            words = _RENDER[f.id](ctx, f)
        if words is not None:
            text, fix, names, lines = words
            out.append(ctx.diagnostic(f, text, fix, names=names, lines=lines))
    for _n, where, msg in failures:
        if where not in explained:
            explained.add(where)
            text, fix = inplace.fallback(ctx, where, msg)
            out.append(ctx.diagnostic(Finding("inplace-saved", where), text, fix))
    if checks.sync:
        for where, (n, ops, tid) in checks.syncs.items():
            if n >= checks.settings.sync_min:
                f = Finding("sync-in-loop", where, (tid,) if tid is not None else (), count=n)
                text, fix, names = _sync(ctx, f, ops)
                out.append(ctx.diagnostic(f, text, fix, names=names))
    if checks.accumulation and _any_accumulated(ctx.raw, backward_idx):
        out.extend(grads.accumulation(ctx.rec.events))
    out.sort(key=lambda d: (d.cell or 0, d.file or "", d.line if d.line is not None else 1 << 30))
    return out


def _any_accumulated(raw: list[Any], backward_idx: list[int]) -> bool:
    """Whether some backward added onto a leftover gradient: only then are the events worth
    building to tell a mistake from deliberate accumulation (they are built lazily)."""
    return any(any(g[2] for g in raw[i][EXTRA]) for i in backward_idx)  # (leaf, meta, accumulated, grad)


def _sync(ctx: Context, f: Finding, ops: set[str]) -> tuple[str, str, tuple[str, ...]]:
    what = ", ".join(sorted(op_words(o) for o in ops))
    name = ctx.names(f.tids)
    text = (f"{what} made the host wait for the device {f.count:,} times on this line (one host–device "
            "sync each time, as in a loop): each sync stalls the device's queue until it drains.")
    fix = ("keep the values on the device inside the loop (e.g. total += loss.detach()) and read them "
           "once after it, or only every N steps")
    return text, fix, name


def _leaf_moved(ctx: Context, f: Finding) -> Words | None:
    tid, src = f.tids
    names = ctx.names((tid,))
    if not names:
        return None  # never bound to a name: nobody will look for its .grad
    if ctx.namespace is not None:
        reachable = {identity.lookup(t) for _n, t in naming.named_tensors(ctx.namespace)}
        if src in reachable:
            return None  # the leaf is kept: its .grad is filled, and this is a deliberate copy
    name = names[0]
    r = ctx.raw[f.data["idx"]]
    smeta, meta = r[7][1], r[3]
    op = ctx.op_at(f.data["idx"])
    moved = []
    if smeta[2] != meta[2]:
        moved.append(f"to {meta[2]}")
    if smeta[1] != meta[1]:
        moved.append(f"to {str(meta[1]).removeprefix('torch.')}")
    text = (f"{name} is not a leaf: {op} copied the tensor made with requires_grad=True "
            f"({' and '.join(moved) or 'a copy'}), so {name}.grad stays None after backward — the "
            "gradient goes to the original, which nothing refers to.")
    meth = op_name(r[1]).rsplit(".", 1)[-1] if r[1] is not None else "to"
    where = f"device={meta[2].type!r}" if smeta[2] != meta[2] else f"dtype={meta[1]}"
    fix = (f"create it where it belongs: torch.randn(…, {where}, requires_grad=True), or set "
           f"requires_grad after the move: {name} = torch.randn(…).{meth}(…).requires_grad_()")
    return text, fix, names, ()


def _grad_unfilled(ctx: Context, f: Finding) -> Words:
    tid = f.tids[0]
    name = ctx.label(tid)
    made = ctx.created(tid)
    how = f" (made by {made[0]}, {made[2]})" if made is not None else ""
    text = (f"{name}.grad is read here, but {name} is not a leaf{how}: backward() fills .grad only for "
            f"leaf tensors, so {name}.grad is None.")
    fix = (f"call {name}.retain_grad() before backward() to keep its gradient, or read .grad of the "
           "leaf tensor it was computed from")
    return text, fix, ctx.names((tid,)), (made[1] if made else None,)


def _broadcast(ctx: Context, f: Finding) -> Words:
    d = f.data
    a, b = f.tids[1], f.tids[2] if len(f.tids) > 2 else f.tids[1]
    op = ctx.op_at(d["idx"])
    if "shape" in d:  # a loss that broadcast internally
        a, b = f.tids[0], f.tids[1]
        shape, n = d["shape"], 1
        for s in shape:
            n *= s
        text = (f"{op} got {ctx.label(a)} ({ctx.shape(a)}) and {ctx.label(b)} ({ctx.shape(b)}), which "
                f"broadcast to {fmt_shape(shape)} ({n:,} elements): the loss compares every pair of "
                "elements instead of matching them one to one, and gives a wrong value without error.")
        lines: tuple[Any, ...] = ()
    else:
        out_shape = tuple(ctx.raw[d["idx"]][3][0])
        n = 1
        for s in out_shape:
            n *= s
        red = ctx.raw[d["reduce"]]
        text = (f"{op} broadcast {ctx.label(a)} ({ctx.shape(a)}) and {ctx.label(b)} ({ctx.shape(b)}) "
                f"to {fmt_shape(out_shape)} ({n:,} elements, more than either input), then "
                f"{ctx.op_at(d['reduce'])} ({ctx.where_words(red[4])}) reduced it: every pair of "
                "elements was combined instead of matching them one to one, with no error.")
        lines = (ctx.line(red[4]),)
    la, lb = ctx.label(a), ctx.label(b)
    fix = (f"make the shapes match before combining them (e.g. {lb}.view_as({la}), or .squeeze(-1) on "
           f"the one with a trailing 1); for an intended outer product, say so: {la}[:, None] * {lb}")
    return text, fix, ctx.names((a, b)), lines


def _non_finite(ctx: Context, f: Finding) -> Words:
    d = f.data
    out, ins = f.tids[0], f.tids[1:]
    what = " and ".join(p for p in (f"{d['nan']} NaN" if d["nan"] else "",
                                      f"{d['inf']} Inf" if d["inf"] else "") if p)  # fmt: skip
    kind = ctx.raw[d["idx"]][0]
    src = ", ".join(ctx.label(i) for i in ins) if ins else ctx.label(out)
    into = ctx.label(out)
    text = (f"{ctx.op_at(d['idx'])} produced the first non-finite values of this block ({what}) "
            f"{'in ' + into if kind == 'inplace' else 'in ' + into + ' from finite inputs'} ({src}); "
            "everything computed from it will be NaN or Inf too.")
    fix = ("guard the op: clamp before log/sqrt/division (x.clamp(min=eps)), use log_softmax or "
           "logsumexp instead of log(softmax)/log(sum(exp)), or a wider dtype than float16")
    return text, fix, ctx.names((out, *ins)), ()


def _device(ctx: Context, f: Finding) -> Words:
    devices: dict[int, str] = f.data["devices"]
    parts = []
    lines = []
    for tid, dev in devices.items():
        got = _got_there(ctx, tid, dev)
        parts.append(f"{ctx.label(tid)} is on {dev}" + (f" ({got[0]})" if got else ""))
        if got:
            lines.append(got[1])
    op = op_words(f.data["func"])
    # suggest moving a plain tensor (x), not a module's parameter (model.fc.weight)
    tids = sorted(devices, key=lambda t: "." in ctx.name_or(t, ""))
    a = tids[0]
    b = next(t for t in tids if devices[t] != devices[a])
    la, lb = ctx.name_or(a, "x"), ctx.name_or(b, "y")
    text = f"{op} needs all its tensors on one device, but " + "; ".join(parts) + "."
    fix = (f"move them to one device before this line ({la} = {la}.to({lb}.device)); create tensors "
           "with device=… and move a model and its inputs together")
    return text, fix, ctx.names(devices), tuple(lines)


def _got_there(ctx: Context, tid: int, dev: str) -> tuple[str, int | None] | None:
    t = ctx.tensor(tid)
    if t is not None:
        for e in reversed(t.events):
            if e.tensor.id == t.id and e.kind == "move" and e.to_device == dev:
                return f"moved there by {op_words(e.op)}, {e.where_in(ctx.rec.cell)}", e.line
        if t.created is not None and t.created.origin == "op":
            return f"created there by {op_words(t.created.op)}, {t.created.where_in(ctx.rec.cell)}", t.created.line
    made = ctx.created(tid)
    return (f"from {made[0]}, {made[2]}", made[1]) if made else None


def _dtype_f64(ctx: Context, f: Finding) -> Words:
    d = f.data
    wide, narrow = d["wide"], d["narrow"]
    w = wide[0]
    t = ctx.tensor(w)
    origin = ""
    if t is not None and t.created is not None:
        c = t.created
        if c.op.endswith("from_numpy") or "NumPy" in (c.note or ""):
            origin = f", from NumPy ({c.where_in(ctx.rec.cell)})"
        else:
            origin = f", made by {op_words(c.op)} ({c.where_in(ctx.rec.cell)})"
    head = (f"{ctx.label(w)} (float64{origin}) meets {ctx.label(narrow[0])} "
            f"({ctx.tensor(narrow[0]).ref.dtype if ctx.tensor(narrow[0]) else 'float32'})")
    if d["error"]:
        text = f"{head}: this op cannot mix them and fails (NumPy arrays are float64 by default)."
    else:
        text = (f"{head} in {ctx.op_at(d['idx'])}: the result is silently float64 — twice the memory, much "
                "slower on GPUs, and it spreads to everything computed from it.")
    fix = ("convert where the data enters: torch.from_numpy(a).float(), or "
           "torch.as_tensor(a, dtype=torch.float32)")
    return text, fix, ctx.names((*wide, *narrow)), (t.created.line if t is not None and t.created else None,)


def _int_target(ctx: Context, f: Finding) -> Words:
    target, inp = f.tids
    d = f.data
    loss = ctx.op_at(d["idx"]) if d["idx"] is not None else "this loss"
    tl, il = ctx.name_or(target, "the target"), ctx.name_or(inp, "the output")
    made = ctx.created(target)
    how = f", from {made[0]} ({made[2]})" if made is not None and not ctx.names((target,)) else ""
    text = (f"{loss} got an integer target {'' if tl == 'the target' else tl + ' '}({d['dtype']}{how}) for a "
            f"loss on float values (input {il}): some losses convert it silently, others fail in backward "
            "with 'Found dtype Long but expected Float', and integer labels usually mean a classification "
            "loss was meant.")
    tn = ctx.name_or(target, "target")
    fix = (f"convert the target ({tn}.float(), or .to({il}.dtype)); for class labels, use "
           "nn.CrossEntropyLoss with the integer target")
    return text, fix, ctx.names((target, inp)), ()


_RENDER: dict[str, Callable[[Context, Finding], Words | None]] = {
    "leaf-moved": _leaf_moved,
    "grad-unfilled": _grad_unfilled,
    "broadcast": _broadcast,
    "non-finite": _non_finite,
    "device-mismatch": _device,
    "dtype-float64": _dtype_f64,
    "dtype-int-target": _int_target,
}
