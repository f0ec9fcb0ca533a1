"""``tensor_info``: everything about one tensor (or module, or a namespace's tensors), explained."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch

from .engine import describe, history, identity, naming
from .model.events import Stats
from .model.gradgraph import GradGraph
from .views.common import fmt_bytes, fmt_shape, plural, version_words
from .views.inert import inert, inert_line


@dataclass
class TensorInfo:
    """The facts about one tensor; displays as text or HTML, ``to_dict()`` for scripts."""

    name: str | None
    id: str | None
    shape: tuple[int, ...]
    dtype: str
    device: str
    layout: str
    strides: tuple[int, ...] | None
    contiguous: bool | None
    numel: int
    nbytes: int
    requires_grad: bool
    is_leaf: bool
    grad_fn: str | None
    grad_chain: str | None
    version: int
    is_view: bool
    view_of: str | None
    shares_memory_with: list[str]
    grad: str | None
    stats: Stats | None
    created: str | None
    notes: list[str] = field(default_factory=list)
    history: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict() if self.stats else None
        return d

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs in reading order: what every view shows."""
        rows = [
            ("shape", f"{fmt_shape(self.shape)}  ({plural(self.numel, 'element')}, {fmt_bytes(self.nbytes)})"),
            ("dtype / device", f"{self.dtype} on {self.device}, {self.layout}"),
        ]
        if self.strides is not None:
            rows.append(("strides", f"{self.strides}  ({'contiguous' if self.contiguous else 'not contiguous'})"))
        if self.grad_fn == UNREADABLE:  # a leaf has none: unread, it is not known which this is
            rg = "requires_grad, " if self.requires_grad else ""
            rows.append(("autograd", f"{rg}grad_fn could not be read: leaf or not is not known"))
        elif self.requires_grad or self.grad_fn:
            rows.append(("autograd", (f"requires_grad, {'leaf' if self.is_leaf else 'not a leaf'}")))
        if self.grad_chain:
            rows.append(("grad_fn chain", self.grad_chain))
        rows.append(("version", version_words(self.version)))
        if self.is_view:
            rows.append(("view of", self.view_of or "another tensor"))
        if self.shares_memory_with:
            rows.append(("shares memory with", ", ".join(self.shares_memory_with)))
        if self.grad is not None:
            rows.append((".grad", self.grad))
        if self.stats is not None:
            rows.append(("values", self.stats.summary() + _zeros(self.stats)))
        if self.created:
            rows.append(("created", self.created))
        if self.history:
            rows.append(("history", self.history))
        rows.extend(("note", n) for n in self.notes)
        return rows

    def to_text(self) -> str:
        head = f"{self.name or 'tensor'}" + (f"  [{self.id}]" if self.id else "")
        width = max(len(k) for k, _ in self.rows())
        return inert("\n".join([inert_line(head)] + [f"  {k:<{width}}  {inert_line(v)}" for k, v in self.rows()]))

    def to_html(self) -> str:
        from .views.html import STYLE, h

        body = "".join(f"<tr><th>{h(k)}</th><td>{h(v)}</td></tr>" for k, v in self.rows())
        head = h(self.name or "tensor") + (f" <small>[{h(self.id)}]</small>" if self.id else "")
        return f"{STYLE}<div class='tm-report'><b>{head}</b><table>{body}</table></div>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.to_text(), "text/html": self.to_html()}


def _unnamed(shape: str) -> str:
    """A base no name holds, by its shape: "a 2 tensor" read as a count, so the shape is said as one."""
    return "an unnamed scalar tensor" if shape == "scalar" else f"an unnamed tensor of shape {shape}"


def _zeros(s: Stats) -> str:
    return f", {plural(s.zeros, 'zero')}" if s.zeros else ""


def tensor_info(t: torch.Tensor, name: str | None = None, namespace: Mapping[str, Any] | None = None,
                *, stats: bool = True) -> TensorInfo:  # fmt: skip
    """Everything about ``t``; ``namespace`` finds the names sharing its memory.  Statistics run under
    ``no_grad`` on the tensor's device (only a few scalars reach the host)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"tensor_info needs a torch.Tensor, got {type(t).__name__}")
    # Every read goes through describe (TensorBase's getters, no subclass's __torch_function__)
    # or _try: what a tensor cannot answer (an inference tensor's version, a nested tensor's
    # sizes, a wrapper subclass's storage) is left out or said, never raised.
    shape, dtype, device, requires_grad, gf_name, version = describe.meta(t)
    gf_unread = gf_name == UNREADABLE
    layout = _try(lambda: describe.attr(t, "layout"), None)
    strided = layout == torch.strided and not _try(lambda: describe.attr(t, "is_nested"), False)
    notes: list[str] = []
    kind = describe.kind(t)
    if kind != "tensor":
        notes.append(f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} tensor")
    is_view = describe.is_view(t)
    view_of = None
    pairs = list(naming.named_tensors(namespace)) if namespace is not None else []  # one walk
    ns_names = _names_by_object(pairs)
    base = _try(lambda: describe.attr(t, "_base"), None)
    if is_view and base is not None:
        view_of = ", ".join(ns_names.get(id(base), [])) or _unnamed(fmt_shape(describe.meta(base)[0]))
    grad = None
    if gf_unread:  # is_leaf reads grad_fn too: neither a leaf's nor a non-leaf's .grad words apply
        notes.append(f"grad_fn could not be read ({_error(lambda: describe.attr(t, 'grad_fn'))}): its graph "
                     "and whether it is a leaf are not known")  # fmt: skip
    elif describe.flag(t, "is_leaf") or describe.flag(t, "retains_grad"):
        g = _try(lambda: describe.attr(t, "grad"), None)
        if g is not None:
            gs = _safe_stats(g) if stats else None
            gm = describe.meta(g)
            grad = f"{fmt_shape(gm[0])} {str(gm[1]).removeprefix('torch.')}" + (f", {gs.summary()}" if gs else "")
        elif requires_grad:
            # None also after zero_grad() (set_to_none) or `.grad = None`: a backward may have reached it
            grad = "None (no backward has filled it, or it was cleared since, as zero_grad() does)"
    elif requires_grad:
        grad = "not kept: a non-leaf's .grad stays None unless you call retain_grad() before backward"
    chain = _try(lambda: _graph(t, ns_names).chain(), None) if gf_name is not None and not gf_unread else None
    where = identity.created_where(t)
    created = None
    if where is not None:
        cell, fn, line, op = where
        place = f"In[{cell}] line {line}" if cell is not None else f"{fn}:{line}"
        created = f"{place} by {op}"
        tid = identity.lookup(t)
        ran = identity.ran_in.get(tid) if tid is not None else None
        if ran is not None:  # code an earlier cell defined (a function, a Function's forward)
            created += f", while In[{ran}] ran"
    hist = history.of(t)
    # the history, once it says more than "created" does (a tensor later written or moved)
    hist_words = hist.words() if hist is not None and (len(hist) > 1 or hist.head[0][3] != "made") else None
    if getattr(device, "type", None) == "meta":
        notes.append("meta tensor: it has a shape and dtype but no values")
    if any(s is None for s in shape):
        notes.append("nested tensor: ? marks a dimension whose size differs between its components")
    with _no_subclass():
        numel = _try(lambda: _TB.numel(t), 0)
        nbytes = _try(lambda: numel * _TB.element_size(t), 0)
        strides = _try(lambda: tuple(_TB.stride(t)), None) if strided else None
        contiguous = _try(lambda: _TB.is_contiguous(t), None) if strided else None
    return TensorInfo(
        name=name, id=identity.tensor_id(t), shape=tuple(shape),
        dtype=str(dtype).removeprefix("torch."), device=str(device),
        layout=str(layout).removeprefix("torch.") if layout is not None else "?",
        strides=strides, contiguous=contiguous, numel=numel, nbytes=nbytes, requires_grad=requires_grad,
        is_leaf=gf_name is None, grad_fn=gf_name, grad_chain=chain,
        version=version, is_view=is_view, view_of=view_of,
        shares_memory_with=[n for n in _try(lambda: _sharing(t, pairs, namespace), []) if n != name], grad=grad,
        stats=_safe_stats(t) if stats else None, created=created, notes=notes, history=hist_words,
    )  # fmt: skip


_TB = torch._C.TensorBase
#: what ``describe.meta`` gives for a grad_fn that raised when read
UNREADABLE = "?"
_no_subclass = torch._C.DisableTorchFunction  # no subclass code, no mode (a tracking one included)


def _try(read: Any, default: Any) -> Any:
    """``read()``, or ``default`` when it raises: one fact a tensor cannot give is left out."""
    try:
        return read()
    except Exception:  # noqa: BLE001
        return default


def _error(read: Any) -> str:
    """Why ``read()`` fails, in one short line ("" if it does not)."""
    try:
        read()
    except Exception as e:  # noqa: BLE001
        text = (str(e).splitlines() or [type(e).__name__])[0]
        return f"{type(e).__name__}: {text[:120]}" + ("…" if len(text) > 120 else "")
    return ""


def _safe_stats(t: torch.Tensor) -> Stats | None:
    from .engine.stats import compute_stats

    try:
        with _no_subclass():  # a subclass's __torch_function__ does not run (its dispatch may)
            return compute_stats(t)
    except Exception as e:  # noqa: BLE001 - a dtype without reductions, a subclass: say why
        return Stats(numel=_try(lambda: _TB.numel(t), 0), note=f"no statistics: {e}".split("\n")[0])


def _names_by_object(pairs: list[tuple[str, torch.Tensor]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for n, v in pairs:
        out.setdefault(id(v), []).append(n)
    return out


def _span(t: torch.Tensor) -> tuple[int, int] | None:
    if describe.attr(t, "device").type != "cpu" or describe.attr(t, "layout") != torch.strided:
        return None
    try:
        with _no_subclass():
            st = _TB.untyped_storage(t)
    except Exception:  # noqa: BLE001 - a wrapper subclass has no storage of its own
        return None
    return (st.data_ptr(), st.data_ptr() + st.nbytes()) if st.nbytes() else None


def _sharing(t: torch.Tensor, pairs: list[tuple[str, torch.Tensor]],
             namespace: Mapping[str, Any] | None) -> list[str]:  # fmt: skip
    """Names (tensors and NumPy arrays) whose memory overlaps ``t``'s storage."""
    if namespace is None:
        return []
    out: list[str] = []
    key = identity.storage_key(t)
    span = _span(t)
    for n, v in pairs:
        if v is not t and key is not None and identity.storage_key(v) == key:
            out.append(n)
    if span is not None:
        for n, v in list(namespace.items()):
            iface = getattr(v, "__array_interface__", None) if type(v).__module__ == "numpy" else None
            if iface is None or n.startswith("_"):
                continue
            ptr = iface["data"][0]
            if span[0] <= ptr < span[1]:
                out.append(f"{n} (NumPy)")
    return out


@dataclass
class TableInfo:
    """A table of tensors: a module's parameters and buffers, or a namespace's tensors."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    footer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows],
                "footer": self.footer}  # fmt: skip

    def to_text(self) -> str:
        """Aligned columns, each at most ``MAX_COLUMN`` wide: a longer cell overflows its own row
        only (a 20,000-character name must not pad every row to its width)."""
        rows = [tuple(inert_line(x) for x in r) for r in self.rows]
        widths = [min(MAX_COLUMN, max(len(c), *(len(r[i]) for r in rows)) if rows else len(c))
                  for i, c in enumerate(self.columns)]  # fmt: skip

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(x.ljust(w) for x, w in zip(cells, widths)).rstrip()

        lines = [inert_line(self.title), line(self.columns)] + [line(r) for r in rows]
        if self.footer:
            lines.append(inert_line(self.footer))
        return "\n".join(lines)

    def to_html(self) -> str:
        from .views.html import STYLE, h

        head = "".join(f"<th>{h(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{h(x)}</td>" for x in r) + "</tr>" for r in self.rows)
        return (f"{STYLE}<div class='tm-report'><b>{h(self.title)}</b><table><tr>{head}</tr>{body}</table>"
                f"<div>{h(self.footer)}</div></div>")  # fmt: skip

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.to_text(), "text/html": self.to_html()}


#: the widest a text table's column is padded to
MAX_COLUMN = 40
TABLE_COLUMNS = ("name", "shape", "dtype", "device", "requires_grad", "grad_fn", "bytes")


def _row(name: str, t: torch.Tensor) -> tuple[str, ...]:
    gf = describe.meta(t)[4]  # "?" where reading it raises (a no_grad view whose base was written)
    return (name, fmt_shape(tuple(t.shape)), str(t.dtype).removeprefix("torch."), str(t.device),
            "yes" if t.requires_grad else "", "" if gf is None else ("unreadable" if gf == UNREADABLE else gf),
            fmt_bytes(t.numel() * t.element_size()))  # fmt: skip


NOT_A_PATH = object()


def object_by_report_name(namespace: Mapping[str, Any], text: str) -> Any:
    """The object a report's dotted name means (``model.0.weight``, ``m.transformer.h.1.attn``,
    ``model.0.weight.grad``): a namespace name, then child modules by their keys (a
    ``Sequential``'s ``0``) and attributes.  ``NOT_A_PATH`` where ``text`` is not such a name;
    an attribute that fails raises as Python would.  An optimizer's state is written
    ``opt.state[model.0.weight].exp_avg``: the parameter by its report name, the state by its key."""
    state = _OPT_STATE.match(text)
    if state is not None and isinstance(namespace.get(state[1]), torch.optim.Optimizer):
        return _optimizer_state(namespace, *state.groups())
    parts = text.split(".")
    if len(parts) < 2 or not parts[0].isidentifier() or parts[0] not in namespace:
        return NOT_A_PATH
    if not all(p.isidentifier() or p.isdigit() for p in parts[1:]):
        return NOT_A_PATH
    obj = namespace[parts[0]]
    for i, p in enumerate(parts[1:], 1):
        children = obj._modules if isinstance(obj, torch.nn.Module) else {}
        if p in children:
            obj = children[p]
        elif p.isidentifier():
            obj = getattr(obj, p)
        else:
            raise AttributeError(f"{'.'.join(parts[:i])} has no child module {p!r}")
    return obj


def module_info(m: torch.nn.Module, name: str = "module") -> TableInfo:
    """A table of a module's parameters and buffers, with totals."""
    rows, total, count = [], 0, 0
    for pn, p in m.named_parameters():
        rows.append(_row(f"{name}.{pn}", p))
        total += p.numel() * p.element_size()
        count += p.numel()
    for bn, b in m.named_buffers():
        rows.append(_row(f"{name}.{bn} (buffer)", b))
    return TableInfo(title=f"{name}: {type(m).__name__}", columns=TABLE_COLUMNS, rows=rows,
                     footer=f"{plural(count, 'parameter')}, {fmt_bytes(total)}")  # fmt: skip


def namespace_info(namespace: Mapping[str, Any]) -> TableInfo:
    """Every tensor reachable from the namespace, like a variable inspector."""
    pairs = list(naming.named_tensors(namespace))
    rows = [_row(n, t) for n, t in pairs]
    total = sum(t.numel() * t.element_size() for _, t in pairs)
    return TableInfo(title="tensors in the namespace", columns=TABLE_COLUMNS, rows=rows,
                     footer=f"{plural(len(rows), 'tensor')}, {fmt_bytes(total)}" if rows else "no tensors yet")  # fmt: skip


def _graph(t: torch.Tensor, names: dict[int, list[str]]) -> GradGraph:
    """The grad_fn graph below a live tensor, with namespace names on its nodes."""
    from .engine.autograd import capture

    return capture([("t", t)], lambda x: (names.get(id(x)) or [None])[0]).graph("t")


#: how the reports name an optimizer's state: ``opt.state[<parameter's name>].<key>``
_OPT_STATE = re.compile(r"^([A-Za-z_]\w*)\.state\[(.+)\]\.([A-Za-z_]\w*)$")


def _optimizer_state(namespace: Mapping[str, Any], opt_name: str, param_name: str, key: str) -> Any:
    """``opt.state[param][key]`` with the parameter found by its report name or a namespace name."""
    param = object_by_report_name(namespace, param_name)
    if param is NOT_A_PATH:
        param = namespace.get(param_name, NOT_A_PATH)
    if param is NOT_A_PATH:
        return NOT_A_PATH
    state = namespace[opt_name].state
    if not state.get(param):  # a defaultdict: [] would add an entry (evaluating the text as Python adds an empty one)
        raise KeyError(f"{opt_name}.state holds nothing for {param_name}: no step has run for it yet")
    if key not in state[param]:
        raise KeyError(f"{opt_name}.state[{param_name}] has no {key!r}: it holds {', '.join(map(str, state[param]))}")
    return state[param][key]
