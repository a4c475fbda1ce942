"""The alarm timeline: one picture of how a model's alarms followed the labelled events.

:func:`save_timeline` draws one panel per recording scored: the raw score of every decision
(grey), the smoothed score the policy decides on (blue, when the policy smooths), the raise and
clear thresholds, the labelled events (red, with their tolerance window lighter), the alarms
(an orange band, from raise to clear) and each raise's verdict (a green triangle detects an
event, a red cross is a false alarm). Each panel's title gives that recording's figures, the
figure's title the model, the policy and the overall figures. A PNG drawn with matplotlib's
Figure (no pyplot, no backend switch), written atomically.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fmdata.store.atomic import new_figure, save_figure
from fmmodel.errors import FmModelError
from fmmodel.scoring.alarms import RAISE, AlarmEvent, AlarmPolicy, alarm_spans, smooth_scores
from fmmodel.scoring.events import AlarmScore, LabelledEvents

if TYPE_CHECKING:
    from matplotlib.axes import Axes

RAW, SMOOTH, EVENT, ALARM = "0.55", "tab:blue", "tab:red", "tab:orange"
DETECTED, FALSE = "tab:green", "tab:red"


def describe_policy(policy: AlarmPolicy) -> str:
    """A short description of ``policy`` for titles, e.g. "3-of-5, raise 0.6 / clear 0.4, on-delay 1 s"."""
    smoothing = {"none": "no smoothing", "k_of_n": f"{policy.k}-of-{policy.n}",
                 "ema": f"EMA half-life {policy.half_life:g} s"}[policy.smoothing]
    thresholds = (f"threshold {policy.raise_threshold:g}" if policy.clear_threshold == policy.raise_threshold
                  else f"raise {policy.raise_threshold:g} / clear {policy.clear_threshold:g}")
    delays = [f"{name} {value:g} s" for name, value in (("on-delay", policy.on_delay), ("hold", policy.hold)) if value]
    return ", ".join([smoothing, thresholds, *delays])


def _unit(extent: tuple[float, float]) -> tuple[float, str]:
    """Minutes for recordings longer than ten minutes, else seconds: (divisor, axis label)."""
    return (60.0, "minutes") if extent[1] - extent[0] > 600 else (1.0, "seconds")


def _panel(ax: Axes, rec: int, times: np.ndarray, scores: np.ndarray, events: Sequence[AlarmEvent],
           policy: AlarmPolicy, labelled: LabelledEvents, report: AlarmScore) -> None:
    """Draw one recording's panel onto ``ax``."""
    extent = labelled.extent[rec]
    scale, unit = _unit(extent)
    x = times / scale
    for i in labelled.of(rec):
        on, off = labelled.onset_time[i], labelled.offset_time[i]
        ax.axvspan((on - report.early) / scale, (off + report.tolerance) / scale, color=EVENT, alpha=0.08, lw=0)
        ax.axvspan(on / scale, off / scale, color=EVENT, alpha=0.22, lw=0)
    for start, stop in alarm_spans(events, end=float(times[-1]) if times.size else extent[1]):
        ax.axvspan(start / scale, stop / scale, ymin=0.93, ymax=1.0, color=ALARM, lw=0)
    ax.plot(x, scores, color=RAW, lw=0.7, zorder=2)
    if policy.smoothing != "none":
        smooth = smooth_scores(times, scores, policy)
        ax.plot(x, np.where(np.isfinite(smooth), smooth, np.nan), color=SMOOTH, lw=1.3, zorder=3)
    ax.axhline(policy.raise_threshold, color="black", lw=0.9, ls="--", zorder=1)
    if policy.clear_threshold != policy.raise_threshold:
        ax.axhline(policy.clear_threshold, color="black", lw=0.9, ls=":", zorder=1)
    false = set(report.false_alarm_times.get(rec, ()))
    raises = [e for e in events if e.kind == RAISE]
    for e in raises:
        ok = e.time not in false
        ax.plot(e.time / scale, e.smoothed if np.isfinite(e.smoothed) else e.score, marker="^" if ok else "X",
                color=DETECTED if ok else FALSE, ms=8 if ok else 7, mec="black", mew=0.5, zorder=4, ls="none")
    span = (min([extent[0], *times[:1]]), max([extent[1], *times[-1:]]))
    ax.set_xlim(span[0] / scale, span[1] / scale)
    finite = scores[np.isfinite(scores)]
    lo = min([policy.clear_threshold, *([float(finite.min())] if finite.size else [])])
    hi = max([policy.raise_threshold, *([float(finite.max())] if finite.size else [])])
    pad = 0.05 * (hi - lo or 1.0)
    ax.set_ylim(lo - pad, hi + 3 * pad)  # room above the curve for the alarm band
    ax.set_xlabel(f"{unit} since the recording's origin", fontsize=8)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_title(f"{report.name(rec)}: {report.per_recording[rec].headline()}", fontsize=9, loc="left")


def save_timeline(path: str | os.PathLike[str], *, decisions: Mapping[int, tuple[Any, Any]], policy: AlarmPolicy,
                  alarms: Mapping[int, Sequence[AlarmEvent]], labelled: LabelledEvents, report: AlarmScore,
                  model: str, dpi: int = 110, made_by: str | None = None) -> Path:
    """Draw the alarm timeline of the recordings in ``report`` to the PNG ``path``; return the path.

    ``decisions`` maps each recording to its decisions' (times, scores) (what the policy was fed);
    ``alarms`` to its alarm events; ``labelled`` and ``report`` are what
    :func:`~fmmodel.scoring.events.labelled_events` and :func:`~fmmodel.scoring.events.score_alarms`
    returned for them; ``model`` names the model in the title; ``made_by`` the command whose mark the
    PNG carries (what lets a later run recognise its own picture, :mod:`fmdata.store.outputs`).
    """
    recs = list(report.per_recording)
    missing = [r for r in recs if r not in decisions or r not in alarms]
    if not recs or missing:
        raise FmModelError(f"expected decisions and alarms of the scored recordings {recs}, got none for "
                           f"{missing or 'any'}", field="decisions")
    from matplotlib.lines import Line2D  # late, as in new_figure: only a timeline needs them
    from matplotlib.patches import Patch

    fig = new_figure(figsize=(14.0, 1.2 + 2.7 * len(recs)), layout="constrained")
    axes = fig.subplots(len(recs), 1, squeeze=False)[:, 0]
    for ax, rec in zip(axes, recs):
        times, scores = (np.asarray(a, dtype=np.float64) for a in decisions[rec])
        _panel(ax, rec, times, scores, alarms[rec], policy, labelled, report)
    handles = [Line2D([], [], color=RAW, lw=0.9, label="score"),
               *([Line2D([], [], color=SMOOTH, lw=1.3, label="smoothed")] if policy.smoothing != "none" else []),
               Line2D([], [], color="black", ls="--", lw=0.9, label="raise threshold"),
               *([Line2D([], [], color="black", ls=":", lw=0.9, label="clear threshold")]
                 if policy.clear_threshold != policy.raise_threshold else []),
               Patch(color=EVENT, alpha=0.3, label="labelled event"),
               Patch(color=EVENT, alpha=0.1, label="detection window"),
               Patch(color=ALARM, label="alarm raised"),
               Line2D([], [], marker="^", color=DETECTED, mec="black", ls="none", label="raise: detection"),
               Line2D([], [], marker="X", color=FALSE, mec="black", ls="none", label="raise: false alarm")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{model}: alarms ({describe_policy(policy)})\noverall: {report.overall.headline()}", fontsize=10)
    return save_figure(fig, path, made_by=made_by, dpi=dpi)
