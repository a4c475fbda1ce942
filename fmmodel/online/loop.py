"""The decision loop of ``fmmodel watch``: every ``every`` seconds, cut a window, score it, update
the alarms, report.

One thread decides; producers (:mod:`~fmmodel.online.replay`, :mod:`~fmmodel.online.live`) fill
the rings from their own threads. A tick at stream time ``T``:

1. (virtual clock) the replay releases everything due by ``T``;
2. the health conditions are judged (:mod:`~fmmodel.online.health`); their alarms are reported;
3. unless a health alarm suppresses decisions, the window of the newest frame whose current
   history is complete is cut (:mod:`~fmmodel.online.cutting`) and scored: a new anchor frame
   only (the same anchor again is a *stale* tick, no decision);
4. the score goes to the process alarm's :class:`~fmmodel.scoring.alarms.AlarmState` (a
   suppressed or stale tick as NaN: a skipped decision); events go to the writers
   (:mod:`~fmmodel.online.publish`), with a snapshot on each raise;
5. metrics: a JSON line every ``metrics_every`` seconds of real time, the status line.

The next tick is the next multiple of ``every`` after the start that has not yet passed: when a
decision took longer than the interval, the ticks it overlapped are *skipped* (counted), never
queued, so the loop never falls behind the stream. The virtual clock moves from tick to tick
and nothing is ever skipped: a ``--speed max`` replay decides the same every time.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from fmmodel.model.user_models import user_code
from fmmodel.online.clocks import Clock
from fmmodel.online.cutting import Cut, WindowCutter
from fmmodel.online.health import HealthMonitor
from fmmodel.online.metrics import LiveMetrics
from fmmodel.online.publish import mask_rle, wall_time, write_snapshot
from fmmodel.online.replay import ReplaySource
from fmmodel.online.rings import CurrentRing, FrameRing
from fmmodel.protocol import ORIENTATION_REFERENCE
from fmmodel.runtime.precision import autocast
from fmmodel.scoring.alarms import RAISE, AlarmEvent, AlarmPolicy, AlarmState
from fmmodel.scoring.metrics import predicted_abnormal, probabilities, window_probability_from_mask

STATUS_EVERY = 0.25  # real seconds between status-line updates


class Writer(Protocol):
    """Where events go (an events file, an MQTT topic)."""

    def write(self, event: dict[str, Any]) -> None: ...


class Scorer:
    """A model as a function of one window: ``model(video=..., current=...)`` returning two-class logits
    (B, 2), or mask logits (B, 2, H', W') for ``task`` "seg", for the ``inputs`` it reads. Any callable
    will do (a module, an exported program). Returns P(abnormal) and, for segmentation, the
    predicted mask in store orientation (H, W)."""

    def __init__(self, model: Callable[..., torch.Tensor], *, inputs: Sequence[str], task: str, orientation: str,
                 device: torch.device, precision: str, name: str, user: bool) -> None:
        self.model, self.inputs, self.task, self.orientation = model, tuple(inputs), task, orientation
        self.device, self.precision, self.name, self.user = device, precision, name, user
        self.calls = 0

    @torch.no_grad()
    def __call__(self, cut: Cut) -> tuple[float, np.ndarray | None]:
        kw = {}
        if "video" in self.inputs:
            assert cut.video is not None
            kw["video"] = torch.from_numpy(cut.video).to(self.device)
        if "current" in self.inputs:
            assert cut.current is not None
            kw["current"] = torch.from_numpy(cut.current).to(self.device)
        self.calls += 1
        guard = user_code(self.name, f"watch decision {self.calls}") if self.user else contextlib.nullcontext()
        with autocast(self.device, self.precision), guard:
            logits = self.model(**kw)
        p = probabilities(logits.float())
        if self.task != "seg":
            return float(p[0]), None
        mask = predicted_abnormal(p[0]).to(torch.uint8).cpu().numpy()
        return float(window_probability_from_mask(p)[0]), (mask.T if self.orientation == ORIENTATION_REFERENCE
                                                            else mask)


@dataclass
class Decision:
    """One tick's outcome (kept by the loop for callers that ask: tests, the alarm measurement)."""

    time: float
    frame: int
    score: float
    latency: float
    age: float


@dataclass
class LoopResult:
    """What a loop run did: its decisions (when kept), events, the final metrics."""

    decisions: list[Decision] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


class DecisionLoop:
    """The loop over ticks (module docstring). ``origin`` is the Unix time of stream time 0 (live
    sources; None for a replay, whose times are the store's); ``finite`` producers end the loop when
    done; ``duration`` (stream seconds) ends it too."""

    def __init__(self, *, clock: Clock, cutter: WindowCutter, scorer: Scorer, frames: FrameRing | None,
                 current: CurrentRing | None, replay: ReplaySource | None, every: float, policy: AlarmPolicy,
                 health: HealthMonitor, metrics: LiveMetrics, writers: Sequence[Writer], scores: Writer | None,
                 snapshots: str | None, origin: float | None, finite: Sequence[Any], duration: float | None,
                 metrics_every: float, on_metrics: Callable[[str, dict[str, Any]], None] | None,
                 on_status: Callable[[dict[str, Any]], None] | None, keep_decisions: bool,
                 started: str, fps: float | None) -> None:
        self.clock, self.cutter, self.scorer = clock, cutter, scorer
        self.frames, self.current, self.replay = frames, current, replay
        self.every, self.health, self.metrics = float(every), health, metrics
        self.alarm = AlarmState(policy)
        self.writers, self.scores, self.snapshots, self.origin = list(writers), scores, snapshots, origin
        self.finite, self.duration = list(finite), duration
        self.metrics_every, self.on_metrics, self.on_status = metrics_every, on_metrics, on_status
        self.keep, self.started, self.fps = keep_decisions, started, fps
        self.result = LoopResult()
        self.last_frame: int | None = None
        self.last_latency: float | None = None
        self.last_score: float | None = None
        self.start = clock.now()

    # -- reporting ------------------------------------------------------------------------------------
    def _event(self, kind: str, name: str, e: AlarmEvent, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        d = {"type": kind, "name": name, **e.to_dict(), **(extra or {})}
        if self.origin is not None:
            d["wall"] = wall_time(self.origin + e.time)
        self.result.events.append(d)
        for w in self.writers:
            w.write(d)
        return d

    def _state(self) -> dict[str, Any]:
        now = self.clock.now()
        frames_in = self.frames.count if self.frames is not None else 0
        dropped = 0
        if self.frames is not None and self.fps and frames_in:
            with self.frames.lock:
                _, _, stamps, _ = self.frames.ordered()
            first = self._first_stamp if self._first_stamp is not None else stamps[0]
            dropped = max(0, int(round((stamps[-1] - first) * self.fps)) + 1 - frames_in)
        self.metrics.counts["frames_in"], self.metrics.counts["frames_dropped"] = frames_in, dropped
        if self.current is not None:
            self.metrics.counts["current_rows_in"] = self.current.count
            self.metrics.counts["current_rows_bad"] = self.current.bad_rows
        return {"stream_time": round(now, 3), "origin": self.origin, "score": self.last_score, "alarm": self.alarm.active,
                "health": self.health.active(), "health_checked": list(self.health.states),
                "started": self.started}

    _first_stamp: float | None = None

    def snapshot(self) -> dict[str, Any]:
        """The metrics now (the loop's thread only)."""
        return self.metrics.snapshot(**self._state())

    def latest(self) -> dict[str, Any]:
        """The metrics of the loop's latest snapshot, at most STATUS_EVERY seconds old (what the
        Prometheus endpoint serves, from its own thread)."""
        with self.metrics.lock:
            return dict(self.metrics.last)

    # -- one tick -------------------------------------------------------------------------------------
    def tick(self, t: float) -> None:
        """The decision at stream time ``t`` (module docstring)."""
        if self.clock.virtual and self.replay is not None:
            self.replay.advance(t, self.frames, self.current)
        if self._first_stamp is None and self.frames is not None and self.frames.count:
            with self.frames.lock:
                self._first_stamp = float(self.frames.ordered()[2][0])
        now = self.clock.now()
        for name, e in self.health.check(now, self.frames, self.current, self.last_latency):
            self._event("health", name, e)
            if e.kind == RAISE:
                self.metrics.count("health_raised")
        if self.health.blocks_decisions:
            self.metrics.count("suppressed")
            self.alarm.update(now, math.nan)
            return
        started = time.perf_counter()
        horizon = now if self.current is None or not self.cutter.reads_current else min(
            now, self.current.complete_until)
        cut = self.cutter.cut(self.frames, self.current, horizon)
        if cut is None or (self.frames is not None and cut.frame == self.last_frame):
            self.metrics.count("stale")
            self.alarm.update(now, math.nan)
            return
        score, mask = self.scorer(cut)
        events = self.alarm.update(now, score, frame=cut.frame)
        latency = time.perf_counter() - started
        age = self.clock.now() - cut.arrival
        self.last_frame, self.last_latency, self.last_score = cut.frame, latency, score
        self.metrics.decision(latency, age)
        if self.keep:
            self.result.decisions.append(Decision(now, cut.frame, score, latency, age))
        if self.scores is not None:
            self.scores.write({"time": now, "frame": cut.frame, "stamp": cut.stamp, "score": score,
                               "latency_ms": latency * 1e3, "age_s": age})
        for e in events:
            extra: dict[str, Any] = {}
            if mask is not None:
                extra["mask"] = mask_rle(mask)
            if e.kind == RAISE:
                self.metrics.count("alarms_raised")
                if self.snapshots and cut.image is not None:
                    extra["snapshot"] = write_snapshot(
                        self.snapshots, f"{self.started}-alarm-{e.alarm:04d}", cut.image, mask,
                        f"alarm {e.alarm} frame {cut.frame} t={now:.2f}s score {score:.3f}")
            self._event("process", "process", e, extra)

    # -- the loop -------------------------------------------------------------------------------------
    def _finished(self, t: float) -> bool:
        if self.duration is not None and t - self.start >= self.duration:
            return True
        return bool(self.finite) and all(getattr(p, "done", False) for p in self.finite)

    def run(self) -> LoopResult:
        """Tick until the finite sources are done, ``duration`` has passed, or Ctrl-C (then
        ``result.interrupted``, and KeyboardInterrupt propagates after the final metrics)."""
        k, t = 0, self.start
        last_metrics = last_status = time.monotonic()
        self.snapshot()
        try:
            while True:
                self.clock.wait_until(t)
                self.tick(t)
                wall = time.monotonic()
                if wall - last_status >= STATUS_EVERY:  # also refreshes what latest() serves
                    snap = self.snapshot()
                    if self.on_status is not None:
                        self.on_status(snap)
                    last_status = wall
                if self.on_metrics is not None and self.metrics_every > 0 and wall - last_metrics >= self.metrics_every:
                    snap = self.snapshot()
                    self.on_metrics("metrics", snap)
                    last_metrics = wall
                if self._finished(t):
                    break
                k += 1  # ticks at start + k * every: no rounding error builds up
                late = self.clock.now() - (self.start + k * self.every)
                if not self.clock.virtual and late > 0:  # the model was busy: skip, never queue
                    missed = int(math.floor(late / self.every)) + 1
                    self.metrics.count("skipped", missed)
                    k += missed
                t = self.start + k * self.every
        except KeyboardInterrupt:
            self.result.interrupted = True
            raise
        finally:
            self.result.metrics = self.snapshot()
            if self.on_metrics is not None:
                self.on_metrics("final", self.result.metrics)
        return self.result
