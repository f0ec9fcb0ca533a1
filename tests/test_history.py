"""A tensor's history across tracked cells (``%trackgrad on``): made, written, moved, with the cells'
numbers and lines; bounded; shown by ``%tensorinfo`` and the panel's card."""

from __future__ import annotations

import torch
from IPython.utils.capture import capture_output
from testkit import run

from tensormagic.engine import history, identity
from tensormagic.engine.history import HEAD, TAIL, History


def _info(ip, expr: str) -> str:
    with capture_output() as cap:
        ip.run_line_magic("tensorinfo", expr)
    return cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)


def test_history_lists_made_written_moved_across_cells(ip):
    """Made in one cell, written in the next, moved in place in a third: each with its In[N] and line."""
    run(ip, "from torch import nn")
    run(ip, "%trackgrad on --quiet")
    made = run(ip, "lin = nn.Linear(2, 2)\nw = torch.randn(3)").execution_count
    written = run(ip, "x = 1\nw.add_(1)").execution_count
    moved = run(ip, "lin.to(torch.float64)").execution_count
    run(ip, "%trackgrad off")
    assert f"made In[{made}] line 2 (torch.randn); written In[{written}] line 2 (add_)" in _info(ip, "w")
    assert f"moved In[{moved}] line 1 (to)" in _info(ip, "lin.weight")


def test_history_of_a_tensor_written_every_step_stays_bounded():
    """A history keeps its first entries and its last ones, with a count of those between."""
    h = History()
    for step in range(1000):
        h.add([7, None, 3 + step % 2, "written", "torch.Tensor.add_", 1])
    assert (len(h.head), len(h.tail), h.between, len(h)) == (HEAD, TAIL, 1000 - HEAD - TAIL, 1000)
    assert "… 992 more …" in h.words()


def test_history_repeats_of_one_line_are_one_entry_with_a_count():
    """The same line writing the tensor again and again is one entry ×N."""
    h = History()
    for _ in range(50):
        h.add([4, None, 2, "written", "torch.Tensor.mul_", 1])
    assert h.words() == "written In[4] line 2 (mul_) ×50"


def test_history_is_dropped_when_the_tensor_dies(ip):
    """Only live tensors have a history: it goes with the tensor."""
    run(ip, "%%trackgrad --quiet\ngone = torch.zeros(2)\ngone += 1")
    tid = identity.lookup(ip.user_ns["gone"])
    assert tid in history.histories
    run(ip, "del gone")
    run(ip, "%%trackgrad --quiet\nz = torch.ones(1)")  # a block's end prunes the dead
    assert tid not in history.histories


def test_tensor_from_an_earlier_tracked_cell_says_where_it_was_made(ip):
    """A tensor written in this cell but made in an earlier tracked one "existed before this cell"
    with that cell's In[N] and line, on the Tensors tab and in its card."""
    from tensormagic.views.card import record_card_html
    from tensormagic.views.panel_tables import tensor_rows

    run(ip, "%%trackgrad --quiet -o first\nk = 1\nw = torch.randn(3)")
    made = ip.user_ns["first"].cell  # the number that cell's own report shows (In[N])
    run(ip, "%%trackgrad --quiet -o rec\nw.mul_(2)")
    rec = ip.user_ns["rec"]
    row = next(r for r in tensor_rows(rec) if r.label == "w")
    assert (row.op, row.where) == ("existed before this cell", f"In[{made}] line 3")
    card = record_card_html(rec, rec.tensor("w"))
    assert f"existed before this cell (made In[{made}] line 3, torch.randn)" in card


def test_log_keeps_existed_before_and_the_history(ip, tmp_path):
    """A tensor made in one logged cell and written in the next: read back from the log, the second
    cell says it existed before (made In[N] line 3, torch.randn) with its history, in the text the
    command line's ``show`` and ``%tensorlog`` print, and in the card."""
    import subprocess
    import sys

    from tensormagic.log.reader import load_log
    from tensormagic.log.writer import close_all
    from tensormagic.views.card import record_card_html

    log = tmp_path / "run.jsonl"
    made = run(ip, f"%%trackgrad --quiet --log {log}\nk = 1\nw = torch.randn(3)").execution_count
    written = run(ip, f"%%trackgrad --quiet --log {log}\nw.mul_(2)\nv = w + 1").execution_count
    close_all()
    history_words = f"made In[{made}] line 3 (torch.randn); written In[{written}] line 2 (mul_)"
    rec = load_log(log)[1]
    w = rec.tensor("w")
    assert (w.made_before, w.history) == ((made, None, 3, "torch.randn"), history_words)
    shown = subprocess.run([sys.executable, "-m", "tensormagic", "show", str(log), "--cell", "2"],
                           capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
    assert f"existed before this cell:\n  w: {history_words}\n" in shown
    with capture_output() as cap:
        ip.run_line_magic("tensorlog", f"{log} --cell 2")
    assert f"w: {history_words}" in cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)
    card = record_card_html(rec, w)
    assert f"existed before this cell (made In[{made}] line 3, torch.randn)" in card and history_words in card


def test_a_huge_history_table_is_cut_before_the_line_bound():
    """A cell record whose histories would pass ``MAX_LINE`` drops them and counts them."""
    from tensormagic.log.records import MAX_LINE, bounded_cell_line, loads

    d = {"type": "cell", "key": "s/1", "histories": {f"t{i}": "made In[1] line 1 (x)" * 10 for i in range(10_000)},
         "tensors": []}  # fmt: skip
    line = bounded_cell_line(d)
    got = loads(line)
    assert len(line) <= MAX_LINE and "histories" not in got and got["histories_omitted"] == 10_000


def test_history_counts_a_loop_line_into_its_entry_past_the_head(ip):
    """Within one cell a line repeated by a loop is one entry ×N, in the tail as in the head."""
    run(ip, "%trackgrad on --quiet")
    n = run(ip, "w = torch.zeros(2)\nw.add_(1)\nw.add_(1)\nfor _ in range(3):\n    w.mul_(2)\nw.sub_(1)").execution_count
    run(ip, "%trackgrad off")
    at = f"In[{n}] line"
    assert history.of(ip.user_ns["w"]).words() == (
        f"made {at} 1 (torch.zeros); written {at} 2 (add_); written {at} 3 (add_); "
        f"written {at} 5 (mul_) ×3; written {at} 6 (sub_)")


def test_recording_keeps_the_history_as_it_stood_at_its_end(ip):
    """A recording's histories are those at its block's end, even when read after a later cell wrote the tensor."""
    from tensormagic import last_recording

    run(ip, "%trackgrad on --quiet")
    made = run(ip, "w = torch.zeros(2)").execution_count
    first = last_recording()
    written = run(ip, "for _ in range(2):\n    w.add_(1)").execution_count
    second = last_recording()
    run(ip, "%trackgrad off")
    tid = f"t{identity.lookup(ip.user_ns['w'])}"
    assert first.histories == {tid: f"made In[{made}] line 1 (torch.zeros)"}
    assert second.histories[tid] == f"made In[{made}] line 1 (torch.zeros); written In[{written}] line 2 (add_) ×2"


def test_a_dead_tensors_history_goes_when_a_newer_tensor_took_its_address():
    """A tensor that died after its key (its ``id()``) went to a newer tensor leaves no dead key
    behind: a block's end still drops its history and provenance (the sweep over the live ids).
    The allocator handing the address on is done here by hand: the newer tensor's entry is put
    under the old key."""
    for compiled in (False, True):
        old = torch.zeros(2)
        old_tid = identity.assign_ref(old).tid
        history.histories[old_tid] = history.History()
        identity.provenance[old_tid] = (1, None, 1, "torch.zeros")
        key, newer = id(old), torch.ones(1)
        del old
        ref = identity._ids[key] = identity.Ref(newer)
        ref.tid = next(identity._counter)
        identity.prune(compiled=compiled)
        assert old_tid not in history.histories and old_tid not in identity.provenance
        del identity._ids[key], newer
