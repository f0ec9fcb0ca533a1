"""Log format versions: every schema version has a fixture log written by that version's code, and
today's reader loads each; unknown event kinds are skipped and counted."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from tensormagic.log.reader import load_log
from tensormagic.log.records import SCHEMA_HISTORY
from tensormagic.model.events import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"


def test_every_schema_version_has_a_fixture() -> None:
    """Each version in SCHEMA_HISTORY, up to the current one, has tests/data/log_schema<N>.jsonl."""
    assert sorted(SCHEMA_HISTORY) == list(range(1, SCHEMA_VERSION + 1))
    for v in SCHEMA_HISTORY:
        path = DATA / f"log_schema{v}.jsonl"
        assert path.exists(), f"add a log written by schema {v} as {path.name}"
        assert json.loads(path.read_text().splitlines()[0])["schema_version"] == v


@pytest.mark.parametrize("version", sorted(SCHEMA_HISTORY))
def test_reader_loads_every_fixture(version: int) -> None:
    """The fixture of each version loads whole: 4 cells, nothing skipped, each renders as text."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recs = load_log(DATA / f"log_schema{version}.jsonl")
    assert len(recs) == 4 and recs.stats.skipped == 0 and recs.stats.bad_events == 0
    first, stats, failed, backward = recs
    assert [e.tensor.label for e in first.events[:3]] == ["x", "y", "t3"]
    assert stats.stats_enabled and failed.failed and failed.folded > 0
    assert backward.diagnostics and any(e.kind == "backward" for e in backward.events)
    for r in recs:
        assert r.to_text()


def test_unknown_event_kind_is_skipped_and_counted(tmp_path: Path) -> None:
    """An event of a kind this reader does not know is skipped, counted and told."""
    lines = (DATA / "log_schema2.jsonl").read_text().splitlines()
    ev = json.loads(lines[1])
    ev["event"]["kind"] = "compiled_call"
    path = tmp_path / "newer.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(ev), *lines[1:]]) + "\n")
    recs = load_log(path, warn=False)
    assert recs.stats.unknown_kinds == 1
    assert all(e.kind != "compiled_call" for r in recs for e in r.events)
    assert any("unknown kind" in n for n in recs.stats.notes())


def test_schema3_fixture_keeps_existed_before_and_history() -> None:
    """Schema 3's last cell writes ``v``, made by its first cell (line 25 of the script that wrote
    it, by ``torch.zeros``): read back, ``v`` existed before with that place and its history."""
    recs = load_log(DATA / "log_schema3.jsonl")
    v = recs[3].tensor("v")
    assert v.made_before == (None, "/work/wt-i22/tests/data/make_log_fixture.py", 25, "torch.zeros")
    assert v.history == ("made make_log_fixture.py:25 (torch.zeros); written make_log_fixture.py:26 "
                         "(__setitem__); written make_log_fixture.py:48 (add_)")  # fmt: skip
    assert "v: made make_log_fixture.py:25 (torch.zeros); written" in recs[3].to_text(width=200)


def test_older_fixtures_have_no_before_or_history() -> None:
    """A schema 2 log says nothing of "existed before" or histories: nothing is made up."""
    recs = load_log(DATA / "log_schema2.jsonl")
    assert all(not r.before and not r.histories for r in recs)
    assert all(t.history is None and t.made_before is False for r in recs for t in r.tensors.values())


def test_schema4_fixture_reads_back_its_compiled_call() -> None:
    """Schema 4's last cell calls ``f = torch.compile(lambda u: (u * 2).relu())`` on ``r`` (line 54
    of the script that wrote it, ``c = f(r)``): read back, one "compiled" event with its tensors and ops."""
    recs = load_log(DATA / "log_schema4.jsonl")
    (e,) = [e for e in recs[3].events if e.kind == "compiled"]
    assert (e.line, e.source, e.op) == (54, "c = f(r)", "<lambda>")
    assert ([r.label for r in e.inputs], [r.label for r in e.outputs]) == (["r"], ["c"])
    assert (e.graphs, e.graph_ops) == (1, ("torch.Tensor.mul", "torch.Tensor.relu"))
    assert "1 compiled call" in recs[3].summary_line()
