"""How long a run will take, measured on its first batches and said once; and when to use a preset.

:class:`RunClock` times the first batches of the first epoch a process trains (the first batch
alone pays for warm-up: allocation, the resident gather's first call, thread pools, so the
estimate starts after it) and then logs once the seconds per batch and the time the run's
remaining batches will take. After every epoch it says how long the remaining epochs will take
at the measured pace of whole epochs (validation included). A reference-size FmFormer on the
CPU (about 23 s a batch of 64x64 frames on two cores: hours to days) also gets, once, its
estimate and what ``--preset cpu`` would take on the same store (:func:`cpu_advice`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fmmodel.runs.presets import PRESETS

PROBE_BATCHES = 5  # batches timed after the first before the estimate is said
# the frames (height x width) at which a preset's windows_per_s were measured
MEASURED_FRAME_PIXELS = 64 * 64


def format_duration(seconds: float) -> str:
    """``seconds`` as people say it: "40 s", "12 min", "3.5 h", "2.1 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass
class RunClock:
    """Estimates of a run's remaining time. ``batch_done`` after every training step,
    ``epoch_done`` after every epoch; ``log`` prints a line (rank 0); ``advice``, given the
    measured seconds per batch and the run's estimated seconds, returns a line to add (or None)."""

    steps_per_epoch: int
    epochs: int
    log: Callable[[str], None]
    advice: Callable[[float, float], str | None] | None = None
    _first: float | None = None
    _said: bool = False
    _epochs: list[float] = field(default_factory=list)

    def batch_done(self, epoch: int, step: int) -> None:
        """Note that ``step`` (0-based) of ``epoch`` (0-based) finished; say the estimate once."""
        if self._said:
            return
        now = time.perf_counter()
        if step == 0:
            self._first = now
            return
        if self._first is None or step < min(PROBE_BATCHES, self.steps_per_epoch - 1):
            return
        self._said = True
        per_batch = (now - self._first) / step
        left = (self.steps_per_epoch - step - 1) + (self.epochs - epoch - 1) * self.steps_per_epoch
        total = left * per_batch
        timed = "batch 2" if step == 1 else f"batches 2-{step + 1}"
        self.log(f"timing: {per_batch:.3g} s a batch over {timed}; {self.steps_per_epoch:,} batches an "
                 f"epoch: about {format_duration(self.steps_per_epoch * per_batch)} an epoch and "
                 f"{format_duration(total)} for the remaining {left:,} batch(es) (validation not included)")
        line = self.advice(per_batch, total) if self.advice is not None else None
        if line:
            self.log(line)

    def epoch_done(self, epoch: int, seconds: float) -> str:
        """Note that ``epoch`` (0-based) took ``seconds``; return "about T left" for the epochs to
        come at the mean pace of the epochs this process ran ("" after the last)."""
        self._epochs.append(seconds)
        left = self.epochs - epoch - 1
        if left <= 0:
            return ""
        return f"about {format_duration(left * sum(self._epochs) / len(self._epochs))} left"


def cpu_advice(*, train_windows: int, stride: int, frame_pixels: int) -> Callable[[float, float], str | None]:
    """The advice for a reference-size model on the CPU: its estimate, and how long ``--preset cpu``
    would take on this store: its training windows (``train_windows`` of the training split at
    ``stride``, taken at the preset's stride) for its epochs, at the preset's measured speed
    scaled by the frames' pixels (``frame_pixels``)."""
    preset = PRESETS["cpu"]
    rate = float(preset.windows_per_s or 1.0) * MEASURED_FRAME_PIXELS / max(frame_pixels, 1)
    windows = train_windows * stride / int(preset.window["stride"])
    seconds = windows * int(preset.train["epochs"]) / rate

    def advice(per_batch: float, total: float) -> str | None:
        return (f"training a reference-size FmFormer on the CPU: {per_batch:.3g} s a batch, about "
                f"{format_duration(total)} in all; --preset cpu trains a small model on this store in about "
                f"{format_duration(max(seconds, 60))} (docs/training.md, \"Presets\")")
    return advice
