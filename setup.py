"""The optional compiled hot path (``tensormagic/engine/csrc/``); everything else is in pyproject.toml.

``optional=True``: where no C compiler is available the build goes on without it and tensormagic
uses its pure-Python hot path, which records the same events (more slowly).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tensormagic.engine._hotpath",
            ["tensormagic/engine/csrc/module.c", "tensormagic/engine/csrc/lookup.c", "tensormagic/engine/csrc/record.c",
             "tensormagic/engine/csrc/tracker.c", "tensormagic/engine/csrc/slots.c", "tensormagic/engine/csrc/saved.c",
             "tensormagic/engine/csrc/gate.c", "tensormagic/engine/csrc/build.c", "tensormagic/engine/csrc/snapshots.c",
             "tensormagic/engine/csrc/encode.c", "tensormagic/engine/csrc/paths.c",
             "tensormagic/engine/csrc/blockend.c", "tensormagic/engine/csrc/capture.c",
             "tensormagic/engine/csrc/walk.c", "tensormagic/engine/csrc/dispatch.c"],
            depends=["tensormagic/engine/csrc/hot.h", "tensormagic/engine/csrc/saved.h", "tensormagic/engine/csrc/build.h"],
            optional=True,
        )
    ]
)
