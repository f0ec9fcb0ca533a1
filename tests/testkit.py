"""Helpers shared by the tests (a module, not conftest: two conftests exist and only one can be
imported as ``conftest``)."""

from __future__ import annotations

from types import SimpleNamespace


def run(ip, source: str):
    """Run a cell as a user would (history stored, so it gets an execution count); return its result."""
    return ip.run_cell(source, store_history=True)


def autograd_example() -> SimpleNamespace:
    """The core issue's example, tracked: ``.rec`` and the live tensors ``x``, ``y``, ``z``, ``out``
    (drop the ones a test wants freed)."""
    import torch

    import tensormagic

    with tensormagic.track() as rec:
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        z = y * y * 3
        out = z.mean()
        out.backward()
    return SimpleNamespace(rec=rec, x=x, y=y, z=z, out=out)


def make_mlp(outputs: int):
    """The tutorials' small MLP: Linear, an in-place ReLU (the classic pitfall), Dropout, Linear."""
    from torch import nn

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(20, 32)
            self.drop = nn.Dropout(0.2)
            self.fc2 = nn.Linear(32, outputs)

        def forward(self, x):
            h = self.fc1(x)
            h.relu_()  # the in-place activation tutorials warn about
            return self.fc2(self.drop(h))

    return MLP()


def line_with(text: str, func=None) -> int:
    """The file line number of the one line of the calling test's source (or of ``func``'s) that
    contains ``text``: expected lines come from the source text, not from the recording."""
    import inspect

    code = func.__code__ if func is not None else inspect.currentframe().f_back.f_code
    lines, start = inspect.getsourcelines(code)
    hits = [start + i for i, line in enumerate(lines) if text in line and "line_with(" not in line]  # not the asking line
    assert len(hits) == 1, f"{text!r} is on {len(hits)} lines of {code.co_name}, not one"
    return hits[0]


def read_every_view(rec) -> None:
    """Build every lazily made part of a recording (events, tensor records, folds, snapshots,
    graphs, reports, live statistics), as a person looking at it would: a leak test calls this
    before dropping the tensors, so that what the views hold is what is tested."""
    rec.events, rec.folds, rec.final_refs(), rec.counts()
    for r in rec.tensors.values():
        r.alive, r.stats()
    for r in rec.results():
        rec.grad_graph(r.id).chain()
    rec.top_results(), rec.to_text(), rec.to_html(), rec._repr_mimebundle_()
