"""Online detection beside the furnace: alarms from a stream of scores, scored as events.

:mod:`~fmmodel.online.alarms` (the alarm policy and its state machine, streaming and batch),
:mod:`~fmmodel.online.events` (labelled events from frame labels; alarms scored as an operator
judges them: recall, delay, false alarms per hour, chatter, NAB score) and
:mod:`~fmmodel.online.timeline` (the picture; imported from its module, as it brings matplotlib).
Pure: arrays in, dataclasses out; no torch, no store. docs/online.md states the rules.
"""
from fmmodel.online.alarms import AlarmEvent, AlarmPolicy, AlarmState, alarm_events, alarm_spans, smooth_scores
from fmmodel.online.events import AlarmScore, EventFigures, LabelledEvents, labelled_events, score_alarms

__all__ = ["AlarmEvent", "AlarmPolicy", "AlarmScore", "AlarmState", "EventFigures", "LabelledEvents", "alarm_events",
           "alarm_spans", "labelled_events", "score_alarms", "smooth_scores"]
