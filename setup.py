"""The optional compiled hot path (``tensormagic/csrc/``); everything else is in pyproject.toml.

``optional=True``: where no C compiler is available the build goes on without it and tensormagic
uses its pure-Python hot path, which records the same events (more slowly).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tensormagic._hotpath",
            ["tensormagic/csrc/module.c", "tensormagic/csrc/lookup.c", "tensormagic/csrc/record.c",
             "tensormagic/csrc/tracker.c", "tensormagic/csrc/slots.c", "tensormagic/csrc/saved.c",
             "tensormagic/csrc/gate.c", "tensormagic/csrc/build.c", "tensormagic/csrc/snapshots.c",
             "tensormagic/csrc/encode.c"],
            depends=["tensormagic/csrc/hot.h", "tensormagic/csrc/saved.h", "tensormagic/csrc/build.h"],
            optional=True,
        )
    ]
)
