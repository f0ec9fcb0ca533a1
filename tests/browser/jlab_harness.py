"""A throw-away JupyterLab server and headless Debian Chromium, fully offline.

Adapted from the project's shared browser example; nothing is written to ~ (every Jupyter and
IPython directory points into a temp folder) and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
_LOCAL = re.compile(r"^(file:|data:|blob:|about:|https?://(127\.0\.0\.1|localhost)(:\d+)?/)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_notebook(path: Path, cells: list[str]) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def isolated_jupyter_env(base: Path) -> dict[str, str]:
    """Environment with every Jupyter/IPython dir under ``base``."""
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ]:
        d = base / sub
        d.mkdir(parents=True, exist_ok=True)
        env[var] = str(d)
    # never ask about or fetch Jupyter news: its toast would cover the page
    notif = base / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True, exist_ok=True)
    notif.write_text('{"fetchNews": "false", "checkForUpdates": false, "doNotDisturbMode": true}')
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early with rc={proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - connection refused while the server boots
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s (last error: {last})")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate the process group we started (server and its kernels), by its id only."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def jupyterlab_server(root: Path, token: str = "test-token",
                      timeout: float = 120.0) -> Iterator[tuple[str, str, Any]]:  # fmt: skip
    """``jupyter lab`` on 127.0.0.1:<free port>; yields (base_url, token, proc) and stops it after."""
    base = Path(tempfile.mkdtemp(prefix="jlab-home-"))
    env = isolated_jupyter_env(base)
    port = free_port()
    log_path = base / "server.log"
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells from the test
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no package-index queries
        "--ServerApp.terminals_enabled=False",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI runs as root; the server refuses otherwise
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=str(root), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        proc.log_path = log_path  # type: ignore[attr-defined]
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{url}/api/status?token={token}", proc, timeout)
            wait_http_ok(f"{url}/lab?token={token}", proc, timeout)
            yield url, token, proc
        finally:
            stop_process(proc)


def block_external_requests(context: Any) -> None:
    """Abort every request not to 127.0.0.1/localhost/file: fail fast, never touch the network."""
    context.route(lambda url: not _LOCAL.match(url), lambda route: route.abort())


def open_and_run_all(page: Any, url: str, ready_selector: str, timeout_ms: int = 120_000) -> None:
    """Open a notebook, wait for an idle kernel, run every cell, wait for ``ready_selector``."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_ms)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout_ms)
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return k && k.connectionStatus === 'connected' && k.status === 'idle';
        }""",
        timeout=timeout_ms,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(ready_selector, timeout=timeout_ms)
