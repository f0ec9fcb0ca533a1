"""Which engine runs, and why not the compiled one: for ``python -m tensormagic doctor`` and ``%load_ext``.

The compiled engine is the ``_hotpath`` extension that pip builds from ``csrc/`` at install.  The
build is optional (setup.py): without a C compiler pip installs without a word and the Python
engine runs, so this module says so.  It never imports torch: ``%load_ext`` stays cheap.
"""

from __future__ import annotations

import importlib
import os

#: How to get the compiled engine, for people whose install has none.
HOW_TO_GET = (
    "install a C compiler and Python's headers (Debian/Ubuntu: apt install gcc python3-dev; "
    "Fedora: dnf install gcc python3-devel; macOS: xcode-select --install; Windows: Microsoft C++ Build "
    "Tools), then reinstall tensormagic so pip builds it: pip install --force-reinstall --no-deps "
    "--no-binary tensormagic tensormagic (from a source checkout: pip install -e .)"
)


def compiled_error() -> str | None:
    """None when the compiled engine imports, else why not (the ImportError, on one line)."""
    try:
        importlib.import_module("tensormagic.engine._hotpath")
    except ImportError as e:
        return f"{type(e).__name__}: {e}".replace("\n", " ")
    return None


def compiled_path() -> str | None:
    """The file the compiled engine was loaded from, if it imports."""
    if compiled_error() is not None:
        return None
    return getattr(importlib.import_module("tensormagic.engine._hotpath"), "__file__", None)


def engine_in_use() -> str:
    """What ``engine.mode.default_engine()`` picks ("c" or "python"), without importing torch."""
    if os.environ.get("TENSORMAGIC_ENGINE", "").strip().lower() == "python" or compiled_error() is not None:
        return "python"
    return "c"


def missing_line() -> str | None:
    """The one line ``%load_ext`` prints when the compiled engine is missing (None when it is there)."""
    err = compiled_error()
    if err is None:
        return None
    return (f"tensormagic: the compiled engine is missing ({err}); the Python engine runs instead "
            "(the same records, slower). `python -m tensormagic doctor` says how to get it.")  # fmt: skip
