"""Online detection beside the furnace: alarms from a stream of scores.

:mod:`~fmmodel.online.alarms`: the alarm policy and its state machine, streaming and batch.
Pure: arrays in, dataclasses out; no torch, no store. docs/online.md states the rules.
"""
from fmmodel.online.alarms import AlarmEvent, AlarmPolicy, AlarmState, alarm_events, alarm_spans, smooth_scores

__all__ = ["AlarmEvent", "AlarmPolicy", "AlarmState", "alarm_events", "alarm_spans", "smooth_scores"]
