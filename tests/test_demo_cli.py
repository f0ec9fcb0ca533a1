"""The README's first command: ``python -m tensormagic demo`` (JupyterLab) and ``demo --text``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tensormagic", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_demo_text_runs_the_first_lesson_in_a_terminal():
    """``demo --text`` runs 01_tensor_basics in terminal IPython and prints the text reports."""
    proc = _run("demo", "--text")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "# Tensor basics" in out and "In [1]: %load_ext tensormagic" in out
    assert "MeanBackward0 → MulBackward0 → MulBackward0 ⇉ AddBackward0 → AccumulateGrad(x)" in out
    assert "version 0→1" in out and "torch.from_numpy" in out and "Traceback" not in out
    # each report names the cell of the In [N] printed above it (the numbers come from IPython)
    pairs = re.findall(r"^In \[(\d+)\]: %%trackgrad.*?^tensormagic · cell (\d+) ·", out, re.M | re.S)
    assert len(pairs) >= 5 and all(a == b for a, b in pairs), pairs


def test_demo_with_a_missing_notebook_is_one_line_error(tmp_path):
    """A notebook path that does not exist is one line on stderr and exit code 1."""
    proc = _run("demo", str(tmp_path / "nope.ipynb"), "--text")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "not found" in proc.stderr


def test_example_prints_the_autograd_report():
    """``example`` prints the autograd example's report with x.grad = 4.5."""
    proc = _run("example")
    assert proc.returncode == 0 and "x.grad: all 4.5" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_starts_jupyterlab_on_the_first_lesson(tmp_path):
    """``demo`` starts JupyterLab on the demo folder, which serves 01_tensor_basics.ipynb."""
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               IPYTHONDIR=str(tmp_path / "ipy"))  # fmt: skip
    cmd = [sys.executable, "-m", "tensormagic", "demo", "--", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=t0k",
           "--LabApp.news_url=", "--LabApp.extension_manager=readonly"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/contents/01_tensor_basics.ipynb?token=t0k&content=0"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:] if proc.stdout else ""
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert r.status == 200 and b"01_tensor_basics.ipynb" in r.read()
                    break
            except urllib.error.HTTPError:
                raise
            except OSError:  # not listening yet
                assert time.monotonic() < deadline, "JupyterLab did not start in 90 s"
                time.sleep(0.3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
