"""The notebooks the browser tests open: the autograd example and a hostile tensor name."""

from __future__ import annotations

SETUP = "import torch\n%load_ext tensormagic"
EXAMPLE = """\
%%trackgrad
x = torch.ones(2, 2, requires_grad=True)
y = x + 2
z = y * y * 3
out = z.mean()
out.backward()"""
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE = f"""\
%%trackgrad
d = {{}}
d["{HOSTILE_NAME}"] = torch.ones(3, requires_grad=True)
s = (d["{HOSTILE_NAME}"] * 2).sum()"""
NOTEBOOKS = {"example.ipynb": [SETUP, EXAMPLE], "hostile.ipynb": [SETUP, HOSTILE]}
