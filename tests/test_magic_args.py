"""Magic arguments: paths quoted and ``~``-expanded the way ``%run`` reads them, and every bad
argument a one-line UsageError (TraitError through ``%config``) that leaves nothing installed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.modules.module as module_hooks
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from testkit import run

import tensormagic
from tensormagic.log import writer as logfile
from tensormagic.log.reader import load_log


@pytest.fixture(autouse=True)
def _release_writers():
    yield
    logfile.close_all()


def test_quoted_log_path_with_a_space(ip, tmp_path: Path) -> None:
    """``--log "my run.jsonl"`` writes ``my run.jsonl``, without the quotes in the name."""
    path = tmp_path / "my run.jsonl"
    with capture_output():
        ip.run_cell_magic("trackgrad", f'--quiet --log "{path}"', "a = torch.ones(2)\n")
    assert path.exists() and len(load_log(path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["my run.jsonl"]


def test_log_path_expands_home(ip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--log ~/x.jsonl`` writes under the home folder, as ``%tensorlog ~/x.jsonl`` reads it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    with capture_output():
        ip.run_cell_magic("trackgrad", "--quiet --log ~/x.jsonl", "a = torch.ones(2)\n")
    assert (tmp_path / "x.jsonl").exists()
    with capture_output() as cap:
        ip.run_line_magic("tensorlog", "'~/x.jsonl'")
    assert "cell #1" in cap.stdout


def test_config_log_path_expands_home(ip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``%config TensorMagic.log_path = "~/c.jsonl"`` logs under the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    run(ip, "%config TensorMagic.log_path = '~/c.jsonl'")
    try:
        with capture_output():
            ip.run_cell_magic("trackgrad", "--quiet", "a = torch.ones(2)\n")
    finally:
        run(ip, "%config TensorMagic.log_path = None")
    assert (tmp_path / "c.jsonl").exists()


@pytest.mark.parametrize("magic, line", [
    ("device", '"'),
    ("tensorlog", "'run.jsonl"),
    ("trackgrad", "--log 'x"),
])  # fmt: skip
def test_unclosed_quote_is_a_usage_error(ip, magic: str, line: str) -> None:
    """An unclosed quote in any magic's arguments is a one-line UsageError."""
    with pytest.raises(UsageError, match="No closing quotation"):
        ip.run_line_magic(magic, line)


def test_unclosed_quote_in_cell_magic_runs_nothing(ip) -> None:
    """``%%trackgrad '`` is a UsageError and the cell does not run."""
    ip.user_ns.pop("ran", None)
    with pytest.raises(UsageError, match="No closing quotation"):
        ip.run_cell_magic("trackgrad", "'", "ran = 1\n")
    assert "ran" not in ip.user_ns


@pytest.mark.parametrize("line, message", [
    ("X --last 100000000000000000000000", "--last takes a whole number, got 100000000000000000000000: too large$"),
    ("X --last -1", "--last takes a whole number of at least 1, got -1$"),
    ("X --last 0", "--last takes a whole number of at least 1, got 0$"),
    ("X --cell 0", "--cell takes a whole number of at least 1, got 0$"),
    ("X --last 10**23", "invalid int value"),
])  # fmt: skip
def test_bad_tensorlog_counts_are_usage_errors(ip, line: str, message: str) -> None:
    """Out-of-range ``--last``/``--cell`` are UsageErrors, before the file is read."""
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("tensorlog", line)


@pytest.mark.parametrize("value", ["-5", "0", "10**30", "'many'"])
def test_config_max_events_refuses_bad_values(ip, value: str) -> None:
    """``%config TensorMagic.max_events = -5`` is refused and the last good value stays."""
    magics = ip.find_line_magic("trackgrad").__self__
    with capture_output():
        run(ip, "%config TensorMagic.max_events = 50")
        run(ip, f"%config TensorMagic.max_events = {value}")
    assert magics.max_events == 50
    run(ip, "%config TensorMagic.max_events = 20000")


@pytest.mark.parametrize("value", [10**30, 0, -5, 1.5, True])
def test_track_refuses_bad_max_events_and_installs_nothing(value: object) -> None:
    """``track(max_events=10**30)`` is a one-line ValueError that leaves no module hook installed."""
    with pytest.raises(ValueError, match="max_events"), tensormagic.track(max_events=value):  # type: ignore[arg-type]
        pass
    assert not module_hooks._global_forward_pre_hooks and not module_hooks._global_forward_hooks


def test_block_that_fails_to_start_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while a block starts (after its module hooks are in) takes them out again."""
    import tensormagic.api as api

    def broken(*a: object, **k: object) -> None:
        raise OverflowError("no")

    monkeypatch.setattr(api, "make_mode", broken)
    with pytest.raises(OverflowError), tensormagic.track():
        pass
    assert not module_hooks._global_forward_pre_hooks and not module_hooks._global_forward_hooks
    assert torch._C._len_torch_function_stack() == 0
