"""A notebook file executed by ``jupyter nbconvert --execute --to notebook`` with training-loop
cells: what a front end without the kernel reads from it.

GitHub's notebook view and nbconvert without widget state render each output's ``text/html`` (else
``text/plain``) and ignore the widget view; VS Code shows the widget view only while its model
exists, else the next richest type.  Neither GitHub nor VS Code runs here: these tests check the
stored outputs those renderers read, and nbconvert's own HTML export of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from typing import Any

import nbformat
import pytest

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"
#: "not hundreds of KB of widget state per cell" (issue 23): the bound a tracked cell keeps under
STATE_PER_CELL = 48_000

SETUP = """\
%load_ext tensormagic
import torch
from torch import nn
from torch.nn import functional as F
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
xb = torch.randn(32, 20)
yb = torch.randint(0, 2, (32,))"""
LOOP = """\
for step in range(STEPS):
    opt.zero_grad()
    logits = model(xb)
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    opt.step()"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The executed file, read back as JSON: a %%trackgrad cell of 100 steps, and a 10-step cell
    under %trackgrad on."""
    tmp = tmp_path_factory.mktemp("executed")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP),
                nbformat.v4.new_code_cell("%%trackgrad\n" + LOOP.replace("STEPS", "100")),
                nbformat.v4.new_code_cell("%trackgrad on"),
                nbformat.v4.new_code_cell(LOOP.replace("STEPS", "10"))]  # fmt: skip
    nbformat.write(nb, tmp / "loop.ipynb")
    env = dict(os.environ)
    for var in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR"):
        (tmp / var).mkdir()
        env[var] = str(tmp / var)
    subprocess.run([sys.executable, "-m", "nbconvert", "--execute", "--to", "notebook", "--output", "done.ipynb",
                    "--ExecutePreprocessor.timeout=300", str(tmp / "loop.ipynb")],
                   check=True, env=env, cwd=tmp, capture_output=True)  # fmt: skip
    return {"path": tmp / "done.ipynb", "nb": json.loads((tmp / "done.ipynb").read_text())}


def _tracked_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and "opt.step()" in "".join(c["source"])]
    assert len(cells) == 2
    return cells


def _html(data: dict[str, Any]) -> str:
    v = data["text/html"]
    return "".join(v) if isinstance(v, list) else v


class _Text(HTMLParser):
    """The text a renderer shows when it drops scripts, style sheets and every attribute (the
    strictest of GitHub-like sanitizers that keep tables)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _visible(html: str) -> str:
    p = _Text()
    p.feed(html)
    return " ".join(" ".join(p.parts).split())


def test_each_tracked_cell_is_an_empty_widget_output_then_the_static_report(executed):
    """Per tracked cell: first the live panel's output (widget view + empty text/plain: nothing
    shows where it cannot render), then the report as text/html + text/plain, no widget view."""
    for cell in _tracked_cells(executed["nb"]):
        outs = [o for o in cell["outputs"] if o["output_type"] != "stream"]
        assert [sorted(o["data"]) for o in outs] == [[WIDGET_MIME, "text/plain"], ["text/html", "text/plain"]]
        assert "".join(outs[0]["data"]["text/plain"]) == ""
        assert "".join(outs[1]["data"]["text/plain"]).startswith("tensormagic · cell ")


def test_static_report_reads_without_scripts_styles_or_attributes(executed):
    """With scripts, style sheets and attributes dropped, the report still states the summary and
    every line's calls; it loads nothing from outside the output (CSS and all in the output)."""
    hundred, ten = _tracked_cells(executed["nb"])
    for cell, steps in ((hundred, 100), (ten, 10)):
        data = cell["outputs"][-1]["data"]
        html = _html(data)
        text = _visible(html)
        summary = "".join(data["text/plain"]).splitlines()[0]
        assert summary in text and f"{steps} backward" in summary
        assert "calls" in text and "logits = model(xb)" in text and "opt.step()" in text
        assert f"F.cross_entropy {steps} " in text and f".add_ {4 * steps} " in text  # 4 parameters
        assert ".tm-report{" not in text and "function" not in text
        lowered = html.lower()
        assert "<link" not in lowered and "src=" not in lowered and "http" not in lowered


def test_widget_state_per_tracked_cell_is_small(executed):
    """The models a tracked cell's panel keeps in the file (all it refers to) stay under 48 KB (the
    100-step cell's panel, and the 10-step cell's one-line summary that opens into the panel)."""
    nb = executed["nb"]
    state = nb["metadata"]["widgets"][STATE_MIME]["state"]

    def reach(mid: str, seen: set[str]) -> None:
        if mid in seen or mid not in state:
            return
        seen.add(mid)
        for ref in json.dumps(state[mid]["state"]).split("IPY_MODEL_")[1:]:
            reach(ref[:32], seen)

    for cell in _tracked_cells(nb):
        seen: set[str] = set()
        reach(cell["outputs"][0]["data"][WIDGET_MIME]["model_id"], seen)
        size = sum(len(json.dumps(state[m])) for m in seen)
        assert len(seen) >= 2 and size < STATE_PER_CELL, (len(seen), size)


def test_nbconvert_html_without_widget_state_shows_the_report(executed):
    """nbconvert's HTML of the file without its widget state (what GitHub ignores): every report
    is there, and no widget error."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed["path"], as_version=4)
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter().from_notebook_node(nb)
    text = _visible(body)
    for cell in _tracked_cells(executed["nb"]):
        assert "".join(cell["outputs"][-1]["data"]["text/plain"]).splitlines()[0] in text
    assert "model not found" not in text and "Error displaying widget" not in text


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "sanitized"])
def test_nbconvert_html_shows_no_css_or_script_text(executed, sanitize):
    """nbconvert's HTML export, sanitized (``--sanitize-html``: bleach escapes the <style> and
    <script> tags it does not allow) or not, shows every report's summary and lines and no text of
    the reports' style sheets or scripts."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed["path"], as_version=4)
    body, _ = HTMLExporter(sanitize_html=sanitize).from_notebook_node(nb)
    text = _visible(body)  # the contents of <style> and <script> tags the export kept are not text
    for cell in _tracked_cells(executed["nb"]):
        assert "".join(cell["outputs"][-1]["data"]["text/plain"]).splitlines()[0] in text
    assert "logits = model(xb)" in text and "calls" in text
    for code in ("{", "}", ".tm-report", ".tm-panel", "color:", "function(", "currentScript", "=>"):
        assert code not in text, code
