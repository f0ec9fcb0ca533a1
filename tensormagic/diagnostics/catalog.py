"""The diagnostics tensormagic knows: their ids, severities, warning categories, and selection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


class TensorMagicWarning(UserWarning):
    """Base class of every diagnostic tensormagic emits; filter it to silence them all."""


class InplaceSavedWarning(TensorMagicWarning):
    """An in-place write overwrote a tensor that autograd saved for backward."""


class LeafMovedWarning(TensorMagicWarning):
    """A tensor created with requires_grad=True was moved (``.to``/``.double()``): the result is no leaf."""


class GradUnfilledWarning(TensorMagicWarning):
    """``.grad`` read on a non-leaf tensor without ``retain_grad()``: backward never fills it."""


class GradAccumulationWarning(TensorMagicWarning):
    """Gradients accumulated across optimizer steps: ``.grad`` was not zeroed after a step."""


class BroadcastWarning(TensorMagicWarning):
    """Broadcasting blew up a shape (``(64, 1) - (64,)`` gives ``(64, 64)``) before a reduction."""


class NonFiniteWarning(TensorMagicWarning):
    """The first op whose output held NaN or Inf while its inputs were finite (``stats=True``)."""


class DeviceMismatchWarning(TensorMagicWarning):
    """An op failed because its tensors live on different devices."""


class DtypeFloat64Warning(TensorMagicWarning):
    """float64 (NumPy's default) met float32: the result is silently float64, or an error."""


class DtypeIntTargetWarning(TensorMagicWarning):
    """An integer target was given to a loss that expects float targets."""


class SyncInLoopWarning(TensorMagicWarning):
    """A line made the host wait for the device many times (``.item()``, ``.cpu()``, ``if t:``…)."""


#: id -> (warning category, severity), in the order reports list them.
CATALOG: dict[str, tuple[type[TensorMagicWarning], str]] = {
    "inplace-saved": (InplaceSavedWarning, "error"),
    "leaf-moved": (LeafMovedWarning, "warning"),
    "grad-unfilled": (GradUnfilledWarning, "warning"),
    "grad-accumulation": (GradAccumulationWarning, "warning"),
    "broadcast": (BroadcastWarning, "warning"),
    "non-finite": (NonFiniteWarning, "warning"),
    "device-mismatch": (DeviceMismatchWarning, "error"),
    "dtype-float64": (DtypeFloat64Warning, "warning"),
    "dtype-int-target": (DtypeIntTargetWarning, "warning"),
    "sync-in-loop": (SyncInLoopWarning, "info"),
}
IDS: tuple[str, ...] = tuple(CATALOG)
#: device types where reading a value back waits for the device (cpu and meta never do).
SYNC_DEVICES: frozenset[str] = frozenset({"cuda", "mps", "xpu", "hpu", "npu", "privateuseone"})


def category(diag_id: str) -> type[TensorMagicWarning]:
    return CATALOG[diag_id][0]


def severity(diag_id: str) -> str:
    return CATALOG[diag_id][1]


@dataclass(frozen=True)
class Settings:
    """Which diagnostics run, and their thresholds: what ``track(diagnostics=…)`` resolves to.

    ``sync_devices`` are the device types whose reads count as host–device syncs (a test can add
    ``"cpu"``); ``sync_min`` is how many syncs one line must make before it is reported.
    """

    ids: frozenset[str] = frozenset(IDS)
    sync_devices: frozenset[str] = SYNC_DEVICES
    sync_min: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", frozenset(_check_ids(self.ids)))
        object.__setattr__(self, "sync_devices", frozenset(self.sync_devices))
        if self.sync_min < 1:
            raise ValueError(f"sync_min must be a positive number, got {self.sync_min!r}")


def _check_ids(ids: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for i in ids:
        if i == "all":
            out.extend(IDS)
        elif i not in CATALOG:
            raise ValueError(f"unknown diagnostic {i!r}; known: all, {', '.join(IDS)}")
        else:
            out.append(i)
    return out


def select(spec: Any) -> Settings:
    """``"all"``, a list of ids (or a comma-separated string), ``[]``/``None``/``False`` for none,
    or a :class:`Settings`; an unknown id raises ``ValueError`` naming the known ones."""
    if isinstance(spec, Settings):
        return spec
    if spec is None or spec is False:
        return Settings(ids=frozenset())
    if spec is True:
        return Settings()
    if isinstance(spec, str):
        got = _BY_TEXT.get(spec)
        if got is None:  # each tracked cell selects its magic's text again: parsed once (Settings is frozen)
            got = Settings(ids=frozenset(_check_ids([s.strip() for s in spec.split(",")
                                                     if s.strip() and s.strip() != "none"])))  # fmt: skip
            if len(_BY_TEXT) < MAX_TEXTS:
                _BY_TEXT[spec] = got
        return got
    if not isinstance(spec, (list, tuple, set, frozenset)):
        raise TypeError(f"diagnostics must be 'all', a list of ids or None, got {spec!r}")
    return Settings(ids=frozenset(_check_ids(spec)))


#: a diagnostics text (``"all"``, ``"broadcast,non-finite"``) -> its Settings; the first texts only
_BY_TEXT: dict[str, Settings] = {}
MAX_TEXTS = 64
