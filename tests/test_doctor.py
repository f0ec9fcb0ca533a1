"""The engine in use is visible: ``python -m tensormagic doctor``, and one line at ``%load_ext`` when the
compiled engine is missing (a copy of the package without the built extension, as pip leaves it
where no C compiler was found)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import IPython
import ipywidgets
import pytest
import torch
from IPython.utils.capture import capture_output

import tensormagic
from tensormagic.engine import mode

PACKAGE = Path(tensormagic.__file__).resolve().parent


def _doctor(env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tensormagic", "doctor"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)  # fmt: skip


def _rows(text: str) -> dict[str, str]:
    return {line[:12].strip(): line[12:] for line in text.splitlines() if line[:12].strip()}


@pytest.fixture(scope="module")
def without_compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of the package with no compiled extension in it."""
    root = tmp_path_factory.mktemp("nocompiler")
    shutil.copytree(PACKAGE, root / "tensormagic",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "csrc"))  # fmt: skip
    return root


def _env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TENSORMAGIC_ENGINE"}
    env["PYTHONPATH"] = str(root)
    env.update(extra)
    return env


def test_doctor_names_versions_and_the_compiled_engine():
    """``doctor`` prints the versions torch, IPython and ipywidgets report and the compiled engine's file."""
    env = {k: v for k, v in os.environ.items() if k != "TENSORMAGIC_ENGINE"}
    proc = _doctor(env)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    from tensormagic.engine import _hotpath

    assert rows["python"].startswith(platform.python_version() + " ")
    assert (rows["torch"], rows["IPython"], rows["ipywidgets"]) == (torch.__version__, IPython.__version__,
                                                                     ipywidgets.__version__)  # fmt: skip
    assert rows["engine"] == f"compiled (C), {_hotpath.__file__}"


def test_doctor_says_when_the_environment_chooses_the_python_engine():
    """With TENSORMAGIC_ENGINE=python, ``doctor`` says the Python engine runs because the variable chose it."""
    proc = _doctor({**os.environ, "TENSORMAGIC_ENGINE": "python"})
    assert _rows(proc.stdout)["engine"].startswith("Python: TENSORMAGIC_ENGINE=python chooses it")


def test_doctor_without_the_compiled_engine_says_why_and_how(without_compiled):
    """A package without its compiled extension: ``doctor`` says the Python engine runs, the import error, and the fix."""
    proc = _doctor(_env_for(without_compiled), cwd=without_compiled)
    assert proc.returncode == 0, proc.stderr
    assert "Python, because the compiled engine is missing: ModuleNotFoundError: No module named " \
           "'tensormagic.engine._hotpath'" in proc.stdout  # fmt: skip
    assert "C compiler" in proc.stdout and "reinstall" in proc.stdout


LOAD_TWICE = """
from IPython.core.interactiveshell import InteractiveShell
import tensormagic
assert tensormagic.__file__.startswith({root!r}), tensormagic.__file__
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "tensormagic")
ip.run_line_magic("unload_ext", "tensormagic")
ip.run_line_magic("load_ext", "tensormagic")
ip.run_cell("import torch", store_history=True)
ip.run_cell("%%trackgrad --quiet -o r\\nx = torch.ones(2)\\n", store_history=True).raise_error()
print("RECORDED", [e.tensor.label for e in ip.user_ns["r"].events])
"""


def test_load_ext_says_once_that_the_compiled_engine_is_missing(without_compiled):
    """``%load_ext`` without the compiled engine prints one line, once per process, naming doctor."""
    code = LOAD_TWICE.format(root=str(without_compiled))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_env_for(without_compiled), cwd=without_compiled)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("tensormagic:")]
    assert len(lines) == 1 and "compiled engine is missing" in lines[0] and "tensormagic doctor" in lines[0]
    assert "RECORDED ['x']" in proc.stdout  # and the Python engine records


def test_load_ext_says_nothing_when_the_compiled_engine_is_there(_ipython):
    """With the compiled engine built, ``%load_ext`` prints nothing."""
    from tensormagic.ipython import magics

    if mode._hotpath is None:
        pytest.skip("the compiled engine is not built here")
    saved = magics._told_engine[:]
    magics._told_engine.clear()
    try:
        with capture_output() as cap:
            _ipython.run_line_magic("load_ext", "tensormagic")
        _ipython.run_line_magic("unload_ext", "tensormagic")
    finally:
        magics._told_engine[:] = saved
    assert cap.stdout == ""


@pytest.mark.parametrize("value", [None, "python"])
def test_engine_in_use_agrees_with_the_mode(monkeypatch, value):
    """``engine_in_use`` (no torch import) picks what ``mode.default_engine`` picks."""
    from tensormagic.engine.availability import engine_in_use

    if value is None:
        monkeypatch.delenv("TENSORMAGIC_ENGINE", raising=False)
    else:
        monkeypatch.setenv("TENSORMAGIC_ENGINE", value)
    assert engine_in_use() == mode.default_engine()
