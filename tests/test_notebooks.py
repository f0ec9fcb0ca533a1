"""The demo notebooks run top to bottom on a real kernel and show what their prose promises."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "demo_notebooks"


def _execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env_dirs = {"IPYTHONDIR": tmp_path / "ipython", "JUPYTER_RUNTIME_DIR": tmp_path / "runtime"}
    for var, path in env_dirs.items():
        path.mkdir()
        os.environ.setdefault(var, str(path))
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    return nb


def _texts(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.append(str(data.get("text/plain", "")))
        parts.append(str(data.get("text/html", "")))
    return "\n".join(parts)


def _cell(nb: nbformat.NotebookNode, startswith: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(startswith):
            return _texts(cell)
    raise AssertionError(f"no code cell starts with {startswith!r}")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    cache: dict[str, nbformat.NotebookNode] = {}

    def run(name: str) -> nbformat.NotebookNode:
        if name not in cache:
            cache[name] = _execute(name, tmp_path_factory.mktemp(name.split(".")[0]))
        return cache[name]

    return run


def test_notebooks_have_no_committed_outputs():
    """Notebooks are committed without outputs, so diffs stay readable."""
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


def test_tensor_basics_autograd_report(executed):
    """01: the autograd cell's report names MeanBackward0 and x.grad is 4.5."""
    nb = executed("01_tensor_basics.ipynb")
    text = _cell(nb, "%%trackgrad -o rec")
    assert "MeanBackward0" in text and "AccumulateGrad(x)" in text and "4.5000" in text


def test_tensor_basics_inplace_and_views(executed):
    """01: add_ bumps y's version 0→1; a write through a view changes x."""
    nb = executed("01_tensor_basics.ipynb")
    assert "version 0→1" in _cell(nb, "%%trackgrad\nx = torch.ones(5, 3)")
    view_cell = _cell(nb, "%%trackgrad\nx = torch.randn(4, 4)")
    assert "view of x" in view_cell and "tensor(100.)" in view_cell


def test_tensor_basics_numpy_bridge(executed):
    """01: from_numpy is reported as a float64 tensor sharing memory."""
    nb = executed("01_tensor_basics.ipynb")
    text = _cell(nb, "%%trackgrad\na = np.ones(5)")
    assert "torch.from_numpy" in text and "float64" in text and "[3., 3., 3., 3., 3.]" not in text


def test_training_loop_step(executed):
    """02: one tracked step shows the module paths, the backward and the optimizer's in-place writes."""
    nb = executed("02_training_loop.ipynb")
    text = _cell(nb, "%%trackgrad -o step")
    assert "model.0" in text and "1 backward" in text and "loss " in text
    assert "0.weight" in _cell(nb, "%tensorinfo model")


def test_training_loop_auto_tracking(executed):
    """02: cells under %trackgrad on show a one-line summary each."""
    nb = executed("02_training_loop.ipynb")
    assert "20 backward" in _cell(nb, "for _ in range(20):")


def test_debugging_pitfalls_each_diagnostic(executed):
    """03: each mistake cell shows its diagnostic."""
    nb = executed("03_debugging_pitfalls.ipynb")
    cells = [c for c in nb.cells if c.cell_type == "code" and ("%%trackgrad" in c.source or "track(" in c.source)]
    expected = ["inplace-saved", "leaf-moved", "grad-unfilled", "grad-accumulation", "broadcast",
                "non-finite", "device-mismatch", "dtype-float64", "dtype-int-target", "sync-in-loop"]
    texts = "\n".join(_texts(c) for c in cells)
    for diag_id in expected:
        assert diag_id in texts, diag_id


def test_review_a_log(executed):
    """04: the log is reviewed with %tensorlog, the command line and the HTML export."""
    nb = executed("04_review_a_log.ipynb")
    assert "2 cells" in _cell(nb, "import tensormagic\nrecs")
    assert "AccumulateGrad(x)" in _cell(nb, "import tensormagic\nrecs")
    assert "bytes of self-contained HTML" in _cell(nb, "html_path")


def test_top_level_await_in_a_kernel(tmp_path):
    """In a kernel (the magic runs inside the kernel's event loop) a %%trackgrad cell with
    top-level ``await`` is a one-line UsageError that runs nothing of the cell and names
    %trackgrad on, and under %trackgrad on the same cell runs and is recorded."""
    cells = ["%load_ext tensormagic\nimport asyncio, torch\nasync def made(n):\n"
             "    await asyncio.sleep(0)\n    return torch.ones(n)",
             "%%trackgrad\nb = await made(3)",
             "print('b' in dir())",
             "%trackgrad on",
             "b = await made(3)\nc = b * 2",
             "%trackgrad off\nprint(c.tolist())"]  # fmt: skip
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    # IPython prints a UsageError as one stderr line, without a traceback
    assert [(o.output_type, o.get("name")) for o in nb.cells[1].outputs] == [("stream", "stderr")]
    err = nb.cells[1].outputs[0].text
    assert err.startswith("UsageError: %%trackgrad") and "%trackgrad on" in err and err.count("\n") == 1
    assert _texts(nb.cells[2]).strip() == "False"
    assert not [o for o in nb.cells[4].outputs if o.output_type == "error"]
    assert "· 2 created," in _texts(nb.cells[4])
    assert "[2.0, 2.0, 2.0]" in _texts(nb.cells[5])
