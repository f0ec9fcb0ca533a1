"""The IPython layer: magics, per-cell sessions, display, ``%device``, the demo and the lesson.

Nothing outside this package imports IPython at module level.
"""
