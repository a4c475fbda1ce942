"""Cutting a decision's window out of the ring buffers, exactly as the stored window rules cut it.

At a decision the anchor is the newest frame whose current history is complete (every row
stamped at or before the frame has arrived; :attr:`CurrentRing.complete_until`). Its clip and its
current rows come from :mod:`fmdata.store.window_table` (``clip_frames``, ``current_window``,
``current_row_offsets``), the functions the window-table builder applies to a whole store: the
rings hold a stream from its first item on (or at least the whole history a window needs; ring
sizes are checked at start-up), so on a replayed store every window equals the stored table's
window of the same anchor frame (the ``reference`` policy: clips clamped at the stream's first
frame, histories cut at its first row). The model's inputs are then made by
:mod:`fmmodel.data.preprocessing` (``clip_values``, ``current_values``), as the lazy dataset makes
them: bit-identical.

Where a ring lacks a frame the clip needs (a dropped frame) the newest older frame stands in,
and ``substitutes`` counts it; a window whose history reached past the oldest held row is marked
``short``. Neither happens on a replay without injected faults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fmdata.store.window_table import WindowParams, clip_frames, current_row_offsets, current_window
from fmmodel.data.preprocessing import clip_values, current_values, item_axes
from fmmodel.online.rings import CurrentRing, FrameRing


@dataclass
class Cut:
    """One decision's window: its anchor and the model's inputs (a batch of one).

    ``frame`` is the anchor's frame number (a replay's global store frame; -1 when no video is
    watched), ``stamp`` its time, ``arrival`` when it arrived. ``video`` (1, 3, T, H', W') and
    ``current`` (1, R, 3) float32 are None when the model does not read them; ``image`` is the
    anchor frame (H, W, 3) RGB for snapshots, None without video.
    """

    frame: int
    stamp: float
    arrival: float
    video: np.ndarray | None
    current: np.ndarray | None
    image: np.ndarray | None
    substitutes: int = 0
    short: bool = False


class WindowCutter:
    """Cuts windows of ``params`` (clip frames and step, current seconds and rows) from the rings.

    ``orientation`` and ``norm`` say how inputs are made (the checkpoint's preprocessing);
    ``video``/``current`` which inputs the model reads; ``first_frame`` is the stream's first frame
    number (clips are clamped to it).
    """

    def __init__(self, params: WindowParams, *, orientation: str, norm: dict[str, np.ndarray] | None,
                 video: bool, current: bool, first_frame: int = 0) -> None:
        self.params, self.orientation, self.norm = params, orientation, norm
        self.reads_video, self.reads_current = video, current
        self.first_frame = int(first_frame)

    def blank(self, shape: tuple[int, int] | None) -> Cut:
        """A window of zeros shaped as :meth:`cut` shapes them (frames of ``shape`` in store orientation):
        for a first, untimed call of the model (its one-off costs are no decision's latency)."""
        p = self.params
        video = (np.zeros((1, 3, p.frames, *_item_shape(shape, self.orientation)), np.float32)
                 if self.reads_video and shape is not None else None)
        current = np.zeros((1, p.current_rows, 3), np.float32) if self.reads_current else None
        return Cut(frame=-1, stamp=math.nan, arrival=math.nan, video=video, current=current, image=None)

    def cut(self, frames: FrameRing | None, current: CurrentRing | None, horizon: float) -> Cut | None:
        """Return the window of the newest frame stamped at or before ``horizon`` (without video: the
        window at time ``horizon`` itself); None when the rings hold nothing to cut it from."""
        p = self.params
        if frames is not None:
            with frames.lock:  # one consistent view: the producer waits microseconds at most
                slots, seq, stamp, arrival = frames.ordered()
                i = int(np.searchsorted(stamp, horizon, side="right")) - 1
                if i < 0:
                    return None
                a_seq, a_stamp, a_arrival = int(seq[i]), float(stamp[i]), float(arrival[i])
                image = video = None
                substitutes = 0
                if frames.images is not None:
                    want = clip_frames(np.array([a_seq]), p.frames, p.frame_step, self.first_frame)[0]
                    pos = np.searchsorted(seq[:i + 1], want, side="right") - 1  # the newest frame at or before each
                    substitutes = int(np.count_nonzero((pos < 0) | (seq[np.maximum(pos, 0)] != want)))
                    raw = frames.images[slots[np.maximum(pos, 0)]]  # a copy (fancy indexing)
                    image = raw[-1]
            if self.reads_video and image is not None:
                video = clip_values(raw[None], self.orientation, self.norm,
                                    np.empty((1, 3, p.frames, *_item_shape(raw.shape[1:3], self.orientation)),
                                             np.float32))
            elif self.reads_video:
                return None
        else:
            a_seq, a_stamp, a_arrival, image, video, substitutes = -1, float(horizon), math.nan, None, None, 0
        values, short = None, False
        if self.reads_current:
            if current is None:
                return None
            got = self._current(current, a_stamp)
            if got is None:
                return None
            values, short = got
        return Cut(frame=a_seq, stamp=a_stamp, arrival=a_arrival, video=video, current=values, image=image,
                   substitutes=substitutes, short=short)

    def _current(self, current: CurrentRing, t: float) -> tuple[np.ndarray, bool] | None:
        """The model's current rows of the window at time ``t`` and whether its history was short."""
        p = self.params
        with current.lock:
            slots, stamps = current.ordered()
            if not len(stamps) or current.rule is None:
                return None
            end = np.searchsorted(stamps, t, side="right")
            start, stop, _, want = current_window(stamps, np.array([end]), p.current_seconds, current.rule)
            rows = int(start[0]) + current_row_offsets(int(stop[0] - start[0]), p.current_rows)
            raw = current.values[slots[rows]]
            wrapped = current.dropped > 0
        # a wrapped ring no longer holds the stream's first row: a window reaching its oldest row may miss rows
        short = wrapped and (int(want[0]) < 0 or int(start[0]) == 0)
        return current_values(raw[None], self.norm), short


def _item_shape(hw: tuple[int, int], orientation: str) -> tuple[int, int]:
    """(H', W') of a model's frames from store frames of ``hw`` (transposed under the reference orientation)."""
    a, b = item_axes(orientation, 0)
    return int(hw[a]), int(hw[b])
