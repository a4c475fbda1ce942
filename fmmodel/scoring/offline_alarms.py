"""Alarms of windows scored offline: the decisions ``fmmodel watch`` would make, their alarms, their events.

``fmmodel predict`` and ``evaluate`` score windows, one per labelled frame; an operator judges
alarms. :func:`alarms_of_windows` turns per-window scores into decisions, applies an
:class:`~fmmodel.scoring.alarms.AlarmPolicy` (:func:`~fmmodel.scoring.alarms.alarm_events`) and
scores the alarms as events against the store's frame labels
(:func:`~fmmodel.scoring.events.score_alarms`):

- **Decisions.** With ``every`` = 0, one per window, at its frame's time. With ``every`` > 0, as
  ``fmmodel watch`` replays a recording: ticks at the recording's first frame time plus k x
  ``every``; at each, the newest scored window at or before the tick is the anchor (a window not
  newer than the previous tick's is no decision: watch's stale tick). A tick past the end of its
  anchor's split block is no decision either (the block's time is all that is labelled).
- **Frames watched.** The labelled events and the normal time are those of the frames watched:
  in each *segment* (a run of one recording's frames of one split) that holds scored windows,
  its frames from the first scored window's to the last's. So the test split of a predictions
  store is judged on its test blocks alone, and a strided or strict-policy table on the stretch
  its windows cover.

Only numpy and the store's frame arrays (read checked): no model, no torch.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmdata.derive.labels import read_labels
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.handle import StoreHandle
from fmmodel.errors import FmModelError
from fmmodel.scoring.alarms import AlarmEvent, AlarmPolicy, alarm_events
from fmmodel.scoring.events import NAB_PROFILES, AlarmScore, LabelledEvents, labelled_events, score_alarms

# the alarm figures a benchmark table shows (keys of EventFigures.to_dict, NAB flattened)
FIGURES = ("events", "recall", "delay_median", "delay_p90", "delay_max", "false_alarms", "false_alarms_per_hour",
           "false_alarms_per_hour_upper95", "chatter", *(f"nab_{p}" for p in NAB_PROFILES))


@dataclass(frozen=True, eq=False)
class FrameTable:
    """A store's frames as alarms need them: ``time`` (seconds), ``recording`` (id), ``split``
    (schema codes), ``label`` (frame labels, 0/1), per global frame; ``names`` of the recordings."""

    time: np.ndarray
    recording: np.ndarray
    split: np.ndarray
    label: np.ndarray
    names: list[str]

    @classmethod
    def read(cls, store: StoreHandle) -> FrameTable:
        """Read the frame arrays of the open ``store`` (through the handle: checked against their
        checksums, read once per handle; frame labels must be up to date: ``fmdata labels``)."""
        try:
            label, _ = read_labels(store)
            return cls(time=store.column(schema.FRAME_TIME).astype(np.float64),
                       recording=store.column(schema.RECORDING).astype(np.int64),
                       split=store.column(schema.SPLIT).astype(np.int8), label=label.astype(np.uint8),
                       names=list(store.recording_names))
        except FmDataError as exc:
            raise FmModelError(exc.message, exc.path or str(store)) from None

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (segment of each frame, first frame of each segment, end of each segment): runs
        of one recording's frames of one split."""
        n = self.time.size
        cut = np.flatnonzero((self.recording[1:] != self.recording[:-1]) | (self.split[1:] != self.split[:-1])) + 1
        starts = np.concatenate([[0], cut]).astype(np.int64) if n else np.zeros(0, np.int64)
        stops = np.append(cut, n).astype(np.int64) if n else np.zeros(0, np.int64)
        return np.repeat(np.arange(starts.size), stops - starts), starts, stops

    def segment_end_times(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Each segment's end: its last frame's time plus its frame period (as labelled events end)."""
        count = stops - starts
        span = self.time[stops - 1] - self.time[starts]
        period = np.where(count > 1, span / np.maximum(count - 1, 1), 0.0)
        return self.time[stops - 1] + period


@dataclass(frozen=True)
class Decisions:
    """One recording's decisions: ``times`` (seconds, increasing), ``scores`` and anchor ``frames``."""

    times: np.ndarray
    scores: np.ndarray
    frames: np.ndarray


def _check_windows(table: FrameTable, frames: np.ndarray, scores: np.ndarray) -> None:
    if frames.ndim != 1 or scores.shape != frames.shape:
        raise FmModelError(f"expected one score per window, got {scores.shape} scores for {frames.shape} windows",
                           field="scores")
    if frames.size and (frames.min() < 0 or frames.max() >= table.time.size):
        raise FmModelError(f"expected window frames of the store's {table.time.size:,} frames, got frame "
                           f"{int(frames.max() if frames.max() >= table.time.size else frames.min())}", field="frames")
    if frames.size and np.any(np.diff(frames) <= 0):
        raise FmModelError("expected windows in increasing frame order, one per frame, got a frame repeated or out "
                           "of order", field="frames")
    if not np.isfinite(scores).all() or scores.size and (scores.min() < 0 or scores.max() > 1):
        raise FmModelError("expected scores (probabilities) between 0 and 1, got others", field="scores")


def window_decisions(table: FrameTable, frames: Any, scores: Any, *, every: float) -> dict[int, Decisions]:
    """Return each recording's decisions from windows (``frames``: their labelled frames, global,
    increasing; ``scores``: P(abnormal)) as the module docstring says; ``every`` 0: one per window."""
    f = np.asarray(frames, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    _check_windows(table, f, s)
    if not (math.isfinite(every) and every >= 0):
        raise FmModelError(f"expected a decision period >= 0 seconds, got {every}", field="every")
    seg, starts, stops = table.segments()
    seg_end = table.segment_end_times(starts, stops)
    out: dict[int, Decisions] = {}
    for rec in np.unique(table.recording[f]).tolist():
        sel = table.recording[f] == rec
        wf, ws, wt = f[sel], s[sel], table.time[f[sel]]
        if every == 0:
            keep = np.append(np.diff(wt) > 0, True)  # frames of one time: the last decides
            out[rec] = Decisions(wt[keep], ws[keep], wf[keep])
            continue
        t0 = float(table.time[np.flatnonzero(table.recording == rec)[0]])
        ticks = t0 + np.arange(int(math.ceil((wt[-1] - t0) / every)) + 1) * every  # as watch counts its ticks
        anchor = np.searchsorted(wt, ticks, side="right") - 1
        fresh = (anchor >= 0) & (anchor != np.concatenate([[-1], anchor[:-1]]))
        fresh &= ticks < seg_end[seg[wf[np.maximum(anchor, 0)]]]
        a = anchor[fresh]
        out[rec] = Decisions(ticks[fresh], ws[a], wf[a])
    return out


def watched_events(table: FrameTable, frames: Any) -> LabelledEvents:
    """Return the labelled events of the frames watched by windows at ``frames`` (module docstring)."""
    f = np.asarray(frames, dtype=np.int64)
    seg, _, _ = table.segments()
    if not f.size:
        return labelled_events(np.zeros(0, np.uint8), np.zeros(0), np.zeros(0, np.int64))
    _, first = np.unique(seg[f], return_index=True)  # windows are in frame order: first and last per segment
    last = f.size - 1 - np.unique(seg[f][::-1], return_index=True)[1]
    idx = np.concatenate([np.arange(f[a], f[b] + 1) for a, b in zip(first, last)])
    return labelled_events(table.label[idx], table.time[idx], table.recording[idx], frame=idx)


@dataclass(frozen=True)
class AlarmRun:
    """Decisions, alarms and their score: what :func:`alarms_of_windows` made."""

    policy: AlarmPolicy
    every: float
    decisions: dict[int, Decisions]
    alarms: dict[int, list[AlarmEvent]]
    labelled: LabelledEvents
    score: AlarmScore

    def figures(self) -> dict[str, Any]:
        """The overall figures a benchmark table shows (:data:`FIGURES`)."""
        d = self.score.overall.to_dict()
        return {**{k: d[k] for k in FIGURES if k in d}, **{f"nab_{p}": d["nab"][p] for p in NAB_PROFILES}}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the policy, the decision period, the number of decisions and the score."""
        return {"policy": self.policy.to_dict(), "every": self.every,
                "decisions": int(sum(d.times.size for d in self.decisions.values())), **self.score.to_dict()}


def alarms_of_windows(table: FrameTable, frames: Any, scores: Any, *, policy: AlarmPolicy, every: float,
                      tolerance: float = 10.0, early: float = 0.0, chatter_seconds: float = 60.0) -> AlarmRun:
    """Decide (:func:`window_decisions`), raise alarms under ``policy`` and score them against the
    events of the frames watched (:func:`watched_events`); ``tolerance``, ``early`` and
    ``chatter_seconds`` as :func:`~fmmodel.scoring.events.score_alarms` takes them."""
    decisions = window_decisions(table, frames, scores, every=every)
    labelled = watched_events(table, frames)
    alarms = {r: alarm_events(d.times, d.scores, policy, frames=d.frames) for r, d in decisions.items()}
    names = {r: table.names[r] if r < len(table.names) else str(r) for r in decisions}
    score = score_alarms(alarms, labelled, tolerance=tolerance, early=early, chatter_seconds=chatter_seconds,
                         names=names)
    return AlarmRun(policy=policy, every=every, decisions=decisions, alarms=alarms, labelled=labelled, score=score)


def decisions_for_timeline(run: AlarmRun) -> Mapping[int, tuple[np.ndarray, np.ndarray]]:
    """The (times, scores) of each recording's decisions, as the timeline picture takes them."""
    return {r: (d.times, d.scores) for r, d in run.decisions.items()}
