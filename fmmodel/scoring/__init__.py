"""Scoring a model on a store: metrics, the one scoring loop, reports, ``evaluate`` and ``predict``.

The metrics and the one decision rule (:mod:`~fmmodel.scoring.metrics`), the loop that scores
windows for evaluation, prediction and validation (:mod:`~fmmodel.scoring.inference`), report
files and pictures (:mod:`~fmmodel.scoring.report`), and the two commands
(:mod:`~fmmodel.scoring.evaluate`, :mod:`~fmmodel.scoring.predict`).
"""
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.metrics import THRESHOLD, MetricSet, predicted_abnormal
from fmmodel.scoring.predict import predict, read_predictions

__all__ = ["evaluate", "predict", "read_predictions", "MetricSet", "THRESHOLD", "predicted_abnormal"]
