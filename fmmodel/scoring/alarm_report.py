"""``fmmodel alarms``: alarms scored as events, from a predictions store or a watch's event log.

Two sources, judged against the frame labels of the store they came from
(:mod:`fmmodel.scoring.events`: recall, delay after onset, false alarms per hour of normal time
with its Poisson bound, chatter, NAB):

- a **predictions store** (``fmmodel predict``): per-window probabilities at their labelled
  frames become decisions and alarms under an :class:`~fmmodel.scoring.alarms.AlarmPolicy`, as
  ``fmmodel watch`` would make them (:mod:`fmmodel.scoring.offline_alarms`);
- an **event log** (``fmmodel watch --events``, JSON lines) of a replay of the store: its process
  alarms as the watch raised them (health alarms are counted, not scored). Each line's recording
  is its ``recording`` field when it has one, else ``recording`` (name or id; default the store's
  first, as a replay's). With the watch's ``--scores`` file the decisions are known too: the span
  watched is from the first decision's anchor frame to the last's, and the picture draws the
  scores; without it the whole recording counts as watched. The times are the store's (a
  replay's clock): the log of a live watch cannot be judged against a store.

:func:`alarm_report` returns an :class:`AlarmReport` (``summary()``, ``to_dict()``) and, with
``out``, writes ``report.json`` and ``timeline.png`` there (replacing only files this command wrote).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fmdata.errors import FmDataError
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.location import Location
from fmdata.store.outputs import check_apart, check_replaceable, refusal
from fmmodel.errors import FmModelError
from fmmodel.scoring.alarms import RAISE, WATCH_EVERY, WATCH_POLICY, AlarmEvent, AlarmPolicy
from fmmodel.scoring.events import AlarmScore, labelled_events, score_alarms
from fmmodel.scoring.offline_alarms import FrameTable, alarms_of_windows
from fmmodel.scoring.predict import read_predictions
from fmmodel.scoring.report import write_json
from fmmodel.scoring.timeline import describe_policy, save_timeline

COMMAND = "fmmodel alarms"
REPORT_KEY = "fmf_alarms"  # marks a report.json as this command's (what a later run may replace)
REPORT_JSON, TIMELINE_PNG = "report.json", "timeline.png"
_EVENT_FIELDS = [f.name for f in fields(AlarmEvent)]


@dataclass
class AlarmReport:
    """What :func:`alarm_report` found: the source judged, the policy and decision period (None for
    an event log: the watch decided), the decisions counted, health alarms of a log, the score,
    and the files written."""

    source: str
    kind: str
    store: str
    model: str
    policy: AlarmPolicy | None
    every: float | None
    decisions: int
    score: AlarmScore
    health: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for a terminal: what was judged, then the score's summary."""
        how = (f"{self.decisions:,} decisions ({'one per window' if not self.every else f'every {self.every:g} s'}), "
               f"alarms: {describe_policy(self.policy)}" if self.policy is not None
               else f"the alarms of the log ({self.decisions:,} decisions in its scores)" if self.decisions
               else "the alarms of the log")
        health = f"; health alarms raised: {', '.join(f'{k} {v}' for k, v in self.health.items())}" if self.health else ""
        files = "".join(f"\n{name}: {path}" for name, path in self.files.items())
        return f"{self.source} ({self.model}) on {self.store}: {how}{health}\n{self.score.summary()}{files}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the source, the policy, the decisions and every figure of the score."""
        return {REPORT_KEY: 1, "source": self.source, "kind": self.kind, "store": self.store, "model": self.model,
                "policy": None if self.policy is None else self.policy.to_dict(), "every": self.every,
                "decisions": self.decisions, "health_alarms": dict(self.health), **self.score.to_dict(),
                "files": dict(self.files)}


def _pick(names: list[str], recording: str | None, where: str) -> int:
    """A recording's id from its name or id (default: the first)."""
    if recording is None:
        return 0
    if recording in names:
        return names.index(recording)
    if recording.isdigit() and int(recording) < len(names):
        return int(recording)
    raise FmModelError(f"expected a recording among {names} (name or id), got {recording!r}", where,
                       field="recording")


def _json_lines(path: str, what: str) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file; FmModelError naming the line that is not one."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FmModelError(f"expected a readable {what}, got {getattr(exc, 'strerror', None) or exc}", path) from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise FmModelError(f"expected one JSON object per line of the {what}, got {line[:60]!r} at line {i}", path)
        out.append(record)
    return out


def _log_events(path: str, names: list[str], recording: str | None) -> tuple[dict[int, list[AlarmEvent]],
                                                                              dict[str, int]]:
    """The process alarms of a watch's event log per recording, and the health alarms raised by name."""
    default = _pick(names, recording, path)
    alarms: dict[int, list[AlarmEvent]] = {}
    health: dict[str, int] = {}
    for i, line in enumerate(_json_lines(path, "event log"), 1):
        if line.get("type", "process") == "health":
            if line.get("kind") == RAISE:
                health[str(line.get("name"))] = health.get(str(line.get("name")), 0) + 1
            continue
        rec = _pick(names, str(line["recording"]), path) if line.get("recording") is not None else default
        try:
            d: dict[str, Any] = {k: line.get(k) for k in _EVENT_FIELDS}
            d["smoothed"] = -math.inf if d["smoothed"] is None else d["smoothed"]
            event = AlarmEvent(**d)
            if event.kind not in ("raise", "clear") or not math.isfinite(float(event.time)):
                raise ValueError(event.kind)
        except (TypeError, ValueError):
            raise FmModelError(f"expected alarm events of fmmodel watch (kind, time, alarm, score...), got "
                               f"{json.dumps(line)[:80]} (event {i})", path) from None
        previous = alarms.setdefault(rec, [])
        if previous and not event.time >= previous[-1].time:
            raise FmModelError(f"expected one watch's events of recording {names[rec]!r} in time order, got "
                               f"{event.time} after {previous[-1].time} (event {i}: a file of several runs?)", path)
        previous.append(event)
    return alarms, health


def _log_scores(path: str, table: FrameTable, rec: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The decisions of a watch's scores file: (times, scores, anchor frames)."""
    rows = _json_lines(path, "scores file")
    try:
        t = np.array([float(r["time"]) for r in rows])
        s = np.array([math.nan if r["score"] is None else float(r["score"]) for r in rows])
        f = np.array([int(r["frame"]) for r in rows], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise FmModelError("expected the scores lines of fmmodel watch (time, frame, score), got others", path) from None
    if f.size and (f.min() < 0 or f.max() >= table.time.size or np.any(table.recording[f] != rec)):
        raise FmModelError(f"expected the anchor frames of recording {table.names[rec]!r} of the store, got others "
                           "(another store or recording?)", path)
    return t, s, f


def _prepare_out(out: str, inputs: Sequence[str]) -> None:
    """Refuse an output folder that would replace what this command did not write."""
    check_apart(out, list(inputs), field="out", what="what it reads")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FmModelError("expected a folder for the report, got a file", out, field="out")
    report = os.path.join(out, REPORT_JSON)
    if os.path.lexists(report):
        try:
            with open(report, encoding="utf-8") as fh:
                ours = REPORT_KEY in json.load(fh)
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours or os.path.islink(report):
            raise refusal(report, COMMAND, "a report.json this command did not write", option="--out")
    check_replaceable(os.path.join(out, TIMELINE_PNG), overwrite=True, command=COMMAND)


def alarm_report(store: StoreLike, *, predictions: str | None = None, events: str | None = None,
                 scores: str | None = None, recording: str | None = None, policy: AlarmPolicy = WATCH_POLICY,
                 every: float = WATCH_EVERY, tolerance: float = 10.0, early: float = 0.0,
                 chatter_seconds: float = 60.0, out: str | None = None) -> AlarmReport:
    """Score the alarms of ``predictions`` (a predictions store: decided under ``policy`` every
    ``every`` seconds, 0: one decision per window) or of ``events`` (a watch's event log; ``scores``
    its scores file, ``recording`` the recording replayed) against ``store``'s frame labels; write
    report.json and timeline.png into ``out`` when given. ``tolerance``, ``early`` and
    ``chatter_seconds`` as :func:`~fmmodel.scoring.events.score_alarms` takes them. See the module
    docstring."""
    if (predictions is None) == (events is None):
        raise FmModelError("expected --predictions or --events (one of them), got "
                           f"{'both' if predictions else 'neither'}", field="predictions")
    if scores is not None and events is None:
        raise FmModelError("expected --scores with --events (a watch's scores file)", field="scores")
    location = store.location if isinstance(store, StoreHandle) else Location.parse(store)
    source = str(predictions or events)
    if out:
        _prepare_out(out, [str(location), source] + ([scores] if scores else []))
    try:
        handle = open_store(store)  # the one open (a handle given passes through)
    except FmDataError as exc:
        raise FmModelError(exc.message, exc.path or str(location)) from None
    table = FrameTable.read(handle)
    run_policy: AlarmPolicy | None = policy
    every_used: float | None = every
    health: dict[str, int] = {}
    if predictions is not None:
        pred = read_predictions(predictions)
        attrs = dict(pred.attrs["fmf_predictions"])
        frames = np.asarray(pred["frame"][:], dtype=np.int64)
        prob = np.asarray(pred["prob"][:, 1], dtype=np.float64)
        labels = np.asarray(pred["label"][:])
        if frames.size and (frames.max() >= table.time.size or np.any(table.label[frames] != labels)):
            raise FmModelError(f"expected the store the predictions were made on ({attrs.get('store')}), got one whose "
                               "frame labels differ", str(location), field="store")
        run = alarms_of_windows(table, frames, prob, policy=policy, every=every, tolerance=tolerance, early=early,
                                chatter_seconds=chatter_seconds)
        decisions = {r: (d.times, d.scores) for r, d in run.decisions.items()}
        alarms, labelled, score = run.alarms, run.labelled, run.score
        count, model = sum(d.times.size for d in run.decisions.values()), str(attrs.get("variant"))
    else:
        assert events is not None
        alarms, health = _log_events(events, table.names, recording)
        if not alarms:  # a log without a process alarm: the recording replayed raised none
            alarms = {_pick(table.names, recording, events): []}
        if scores is not None and len(alarms) > 1:
            raise FmModelError("expected the events of one recording with --scores, got several", events,
                               field="scores")
        decisions, spans = {}, {}
        for rec in alarms:
            frames_of = np.flatnonzero(table.recording == rec)
            t, s, f = ((np.zeros(0), np.zeros(0), np.zeros(0, np.int64)) if scores is None
                       else _log_scores(scores, table, rec))
            decisions[rec] = (t, s)
            spans[rec] = np.arange(f.min(), f.max() + 1) if f.size else frames_of
        idx = np.concatenate(list(spans.values()))
        labelled = labelled_events(table.label[idx], table.time[idx], table.recording[idx], frame=idx)
        names = {r: table.names[r] for r in alarms}
        score = score_alarms(alarms, labelled, tolerance=tolerance, early=early, chatter_seconds=chatter_seconds,
                             names=names)
        run_policy, every_used, count, model = None, None, sum(t.size for t, _ in decisions.values()), "watch"
    report = AlarmReport(source=source, kind="predictions" if predictions else "events", store=str(location),
                         model=model, policy=run_policy, every=every_used,
                         decisions=int(count), score=score, health=health)
    if out:
        os.makedirs(out, exist_ok=True)
        png = os.path.join(out, TIMELINE_PNG)
        save_timeline(png, decisions=decisions, policy=run_policy or policy, alarms=alarms, labelled=labelled,
                      report=score, model=f"{model} ({os.path.basename(source.rstrip('/'))})", made_by=COMMAND)
        report.files = {"report": os.path.join(out, REPORT_JSON), "timeline": png}
        write_json(report.files["report"], report.to_dict())
    return report

