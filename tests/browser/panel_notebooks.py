"""The notebooks the browser tests open: the autograd example, a hostile tensor name, and a
small training loop (opened live, and reopened without its kernel)."""

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
LOOP = """\
%%trackgrad --stats
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
X, Y = torch.randn(64, 4), torch.randint(0, 2, (64,))
for step in range(20):
    logits = model(X)
    loss = torch.nn.functional.cross_entropy(logits, Y)
    opt.zero_grad()
    loss.backward()
    opt.step()"""
NOTEBOOKS = {
    "example.ipynb": [SETUP, EXAMPLE],
    "hostile.ipynb": [SETUP, HOSTILE],
    "loop.ipynb": [SETUP, LOOP],
    "reopen.ipynb": [SETUP, LOOP, EXAMPLE],
}
