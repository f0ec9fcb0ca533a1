"""The recording hot path: the function mode, the tracker and its raw records, and the block-end
build that turns them into a ``model.Recording``.

Imports point one way: ``engine`` imports ``model`` and never ``views``, ``log``, ``diagnostics`` or
``ipython``; diagnostics reach the tracker as hooks ``api.track`` registers.  ``csrc/`` is the
compiled twin (``_hotpath``) of the Python hot path; ``docs/design.md`` says which function is
whose twin.
"""
