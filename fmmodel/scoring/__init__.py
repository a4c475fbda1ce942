"""Scoring a model on a store: metrics, the one scoring loop, reports, ``evaluate`` and ``predict``.

The metrics and the one decision rule (:mod:`~fmmodel.scoring.metrics`), the loop that scores
windows for evaluation, prediction and validation (:mod:`~fmmodel.scoring.inference`), report
files and pictures (:mod:`~fmmodel.scoring.report`), the two commands
(:mod:`~fmmodel.scoring.evaluate`, :mod:`~fmmodel.scoring.predict`), and alarms: how scores
become alarms (:mod:`~fmmodel.scoring.alarms`), how alarms are scored as events against the
labels (:mod:`~fmmodel.scoring.events`) and their picture (:mod:`~fmmodel.scoring.timeline`,
imported where it is used: it brings matplotlib).
"""
from fmmodel.scoring.alarms import AlarmEvent, AlarmPolicy, AlarmState, alarm_events
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.events import AlarmScore, labelled_events, score_alarms
from fmmodel.scoring.metrics import THRESHOLD, MetricSet, predicted_abnormal
from fmmodel.scoring.predict import predict, read_predictions

__all__ = ["evaluate", "predict", "read_predictions", "MetricSet", "THRESHOLD", "predicted_abnormal", "AlarmPolicy",
           "AlarmState", "AlarmEvent", "alarm_events", "AlarmScore", "labelled_events", "score_alarms"]
