"""The clocks of ``fmmodel watch``: real time (a replay's scaled by ``--speed``) and a virtual clock.

A clock tells *stream time*: seconds on the clock of the data (a store's ``frame_time`` and current
times; for live sources, seconds since the watch's origin, a whole second of the Unix clock). Every
item pushed into a ring buffer and every decision is stamped with it.

- :class:`RealClock`: stream time runs at ``speed`` times real time from ``start`` (monotonic, so
  a change of the system clock does not move it). Live sources run at speed 1.
- :class:`VirtualClock` (``--speed max``): stream time moves only when the decision loop moves it
  to the next decision, so a replay runs as fast as the CPU allows and gives the same decisions
  every time: nothing depends on how long anything took.
"""
from __future__ import annotations

import math
import time
from typing import Protocol

NAP = 0.05  # longest sleep of a waiting thread (seconds of real time): stop requests and Ctrl-C act within it


class Clock(Protocol):
    """Stream time, and a way to wait for it."""

    virtual: bool
    speed: float  # stream seconds per real second (inf for the virtual clock)

    def now(self) -> float:
        """Return the stream time now (seconds)."""
        ...

    def wait_until(self, t: float) -> None:
        """Return once stream time ``t`` has come (at once when it has)."""
        ...


class RealClock:
    """Stream time ``start + speed * (real seconds since creation)``."""

    virtual = False

    def __init__(self, start: float, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"expected a speed > 0, got {speed}")
        self.start, self.speed = float(start), float(speed)
        self._t0 = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._t0) * self.speed

    def restart(self) -> None:
        """Run from ``start`` again, from now on (a replay starts when its loop does, not when it was opened)."""
        self._t0 = time.monotonic()

    def wait_until(self, t: float) -> None:
        while True:
            left = (t - self.now()) / self.speed
            if left <= 0:
                return
            time.sleep(min(left, NAP))  # short naps: Ctrl-C reaches the main thread between them


class VirtualClock:
    """Stream time that moves only when told (``--speed max``)."""

    virtual = True
    speed = math.inf

    def __init__(self, start: float) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def wait_until(self, t: float) -> None:
        self._t = max(self._t, float(t))
