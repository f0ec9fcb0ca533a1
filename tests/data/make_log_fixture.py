"""Wrote tests/data/log_schema1.jsonl with the code of main at 816a535 (schema_version 1),
log_schema2.jsonl with branch i21 (schema_version 2), and log_schema3.jsonl with branch i22
(schema_version 3: run with a second argument ``history``, so the blocks keep histories and the
last one writes ``v``, made by the first), and log_schema4.jsonl with branch i20 (schema_version 4:
run with ``history`` and a third argument ``compiled``: the fourth cell also calls a
torch.compile'd function); kept to say how it was made, never re-run (the fixture is what that
code wrote, every later reader must load it)."""
import sys
import warnings

import numpy as np
import torch

import tensormagic
from tensormagic.log.writer import close_all

path = sys.argv[1]
HISTORY = sys.argv[2:3] == ["history"]
COMPILED = sys.argv[3:] == ["compiled"]
warnings.simplefilter("ignore")
torch.manual_seed(0)
with tensormagic.track(log=path, history=HISTORY) as rec:
    x = torch.ones(2, 2, requires_grad=True)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    out.backward()
    v = torch.zeros(3)
    v[0] = 7
    w = v.view(3, 1)
    a = torch.from_numpy(np.arange(3.0))
    m = v.to(torch.float64)
    n = a.numpy()
with tensormagic.track(log=path, stats=True, history=HISTORY) as rec2:
    s = torch.tensor([1.0, float("nan")])
    q = s * 2
try:
    with tensormagic.track(log=path, max_events=5, history=HISTORY) as rec3:
        t = torch.zeros(1)
        for _ in range(20):
            t = t + 1
        raise ValueError("boom")
except ValueError:
    pass
with tensormagic.track(log=path, history=HISTORY) as rec4:
    p = torch.randn(3, requires_grad=True).to(torch.float64)
    r = (p * 2).sum()
    r.backward()
    g = p.grad
    if HISTORY:
        v.add_(1)
    if COMPILED:  # schema 4: a "compiled" event
        f = torch.compile(lambda u: (u * 2).relu(), backend="eager")
        c = f(r)
close_all()
print(rec.summary_line(), rec2.summary_line(), rec3.summary_line(), rec4.summary_line(), sep="\n")
