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


def test_a_backward_row_wraps_to_the_width_and_keeps_every_gradient() -> None:
    """A backward that fills twelve gradients is one row wrapped into lines of at most the width,
    its continuation lines under the description; every ``.grad`` is still there."""
    ws = [torch.ones(3, requires_grad=True) for _ in range(12)]
    with tensormagic.track() as rec:
        sum(w.sum() for w in ws).backward()
    lines = rec.to_text(width=80).splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["backward"])
    row = [lines[start]] + [line for line in lines[start + 1:] if line.startswith(" " * 49)]
    assert len(row) > 1 and all(len(line) <= 80 for line in row)
    joined = " ".join(line.strip() for line in row)
    assert [f"ws[{i}].grad 3" in joined for i in range(12)] == [True] * 12


def test_a_rows_note_moves_whole_to_the_next_line() -> None:
    """A row too long for the width is broken where its parts meet (before ``(gradient of …)``),
    not inside the note."""
    x = torch.ones(2, 2, requires_grad=True)
    with tensormagic.track() as rec:
        x.sum().backward()
    lines = rec.to_text(width=90).splitlines()
    i = next(i for i, line in enumerate(lines) if "x.grad" in line and line.split()[0] == "new")
    assert lines[i].endswith("← x") and lines[i + 1].strip() == "(gradient of x, filled in by backward)"


def test_a_gradient_accumulated_by_several_backward_calls_gets_one_statistics_line() -> None:
    """Four ``backward()`` calls adding into the same ``w.grad`` leave one line of its statistics
    (``all 8``: each call adds 2 to every element), not one per call."""
    w = torch.ones(3, requires_grad=True)
    with tensormagic.track() as rec:
        for _ in range(4):
            (w * 2).sum().backward()
    lines = rec.to_text().splitlines()
    assert [line.strip() for line in lines if line.strip().startswith("w.grad:")] == ["w.grad: all 8"]


def test_an_in_place_write_to_an_inference_tensor_is_not_called_a_data_replacement() -> None:
    """``a.add_(1)`` on an inference tensor adds in place (same memory, values up by 1) and has no
    version counter: the row says so, not "data replaced", in the text and the HTML report."""
    with tensormagic.track() as rec, torch.inference_mode():
        a = torch.zeros(3)
        ptr = a.data_ptr()
        a.add_(1)
    assert a.data_ptr() == ptr and a.tolist() == [1.0, 1.0, 1.0]  # written in place, by hand
    (row,) = [line for line in rec.to_text().splitlines() if line.split()[:1] == ["write"]]
    assert row.split(".add_")[1].strip() == "in place (an inference tensor: no version counter)"
    assert "data replaced" not in rec.to_html()


def test_a_long_reports_cut_says_where_the_rest_is_without_promising_a_panel_or_log() -> None:
    """A block of 600 events lists some and counts the rest; the count plus the listed rows is
    every event, and the line points at the recording, not at a panel or a log there may not be."""
    x = torch.ones(1)
    with tensormagic.track() as rec:
        for _ in range(600):
            x = x + 1
    lines = rec.to_text().splitlines()
    (cut,) = [line for line in lines if "more events" in line]
    listed = [line for line in lines if line.split()[:1] == ["new"]]
    assert int(cut.split()[1].replace(",", "")) + len(listed) == 600
    assert "panel" not in cut and "log" not in cut and "the recording's events hold them all" in cut


def test_a_width_inside_the_description_column_still_ends() -> None:
    """``to_text(width=20)`` (narrower than where a row's description starts) returns a report:
    it once looped for ever, wrapping a row into lines no shorter than before."""
    import threading

    w = torch.ones(12, requires_grad=True)
    with tensormagic.track() as rec:
        (w * 2).sum().backward()
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.append(rec.to_text(width=20)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert got and "backward" in got[0]


def test_the_show_commands_width_below_the_minimum_is_refused_in_one_line(tmp_path) -> None:
    """``python -m tensormagic show LOG --width 40`` exits 2 with one line saying the least width."""
    import subprocess
    import sys

    from tensormagic.views.text import MIN_WIDTH

    log = tmp_path / "x.jsonl"
    with tensormagic.track(log=str(log)):
        torch.ones(2) + 1
    proc = subprocess.run([sys.executable, "-m", "tensormagic", "show", str(log), "--cell", "1", "--width", "40"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].endswith(f"argument --width: at least {MIN_WIDTH} characters, not 40")


def test_an_input_made_in_an_earlier_step_is_named_with_that_step() -> None:
    """In ``for: out = lin(X); X = X * 2`` step 2's ``lin`` reads the X step 1 made: its row says
    ``← X (step 1)``, as that X's own row is named, not the bare ``X`` the last step's is."""
    lin = torch.nn.Linear(2, 1)
    X = torch.ones(3, 2)
    with tensormagic.track() as rec:
        for _ in range(3):
            out = lin(X)  # noqa: F841
            X = X * 2
    text = " ".join(rec.to_text(width=200).split())
    assert "new X (step 1) .mul" in text
    assert "F.linear 3×1 float32 cpu AddmmBackward0 ← X (step 1), lin.weight, lin.bias" in text


def test_diagnostics_have_a_heading_of_their_own() -> None:
    """A report's diagnostics come under ``diagnostics:``, not as more lines of the "existed
    before this cell" list above them (which they read as, indented the same)."""
    import warnings

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tensormagic.track() as rec:
            for _ in range(3):
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
    lines = rec.to_text().splitlines()
    i = next(i for i, line in enumerate(lines) if "⚠" in line)
    assert lines[i - 1] == "diagnostics:" and "[grad-accumulation]" in lines[i]
