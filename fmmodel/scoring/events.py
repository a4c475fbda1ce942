"""Alarms scored as events, the way an operator beside the furnace judges them.

An operator does not count frames: they ask whether each hot spot raised an alarm, how long
after it began, and how often the alarm went off for nothing. :func:`labelled_events` turns
frame labels into events (runs of abnormal frames per recording); :func:`score_alarms` matches
alarm raises to them and reports, per recording and overall (docs/online.md, "Scoring alarms
as events", states the rules and the facts relied on):

- **recall**: an event is detected when an alarm is raised inside its window
  ``[onset - early, offset + tolerance)``; the first such raise detects it;
- **delay**: that raise's time minus the onset (median, 90th percentile, max over detected
  events);
- **false alarms**: raises inside no event's window, per hour of normal time (the recording's
  time outside labelled events), with an exact one-sided Poisson 95% upper bound;
- **chatter**: a further raise of an already detected event within ``chatter_seconds`` of the
  clear of that event's previous alarm;
- **NAB score** (Numenta Anomaly Benchmark) for its three published weight profiles.

Callers pass arrays and alarm events (:mod:`fmmodel.scoring.alarms`); nothing here reads a store.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmmodel.errors import FmModelError
from fmmodel.scoring.alarms import RAISE, AlarmEvent, alarm_spans

# NAB's published profiles (its config/profiles.json): weights (A_TP, A_FP, A_FN) as magnitudes;
# a detection earns +A_TP at most, a false alarm costs up to A_FP, a missed window costs A_FN.
NAB_PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}
CONFIDENCE = 0.95


@dataclass(frozen=True, eq=False)
class LabelledEvents:
    """The labelled events of some recordings: event i is recording ``recording[i]``'s run of
    abnormal frames ``[onset_frame[i], offset_frame[i])``, in time ``[onset_time[i],
    offset_time[i])`` (seconds, the recording's clock). ``extent`` gives each recording's first
    time and end (its last frame's time plus one frame period); ``normal_seconds`` its time
    outside events. Events are ordered by recording, then onset.
    """

    recording: np.ndarray
    onset_time: np.ndarray
    offset_time: np.ndarray
    onset_frame: np.ndarray
    offset_frame: np.ndarray
    extent: dict[int, tuple[float, float]]
    normal_seconds: dict[int, float]

    def __len__(self) -> int:
        return int(self.recording.size)

    def of(self, recording: int) -> np.ndarray:
        """Return the indices of ``recording``'s events."""
        return np.flatnonzero(self.recording == recording)

    def to_dict(self) -> dict[str, Any]:
        """Return the events as JSON-able lists."""
        return {"events": [{"recording": int(r), "onset_time": float(a), "offset_time": float(b),
                            "onset_frame": int(fa), "offset_frame": int(fb)}
                           for r, a, b, fa, fb in zip(self.recording, self.onset_time, self.offset_time,
                                                      self.onset_frame, self.offset_frame)],
                "extent": {str(r): list(e) for r, e in self.extent.items()},
                "normal_seconds": {str(r): s for r, s in self.normal_seconds.items()}}


def labelled_events(frame_label: Any, frame_time: Any, recording: Any, *, frame: Any = None) -> LabelledEvents:
    """Return the events of frame labels: runs of 1s in ``frame_label`` (0 normal, 1 abnormal).

    ``frame_time`` (seconds, non-decreasing within a recording) and ``recording`` (integer ids)
    give each frame's place; ``frame`` (optional; default 0, 1, 2, ...) their frame numbers, so
    that a subset of a store's frames (the test frames) keeps its numbers. Runs never cross a
    change of recording nor a jump in frame numbers (a gap). An event's offset is the time of the
    first normal frame after it, or, at the end of a gapless segment, its last frame's time plus
    the segment's frame period (its time span over its frame count less one).
    """
    lab = np.asarray(frame_label)
    t = np.asarray(frame_time, dtype=np.float64)
    rec = np.asarray(recording)
    f = np.arange(lab.size, dtype=np.int64) if frame is None else np.asarray(frame)
    for name, a in (("frame_time", t), ("recording", rec), ("frame", f)):
        if a.ndim != 1 or a.size != lab.size or lab.ndim != 1:
            raise FmModelError(f"expected one value per frame label ({lab.size}), got shape {a.shape}", field=name)
    for name, a in (("recording", rec), ("frame", f)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise FmModelError(f"expected integers, got dtype {a.dtype}", field=name)
    if lab.size and not np.isin(lab, (0, 1)).all():
        raise FmModelError(f"expected frame labels 0 or 1, got {lab[~np.isin(lab, (0, 1))][0]!r}",
                           field="frame_label")
    if not np.isfinite(t).all():
        raise FmModelError(f"expected finite frame times, got {t[~np.isfinite(t)][0]}", field="frame_time")
    lab, rec, f = lab.astype(bool), rec.astype(np.int64), f.astype(np.int64)
    # segments: gapless runs of one recording's frames
    cut = np.flatnonzero((rec[1:] != rec[:-1]) | (f[1:] != f[:-1] + 1)) + 1
    starts = np.concatenate([[0], cut]) if lab.size else np.zeros(0, np.int64)
    stops = np.append(cut, lab.size) if lab.size else np.zeros(0, np.int64)
    back = np.flatnonzero(np.diff(t) < 0)
    back = back[~np.isin(back + 1, starts)]
    if back.size:
        i = int(back[0])
        raise FmModelError(f"expected frame times non-decreasing within a recording, got {t[i + 1]} after {t[i]} "
                           f"(frame {f[i + 1]})", field="frame_time")
    count = stops - starts
    period = np.where(count > 1, (t[stops - 1] - t[starts]) / np.maximum(count - 1, 1), 0.0)
    seg_end_time = t[stops - 1] + period if lab.size else np.zeros(0)
    seg = np.repeat(np.arange(starts.size), count)
    first, last = np.zeros(lab.size, bool), np.zeros(lab.size, bool)
    first[starts], last[stops - 1] = True, True
    on = np.flatnonzero(lab & (first | ~np.roll(lab, 1)))
    off = np.flatnonzero(lab & (last | ~np.roll(lab, -1)))  # each event's last frame
    inside = ~last[off]
    off_time = np.where(inside, t[np.minimum(off + 1, max(lab.size - 1, 0))], seg_end_time[seg[off]])
    extent: dict[int, tuple[float, float]] = {}
    normal: dict[int, float] = {}
    for a, end in zip(starts, seg_end_time):
        r = int(rec[a])
        lo, hi = extent.get(r, (float(t[a]), float(end)))
        extent[r] = (min(lo, float(t[a])), max(hi, float(end)))
        normal[r] = normal.get(r, 0.0) + float(end - t[a])
    for r, a, b in zip(rec[on], t[on], off_time):
        normal[int(r)] -= float(b - a)
    order = np.lexsort((t[on], rec[on]))
    return LabelledEvents(recording=rec[on][order], onset_time=t[on][order], offset_time=off_time[order],
                          onset_frame=f[on][order], offset_frame=(f[off] + 1)[order], extent=extent,
                          normal_seconds={r: max(s, 0.0) for r, s in normal.items()})


def poisson_upper_bound(count: int, *, confidence: float = CONFIDENCE) -> float:
    """Return the exact one-sided upper confidence bound on a Poisson mean after observing
    ``count`` events: half the chi-square quantile at ``confidence`` with 2(count+1) degrees of
    freedom (3.00 for 0 events at 95%)."""
    if count < 0:
        raise FmModelError(f"expected a count >= 0, got {count}", field="count")
    # imported here: scipy.stats takes most of a second to import, and a process that only
    # watches (alarms, no scoring) should not pay for it
    from scipy.stats import chi2

    return float(chi2.ppf(confidence, 2 * (count + 1)) / 2.0)


def nab_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid of a relative position: 2/(1 + e^(5y)) - 1, and -1 from y = 3 on."""
    return -1.0 if position >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


@dataclass(frozen=True)
class EventOutcome:
    """What happened to one labelled event: its first detecting raise (None: missed), the delay
    after its onset, how many raises fell in its window and how many of them chattered."""

    recording: int
    onset_time: float
    offset_time: float
    onset_frame: int
    offset_frame: int
    detected_at: float | None
    raises: int
    chatter: int

    @property
    def delay(self) -> float | None:
        """Seconds from the onset to the detecting raise (negative: raised early); None if missed."""
        return None if self.detected_at is None else self.detected_at - self.onset_time

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {**dataclasses.asdict(self), "delay": self.delay}


@dataclass(frozen=True)
class EventFigures:
    """The event figures of one recording, or of several summed (:meth:`combine`).

    ``nab_parts`` holds per NAB profile the raw score, the perfect detector's and the null
    detector's (sums over recordings, as NAB normalises its whole corpus at once).
    """

    events: int
    detected: int
    delays: tuple[float, ...]
    raises: int
    false_alarms: int
    re_raises: int
    chatter: int
    normal_seconds: float
    nab_parts: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @classmethod
    def combine(cls, parts: Sequence[EventFigures]) -> EventFigures:
        """Sum the figures of several recordings."""
        nab: dict[str, tuple[float, float, float]] = {}
        for p in NAB_PROFILES:
            raw, perfect, null = (float(sum(x.nab_parts[p][i] for x in parts)) for i in range(3))
            nab[p] = (raw, perfect, null)
        return cls(sum(x.events for x in parts), sum(x.detected for x in parts),
                   tuple(d for x in parts for d in x.delays), sum(x.raises for x in parts),
                   sum(x.false_alarms for x in parts), sum(x.re_raises for x in parts), sum(x.chatter for x in parts),
                   float(sum(x.normal_seconds for x in parts)), nab)

    @property
    def recall(self) -> float | None:
        """Detected events over events; None without events."""
        return self.detected / self.events if self.events else None

    def delay(self, statistic: str) -> float | None:
        """The "median", "p90" (linear interpolation) or "max" delay of detected events; None without."""
        if not self.delays:
            return None
        d = np.asarray(self.delays)
        if statistic == "median":
            return float(np.median(d))
        if statistic == "p90":
            return float(np.percentile(d, 90))
        if statistic == "max":
            return float(d.max())
        raise FmModelError(f"expected a statistic among ('median', 'p90', 'max'), got {statistic!r}", field="statistic")

    @property
    def false_alarms_per_hour(self) -> float | None:
        """False alarms per hour of normal time; None without normal time."""
        return self.false_alarms * 3600.0 / self.normal_seconds if self.normal_seconds > 0 else None

    @property
    def false_alarms_per_hour_upper(self) -> float | None:
        """The one-sided 95% Poisson upper bound of :attr:`false_alarms_per_hour`."""
        if self.normal_seconds <= 0:
            return None
        return poisson_upper_bound(self.false_alarms) * 3600.0 / self.normal_seconds

    def nab(self, profile: str = "standard") -> float | None:
        """The normalised NAB score: 100 x (raw - null) / (perfect - null); None without events.
        100 is the perfect detector, 0 the one that never raises; false alarms can take it below 0."""
        raw, perfect, null = self.nab_parts[profile]
        return 100.0 * (raw - null) / (perfect - null) if perfect > null else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the counts and every derived figure."""
        return {"events": self.events, "detected": self.detected, "recall": self.recall,
                "delay_median": self.delay("median"), "delay_p90": self.delay("p90"), "delay_max": self.delay("max"),
                "delays": list(self.delays), "raises": self.raises, "false_alarms": self.false_alarms,
                "normal_hours": self.normal_seconds / 3600.0, "false_alarms_per_hour": self.false_alarms_per_hour,
                "false_alarms_per_hour_upper95": self.false_alarms_per_hour_upper, "re_raises": self.re_raises,
                "chatter": self.chatter, "nab": {p: self.nab(p) for p in NAB_PROFILES}}

    def headline(self) -> str:
        """One line: events detected, delay, false alarm rate, NAB standard score."""
        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)
        recall = "" if self.recall is None else f" ({100 * self.recall:.0f}%)"
        delay = (f"delay median {num(self.delay('median'), '.1f')} s, p90 {num(self.delay('p90'), '.1f')} s, "
                 f"max {num(self.delay('max'), '.1f')} s; " if self.delays else "")
        return (f"{self.detected}/{self.events} events detected{recall}; {delay}false alarms {self.false_alarms} "
                f"in {self.normal_seconds / 3600:.2f} h = {num(self.false_alarms_per_hour, '.2f')}/h "
                f"(95% upper {num(self.false_alarms_per_hour_upper, '.2f')}/h); chatter {self.chatter}; "
                f"NAB {num(self.nab(), '.1f')}")


@dataclass(frozen=True)
class AlarmScore:
    """The report of :func:`score_alarms`: figures per recording and overall, each event's outcome,
    the false alarms' times, and the matching settings."""

    per_recording: dict[int, EventFigures]
    overall: EventFigures
    outcomes: tuple[EventOutcome, ...]
    false_alarm_times: dict[int, tuple[float, ...]]
    tolerance: float
    early: float
    chatter_seconds: float
    names: dict[int, str]

    def name(self, recording: int) -> str:
        """A recording's display name (its id when none was given)."""
        return self.names.get(recording, f"recording {recording}")

    def summary(self) -> str:
        """A few lines for a terminal: the rules, the overall line, one line per recording."""
        lines = [f"alarms scored as events (window: {self.early:g} s before onset to {self.tolerance:g} s after "
                 f"offset; chatter: re-raise within {self.chatter_seconds:g} s of a clear)",
                 f"overall: {self.overall.headline()}"]
        lines += [f"  {self.name(r)}: {f.headline()}" for r, f in self.per_recording.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: settings, overall and per-recording figures, outcomes, false alarm times."""
        return {"tolerance": self.tolerance, "early": self.early, "chatter_seconds": self.chatter_seconds,
                "overall": self.overall.to_dict(),
                "per_recording": {self.name(r): {"recording": r, **f.to_dict()} for r, f in self.per_recording.items()},
                "events": [o.to_dict() for o in self.outcomes],
                "false_alarm_times": {self.name(r): list(v) for r, v in self.false_alarm_times.items()}}


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise FmModelError(f"expected a finite number of seconds >= 0, got {value!r}", field=name)
    return float(value)


def _score_recording(rec: int, events: Sequence[AlarmEvent], labelled: LabelledEvents, normal: float, *,
                     tolerance: float, early: float, chatter_seconds: float,
                     ) -> tuple[EventFigures, list[EventOutcome], list[float]]:
    """Match one recording's alarms to its events; see the module docstring for the rules."""
    idx = labelled.of(rec)
    onset, offset = labelled.onset_time[idx], labelled.offset_time[idx]
    lo, hi = onset - early, offset + tolerance
    spans = alarm_spans(events, end=math.inf)
    raises = [e.time for e in events if e.kind == RAISE]
    matched: list[list[int]] = [[] for _ in idx]  # per event: the alarms (by number) raised in its window
    false_times: list[float] = []
    for a, x in enumerate(raises):
        inside = np.flatnonzero((lo <= x) & (x < hi))
        if not inside.size:
            false_times.append(x)
            continue
        started = inside[onset[inside] <= x]
        # an event in progress (or the latest begun) owns the raise; else the next to begin
        matched[int(started[-1] if started.size else inside[0])].append(a)
    outcomes, delays, re_raises, chatter = [], [], 0, 0
    for e, alarms in enumerate(matched):
        chat = sum(1 for p, q in zip(alarms, alarms[1:]) if spans[q][0] - spans[p][1] < chatter_seconds)
        re_raises, chatter = re_raises + max(len(alarms) - 1, 0), chatter + chat
        first = raises[alarms[0]] if alarms else None
        i = int(idx[e])
        outcomes.append(EventOutcome(rec, float(onset[e]), float(offset[e]), int(labelled.onset_frame[i]),
                                     int(labelled.offset_frame[i]), first, len(alarms), chat))
        if first is not None:
            delays.append(first - float(onset[e]))
    nab: dict[str, tuple[float, float, float]] = {}
    width = hi - lo
    for profile, (a_tp, a_fp, a_fn) in NAB_PROFILES.items():
        raw = 0.0
        for e, o in enumerate(outcomes):
            if o.detected_at is None:
                raw -= a_fn
            else:  # relative position in the window: -1 at its start, 0 at its end
                raw += a_tp * nab_sigmoid((o.detected_at - hi[e]) / width[e]) / nab_sigmoid(-1.0)
        for x in false_times:  # scaled by the distance past the last window that ended before it
            before = np.flatnonzero(hi <= x)
            if before.size and width[before[-1]] > 0:
                raw += a_fp * nab_sigmoid((x - hi[before[-1]]) / width[before[-1]])
            else:
                raw -= a_fp
        nab[profile] = (raw, a_tp * len(idx), -a_fn * len(idx))
    figures = EventFigures(len(idx), len(delays), tuple(delays), len(raises), len(false_times), re_raises, chatter,
                           normal, nab)
    return figures, outcomes, false_times


def score_alarms(alarms: Mapping[int, Sequence[AlarmEvent]], labelled: LabelledEvents, *,
                 normal_seconds: Mapping[int, float] | None = None, tolerance: float = 10.0, early: float = 0.0,
                 chatter_seconds: float = 60.0, names: Mapping[int, str] | None = None) -> AlarmScore:
    """Score alarms against labelled events, per recording and overall.

    ``alarms`` maps each recording watched to its alarm events in order (from
    :func:`~fmmodel.scoring.alarms.alarm_events` or :class:`~fmmodel.scoring.alarms.AlarmState`;
    an empty list: watched, never raised); only those recordings are scored, and each must be
    one of ``labelled``'s. An event's window is ``[onset - early, offset + tolerance)``
    (seconds): the first raise inside it detects it, later ones are re-raises (chatter when
    within ``chatter_seconds`` of the clear of the event's previous alarm); a raise inside no
    window is a false alarm. A raise inside two windows belongs to the event in progress (the
    latest begun), else to the next to begin. ``normal_seconds`` (default: the labels' time
    outside events) is each recording's normal time for the false alarm rate; ``names`` its
    display name. Returns an :class:`AlarmScore`.
    """
    tolerance, early = _seconds("tolerance", tolerance), _seconds("early", early)
    chatter_seconds = _seconds("chatter_seconds", chatter_seconds)
    normal = dict(labelled.normal_seconds if normal_seconds is None else normal_seconds)
    per: dict[int, EventFigures] = {}
    outcomes: list[EventOutcome] = []
    false: dict[int, tuple[float, ...]] = {}
    for rec in sorted(alarms):
        if rec not in labelled.extent:
            raise FmModelError(f"expected alarms of recordings among {sorted(labelled.extent)}, got recording {rec}",
                               field="alarms")
        if rec not in normal:
            raise FmModelError(f"expected the normal seconds of recording {rec}, got none", field="normal_seconds")
        figures, got, times = _score_recording(rec, alarms[rec], labelled, _seconds("normal_seconds", normal[rec]),
                                               tolerance=tolerance, early=early, chatter_seconds=chatter_seconds)
        per[rec], false[rec] = figures, tuple(times)
        outcomes += got
    return AlarmScore(per, EventFigures.combine(list(per.values())), tuple(outcomes), false, tolerance, early,
                      chatter_seconds, dict(names or {}))
