"""The package as users get it: the sdist and wheel ``python -m build`` makes from a clean copy of the
sources, the wheel in a clean environment (the compiled engine loads), and the sdist installed
where no C compiler works (the Python engine runs, and says so).  About a minute (pip installs
setuptools for the sdist's isolated build); ``-m "not packaging"`` leaves it out.

The clean environments get tensormagic from the built files only; torch and IPython, which the
last check needs, come from this interpreter's site-packages through a ``.pth`` file placed after
the environment's own (installing torch again would cost a minute and hundreds of MB).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
EXT = (".so", ".pyd")


def _sh(*cmd: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _source_files() -> list[str]:
    """The files a clean checkout has: git's list (committed or not, ignored files left out)."""
    proc = _sh("git", "ls-files", "-co", "--exclude-standard", cwd=ROOT, check=False)
    if proc.returncode != 0:
        pytest.skip("not a git checkout: the clean copy needs git's file list")
    return [f for f in proc.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it (``python -m build``), from a copy of the checkout's files."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    # --no-isolation: this environment's setuptools (the test extra asks for the build-system's
    # version; build checks it) instead of two fresh build environments, a minute of downloads here
    _sh(sys.executable, "-m", "build", "--no-isolation", "--outdir", base / "dist", src)
    return base / "dist"


def _venv(path: Path) -> Path:
    _sh(sys.executable, "-m", "venv", "--without-pip", path)
    return path / ("Scripts" if os.name == "nt" else "bin") / "python"


def _install(python: Path, what: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _sh(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-v", what, env=env)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TENSORMAGIC_ENGINE")}
    env.update(extra)
    return env


def test_sdist_carries_the_c_sources(dist):
    """The sdist holds setup.py and every C source and header the extension is built from."""
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    csrc = {str(p.relative_to(ROOT)) for p in (ROOT / "tensormagic/engine/csrc").glob("*.[ch]")}
    assert csrc and csrc <= names and "setup.py" in names


def test_wheel_in_a_clean_environment_loads_the_compiled_engine(dist, tmp_path):
    """The wheel carries the compiled engine, and in a fresh environment doctor says it runs."""
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        built = [n for n in z.namelist() if n.startswith("tensormagic/engine/_hotpath") and n.endswith(EXT)]
    assert len(built) == 1, z.namelist()
    python = _venv(tmp_path / "wheel-env")
    _install(python, wheel)
    proc = _sh(python, "-m", "tensormagic", "doctor", "--require-compiled", env=_clean_env(), cwd=tmp_path)
    engine = next(line for line in proc.stdout.splitlines() if line.startswith("engine"))
    assert "compiled (C)" in engine and str(tmp_path / "wheel-env") in engine


SAYS_SO = """
from IPython.core.interactiveshell import InteractiveShell
import tensormagic
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "tensormagic")
ip.run_cell("import torch", store_history=True)
ip.run_cell("%%trackgrad --quiet -o r\\nx = torch.ones(2)\\ny = x * 2\\n", store_history=True).raise_error()
print("FROM", tensormagic.__file__)
print("RECORDED", [e.tensor.label for e in ip.user_ns["r"].events])
"""


def test_sdist_without_a_compiler_runs_the_python_engine_and_says_so(dist, tmp_path):
    """Installed from the sdist where the C compiler fails, the Python engine records and doctor and %load_ext say why."""
    (sdist,) = dist.glob("*.tar.gz")
    python = _venv(tmp_path / "sdist-env")
    # /bin/false as the compiler: the build of the optional extension fails, as with no compiler at all
    proc = _install(python, sdist, env=_clean_env(CC="false", CXX="false"))
    assert 'building extension "tensormagic.engine._hotpath" failed' in proc.stdout + proc.stderr
    env = _clean_env()
    doctor = _sh(python, "-m", "tensormagic", "doctor", "--require-compiled", env=env, cwd=tmp_path, check=False)
    assert doctor.returncode == 1 and "Python, because the compiled engine is missing: ModuleNotFoundError" in doctor.stdout
    purelib = _sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "zz_outer_site.pth").write_text("\n".join(sorted(outer)) + "\n")  # torch, IPython: after our own
    run = _sh(python, "-c", SAYS_SO, env=env, cwd=tmp_path)
    assert f"FROM {Path(purelib) / 'tensormagic' / '__init__.py'}" in run.stdout
    assert "RECORDED ['x', 'y']" in run.stdout
    assert run.stdout.count("tensormagic: the compiled engine is missing (ModuleNotFoundError") == 1
