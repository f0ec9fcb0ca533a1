"""Browser fixtures: one JupyterLab server and one Chromium per test session, a fresh page per test.

One ``sync_playwright()`` per pytest session: a second one in the same process fails with
"Playwright Sync API inside the asyncio loop".  In CI (``CI`` set) a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from jlab_harness import CHROMIUM, CHROMIUM_ARGS, block_external_requests, jupyterlab_server, write_notebook
from panel_notebooks import NOTEBOOKS


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason} (scripts/test.sh installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def jlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A JupyterLab server whose root holds the test notebooks; one per session."""
    root = tmp_path_factory.mktemp("notebooks")
    for name, cells in NOTEBOOKS.items():
        write_notebook(root / name, cells)
    demo = Path(__file__).resolve().parents[2] / "demo_notebooks" / "01_tensor_basics.ipynb"
    shutil.copy(demo, root / demo.name)  # the first lesson, exactly as a user opens it
    with jupyterlab_server(root, token="tm-test-token") as (url, token, _proc):
        yield url, token


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page, offline; it records JavaScript dialogs and page errors."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    block_external_requests(ctx)
    pg = ctx.new_page()
    pg.dialogs = []
    pg.errors = []

    def on_dialog(d: Any) -> None:
        pg.dialogs.append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


@pytest.fixture
def screenshot_dirs(tmp_path: Path) -> list[Path]:
    """Where panel screenshots go: the test's temp dir, and TENSORMAGIC_SCREENSHOT_DIR when set."""
    dirs = [tmp_path]
    extra = os.environ.get("TENSORMAGIC_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        dirs.append(Path(extra))
    return dirs
