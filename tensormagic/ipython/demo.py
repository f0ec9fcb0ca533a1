"""The first example every tutorial shows, tracked: ``python -m tensormagic demo``."""

from __future__ import annotations

DEMO_SOURCE = """\
x = torch.ones(2, 2, requires_grad=True)
y = x + 2
z = y * y * 3
out = z.mean()
out.backward()
"""


def run_demo() -> str:
    """Run the autograd example under tracking and return its text report."""
    import linecache

    import torch

    from ..api import track

    filename = "<tensormagic-demo>"
    # register the source so the report can quote each line, as it does for a notebook cell
    linecache.cache[filename] = (len(DEMO_SOURCE), None, DEMO_SOURCE.splitlines(True), filename)
    ns: dict[str, object] = {"torch": torch}
    code = compile(DEMO_SOURCE, filename, "exec")
    def locate(fn: str) -> tuple[int | None, int] | None:
        return (None, 0) if fn == filename else None

    with track(namespace=ns, locator=locate, block=(filename, 1, None)) as rec:
        exec(code, ns)
    return rec.to_text()
