"""Health alarms: the inputs and the loop themselves, apart from the process alarms about the furnace.

Each is a condition checked at every tick of the decision loop and fed, as a score of 1 (holds)
or 0, to its own :class:`fmmodel.scoring.alarms.AlarmState` (raise at 0.5 at once, clear after
``clear_after`` seconds of not holding), so health alarms are raised and cleared by the same state
machine as process alarms and reported as the same events, with ``type`` "health":

===============  ==================================================================================
``no_frame``      no new frame for more than ``frame_timeout`` seconds (a camera or stream stalled)
``frozen``        the same image for more than ``frozen_after`` seconds (a frozen camera repeats its frame)
``current_gap``   no new current row for more than ``current_timeout`` seconds
``clock_skew``    the current's clock and the video's disagree by more than ``max_skew`` seconds: the
                  newest row's arrival minus its stamp, less the newest frame's (each clock's lag)
``dropped``       more than ``max_drop`` of the frames the frame rate promises over the
                  ``drop_window`` seconds of frame times before the newest frame did not come
``latency``       the last decision took longer than ``latency_budget`` seconds
===============  ==================================================================================

While ``no_frame`` or ``frozen`` holds (for a model that reads video) or ``current_gap`` (for one
that reads current), decisions are *suppressed*: the model's score on stale inputs is no evidence
about the furnace, so the process alarm sees a skipped decision (NaN) and neither raises nor
clears on it. A condition that cannot be judged yet (no frame rate known, a stream shorter than
the drop window) is a skipped decision for its own state machine.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fmmodel.errors import FmModelError
from fmmodel.online.rings import CurrentRing, FrameRing
from fmmodel.scoring.alarms import AlarmEvent, AlarmPolicy, AlarmState

HEALTH_ALARMS = ("no_frame", "frozen", "current_gap", "clock_skew", "dropped", "latency")


@dataclass(frozen=True)
class HealthLimits:
    """When a health alarm is raised (seconds, or a share for ``max_drop``); ``latency_budget`` None
    means the decision interval. ``clear_after``: how long a condition must not hold before its alarm
    clears (a hold against flapping)."""

    frame_timeout: float = 1.0
    frozen_after: float = 1.0
    current_timeout: float = 1.5
    max_skew: float = 1.0
    max_drop: float = 0.05
    drop_window: float = 2.0
    latency_budget: float | None = None
    clear_after: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is None and name == "latency_budget":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise FmModelError(f"expected a finite number > 0, got {value!r}", field=name)
        if self.max_drop >= 1:
            raise FmModelError(f"expected a share of frames below 1, got {self.max_drop}", field="max_drop")

    def to_dict(self) -> dict[str, Any]:
        """The limits as a JSON-able dict."""
        return asdict(self)


class HealthMonitor:
    """The health conditions of one watch (the inputs it has: ``video``, ``current``) and their alarms.

    ``fps``: the frame rate the video promises (None: the drop alarm is not judged); ``every``: the
    decision interval (the default latency budget).
    """

    def __init__(self, limits: HealthLimits, *, video: bool, current: bool, fps: float | None, every: float,
                 reads_video: bool, reads_current: bool) -> None:
        self.limits, self.fps = limits, fps
        self.budget = limits.latency_budget or every
        names = ["latency"]
        if video:
            names += ["no_frame", "frozen", "dropped"]
        if current:
            names.append("current_gap")
        if video and current:
            names.append("clock_skew")
        policy = AlarmPolicy(raise_threshold=0.5, clear_threshold=0.5, hold=limits.clear_after)
        self.states = {name: AlarmState(policy) for name in HEALTH_ALARMS if name in names}
        self.blocking: set[str] = {n for n in ("no_frame", "frozen") if reads_video and n in self.states}
        if reads_current and "current_gap" in self.states:
            self.blocking.add("current_gap")
        self.start: float | None = None

    def active(self) -> list[str]:
        """Names of the health alarms raised now."""
        return [name for name, state in self.states.items() if state.active]

    @property
    def blocks_decisions(self) -> bool:
        """Whether an alarm that suppresses decisions is raised."""
        return any(self.states[name].active for name in self.blocking)

    def check(self, now: float, frames: FrameRing | None, current: CurrentRing | None,
              latency: float | None) -> list[tuple[str, AlarmEvent]]:
        """Judge every condition at stream time ``now``; return the (name, event) pairs it raised or cleared."""
        if self.start is None:
            self.start = now
        values = {"latency": math.nan if latency is None else float(latency > self.budget)}
        if frames is not None:
            values.update(self._video(now, frames))
        if current is not None:
            values["current_gap"] = float(now - _last(current.last_arrival, self.start) > self.limits.current_timeout)
        if frames is not None and current is not None:
            skew = current.last_lag - frames.last_lag
            values["clock_skew"] = float(abs(skew) > self.limits.max_skew) if math.isfinite(skew) else math.nan
        events = []
        for name, state in self.states.items():
            for event in state.update(now, values.get(name, math.nan)):
                events.append((name, event))
        return events

    def _video(self, now: float, frames: FrameRing) -> dict[str, float]:
        lim = self.limits
        assert self.start is not None
        out = {"no_frame": float(now - _last(frames.last_arrival, self.start) > lim.frame_timeout)}
        with frames.lock:
            frozen = frames.same_run >= 2 and now - frames.same_since > lim.frozen_after
            _, _, stamps, _ = frames.ordered()
        out["frozen"] = float(frozen) if frames.images is not None else math.nan
        out["dropped"] = math.nan
        # over [newest - window, newest): the newest stamp's frames may still be coming (a V2 second), and
        # the oldest held stamp's may be partly gone (or the stream began inside it): it lies before the window
        if self.fps and len(stamps) and stamps[-1] - lim.drop_window > stamps[0]:
            lo, hi = np.searchsorted(stamps, [stamps[-1] - lim.drop_window, stamps[-1]], side="left")
            out["dropped"] = float(1.0 - (hi - lo) / (lim.drop_window * self.fps) > lim.max_drop)
        return out

    def summary(self) -> dict[str, Any]:
        """The limits and the alarms raised now."""
        return {"limits": self.limits.to_dict(), "latency_budget": self.budget, "active": self.active()}


def _last(arrival: float, start: float) -> float:
    """The time of the last live arrival, or the watch's start when nothing arrived live yet."""
    return arrival if math.isfinite(arrival) else start
