"""The inspector panel in real JupyterLab + Debian Chromium, offline: `%%trackgrad` shows the panel,
every tab opens, the filter and the detail card go through the kernel, hostile names run nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from jlab_harness import open_and_run_all
from panel_notebooks import HOSTILE_NAME

pytestmark = pytest.mark.browser

PANEL = ".jp-OutputArea-output .tm-panel"
TABS = ("Tensors", "Lines", "Autograd", "Timeline")  # the example has no loop, write, move or finding


def _open(page: Any, jlab: tuple[str, str], name: str) -> Any:
    url, token = jlab
    open_and_run_all(page, f"{url}/lab/tree/{name}?token={token}&reset", PANEL)
    panel = page.locator(PANEL).first
    panel.locator(".tm-tensors .tm-table table").wait_for()
    return panel


def _body_rows(panel: Any, selector: str = ".tm-tensors .tm-table") -> Any:
    return panel.locator(f"{selector} table tbody tr")


def _options(select: Any) -> list[str]:
    """Option labels as the page has them (ipywidgets turns their spaces into no-break spaces)."""
    return select.locator("option").evaluate_all("os => os.map(o => o.textContent)")


def _save(locator: Any, dirs: list[Path], name: str) -> Path:
    first = dirs[0] / name
    locator.screenshot(path=str(first))
    for d in dirs[1:]:
        shutil.copy(first, d / name)
    return first


def _shot_on_failure(page: Any, dirs: list[Path], name: str) -> None:
    try:
        page.screenshot(path=str(dirs[0] / name), full_page=True)
    except Exception:  # noqa: BLE001 - a failed screenshot must not hide the real failure
        pass


def test_panel_tabs_filter_and_card(jlab, page, screenshot_dirs):
    """The autograd example's panel: header counts, each tab, filtering, and y's card filled by the kernel."""
    try:
        panel = _open(page, jlab, "example.ipynb")
        header = panel.locator(".tm-header").inner_text()
        assert "6 created, 0 views, 0 in-place, 0 moves, 0 casts, 1 backward" in header

        tabs = panel.locator(".widget-tab .lm-TabBar-tab")
        assert [tabs.nth(i).inner_text().strip() for i in range(tabs.count())] == list(TABS)
        assert _body_rows(panel).count() == 6

        expect_in_tab = {
            "Lines": "out = z.mean()",
            "Autograd": "MeanBackward0",
            "Timeline": "z = y * y * 3",
        }
        for title, text in expect_in_tab.items():
            tabs.filter(has_text=title).first.click()
            panel.get_by_text(text).filter(visible=True).first.wait_for()
            if title == "Autograd":
                svg = panel.locator(".tm-graph svg")
                assert svg.is_visible()
                for label in ("MeanBackward0", "AddBackward0", "AccumulateGrad", "out", "y", "x"):
                    assert svg.locator("text", has_text=re.compile(f"^{re.escape(label)}$")).count() >= 1
                _save(panel, screenshot_dirs, "panel-autograd.png")

        tabs.filter(has_text="Tensors").first.click()
        flt = panel.locator(".tm-tensors .tm-filter input")
        flt.fill("mean")  # the kernel filters and sends back one row
        page.wait_for_function(
            "() => document.querySelectorAll('.tm-panel .tm-tensors .tm-table table tbody tr').length === 1")
        assert "out" in _body_rows(panel).first.inner_text()
        flt.fill("")
        page.wait_for_function(
            "() => document.querySelectorAll('.tm-panel .tm-tensors .tm-table table tbody tr').length === 6")

        pick = panel.locator(".tm-tensors .tm-pick select")
        # the selector's options are the kernel's last update after the rows: wait for them too
        page.wait_for_function("() => document.querySelectorAll('.tm-panel .tm-tensors .tm-pick option').length"
                               " === 7")  # fmt: skip
        label = next(o for o in _options(pick) if o.replace("\xa0", " ").startswith("y "))
        pick.select_option(label=label)  # the kernel computes y's statistics and fills the card
        card = panel.locator(".tm-card-box .tm-card")
        card.locator("h4", has_text="y").wait_for()
        text = card.inner_text()
        assert "alive" in text and "AddBackward0 → AccumulateGrad(x)" in text and "all 3" in text
        _save(panel, screenshot_dirs, "panel.png")
        assert not page.dialogs and not page.errors
    except Exception:
        _shot_on_failure(page, screenshot_dirs, "failure-example.png")
        raise


def test_hostile_name_runs_nothing(jlab, page, screenshot_dirs):
    """A tensor named `<img src=x onerror=alert(1)>` is shown as text: no dialog, no injected element."""
    try:
        panel = _open(page, jlab, "hostile.ipynb")
        assert panel.get_by_text(HOSTILE_NAME, exact=False).first.is_visible()
        pick = panel.locator(".tm-tensors .tm-pick select")
        label = next(o for o in _options(pick) if "onerror" in o)
        pick.select_option(label=label)
        panel.locator(".tm-card-box .tm-card h4", has_text="onerror").wait_for()
        panel.locator(".widget-tab .lm-TabBar-tab", has_text="Autograd").click()
        panel.locator(".tm-graph svg").wait_for()
        page.wait_for_timeout(500)  # give an injected onerror handler the time to fire
        assert page.locator(".jp-OutputArea-output img[src='x']").count() == 0
        assert page.dialogs == []
        assert HOSTILE_NAME in panel.locator(".tm-card-box").inner_text()
        _save(panel, screenshot_dirs, "panel-hostile.png")
    except Exception:
        _shot_on_failure(page, screenshot_dirs, "failure-hostile.png")
        raise
