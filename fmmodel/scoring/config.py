"""The settings of ``evaluate`` and ``predict``, as frozen, JSON-able dataclasses.

:class:`EvaluateConfig` and :class:`PredictConfig` hold every option of
:func:`fmmodel.scoring.evaluate.evaluate` and :func:`fmmodel.scoring.predict.predict` but the
store, the checkpoint, predict's output and the progress bars. Each checks its values when it is
made (an FmModelError whose ``field`` names the first option out of range), ``to_dict`` gives
plain types and ``from_dict`` reads them back, refusing unknown keys by name (a typo in a config
file is never silently ignored). Building one imports no code: ``trusted`` only names users'
models a checkpoint may import.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fmmodel import protocol
from fmmodel.data.resident import check_resident_budget
from fmmodel.data.sampling import check_loader_workers
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import CHECKPOINT_FORMATS

C = TypeVar("C", bound="ScoringConfig")


def _need(ok: bool, name: str, what: str, got: Any) -> None:
    if not ok:
        raise FmModelError(f"expected {what}, got {got!r}", field=name)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any, least: int) -> bool:
    return _integer(value) and value >= least


def _text(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


@dataclass(frozen=True)
class ScoringConfig:
    """What scoring a checkpoint takes, for evaluate and predict alike.

    ``fmt``: the checkpoint's format ("auto", "toolkit", "reference"); ``variant`` names the model
    of an authors' checkpoint whose keys are ambiguous. ``windows``: a stored window table (None:
    windows built as the checkpoint recorded). ``batch_size``, ``workers`` (DataLoader processes,
    0: this one), ``data`` ("auto", "resident", "lazy") and ``resident_budget`` (bytes; None: the
    default share) choose the data path (:mod:`fmmodel.data.paths`); ``device`` ("auto", "cpu",
    "cuda") and ``precision`` ("bf16", "fp32"; None: the device's default) where and how the model
    runs. ``trusted`` names users' models whose factory the checkpoint may import.
    """

    fmt: str = "auto"
    variant: str | None = None
    split: str = "test"
    windows: str | None = None
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    precision: str | None = None
    data: str = "auto"
    resident_budget: int | None = None
    trusted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.trusted, (list, tuple)):  # a JSON list reads back as the tuple it was
            object.__setattr__(self, "trusted", tuple(self.trusted))
        self.check()

    def check(self) -> None:
        """Raise FmModelError naming the first option whose value is out of range."""
        _need(self.fmt in CHECKPOINT_FORMATS, "fmt", f"a checkpoint format in {CHECKPOINT_FORMATS}", self.fmt)
        _need(_text(self.variant), "variant", "a variant name or None", self.variant)
        _need(self.split in protocol.SPLITS, "split", f"a split in {protocol.SPLITS}", self.split)
        _need(_text(self.windows), "windows", "a window table name or None", self.windows)
        _need(_count(self.batch_size, 1), "batch_size", "a batch size >= 1", self.batch_size)
        _need(_integer(self.workers), "workers", "a number of loader workers", self.workers)
        check_loader_workers(self.workers)
        _need(self.device in protocol.DEVICES, "device", f"a device in {protocol.DEVICES}", self.device)
        _need(self.precision is None or self.precision in protocol.PRECISIONS, "precision",
              f"a precision in {protocol.PRECISIONS}", self.precision)
        _need(self.data in protocol.DATA_PATHS, "data", f"a data path in {protocol.DATA_PATHS}", self.data)
        _need(self.resident_budget is None or _integer(self.resident_budget), "resident_budget",
              "a number of bytes or None", self.resident_budget)
        check_resident_budget(self.resident_budget)
        _need(isinstance(self.trusted, tuple) and all(_text(t) and t for t in self.trusted), "trusted",
              "a list of model names", self.trusted)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain types (``trusted`` as a list)."""
        return {**dataclasses.asdict(self), "trusted": list(self.trusted)}

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Build from :meth:`to_dict` output (missing keys take their defaults); FmModelError for
        keys that are not settings (naming them) and for values out of range."""
        cls._refuse_unknown(d)
        return cls(**d)

    def replace(self: C, **options: Any) -> C:
        """Return these settings with ``options`` (keyword settings) changed, checked again;
        FmModelError for a name that is not a setting (naming it)."""
        self._refuse_unknown(options)
        return dataclasses.replace(self, **options)

    @classmethod
    def _refuse_unknown(cls, keys: Mapping[str, Any]) -> None:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(keys) - set(names))
        if unknown:
            raise FmModelError(f"expected settings of {cls.__name__} ({', '.join(names)}), got unknown "
                               f"{', '.join(unknown)}", field=unknown[0])


@dataclass(frozen=True)
class EvaluateConfig(ScoringConfig):
    """The settings of :func:`fmmodel.scoring.evaluate.evaluate` (:class:`ScoringConfig` says the
    shared ones). ``split``: the windows scored ("test", "train", "all"). ``out``: the folder for
    report.json and the pictures (None: no files). ``examples``: example frames in examples.png.
    ``protocol``: how samples and pixel metrics are counted ("toolkit", "reference"; None:
    "reference" for a checkpoint in the authors' format, else "toolkit")."""

    out: str | None = None
    examples: int = 8
    protocol: str | None = None

    def check(self) -> None:
        """Raise FmModelError naming the first option whose value is out of range."""
        super().check()
        _need(_text(self.out), "out", "a folder for the report or None", self.out)
        _need(_count(self.examples, 0), "examples", "a number of examples >= 0", self.examples)
        _need(self.protocol is None or self.protocol in protocol.EVAL_PROTOCOLS, "protocol",
              f"a protocol in {protocol.EVAL_PROTOCOLS}", self.protocol)


@dataclass(frozen=True)
class PredictConfig(ScoringConfig):
    """The settings of :func:`fmmodel.scoring.predict.predict` (:class:`ScoringConfig` says the
    shared ones). ``split``: the windows predicted ("all": train and test, "test", "train").
    ``overwrite``: replace an existing predictions store (and video) that predict wrote.
    ``video``: also write an MP4 of the predictions over at most ``video_max_frames`` labelled
    frames."""

    split: str = "all"
    overwrite: bool = False
    video: str | None = None
    video_max_frames: int = 1500

    def check(self) -> None:
        """Raise FmModelError naming the first option whose value is out of range."""
        super().check()
        _need(isinstance(self.overwrite, bool), "overwrite", "True or False", self.overwrite)
        _need(_text(self.video), "video", "a path for the video or None", self.video)
        _need(_count(self.video_max_frames, 1), "video_max_frames", "at least 1 frame", self.video_max_frames)
