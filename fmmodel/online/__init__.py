"""``fmmodel watch``: a model watching a camera and a current log live, or a store replayed.

Modules by idea, bottom up: clocks (real, scaled, virtual) and ring buffers
(:mod:`~fmmodel.online.clocks`, :mod:`~fmmodel.online.rings`); sources: a replayed store with
injected faults (:mod:`~fmmodel.online.replay`) and the live camera, CSV and MQTT sources
(:mod:`~fmmodel.online.live`); cutting a window out of the rings by the stored window rules
(:mod:`~fmmodel.online.cutting`); health alarms, live metrics, where events go
(:mod:`~fmmodel.online.health`, :mod:`~fmmodel.online.metrics`, :mod:`~fmmodel.online.publish`);
the decision loop (:mod:`~fmmodel.online.loop`) and the entry point (:mod:`~fmmodel.online.watch`).
docs/online.md tells how to use it.
"""
from fmmodel.online.health import HealthLimits
from fmmodel.online.watch import Sources, WatchReport, WatchSettings, watch

__all__ = ["watch", "Sources", "WatchSettings", "WatchReport", "HealthLimits"]
