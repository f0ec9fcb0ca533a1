"""The compiled LineEncoder (``csrc/encode.c``) writes a cell's event lines byte for byte as the
Python path does (``Event.to_dict`` through orjson), and hands back what it does not encode.

Like ``test_engines``, these need the compiled extension (``scripts/test.sh`` installs gcc) and
orjson (a dependency)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from test_engines import SCENARIOS
from test_logfile import _every_kind

import tensormagic
from tensormagic.log import records as logrecords
from tensormagic.model.events import Event, GradRecord, Stats, TensorRef
from tensormagic.model.recording import Recording

REF = TensorRef("t1", "s1", ("x",), (2, 3), "float32", "cpu", True, False, "AddBackward0", 4)
HEAD = b'{"type":"event","key":"abc/1","event":'


def both(rec: Recording) -> tuple[list[bytes], list[bytes]]:
    """(compiled, Python) lines of one recording."""
    lines = logrecords.cell_lines
    return list(lines(rec, "abc/1", compiled=True)), list(lines(rec, "abc/1", compiled=False))


def of_events(*events: Event) -> Recording:
    rec = Recording()
    rec.events = tuple(events)
    return rec


def event(**kw: object) -> Event:
    return Event(**{"seq": 0, "kind": "create", "op": "torch.add", "tensor": REF, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("stats", [False, True])
def test_every_event_kind_encodes_alike(stats: bool) -> None:
    """Every kind of event, with and without statistics, gives the same bytes both ways."""
    c, py = both(_every_kind(stats=stats))
    assert c == py and len(c) > 10


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_engine_scenarios_encode_alike(name: str) -> None:
    """Each engine scenario's recording gives the same lines both ways."""
    c, py = both(SCENARIOS[name]("c"))
    assert c == py


def test_strings_are_escaped_as_orjson_escapes_them() -> None:
    """Quotes, backslashes, every control character and non-ASCII text are written as orjson writes them."""
    text = "".join(map(chr, range(0x80))) + "é ß 中文 😀 \u2028\u2029"
    ref = replace(REF, names=(text, 'a"b\\c'), grad_fn=text)
    c, py = both(of_events(event(source=text, file="C:\\dir\\f.py", module=text, note=text, tensor=ref, inputs=(ref,))))
    assert c == py and b"\\u001b" in c[0] and "😀".encode() in c[0]


def test_floats_ints_and_bools_encode_alike() -> None:
    """Floats of every magnitude, negative zero, 64-bit ints and booleans give the same bytes."""
    rng = random.Random(4)
    floats = [0.0, -0.0, 1e-4, 9.99e-5, 1e15, 1e16, 123456.789, 2.5e-7, 1e300] + [
        rng.uniform(-1, 1) * 10 ** rng.randint(-8, 18) for _ in range(300)
    ]
    events = [event(seq=i, time_us=f, line=-(2**63), version_after=2**63 - 1, inplace=i % 2 == 0)
              for i, f in enumerate(floats)]  # fmt: skip
    c, py = both(of_events(*events))
    assert c == py


def test_what_the_encoder_leaves_to_python_is_handed_back() -> None:
    """Statistics, non-finite floats, ints past 64 bits and lone surrogates go the Python way, with the same bytes."""
    odd = [event(stats=Stats(0.0, 1.0)), event(time_us=math.inf), event(time_us=math.nan), event(line=2**64),
           event(source="x = 1  # \udc80")]  # fmt: skip
    plain = event(seq=9)
    enc = logrecords._line_encoder(True)
    got = enc.lines((*odd, plain), 0, 6, HEAD, b"}")
    assert got[:5] == odd and type(got[5]) is bytes
    c, py = both(of_events(*odd, plain))
    assert c == py


def test_shared_snapshots_and_gradients_encode_alike() -> None:
    """A TensorRef met again (from the encoder's memo) and backward's gradient records give the same bytes."""
    g = GradRecord(REF, (2, 3), "float32", accumulated=True, grad_id="t9")
    events = [event(seq=i, inputs=(REF, REF), aliases=(REF,), kind="backward", grads=(g, replace(g, accumulated=False)))
              for i in range(3)]  # fmt: skip
    c, py = both(of_events(*events))
    assert c == py and c[1].count(b'"id":"t1"') == 6


def test_batches_cover_every_event() -> None:
    """A cell longer than one encoding batch still gives every line, in order."""
    with tensormagic.track(max_events=5000) as rec:
        import torch

        x = torch.ones(2)
        for _ in range(1500):
            x = x + 1
    c, py = both(rec)
    assert c == py and len(c) == len(rec.events) + 1 > logrecords._BATCH + 1


def test_compiled_encoder_shows_the_collector_what_it_holds() -> None:
    """gc.get_referents(LineEncoder) lists the Event class its spec was made from (its traverse walks its fields)."""
    import gc

    enc = logrecords._line_encoder(True)
    held = gc.get_referents(enc)
    assert Event in held and TensorRef in held and GradRecord in held
