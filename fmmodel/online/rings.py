"""Ring buffers of the newest frames and current rows: what a decision cuts its window from.

A producer (a capture thread, a CSV follower, a replay) pushes every item it gets; the oldest is
overwritten when a ring is full, so a producer never waits for the decision loop and memory never
grows. Rings are sized from the checkpoint's windows (the clip's span in frames, the current
history in seconds) plus a margin (:mod:`fmmodel.online.watch`). Each item carries its *stamp*
(stream time of the data: a frame's time, a row's timestamp) and its *arrival* (stream time when
it was pushed; NaN for history read at start-up, which says nothing about the stream's health).

Readers hold ``lock`` while they read (a few microseconds: the cutter copies one window) and see
items oldest first through :meth:`FrameRing.ordered` / :meth:`CurrentRing.ordered`.
Frames are stored as the model's input frames come from them: RGB uint8 in store orientation
(H, W, 3), resized on arrival (:func:`fit_frame`).
"""
from __future__ import annotations

import math
import threading

import cv2
import numpy as np


def fit_frame(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return ``image`` (H, W, 3) uint8 at ``shape`` (height, width): itself when it has that size, else
    resized with pixel-area averaging (OpenCV ``INTER_AREA``, the right filter for shrinking)."""
    if image.shape[:2] == tuple(shape):
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] >= shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (int(shape[1]), int(shape[0])), interpolation=interpolation)


class FrameRing:
    """The newest ``capacity`` frames: frame number, stamp, arrival and (optionally) the image.

    ``shape`` (height, width) of the stored images; None keeps no images (a current-only model
    still anchors its windows at frames). ``count`` is the number of frames ever pushed.
    ``same_since`` / ``same_run``: arrival of the first frame of the current run of identical
    images and the run's length (a frozen camera repeats its last image).
    """

    def __init__(self, capacity: int, shape: tuple[int, int] | None) -> None:
        self.capacity = int(capacity)
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))
        self.lock = threading.Lock()
        self.seq = np.zeros(self.capacity, np.int64)
        self.stamp = np.zeros(self.capacity, np.float64)
        self.arrival = np.zeros(self.capacity, np.float64)
        self.images = None if self.shape is None else np.zeros((self.capacity, *self.shape, 3), np.uint8)
        self.count = 0
        self.same_since, self.same_run = math.nan, 0
        self.last_arrival = math.nan  # of the newest frame pushed live (finite arrival)
        self.last_lag = math.nan  # its arrival minus its stamp

    @property
    def nbytes(self) -> int:
        """Bytes the ring holds."""
        extra = 0 if self.images is None else self.images.nbytes
        return int(self.seq.nbytes + self.stamp.nbytes + self.arrival.nbytes + extra)

    def push(self, seq: int, stamp: float, arrival: float, image: np.ndarray | None = None) -> None:
        """Add one frame (``image`` already at ``shape``; ignored when the ring keeps none)."""
        with self.lock:
            i = self.count % self.capacity
            same = False
            if self.images is not None and image is not None:
                if self.count:
                    same = np.array_equal(self.images[(self.count - 1) % self.capacity], image)
                self.images[i] = image
            self.seq[i], self.stamp[i], self.arrival[i] = seq, stamp, arrival
            if same:
                self.same_run += 1
            else:
                self.same_since, self.same_run = arrival, 1
            if math.isfinite(arrival):
                self.last_arrival, self.last_lag = arrival, arrival - stamp
            self.count += 1

    def slots(self) -> np.ndarray:
        """Return the slots of the held frames, oldest first (call with ``lock`` held)."""
        n = min(self.count, self.capacity)
        return (np.arange(self.count - n, self.count) % self.capacity).astype(np.int64)

    def ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (slots, frame numbers, stamps, arrivals) of the held frames, oldest first (copies;
        call with ``lock`` held)."""
        s = self.slots()
        return s, self.seq[s], self.stamp[s], self.arrival[s]


class CurrentRing:
    """The newest ``capacity`` current rows: stamp, arrival and the three phases (float64).

    ``count`` is the number of rows ever pushed; ``complete_until``: every row stamped at or
    before it has arrived (set by the producer: a replay knows, a live source knows once a later
    row came). ``rule`` is the stream's current rule (``fmdata.store.window_table.current_rule``),
    kept up to date by the producer.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.lock = threading.Lock()
        self.stamp = np.zeros(self.capacity, np.float64)
        self.arrival = np.zeros(self.capacity, np.float64)
        self.values = np.zeros((self.capacity, 3), np.float64)
        self.count = 0
        self.complete_until = -math.inf
        self.rule: str | None = None
        self.bad_rows = 0  # rows a live source skipped as unreadable
        self.last_arrival = math.nan
        self.last_lag = math.nan

    @property
    def nbytes(self) -> int:
        """Bytes the ring holds."""
        return int(self.stamp.nbytes + self.arrival.nbytes + self.values.nbytes)

    def push(self, stamps: np.ndarray, values: np.ndarray, arrival: np.ndarray | float) -> None:
        """Add rows (stamps (n,), values (n, 3), arrival scalar or (n,)), oldest first."""
        stamps = np.asarray(stamps, np.float64).reshape(-1)
        values = np.asarray(values, np.float64).reshape(-1, 3)
        arrivals = np.broadcast_to(np.asarray(arrival, np.float64), stamps.shape)
        n = len(stamps)
        skip = max(0, n - self.capacity)  # only the newest fit
        with self.lock:
            slots = (self.count + np.arange(skip, n)) % self.capacity
            self.stamp[slots], self.values[slots], self.arrival[slots] = stamps[skip:], values[skip:], arrivals[skip:]
            self.count += n
            live = np.flatnonzero(np.isfinite(arrivals))
            if len(live):
                self.last_arrival = float(arrivals[live[-1]])
                self.last_lag = self.last_arrival - float(stamps[live[-1]])

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (slots, stamps) of the held rows, oldest first (call with ``lock`` held)."""
        n = min(self.count, self.capacity)
        s = (np.arange(self.count - n, self.count) % self.capacity).astype(np.int64)
        return s, self.stamp[s]

    @property
    def dropped(self) -> int:
        """Rows overwritten so far (the ring wrapped)."""
        return max(0, self.count - self.capacity)
