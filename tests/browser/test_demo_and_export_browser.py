"""The first demo notebook and the HTML log export, opened in the real browser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jlab_harness import open_and_run_all

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"


def test_tensor_basics_notebook_renders_its_panels(jlab, page, screenshot_dirs):
    """01_tensor_basics.ipynb runs in JupyterLab and every %%trackgrad cell shows a panel."""
    url, token = jlab
    nb = Path(__file__).resolve().parents[2] / "demo_notebooks" / "01_tensor_basics.ipynb"
    expected = nb.read_text().count('"%%trackgrad')
    try:
        open_and_run_all(page, f"{url}/lab/tree/{nb.name}?token={token}&reset", ".tm-panel")
        # one inspector panel (with its header) per %%trackgrad cell; %tensorinfo adds a card
        page.wait_for_function(f"() => document.querySelectorAll('.jp-OutputArea-output .tm-panel .tm-header')"
                               f".length === {expected}", timeout=120_000)  # fmt: skip
        headers = page.locator(".tm-panel .tm-header").all_inner_texts()
        assert len(headers) == expected and any("1 backward" in h for h in headers)
        autograd = page.locator(".tm-panel").filter(has_text="1 backward").first
        autograd.locator(".widget-tab .lm-TabBar-tab", has_text="Autograd").click()
        autograd.locator(".tm-graph svg text", has_text="MeanBackward0").first.wait_for()
        autograd.screenshot(path=str(screenshot_dirs[0] / "demo-autograd.png"))
        assert not page.dialogs and not page.errors
    except Exception:
        page.screenshot(path=str(screenshot_dirs[0] / "failure-demo.png"), full_page=True)
        raise


def _hostile_log(tmp_path: Path) -> Path:
    log = tmp_path / "hostile.jsonl"
    code = (
        "import torch, tensormagic\n"
        f"ns = {{'torch': torch}}\n"
        f"with tensormagic.track(namespace=ns, log={str(log)!r}):\n"
        f"    ns[{HOSTILE!r}] = torch.ones(2) * 2\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return log


def test_html_export_is_escaped_in_the_browser(tmp_path, page: Any):
    """The HTML export of a log with a hostile tensor name shows the name as text and runs nothing."""
    log = _hostile_log(tmp_path)
    out = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "tensormagic", "export", str(log), "--html", str(out)], check=True)
    page.goto(out.as_uri())
    page.get_by_text(HOSTILE, exact=False).first.wait_for()
    page.wait_for_timeout(300)  # give an injected onerror handler the time to fire
    assert page.locator("img[src='x']").count() == 0 and not page.dialogs and not page.errors
    assert "2 created" in page.inner_text("body")
