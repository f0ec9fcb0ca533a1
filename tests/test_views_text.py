"""How the text report words a row's inputs."""

from __future__ import annotations

import torch

import tensormagic


def test_a_run_of_one_input_name_is_said_once_with_its_count() -> None:
    """``torch.stack([x, x, x, x])`` lists its inputs as ``x ×4``, while ``y * y`` keeps ``y, y``."""
    x, y = torch.ones(2), torch.ones(2)
    with tensormagic.track() as rec:
        s = torch.stack([x, x, x, x])  # noqa: F841
        p = y * y  # noqa: F841
    text = rec.to_text()
    assert "← x ×4" in text
    assert "← y, y" in text
