"""Alarms from a stream of anomaly scores: the policy, and the state machine that applies it.

A model scores the furnace every half second or so; each score is a *decision* at a time in
seconds. :class:`AlarmPolicy` says how decisions become alarms (docs/online.md, "Alarm policy"):

1. **Smoothing** turns the raw score ``s`` into ``v``: ``"none"`` (``v = s``); ``"k_of_n"``
   (``v`` is the k-th largest of the last n scores, so ``v >= raise_threshold`` exactly when at
   least k of the last n decisions are at or above it; ``-inf`` while fewer than k decisions have
   been seen); ``"ema"`` (an exponential average whose weight halves every ``half_life``
   seconds, so irregular and skipped decisions weigh by the time they cover).
2. **Hysteresis**: an alarm is raised on ``v >= raise_threshold`` and cleared on
   ``v < clear_threshold`` (``clear_threshold <= raise_threshold``).
3. **On-delay** (Prometheus' ``for``): the raise condition must hold at every decision for
   ``on_delay`` seconds, measured from the first decision where it held, before the alarm is
   raised. **Hold** (Prometheus' ``keep_firing_for``): the clear condition must hold at every
   decision for ``hold`` seconds before the alarm clears; a decision at or above the clear
   threshold meanwhile keeps the alarm firing and restarts the wait.

A decision whose score is NaN (a dropout: no video, no current) is skipped: no state changes;
missing decisions do not interrupt an on-delay or a hold. Decision times must increase.

:class:`AlarmState` applies a policy one decision at a time (``fmmodel watch``);
:func:`alarm_events` applies it to a whole recording with numpy and gives exactly the same
events (tested). Only numpy and the standard library: no torch.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmmodel.errors import FmModelError

SMOOTHINGS = ("none", "k_of_n", "ema")
RAISE, CLEAR = "raise", "clear"


def _number(name: str, value: Any, *, what: str = "a finite number") -> float:
    """``value`` as a finite float; FmModelError naming ``name`` otherwise (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise FmModelError(f"expected {what}, got {value!r}", field=name)
    return float(value)


def _count(name: str, value: Any) -> int:
    """``value`` as an int (an integral float such as 3.0 from JSON is accepted)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise FmModelError(f"expected a whole number, got {value!r}", field=name)


@dataclass(frozen=True)
class AlarmPolicy:
    """How decisions (time, score) become alarms; the module's docstring gives the rules.

    The defaults are plain thresholding at 0.5: an alarm for every run of decisions with a
    score at or above 0.5, cleared at the first decision below it. Times are in seconds.
    Invalid values raise :class:`~fmmodel.errors.FmModelError` whose ``field`` names the parameter.
    """

    raise_threshold: float = 0.5
    clear_threshold: float = 0.5
    smoothing: str = "none"
    k: int = 1
    n: int = 1
    half_life: float = 1.0
    on_delay: float = 0.0
    hold: float = 0.0

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # the dataclass is frozen
        put("raise_threshold", _number("raise_threshold", self.raise_threshold))
        put("clear_threshold", _number("clear_threshold", self.clear_threshold))
        if self.clear_threshold > self.raise_threshold:
            raise FmModelError(f"expected a clear threshold <= the raise threshold {self.raise_threshold}, "
                               f"got {self.clear_threshold}", field="clear_threshold")
        if self.smoothing not in SMOOTHINGS:
            raise FmModelError(f"expected a smoothing in {SMOOTHINGS}, got {self.smoothing!r}", field="smoothing")
        put("n", _count("n", self.n))
        put("k", _count("k", self.k))
        if self.n < 1:
            raise FmModelError(f"expected n >= 1 decisions, got {self.n}", field="n")
        if not 1 <= self.k <= self.n:
            raise FmModelError(f"expected 1 <= k <= n = {self.n}, got k = {self.k}", field="k")
        put("half_life", _number("half_life", self.half_life, what="a half-life > 0 seconds"))
        if self.half_life <= 0:
            raise FmModelError(f"expected a half-life > 0 seconds, got {self.half_life}", field="half_life")
        for name in ("on_delay", "hold"):
            value = _number(name, getattr(self, name), what="a finite number of seconds >= 0")
            if value < 0:
                raise FmModelError(f"expected a finite number of seconds >= 0, got {value}", field=name)
            put(name, value)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a JSON-able dict (what reports and configs store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlarmPolicy:
        """Build a policy from a dict of some of its fields (the others keep their defaults);
        an unknown key is refused, so that a misspelt setting is not silently ignored."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise FmModelError(f"expected alarm policy keys among {names}, got {unknown[0]!r}", field=unknown[0])
        return cls(**d)


# The policy ``fmmodel watch`` applies unless told otherwise (its --raise-threshold ... --hold options
# override single fields). Chosen by measurement: docs/online.md, "Choosing the defaults".
WATCH_POLICY = AlarmPolicy(raise_threshold=0.7, clear_threshold=0.3, smoothing="k_of_n", k=3, n=5, on_delay=0.5,
                           hold=2.0)
# seconds between ``fmmodel watch``'s decisions unless told otherwise (its --every); the decisions
# ``fmmodel alarms`` and the benchmark make from stored predictions follow it too
WATCH_EVERY = 0.5


@dataclass(frozen=True)
class AlarmEvent:
    """An alarm raised or cleared at a decision.

    ``kind`` is "raise" or "clear"; ``time`` the decision's time (seconds); ``alarm`` counts the
    alarms of one state machine from 0 (a raise and its clear share it); ``score`` and
    ``smoothed`` are the decision's raw and smoothed scores; ``raised_at`` the alarm's raise
    time; ``frame`` the decision's anchor frame when the caller gave one. On a clear,
    ``peak_score`` is the highest raw score from the raise to the clear and ``peak_time`` when
    it first occurred (None on a raise).
    """

    kind: str
    time: float
    alarm: int
    score: float
    smoothed: float
    raised_at: float
    frame: int | None = None
    peak_score: float | None = None
    peak_time: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from the raise to this clear; None for a raise."""
        return self.time - self.raised_at if self.kind == CLEAR else None

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-able dict (``smoothed`` -inf, before k decisions, becomes None)."""
        d = dataclasses.asdict(self)
        d["smoothed"] = self.smoothed if math.isfinite(self.smoothed) else None
        return d


def _ema_step(previous: float, score: float, dt: float, half_life: float) -> float:
    """One step of the time-aware EMA; the batch and the streaming paths share this arithmetic
    so that they agree to the last bit."""
    alpha = 1.0 - 2.0 ** (-dt / half_life)
    return previous + alpha * (score - previous)


class AlarmState:
    """The alarm state machine of one stream (one recording, one camera), fed one decision at a time.

    ``update(t, score, frame=...)`` returns the events that decision causes (none or one).
    ``active`` says whether an alarm is raised now; ``smoothed`` is the last smoothed score
    (None before the first scored decision).
    """

    def __init__(self, policy: AlarmPolicy) -> None:
        self.policy = policy
        self._last_t: float | None = None  # last decision, scored or not: times must increase
        self._last_scored_t: float | None = None  # last decision with a score: the EMA's dt
        self._window: deque[float] = deque(maxlen=policy.n)
        self.smoothed: float | None = None
        self._phase = "idle"  # idle | pending | firing | holding
        self._since = 0.0  # when the pending raise or the holding clear began
        self._alarms = 0
        self._raised: AlarmEvent | None = None
        self._peak = (-math.inf, 0.0)

    @property
    def active(self) -> bool:
        """Whether an alarm is raised (firing, or holding before its clear)."""
        return self._phase in ("firing", "holding")

    def _smooth(self, t: float, score: float) -> float:
        p = self.policy
        if p.smoothing == "k_of_n":
            self._window.append(score)
            return sorted(self._window, reverse=True)[p.k - 1] if len(self._window) >= p.k else -math.inf
        if p.smoothing == "ema" and self.smoothed is not None and self._last_scored_t is not None:
            return _ema_step(self.smoothed, score, t - self._last_scored_t, p.half_life)
        return score

    def update(self, t: float, score: float, *, frame: int | None = None) -> list[AlarmEvent]:
        """Feed the decision at time ``t`` (seconds, increasing) with ``score`` (NaN: skipped) and
        its anchor ``frame``; return the alarm events it causes."""
        t = _number("t", t, what="a finite decision time in seconds")
        if self._last_t is not None and not t > self._last_t:
            raise FmModelError(f"expected decision times increasing, got {t} after {self._last_t}", field="t")
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or math.isinf(float(score)):
            raise FmModelError(f"expected a finite score or NaN (no decision), got {score!r}", field="score")
        self._last_t, s = t, float(score)
        if math.isnan(s):
            return []
        v = self._smooth(t, s)
        self.smoothed, self._last_scored_t = v, t
        p = self.policy
        if self._phase in ("idle", "pending"):
            if not v >= p.raise_threshold:
                self._phase = "idle"
                return []
            if self._phase == "idle":
                self._phase, self._since = "pending", t
            if not t - self._since >= p.on_delay:
                return []
            self._phase, self._peak = "firing", (s, t)
            self._raised = AlarmEvent(RAISE, t, self._alarms, s, v, t, frame)
            return [self._raised]
        if s > self._peak[0]:
            self._peak = (s, t)
        if not v < p.clear_threshold:
            self._phase = "firing"
            return []
        if self._phase == "firing":
            self._phase, self._since = "holding", t
        if not t - self._since >= p.hold:
            return []
        assert self._raised is not None
        cleared = AlarmEvent(CLEAR, t, self._alarms, s, v, self._raised.time, frame, *self._peak)
        self._phase, self._raised, self._alarms = "idle", None, self._alarms + 1
        return [cleared]


def _decisions(times: Any, scores: Any, frames: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check and convert the batch inputs: 1-D, equal lengths, finite increasing times, no inf scores."""
    t = np.asarray(times, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 1 or s.shape != t.shape:
        raise FmModelError(f"expected 1-D times and scores of equal length, got shapes {t.shape} and {s.shape}",
                           field="scores")
    if not np.isfinite(t).all():
        raise FmModelError(f"expected finite decision times, got {t[~np.isfinite(t)][0]}", field="times")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        raise FmModelError(f"expected decision times increasing, got {t[bad[0] + 1]} after {t[bad[0]]}",
                           field="times")
    if np.isinf(s).any():
        raise FmModelError(f"expected finite scores or NaN (no decision), got {s[np.isinf(s)][0]}", field="scores")
    f = None
    if frames is not None:
        f = np.asarray(frames)
        if f.shape != t.shape or not (f.size == 0 or np.issubdtype(f.dtype, np.integer)):
            raise FmModelError(f"expected one integer frame per decision ({t.size}), got shape {f.shape} of "
                               f"{f.dtype}", field="frames")
    return t, s, f


def _smoothed(t: np.ndarray, s: np.ndarray, policy: AlarmPolicy) -> np.ndarray:
    """The smoothed scores of scored decisions only (no NaN in ``s``)."""
    if policy.smoothing == "none" or s.size == 0:
        return s.copy()
    if policy.smoothing == "k_of_n":
        padded = np.concatenate([np.full(policy.n - 1, -np.inf), s])
        windows = np.lib.stride_tricks.sliding_window_view(padded, policy.n)
        # the k-th largest is an exact selection (no arithmetic), equal to the streaming sort's
        return -np.partition(-windows, policy.k - 1, axis=1)[:, policy.k - 1]
    out = np.empty_like(s)
    v, tt, ss = float(s[0]), t.tolist(), s.tolist()
    out[0] = v
    for i in range(1, len(ss)):  # a recursion: a Python loop over floats, the streaming arithmetic
        v = _ema_step(v, ss[i], tt[i] - tt[i - 1], policy.half_life)
        out[i] = v
    return out


def smooth_scores(times: Any, scores: Any, policy: AlarmPolicy) -> np.ndarray:
    """Return the smoothed score of every decision (float64; NaN where the score is NaN, -inf for
    k-of-n before k scored decisions), as :class:`AlarmState` computes it."""
    t, s, _ = _decisions(times, scores, None)
    scored = ~np.isnan(s)
    out = np.full(s.shape, np.nan)
    out[scored] = _smoothed(t[scored], s[scored], policy)
    return out


def _next_true(mask: np.ndarray) -> np.ndarray:
    """For each index i, the first j >= i where ``mask`` is true (len(mask) when none); one extra
    entry at the end, so that index len(mask) is valid too."""
    n = mask.size
    idx = np.where(mask, np.arange(n), n)
    return np.append(np.minimum.accumulate(idx[::-1])[::-1], n)


def _first_after(t: np.ndarray, start: int, stop: int, wait: float) -> int | None:
    """The first index m in [start, stop) with ``t[m] - t[start] >= wait`` (the streaming
    comparison, element by element), or None."""
    hits = np.flatnonzero(t[start:stop] - t[start] >= wait)
    return start + int(hits[0]) if hits.size else None


def alarm_events(times: Any, scores: Any, policy: AlarmPolicy, *, frames: Any = None) -> list[AlarmEvent]:
    """Return the alarm events of one recording's decisions, exactly those that feeding
    :class:`AlarmState` one decision at a time gives.

    ``times`` (seconds, increasing) and ``scores`` (NaN: a skipped decision) are 1-D of equal
    length; ``frames`` (optional) the decisions' anchor frames. An alarm still raised after the
    last decision has a raise and no clear. The state changes are found with numpy (runs of
    decisions above and below the thresholds), not decision by decision.
    """
    t_all, s_all, f_all = _decisions(times, scores, frames)
    scored = np.flatnonzero(~np.isnan(s_all))
    t, s = t_all[scored], s_all[scored]
    v = _smoothed(t, s, policy)
    up, down = v >= policy.raise_threshold, v < policy.clear_threshold
    next_up, next_not_up = _next_true(up), _next_true(~up)
    next_down, next_not_down = _next_true(down), _next_true(~down)

    def frame(i: int) -> int | None:
        return None if f_all is None else int(f_all[scored[i]])

    events: list[AlarmEvent] = []
    n, i = s.size, 0
    while i < n:
        j = int(next_up[i])  # idle: the next decision that could start a raise
        if j >= n:
            break
        end = int(next_not_up[j])
        m = _first_after(t, j, end, policy.on_delay)
        if m is None:
            i = end
            continue
        number = len(events) // 2
        events.append(AlarmEvent(RAISE, float(t[m]), number, float(s[m]), float(v[m]), float(t[m]), frame(m)))
        i = m + 1
        while True:  # firing: the next run below the clear threshold long enough to clear
            k = int(next_down[i])
            if k >= n:
                i = n
                break
            end = int(next_not_down[k])
            c = _first_after(t, k, end, policy.hold)
            if c is None:
                i = end
                continue
            peak = m + int(np.argmax(s[m:c + 1]))
            events.append(AlarmEvent(CLEAR, float(t[c]), number, float(s[c]), float(v[c]), float(t[m]), frame(c),
                                     float(s[peak]), float(t[peak])))
            i = c + 1
            break
    return events


def alarm_spans(events: Sequence[AlarmEvent], *, end: float) -> list[tuple[float, float]]:
    """Return the (raise, clear) times of each alarm in ``events`` (one recording's, in order);
    an alarm not cleared lasts until ``end``. Events that do not alternate raise, clear, raise...
    are refused."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for e in events:
        if (e.kind == RAISE) != (start is None):
            raise FmModelError(f"expected alarm events alternating raise and clear, got {e.kind!r} at {e.time}",
                               field="alarms")
        if e.kind == RAISE:
            start = e.time
        else:
            assert start is not None
            spans.append((start, e.time))
            start = None
    if start is not None:
        spans.append((start, max(start, float(end))))
    return spans
