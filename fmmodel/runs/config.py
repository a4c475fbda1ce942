"""The resolved training configuration: every choice a run made, as one JSON-able dataclass.

``fmmodel train`` fills a :class:`TrainConfig` from its options, whose defaults are the
reference protocol's (:mod:`fmmodel.protocol`: batch 64, lr 5e-4, x0.1 at epoch 20, 30 epochs,
Adam, horizontal flip, cross-entropy) and whose windows are a
:class:`~fmdata.store.window_table.WindowParams` (the reference windows of the modality unless
given). The trainer writes it as ``config.json`` in the run folder; ``--resume`` reads it back
with :meth:`TrainConfig.from_dict`, which refuses unknown keys so that a typo in a hand-edited
file is not silently ignored. Reading a config imports no code: a user's model it names is
imported only when the run is built, and a resumed run's only when the user names it again or
installed it (:func:`fmmodel.runs.train.resume_run`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from fmdata.errors import FmDataError
from fmdata.store.atomic import replace_text
from fmdata.store.window_table import WindowParams
from fmmodel import protocol
from fmmodel.data.preprocessing import PREPROCESSING_REFERENCE, PREPROCESSINGS
from fmmodel.data.resident import check_resident_budget
from fmmodel.data.sampling import check_loader_workers
from fmmodel.errors import FmModelError
from fmmodel.model.registry import VARIANTS, check_model_options, model_source, resolve_variant, variant_for
from fmmodel.runs.presets import PRESETS

# bytes a float32 parameter takes while training: its weight, its gradient and the optimizer's state
# (Adam's two moments, SGD's momentum)
TRAIN_BYTES_PER_PARAMETER = {"adam": 16, "adamw": 16, "sgd": 12}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``to_dict`` is what ``config.json`` holds.

    ``model`` holds FmFormer size overrides (e.g. ``{"size": "tiny", "depth": 2}``), passed to
    ``fmmodel.model.registry.build_model``. ``val_fraction`` is the share of each recording's training
    block (its last labelled frames) held out for validation; ``validation`` is filled in by the
    trainer with what it actually held out. ``max_steps_per_epoch`` caps an epoch (demos and
    benchmarks); None runs every window. ``threads`` sets torch's CPU threads in the training
    process (None keeps torch's default; 1 is fastest on a small, shared CPU). ``data`` is the
    data path ("auto", "resident", "lazy"; :mod:`fmmodel.data.paths`) and ``resident_budget`` the
    bytes ``auto`` may hold resident (None: its default share of free memory); the path taken is
    recorded in ``runtime["data"]``. ``window`` is replaced by the parameters of the table the run
    trains on. ``preset`` names the recipe (:mod:`fmmodel.runs.presets`) the settings started
    from, a record only: the fields hold the settings. ``store`` is made absolute when a run
    starts; ``trained_on`` is filled in by the trainer with what the run was trained on (the
    store's location and fingerprint, the window table's fingerprint: :mod:`fmmodel.runs.identity`),
    which ``--resume`` checks.
    """

    store: str
    out: str
    windows: str | None = None
    task: str = "cls"
    modality: str = "both"
    epochs: int = protocol.EPOCHS
    batch_size: int = protocol.BATCH_SIZE
    lr: float = protocol.LR
    lr_step_epoch: int = protocol.LR_STEP_EPOCH
    lr_gamma: float = protocol.LR_GAMMA
    optimizer: str = protocol.OPTIMIZER
    weight_decay: float = 0.0
    hflip: bool = protocol.HFLIP
    preprocessing: str = PREPROCESSING_REFERENCE
    workers: int = 2
    data: str = "auto"
    resident_budget: int | None = None
    threads: int | None = None
    device: str = "auto"
    precision: str | None = None
    compile: bool = False
    seed: int = 0
    val_fraction: float = protocol.VAL_FRACTION
    eval_batch_size: int | None = None
    max_steps_per_epoch: int | None = None
    balanced: bool = False
    preset: str | None = None
    window: WindowParams = field(default_factory=WindowParams)
    model: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.window, dict):
            self.window = _window_from_dict(self.window)
        self.check()
        if not self.variant:
            self.variant = variant_for(self.modality, self.task)
        else:
            # a config is data (config.json of a run or a benchmark cell): it imports no code. A
            # built-in must agree with the run's inputs and task now; a user's model when it is built
            source = model_source(self.variant)
            if source is None:
                resolve_variant(self.variant, modality=self.modality, task=self.task)
            elif not source.entry_point:
                # a factory file by its absolute path, as the store: the run's folder names it wherever it runs
                self.variant = source.spec
        self.check_model()

    def check(self) -> None:
        """Raise FmModelError naming the first parameter whose value is out of range."""
        def need(ok: bool, name: str, what: str, got: Any) -> None:
            if not ok:
                raise FmModelError(f"expected {what}, got {got!r}", field=name)

        need(self.task in protocol.TASKS, "task", f"a task in {protocol.TASKS}", self.task)
        need(self.modality in protocol.MODALITIES, "modality", f"a modality in {protocol.MODALITIES}", self.modality)
        need(self.device in protocol.DEVICES, "device", f"a device in {protocol.DEVICES}", self.device)
        need(self.precision is None or self.precision in protocol.PRECISIONS, "precision",
             f"a precision in {protocol.PRECISIONS}", self.precision)
        need(self.preprocessing in PREPROCESSINGS, "preprocessing", f"a preprocessing in {PREPROCESSINGS}",
             self.preprocessing)
        need(self.optimizer in protocol.OPTIMIZERS, "optimizer", f"an optimizer in {protocol.OPTIMIZERS}",
             self.optimizer)
        need(self.epochs >= 1, "epochs", "epochs >= 1", self.epochs)
        need(self.seed >= 0, "seed", "a seed >= 0", self.seed)
        need(self.batch_size >= 1, "batch_size", "a batch size >= 1", self.batch_size)
        need(self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size",
             "an evaluation batch size >= 1", self.eval_batch_size)
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "a finite learning rate > 0", self.lr)
        need(self.lr_step_epoch >= 1, "lr_step_epoch", "a learning-rate step >= 1 epoch", self.lr_step_epoch)
        check_loader_workers(self.workers)
        need(self.preset is None or self.preset in PRESETS, "preset", f"a preset in {tuple(PRESETS)}", self.preset)
        need(self.data in protocol.DATA_PATHS, "data", f"a data path in {protocol.DATA_PATHS}", self.data)
        check_resident_budget(self.resident_budget)
        need(self.threads is None or self.threads >= 1, "threads", "threads >= 1", self.threads)
        need(0.0 <= self.val_fraction < 1.0, "val_fraction", "a validation fraction in [0, 1)", self.val_fraction)
        need(self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "max_steps_per_epoch",
             "a cap of at least 1 step per epoch", self.max_steps_per_epoch)

    def check_model(self) -> None:
        """Raise FmModelError when a built-in model's size options are of the wrong kind or range, or when
        at least its layers would not fit in memory while training (``model_opt`` when size options
        were given): before a run writes anything (:func:`fmmodel.model.registry.check_model_options`)."""
        if self.variant not in VARIANTS:
            return  # a user's model: its factory builds it
        options = {k: v for k, v in self.model.items() if k != "size"}
        try:
            check_model_options(self.variant, self.model.get("size", "reference"), options,
                                bytes_per_parameter=TRAIN_BYTES_PER_PARAMETER[self.optimizer],
                                what=f"weights, gradients and {self.optimizer} state in training")
        except FmModelError as exc:
            raise FmModelError(exc.message, field="model_opt" if options else exc.field) from None

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-able dict."""
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same experiment, as plain types: everything but where and how
        fast it runs, what the trainer records, and the epochs (a resume may extend them)."""
        d = self.to_dict()
        for key in _NOT_IDENTITY:
            d.pop(key)
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output; FmModelError on unknown or missing keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise FmModelError(f"expected training config keys, got unknown {sorted(unknown)}")
        missing = {"store", "out"} - set(d)
        if missing:
            raise FmModelError(f"expected training config keys {sorted(missing)}, got none")
        return cls(**d)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the config as JSON to ``path`` atomically (temporary file, fsync, rename)."""
        replace_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a config written by :meth:`save`; FmModelError when it is not one."""
        try:
            with open(path, encoding="utf-8") as fh:
                d = json.load(fh)
        except json.JSONDecodeError as exc:
            raise FmModelError(f"expected a JSON training config, got invalid JSON ({exc.msg})", path) from None
        if not isinstance(d, dict):
            raise FmModelError("expected a JSON object, got another JSON value", path)
        try:
            return cls.from_dict(d)
        except (FmModelError, TypeError) as exc:
            raise FmModelError(str(exc), path) from None


# where and how fast a run runs: a resume may change them (the batches and weights stay the same)
RUN_ENVIRONMENT = ("workers", "data", "resident_budget", "device", "precision", "threads")
# ... and what the trainer fills in, and the epochs: not part of what a run learns
# (the preset's name is a label: its settings are the fields)
_NOT_IDENTITY = ("out", "epochs", "preset", "validation", "runtime", "trained_on", *RUN_ENVIRONMENT)


def _window_from_dict(d: dict[str, Any]) -> WindowParams:
    """The window parameters of a config file; FmModelError for unknown keys or values out of range."""
    known = {f.name for f in dataclasses.fields(WindowParams)}
    bad = set(d) - known
    if bad:
        raise FmModelError(f"expected window keys {sorted(known)}, got unknown {sorted(bad)}")
    try:
        return WindowParams.from_dict(d)
    except FmDataError as exc:
        raise FmModelError(exc.message, field=exc.field) from None
