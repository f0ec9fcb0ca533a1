"""Nothing grows without bound: tables across blocks, and a block's memory, tensors and log past
``max_events``."""

from __future__ import annotations

import gc

import torch

import tensormagic
from tensormagic.engine import identity


def _block(keep: list[torch.Tensor]) -> None:
    with tensormagic.track():
        a = torch.ones(3)
        b = a * 2
        c = b + a
        keep[:] = [c]


def test_id_tables_stay_flat_over_1000_blocks() -> None:
    """After 1,000 blocks, each leaving one tensor alive, identity's tables hold only live tensors."""
    keep: list[torch.Tensor] = []
    for _ in range(50):
        _block(keep)
    gc.collect()
    before = (len(identity._ids), len(identity.provenance))
    for _ in range(1000):
        _block(keep)
    gc.collect()
    identity.prune()
    assert len(identity.provenance) <= before[1] and len(identity._ids) <= before[0]
    assert all(ref() is not None for ref in identity._ids.values())
    live = {ref.tid for ref in identity._ids.values()}
    assert set(identity.provenance) <= live
