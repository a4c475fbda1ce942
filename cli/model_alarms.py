"""``fmmodel alarms``: a thin click wrapper over :func:`fmmodel.scoring.alarm_report.alarm_report`."""
from __future__ import annotations

import json
from typing import Any

import click

from fmdata.store import Location
from fmmodel.scoring.alarm_report import alarm_report
from fmmodel.scoring.alarms import WATCH_EVERY

from .errors import user_errors
from .model_options import alarm_options, policy_from
from .options import json_option, store_argument


@click.command("alarms")
@store_argument("The FMF store whose frame labels judge the alarms (the one predicted on, or replayed).")
@click.option("--predictions", type=click.Path(), default=None, metavar="PRED.zarr",
              help="A predictions store (fmmodel predict): its windows' probabilities become decisions and alarms.")
@click.option("--events", type=click.Path(), default=None, metavar="FILE",
              help="An event log of fmmodel watch --replay (--events, JSON lines): its process alarms as raised.")
@click.option("--scores", type=click.Path(), default=None, metavar="FILE",
              help="With --events: the watch's --scores file (the decisions: span watched, scores drawn).")
@click.option("--recording", default=None, metavar="NAME",
              help="With --events: the recording replayed, for lines that do not name theirs (default: the first).")
@click.option("--every", type=click.FloatRange(min=0), default=WATCH_EVERY, show_default=True,
              help="With --predictions: seconds between decisions, as fmmodel watch --every (0: one per window).")
@alarm_options
@click.option("--tolerance", type=float, default=10.0, show_default=True,
              help="Seconds after an event's end in which a raise still detects it.")
@click.option("--early", type=float, default=0.0, show_default=True,
              help="Seconds before an event's onset in which a raise detects it.")
@click.option("--chatter-seconds", type=float, default=60.0, show_default=True,
              help="A re-raise of a detected event within this many seconds of its alarm's clear is chatter.")
@click.option("--out", type=click.Path(), default=None, metavar="DIR",
              help="Write report.json and timeline.png (score, thresholds, alarms, labelled events per recording).")
@json_option
@user_errors
def alarms_cmd(store: Location, predictions: str | None, events: str | None, scores: str | None,
               recording: str | None, every: float, alarm: dict[str, Any], tolerance: float, early: float,
               chatter_seconds: float, out: str | None, as_json: bool) -> None:
    """Score alarms as events against STORE's frame labels, as an operator judges them: event
    recall, delay after onset (median, p90, max), false alarms per hour of normal time with its
    95% Poisson upper bound, chatter, and the NAB score (standard and low-false-positive profiles).
    The alarms of --predictions are decided with the alarm options (fmmodel watch's, same defaults);
    those of --events were raised by the watch (the alarm options then only set the thresholds drawn)."""
    report = alarm_report(store, predictions=predictions, events=events, scores=scores, recording=recording,
                          policy=policy_from(alarm), every=every, tolerance=tolerance, early=early,
                          chatter_seconds=chatter_seconds, out=out)
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.summary())
