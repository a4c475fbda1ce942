"""The resolved training configuration: every choice a run made, as one JSON-able dataclass.

``fmmodel train`` resolves command-line options against the reference protocol's defaults
(fmf-benchmark.md §5: batch 64, lr 5e-4, x0.1 at epoch 20, 30 epochs, Adam, horizontal flip,
cross-entropy) and writes the result as ``config.json`` in the run folder; ``--resume`` reads it
back with :meth:`TrainConfig.from_dict`, which refuses unknown keys so that a typo in a
hand-edited file is not silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from fmmodel.errors import FmModelError

TASKS = ("cls", "seg")
MODALITIES = ("both", "video", "current")
PRECISIONS = ("bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
PREPROCESSINGS = ("reference", "normalized")
POLICIES = ("reference", "strict")

# (task, modality) -> FmFormer variant name (fmmodel.fmformer)
VARIANTS: dict[tuple[str, str], str] = {
    ("cls", "both"): "vicu_cls",
    ("seg", "both"): "vicu_seg",
    ("cls", "video"): "video_cls",
    ("cls", "current"): "current_cls",
}

# The reference's clip shapes: cross-modal 10 frames step 18 (its test command), video-only 8
# frames step 19. A current-only model ignores the clip; it keeps the cross-modal windows so that
# the three modalities are scored on the same labelled frames.
DEFAULT_CLIP: dict[str, tuple[int, int]] = {"both": (10, 18), "video": (8, 19), "current": (10, 18)}


def variant_for(task: str, modality: str) -> str:
    """Return the FmFormer variant for a task and modality; FmModelError for unsupported pairs."""
    try:
        return VARIANTS[(task, modality)]
    except KeyError:
        pairs = ", ".join(f"{t}/{m}" for t, m in VARIANTS)
        raise FmModelError(f"expected one of the task/modality pairs {pairs}, got {task}/{modality}") from None


@dataclass
class WindowSpec:
    """How windows are built when no stored table is named (see ``fmdata windows``)."""

    frames: int = 10
    frame_step: int = 18
    current_rows: int = 240
    current_seconds: float = 120.0
    policy: str = "reference"
    stride: int = 1


@dataclass
class TrainConfig:
    """Everything a training run needs; ``to_dict`` is what ``config.json`` holds.

    ``model`` holds FmFormer size overrides (e.g. ``{"depth": 2, "dim": 32}``), passed to
    ``fmmodel.fmformer.build_model``. ``val_fraction`` is the share of each recording's training
    block (its last labelled frames) held out for validation; ``validation`` is filled in by the
    trainer with what it actually held out. ``max_steps_per_epoch`` caps an epoch (demos and
    benchmarks); None runs every window. ``threads`` sets torch's CPU threads in the training
    process (None keeps torch's default; 1 is fastest on a small, shared CPU).
    """

    store: str
    out: str
    windows: str | None = None
    task: str = "cls"
    modality: str = "both"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 5e-4
    lr_step_epoch: int = 20
    lr_gamma: float = 0.1
    optimizer: str = "adam"
    weight_decay: float = 0.0
    hflip: bool = True
    preprocessing: str = "reference"
    workers: int = 2
    threads: int | None = None
    device: str = "auto"
    precision: str | None = None
    compile: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    eval_batch_size: int | None = None
    max_steps_per_epoch: int | None = None
    balanced: bool = False
    window: WindowSpec = field(default_factory=WindowSpec)
    model: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.window, dict):
            self.window = WindowSpec(**self.window)
        self.check()
        if not self.variant:
            self.variant = variant_for(self.task, self.modality)

    def check(self) -> None:
        """Raise FmModelError naming the first option that is out of range."""
        def need(ok: bool, what: str, got: Any) -> None:
            if not ok:
                raise FmModelError(f"expected {what}, got {got!r}")

        need(self.task in TASKS, f"--task in {TASKS}", self.task)
        need(self.modality in MODALITIES, f"--modality in {MODALITIES}", self.modality)
        variant_for(self.task, self.modality)
        need(self.device in DEVICES, f"--device in {DEVICES}", self.device)
        need(self.precision is None or self.precision in PRECISIONS, f"--precision in {PRECISIONS}", self.precision)
        need(self.preprocessing in PREPROCESSINGS, f"--preprocessing in {PREPROCESSINGS}", self.preprocessing)
        need(self.optimizer in ("adam", "adamw", "sgd"), "--optimizer adam, adamw or sgd", self.optimizer)
        need(self.epochs >= 1, "--epochs >= 1", self.epochs)
        need(self.batch_size >= 1, "--batch-size >= 1", self.batch_size)
        need(self.lr > 0, "--lr > 0", self.lr)
        need(self.workers >= 0, "--workers >= 0", self.workers)
        need(self.threads is None or self.threads >= 1, "--threads >= 1", self.threads)
        need(0.0 <= self.val_fraction < 1.0, "--val-fraction in [0, 1)", self.val_fraction)
        need(self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "--max-steps >= 1",
             self.max_steps_per_epoch)
        w = self.window
        need(w.frames >= 1 and w.frame_step >= 1, "clip frames and frame step >= 1", (w.frames, w.frame_step))
        need(w.current_rows >= 1 and w.current_seconds > 0, "current rows >= 1 and seconds > 0",
             (w.current_rows, w.current_seconds))
        need(w.policy in POLICIES, f"--policy in {POLICIES}", w.policy)
        need(w.stride >= 1, "--stride >= 1", w.stride)

    @classmethod
    def with_defaults(cls, store: str, out: str, task: str = "cls", modality: str = "both",
                      **options: Any) -> "TrainConfig":
        """Build a config from the options a user gave (None means "use the default").

        Window options (``frames``, ``frame_step``, ``current_rows``, ``current_seconds``,
        ``policy``, ``stride``) may be given flat; the clip shape defaults per modality.
        """
        frames, step = DEFAULT_CLIP.get(modality, DEFAULT_CLIP["both"])
        wkw: dict[str, Any] = {"frames": frames, "frame_step": step}
        for name in ("frames", "frame_step", "current_rows", "current_seconds", "policy", "stride"):
            if options.get(name) is not None:
                wkw[name] = options[name]
            options.pop(name, None)
        kw = {k: v for k, v in options.items() if v is not None}
        unknown = set(kw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise FmModelError(f"expected training options, got unknown {sorted(unknown)}")
        return cls(store=store, out=out, task=task, modality=modality, window=WindowSpec(**wkw), **kw)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from :meth:`to_dict` output; FmModelError on unknown or missing keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise FmModelError(f"expected training config keys, got unknown {sorted(unknown)}")
        missing = {"store", "out"} - set(d)
        if missing:
            raise FmModelError(f"expected training config keys {sorted(missing)}, got none")
        d = dict(d)
        if isinstance(d.get("window"), dict):
            wnames = {f.name for f in dataclasses.fields(WindowSpec)}
            bad = set(d["window"]) - wnames
            if bad:
                raise FmModelError(f"expected window keys {sorted(wnames)}, got unknown {sorted(bad)}")
            d["window"] = WindowSpec(**d["window"])
        return cls(**d)

    def window_params(self) -> dict[str, Any]:
        """Return the window-building parameters as ``fmdata.windows`` takes them."""
        return dataclasses.asdict(self.window)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the config as JSON to ``path`` atomically (temporary file, then rename)."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "TrainConfig":
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
