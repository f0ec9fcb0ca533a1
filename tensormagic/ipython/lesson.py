"""Run a demo notebook in a terminal: its prose, each cell's code, and the text reports.

``python -m tensormagic demo --text`` uses this for people without a browser; it drives a real
IPython shell, so every magic and report is exactly what terminal IPython shows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

DEFAULT_NOTEBOOK = Path("demo_notebooks") / "01_tensor_basics.ipynb"


def find_notebook(path: str | None) -> Path:
    """The notebook to open: the given path, or the first lesson in ./demo_notebooks."""
    p = Path(path) if path else DEFAULT_NOTEBOOK
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: run this from the tensormagic checkout, or pass a notebook path")
    return p


def run_lesson(path: Path, out: TextIO | None = None) -> int:
    """Run every code cell of ``path`` in an IPython shell, printing prose and reports; the number
    of cells that raised is returned."""
    import json

    from IPython.core.interactiveshell import InteractiveShell

    out = out or sys.stdout
    nb = json.loads(path.read_text(encoding="utf-8"))
    shell = InteractiveShell.instance()
    failures = 0
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "markdown":
            out.write("\n" + source.strip() + "\n\n")  # Markdown reads fine as it is
        elif cell.get("cell_type") == "code":
            count = shell.execution_count
            out.write(f"In [{count}]: " + source.replace("\n", "\n" + " " * (len(str(count)) + 6)) + "\n")
            out.flush()
            result = shell.run_cell(source, store_history=True)
            failures += not result.success
            sys.stdout.flush()
    return failures
