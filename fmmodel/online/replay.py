"""``--replay STORE``: a recording of a store played on its own clock, with faults injected on request.

A frame is released when stream time reaches its ``frame_time``, a current row when it reaches
the row's time (rows first at equal times, so that a released frame's history is complete).
Frames that share a time stamp (a V2 recording's timestamps have whole seconds) are released
evenly over the time to the next stamp, as the camera delivered them; their stamps stay. At
start-up everything stamped at or before the first frame is released at once: the history that
the first windows reach back into. :meth:`ReplaySource.advance` releases everything due by a
stream time; the virtual clock (``--speed max``) calls it from the decision loop (no threads,
deterministic), real clocks from a producer thread (:meth:`ReplaySource.run`).

:class:`Faults` (``--inject``) change what is released, to rehearse the health alarms on known
data: ``drop`` (a share of frames never released), ``freeze`` (frames of a span show the span's
first image: a frozen camera), ``gap`` (current rows of a span never released) and ``skew`` (from
a time on, the current rows that arrive are stamped that many seconds ahead: the current's clock
runs ahead of the video's; a negative skew, behind it). Times are seconds from the replay's first
frame.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

import numpy as np

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.handle import StoreHandle
from fmdata.store.row_reader import open_axis_reader
from fmdata.store.window_table import current_rule
from fmmodel.errors import FmModelError
from fmmodel.online.clocks import NAP, Clock
from fmmodel.online.rings import CurrentRing, FrameRing, fit_frame

READ_AHEAD = 64  # frames decoded per store read while replaying


@dataclass(frozen=True)
class Faults:
    """Faults injected into a replay (times in seconds from its first frame; None: no such fault)."""

    drop: float = 0.0
    drop_span: tuple[float, float] | None = None
    freeze: tuple[float, float] | None = None
    gap: tuple[float, float] | None = None
    skew: float = 0.0
    skew_from: float = 0.0
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """Parse ``--inject``: comma-separated ``drop=SHARE[@A-B]``, ``freeze=A-B``, ``gap=A-B``,
        ``skew=SECONDS[@A]`` (e.g. ``drop=0.1@10-20,freeze=30-35,gap=40-45,skew=2@50``);
        FmModelError (field ``inject``) for anything else."""
        if not text:
            return cls()
        kw: dict[str, object] = {}
        number = r"(-?\d+(?:\.\d*)?)"
        for item in (i.strip() for i in text.split(",") if i.strip()):
            m = (re.fullmatch(rf"(drop)={number}(?:@{number}-{number})?", item)
                 or re.fullmatch(rf"(freeze|gap)={number}-{number}", item)
                 or re.fullmatch(rf"(skew)={number}(?:@{number})?", item))
            if m is None:
                raise FmModelError(f"expected faults like drop=0.1@10-20, freeze=30-35, gap=40-45, skew=2@50, got "
                                   f"{item!r}", field="inject")
            name, *vals = m.groups()
            if name == "drop":
                kw["drop"] = float(vals[0])
                kw["drop_span"] = None if vals[1] is None else (float(vals[1]), float(vals[2]))
                if not 0 <= float(vals[0]) <= 1:
                    raise FmModelError(f"expected a drop share in [0, 1], got {vals[0]}", field="inject")
            elif name == "skew":
                kw["skew"], kw["skew_from"] = float(vals[0]), float(vals[1] or 0.0)
            else:
                kw[name] = (float(vals[0]), float(vals[1]))
        return cls(**kw)  # type: ignore[arg-type]

    @property
    def any(self) -> bool:
        """Whether any fault is injected."""
        return bool(self.drop or self.freeze or self.gap or self.skew)


def _spread(stamps: np.ndarray, fps: float) -> np.ndarray:
    """Release times of frames: each frame's stamp, frames sharing a stamp spread evenly over the time
    to the next stamp (the last group over its frames' worth of ``fps``)."""
    first = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
    size = np.diff(np.r_[first, len(stamps)])
    gap = np.r_[stamps[first[1:]] - stamps[first[:-1]], size[-1] / fps] if len(first) else np.zeros(0)
    rank = np.arange(len(stamps)) - np.repeat(first, size)
    return stamps + rank / np.repeat(size, size) * np.repeat(gap, size)


def _within(t: np.ndarray, span: tuple[float, float] | None) -> np.ndarray:
    return np.zeros(t.shape, bool) if span is None else (t >= span[0]) & (t < span[1])


class ReplaySource:
    """One recording of a store, released into the rings on the stream's own clock.

    ``recording``: its name or id (default: the store's first recording). ``shape`` (height,
    width): the frames' size in the rings (resized on release when the store's differs); None
    releases frame times only (a current-only model). ``frame`` numbers are the store's global
    frame indices, so decisions and events align with ``fmmodel predict``'s windows.
    """

    def __init__(self, store: StoreHandle, recording: str | None, *, shape: tuple[int, int] | None,
                 faults: Faults = Faults()) -> None:
        location = store.location
        try:
            meta = store.meta
            names = list(store.recording_names)
            f_off, c_off = store.offsets
            r = 0 if recording is None else store.recording_index(recording)  # a name or an id
            f0, f1, c0, c1 = int(f_off[r]), int(f_off[r + 1]), int(c_off[r]), int(c_off[r + 1])
            self.frame_time = store.column(schema.FRAME_TIME)[f0:f1].astype(np.float64)
            current_time = store.column(schema.CURRENT_TIME)[c0:c1].astype(np.float64)
            reader = open_axis_reader(store, schema.CURRENT)
            current = reader.take(np.arange(c0, c1, dtype=np.int64)) if c1 > c0 else np.zeros((0, 3))
            self._video = open_axis_reader(store, schema.VIDEO) if shape is not None else None
        except FmDataError as exc:
            raise FmModelError(exc.message, exc.path or str(location), field=exc.field) from None
        if f1 <= f0:
            raise FmModelError(f"expected frames in recording {names[r]!r}, got none", str(location))
        self.location, self.recording, self.shape, self.faults = location, names[r], shape, faults
        self.fps, self.first_frame, self.frames = float(meta.fps), f0, f1 - f0
        self.store_shape = (int(meta.height), int(meta.width))
        self.rule = current_rule(current_time) if len(current_time) else None
        self.start = float(self.frame_time[0])
        # what is released when: frames (in order) and rows (stably sorted by release time)
        rel = self.frame_time - self.start
        rng = np.random.default_rng(faults.seed)
        in_span = _within(rel, faults.drop_span) if faults.drop_span is not None else np.ones(len(rel), bool)
        keep = ~((rng.random(len(rel)) < faults.drop) & in_span)
        keep[0] = True  # the stream starts with its first frame
        self._f_index = np.flatnonzero(keep)  # local frame indices released, in order
        self._f_release = _spread(self.frame_time, self.fps)[self._f_index]
        image_of = np.arange(len(rel))
        if faults.freeze is not None:
            inside = np.flatnonzero(_within(rel, faults.freeze))
            if len(inside):
                image_of[inside] = inside[0]
        self._image_of = image_of
        crel = current_time - self.start
        c_keep = ~_within(crel, faults.gap)
        # skew: what arrives from skew_from on is stamped ``skew`` seconds ahead of the video's clock
        shifted = crel - faults.skew >= faults.skew_from
        release = current_time - np.where(shifted, faults.skew, 0.0) if faults.skew else current_time
        order = np.flatnonzero(c_keep)
        order = order[np.argsort(release[order], kind="stable")]
        self._c_stamp, self._c_values, self._c_release = current_time[order], current[order], release[order]
        self._fi = self._ci = 0
        self._cache: tuple[int, np.ndarray] | None = None  # (first local frame, decoded frames) read ahead
        self.done = False

    @property
    def current_stamps(self) -> np.ndarray:
        """The stamps of the current rows the replay releases (in release order)."""
        return self._c_stamp

    def _image(self, local: int) -> np.ndarray:
        """The frame at local index ``local`` (after faults), at the rings' size."""
        src = int(self._image_of[local])
        if self._cache is None or not self._cache[0] <= src < self._cache[0] + len(self._cache[1]):
            assert self._video is not None
            stop = min(self.frames, src + READ_AHEAD)
            try:
                block = self._video.take(np.arange(self.first_frame + src, self.first_frame + stop, dtype=np.int64))
            except FmDataError as exc:
                raise FmModelError(str(exc)) from None
            self._cache = (src, block)
        assert self.shape is not None
        return fit_frame(self._cache[1][src - self._cache[0]], self.shape)

    def next_release(self) -> float:
        """Return the stream time of the next release (inf when everything is out)."""
        f = self._f_release[self._fi] if self._fi < len(self._f_index) else math.inf
        c = self._c_release[self._ci] if self._ci < len(self._c_release) else math.inf
        return float(min(f, c))

    def advance(self, t: float, frames: FrameRing | None, current: CurrentRing | None,
                arrival: float | None = None) -> None:
        """Release everything due by stream time ``t`` (rows first); ``arrival`` stamps their arrival
        (None: each item's own release time, as the virtual clock has it)."""
        c_end = int(np.searchsorted(self._c_release, t, side="right"))
        if current is not None:
            if c_end > self._ci:
                got = slice(self._ci, c_end)
                current.push(self._c_stamp[got], self._c_values[got],
                             self._c_release[got] if arrival is None else arrival)
            current.rule = self.rule
            current.complete_until = t
        self._ci = max(self._ci, c_end)
        f_end = int(np.searchsorted(self._f_release, t, side="right"))
        for k in range(self._fi, f_end):
            local = int(self._f_index[k])
            stamp = float(self.frame_time[local])
            if frames is not None:
                image = self._image(local) if frames.images is not None else None
                frames.push(self.first_frame + local, stamp, stamp if arrival is None else arrival, image)
        self._fi = max(self._fi, f_end)
        self.done = self._fi >= len(self._f_index)  # rows after the last frame belong to no window

    def run(self, clock: Clock, frames: FrameRing | None, current: CurrentRing | None,
            stop: threading.Event) -> None:
        """Producer thread on a real clock: release items as their times come, until done or ``stop``."""
        while not stop.is_set() and not self.done:
            self.advance(clock.now(), frames, current, arrival=clock.now())
            due = self.next_release()
            if math.isfinite(due):
                clock.wait_until(min(due, clock.now() + NAP * clock.speed))  # wakes for ``stop`` too
