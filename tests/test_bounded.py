"""Nothing grows without bound: tables across blocks, and a block's memory, tensors and log past
``max_events``."""

from __future__ import annotations

import gc

import pytest
import torch

import tensormagic
from tensormagic.engine import identity
from tensormagic.engine.mode import default_engine


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


def test_no_table_grows_across_1000_blocks() -> None:
    """1,000 tracked training-step blocks (diagnostics on) leave the process's object count flat."""
    model = torch.nn.Linear(4, 2)

    def step() -> None:
        with tensormagic.track():
            y = model(torch.randn(3, 4)).relu()
            y.sum().backward()
            model.zero_grad()

    for _ in range(50):
        step()
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(1000):
        step()
    gc.collect()
    assert len(gc.get_objects()) - before < 50


@pytest.mark.parametrize("engine", ["c", "python"])
def test_tensor_table_past_max_events_is_bounded_and_counted(monkeypatch, engine: str) -> None:
    """Past ``max_events`` the tracker's tensor table stays bounded while the block runs, and the
    recording keeps the tensors its events name (plus live ones), counting the others."""
    from tensormagic.engine import tracker

    monkeypatch.setattr(tracker, "SWEEP_EVERY", 100)
    if engine == "c" and default_engine() != "c":
        pytest.skip("the compiled engine was not built")
    t = tensormagic.track(max_events=50, engine=engine)
    peak = 0
    with t as rec:
        x = torch.ones(4)
        for _ in range(3000):
            x = x + 1
            peak = max(peak, len(t._tracker.tensors), len(identity._ids) // 2)
    assert peak < 400  # kept records name ~100, a sweep interval adds ~100 + 50 dead ones
    assert len(rec.tensors) <= 2 * 50 + 1
    assert rec.folded_tensors + len(rec.tensors) == 3001  # torch.ones + 3000 additions
    assert "3000 more tensors" not in rec.to_text() and "more tensors, made and freed" in rec.to_text()


def test_live_tensors_past_max_events_stay_in_the_table(monkeypatch) -> None:
    """A tensor made by a folded event but still alive at the block's end stays in the table."""
    from tensormagic.engine import tracker

    monkeypatch.setattr(tracker, "SWEEP_EVERY", 100)
    keep = []
    with tensormagic.track(max_events=20) as rec:
        x = torch.ones(2)
        for i in range(500):
            x = x + 1
            if i % 100 == 99:
                keep.append(x)
    ids = {identity.tensor_id(k) for k in keep}
    assert ids <= set(rec.tensors)
    assert all(rec.tensor(k).alive for k in keep)


def test_log_lines_stay_under_the_bound(tmp_path, monkeypatch) -> None:
    """No line of the log passes ``MAX_LINE``: a long cell record loses the end of its tensor table
    (counted), an event with thousands of inputs loses its input list (``trimmed``)."""
    from tensormagic.log import records
    from tensormagic.log import writer as logfile
    from tensormagic.log.reader import load_log

    monkeypatch.setattr(records, "MAX_LINE", 8192)
    path = tmp_path / "run.jsonl"
    with tensormagic.track(log=path) as rec:
        parts = [torch.ones(1) for _ in range(1000)]
        cat = torch.cat(parts)
    logfile.close_all()
    lines = path.read_bytes().splitlines()
    assert max(len(line) for line in lines) <= 8192
    (back,) = load_log(path)
    assert back.events[-1].op == "torch.cat" and back.events[-1].inputs == ()
    assert b'"trimmed":true' in lines[-2]
    assert b'"tensors_omitted":' in lines[-1] and len(back.tensors) < len(rec.tensors)
    del cat, parts


def test_big_tensor_statistics_are_chunked_and_exact(monkeypatch) -> None:
    """Past CHUNK elements, statistics are computed a chunk at a time and equal torch's own."""
    from tensormagic.engine import stats

    monkeypatch.setattr(stats, "CHUNK", 1000)
    t = torch.randn(10_007, dtype=torch.float64)
    t[5] = float("nan")
    t[9] = float("inf")
    t[11] = 0.0
    s = stats.compute_stats(t)
    fin = t[torch.isfinite(t)]
    assert (s.nan, s.inf, s.zeros, s.numel) == (1, 1, 1, 10_007)
    assert s.min == float(fin.min()) and s.max == float(fin.max())
    assert abs(s.mean - float(fin.mean())) < 1e-12 and abs(s.std - float(fin.std())) < 1e-12


def test_strided_and_integer_statistics_are_chunked_and_exact(monkeypatch) -> None:
    """A transposed (non-contiguous) float tensor and an int tensor past CHUNK: the same statistics as torch's."""
    from tensormagic.engine import stats

    monkeypatch.setattr(stats, "CHUNK", 64)
    t = torch.randn(37, 50).t()
    pieces = list(stats.chunks(t))
    assert max(p.numel() for p in pieces) <= 64 and sum(p.numel() for p in pieces) == t.numel()
    s = stats.compute_stats(t)
    assert s.min == float(t.min()) and s.max == float(t.max())
    assert abs(s.mean - float(t.double().mean())) < 1e-6 and abs(s.std - float(t.double().std())) < 1e-6
    i = torch.arange(-500, 1000)
    si = stats.compute_stats(i)
    assert (si.min, si.max, si.zeros) == (-500, 999, 1) and abs(si.mean - 249.5) < 1e-9


def test_big_tensor_histogram_is_chunked_and_exact(monkeypatch) -> None:
    """The card's histogram of a tensor past CHUNK bins each chunk: the counts torch.histc gives the whole."""
    from tensormagic.engine import stats

    monkeypatch.setattr(stats, "CHUNK", 1000)
    t = torch.randn(12_345)
    t[3] = float("inf")
    counts, lo, hi = stats.histogram(t, bins=20)
    fin = t.double()[torch.isfinite(t)]
    assert (lo, hi) == (float(fin.min()), float(fin.max()))
    assert counts == [int(c) for c in torch.histc(fin, bins=20, min=lo, max=hi).tolist()]


def test_big_tensor_statistics_peak_memory_is_bounded() -> None:
    """%tensorinfo's statistics and the card's histogram of a 2e7-element float32 tensor (80 MB) stay
    under +60 MB peak (a float64 copy alone is 160 MB), measured in a fresh process."""
    import subprocess
    import sys

    code = ("import resource, torch\nfrom tensormagic.info import tensor_info\nfrom tensormagic.engine.stats import "
            "histogram\nt = torch.randn(20_000_000)\n"
            "m0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\ntensor_info(t)\nhistogram(t)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - m0) // 1024)")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(r.stdout.strip()) < 60
