"""Simulate FMF recordings: furnace-shell video, hot-spot masks, three-phase arc current, split.

A :class:`Recording` is a plan, not data: a handful of scheduled events (anomalies, water-mist
episodes, current fluctuations) and a few small texture banks. Frames, masks and current of any
frame range are rendered on demand by :meth:`Recording.render` and :meth:`Recording.current`,
vectorised over the block, and every value is a pure function of (seed, recording, frame index):
a block renders the same whatever the block size, and a writer can stream any length in bounded
memory. Random values that vary per frame come from a counter-based hash (splitmix64) of the
frame index, so no generator state is carried from block to block.

What is simulated (docs/synthetic-data.md has the picture and the knobs):

* the furnace shell: a shaded cylinder with rust texture, a riveted ring and seams;
* flame above the shell that flickers (a bank of tongue patterns, cross-faded every 0.2 s) and
  sometimes flares down over the shell;
* slow light drift (global gain and colour temperature);
* water-mist episodes that veil part of the shell or hide all of it, at random times: the
  anomalies they meet are invisible in the video but not in the current;
* hot-spot anomalies: irregular bright-red spots that appear, grow and fade; the mask is exactly
  the set of pixels the spot covers (mist does not change the mask);
* current: three phases in amperes near one level of 7,500-9,500 A (clipped to 3,000-16,000 A) with common
  drift, ripple and fluctuations (all phases together, or one phase pushed up alone); during an
  anomaly the phase nearest the spot rises by 1,800-3,000 A (one anomaly in seven only 30-50 %
  of that), the other two drop and the rising phase ripples up to four times harder;
* the split: a contiguous train block, an unused guard gap, then a contiguous test block.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from fmdata.errors import FmDataError
from fmdata.sources.layouts import check_fps
from fmdata.store import schema

BASE_ORIGIN = _dt.datetime(2023, 5, 10, 21, 33, 27)
# Event profiles for `fmdata synth --events`: "dense" packs shorter, more frequent and larger hot
# spots into a recording, so that a few minutes of synthetic data hold enough anomalies to learn
# from (the demo and the learning tests use it); "standard" keeps the SynthConfig defaults.
EVENT_PROFILES: dict[str, dict[str, Any]] = {
    "standard": {},
    "dense": {"anomaly_gap_s": (4.0, 12.0), "anomaly_duration_s": (6.0, 14.0), "anomaly_radius": (0.08, 0.16)},
}
_BANK = 32  # texture patterns per bank (fewer for large frames, see _bank_sizes)
_NOISE_BANK = 61
_BANK_BUDGET = 48 << 20  # bytes of float32 textures per recording plan


def _bank_sizes(h: int, w: int) -> tuple[int, int]:
    """Patterns per flame/mist bank and sensor-noise frames, capped so the banks fit the budget."""
    per = h * w * 4
    noise = int(max(5, min(_NOISE_BANK, _BANK_BUDGET // 2 // (3 * per))))
    bank = int(max(4, min(_BANK, _BANK_BUDGET // 4 // per)))
    return bank, noise


@dataclass(frozen=True)
class SynthConfig:
    """The knobs of the simulation; times are in seconds, sizes in pixels or shares of the frame.

    ``anomaly_gap_s``/``anomaly_duration_s`` draw the normal time between anomalies and their
    length; ``anomaly_radius`` is the peak spot radius as a share of min(H, W) (never under
    1.5 px). ``mist_dense_share`` is the share of mist episodes thick enough to hide the whole
    shell. Mist comes at random times, independent of anomalies (so mist itself says nothing
    about the label), and hides the anomalies it happens to meet. ``test_fraction`` and
    ``guard_fraction`` size the split blocks; the guard is at least ``min_guard_s`` (longer than
    one reference clip of 10 frames at step 18).
    """

    height: int = 64
    width: int = 64
    fps: float = 25.0
    test_fraction: float = 0.2
    guard_fraction: float = 0.03
    min_guard_s: float = 8.0
    anomaly_gap_s: tuple[float, float] = (10.0, 30.0)
    anomaly_duration_s: tuple[float, float] = (6.0, 20.0)
    anomaly_radius: tuple[float, float] = (0.06, 0.14)
    mist_gap_s: tuple[float, float] = (15.0, 60.0)
    mist_duration_s: tuple[float, float] = (3.0, 14.0)
    mist_dense_share: float = 0.4
    flare_gap_s: tuple[float, float] = (10.0, 40.0)
    current_level_a: tuple[float, float] = (7500.0, 9500.0)
    current_ripple: float = 0.012
    current_response_a: tuple[float, float] = (1800.0, 3000.0)
    fluctuation_gap_s: tuple[float, float] = (15.0, 60.0)
    fluctuation_a: float = 1500.0
    fluctuation_single_share: float = 0.3
    weak_response_share: float = 0.15

    def validate(self) -> None:
        """Raise FmDataError when a knob is out of its sensible range."""
        if not (4 <= self.height <= 2048 and 4 <= self.width <= 2048):
            raise FmDataError(f"expected a frame size between 4 and 2048 pixels, got {self.height}x{self.width}",
                              field="size")
        check_fps(self.fps)
        if not (0 < self.test_fraction < 1 and 0 <= self.guard_fraction < 1
                and self.test_fraction + self.guard_fraction < 1):
            raise FmDataError(f"expected 0 < test_fraction, 0 <= guard_fraction, sum < 1, got "
                              f"{self.test_fraction} and {self.guard_fraction}")


# ---- counter-based randomness -----------------------------------------------------------------
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _hash(key: int, idx: np.ndarray) -> np.ndarray:
    """splitmix64 of (key, idx): uint64 values that look independent for every index."""
    with np.errstate(over="ignore"):
        x = np.asarray(idx, dtype=np.int64).astype(np.uint64) * _M1 + np.uint64(key)
        x ^= x >> np.uint64(30)
        x *= _M2
        x ^= x >> np.uint64(27)
        x *= _M3
        x ^= x >> np.uint64(31)
    return x


def _uniform(key: int, idx: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) as a pure function of (key, idx)."""
    return (_hash(key, idx) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _normal(key: int, idx: np.ndarray) -> np.ndarray:
    """Standard normal values as a pure function of (key, idx) (Box-Muller)."""
    i = np.asarray(idx, dtype=np.int64)
    u1 = 1.0 - _uniform(key, 2 * i)
    u2 = _uniform(key, 2 * i + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)


def _smooth(key: int, t: np.ndarray, period: float) -> np.ndarray:
    """A smooth random curve in [-1, 1]: hashed knots every ``period`` seconds, cosine-blended."""
    x = np.asarray(t, dtype=np.float64) / period
    k = np.floor(x).astype(np.int64)
    w = (1.0 - np.cos(np.pi * (x - k))) * 0.5
    v0 = _uniform(key, k) * 2 - 1
    v1 = _uniform(key, k + 1) * 2 - 1
    return v0 + (v1 - v0) * w


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth 2-D noise in [0, 1]: a few octaves of random grids upsampled with cubic interpolation."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2**o
        grid = rng.random((n + 1, n + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


# ---- events -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anomaly:
    """One hot spot: frames [start, stop), centre (cy, cx) in pixels, peak radius, current phase."""

    start: int
    stop: int
    cy: float
    cx: float
    radius: float
    aspect: float
    phase: int
    response_a: float
    shape_key: int


@dataclass(frozen=True)
class Episode:
    """A generic event over frames [start, stop) with a peak ``level`` (mist density, amperes...).

    ``phase`` is the one current phase a fluctuation pushes (-1: all three together).
    """

    start: int
    stop: int
    level: float
    phase: int = -1


def _schedule(rng: np.random.Generator, n: int, fps: float, gap_s: tuple[float, float],
              dur_s: tuple[float, float]) -> list[tuple[int, int]]:
    """Non-overlapping [start, stop) frame intervals of a renewal process over n frames."""
    out: list[tuple[int, int]] = []
    t = rng.uniform(*gap_s) * fps * 0.5
    while True:
        start = int(t)
        stop = start + max(2, int(rng.uniform(*dur_s) * fps))
        if start >= n:
            return out
        out.append((start, min(stop, n)))
        t = stop + rng.uniform(*gap_s) * fps


def _envelope(frames: np.ndarray, start: int, stop: int, ramp: float) -> np.ndarray:
    """0..1 trapezoid over [start, stop) with cosine ramps of ``ramp`` frames; 0 outside."""
    f = np.asarray(frames, dtype=np.float64)
    ramp = max(1.0, min(ramp, (stop - start) / 2))
    up = np.clip((f - start + 1) / ramp, 0, 1)
    down = np.clip((stop - f) / ramp, 0, 1)
    e = np.minimum(up, down)
    e = (1 - np.cos(np.pi * e)) * 0.5
    e[(f < start) | (f >= stop)] = 0.0
    return e


def split_sizes(n_frames: int, cfg: SynthConfig) -> tuple[int, int, int]:
    """Return (train, guard, test) frame counts for a recording of ``n_frames`` (train first).

    The guard is the larger of ``guard_fraction`` and ``min_guard_s`` but never more than a
    tenth of the recording; recordings under 3 frames are all train.
    """
    if n_frames < 3:
        return n_frames, 0, 0
    test = max(1, int(round(cfg.test_fraction * n_frames)))
    guard = max(1, min(int(round(max(cfg.guard_fraction * n_frames, cfg.min_guard_s * cfg.fps))),
                       n_frames // 10))
    train = n_frames - test - guard
    if train < 1:
        train, guard, test = n_frames - 2, 1, 1
    return train, guard, test


# ---- a recording ------------------------------------------------------------------------------
class Recording:
    """The plan of one simulated recording; render any frame range on demand.

    ``n_frames`` counts every simulated frame (train + guard + test). ``origin`` is the wall-clock
    time of frame 0 (whole seconds). Built by :func:`simulate`.
    """

    def __init__(self, n_frames: int, cfg: SynthConfig, seed: int, index: int = 0,
                 split: tuple[int, int, int] | None = None) -> None:
        cfg.validate()
        if n_frames < 1:
            raise FmDataError(f"expected at least 1 frame per recording, got {n_frames}")
        self.n_frames = int(n_frames)
        self.cfg = cfg
        self.seed = int(seed)
        self.index = int(index)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFFFFFFFFFF, self.index]))
        self._keys = [int(k) for k in rng.integers(0, 2**63, size=24, dtype=np.int64)]
        self.origin = BASE_ORIGIN + _dt.timedelta(days=int(rng.integers(0, 400)), seconds=int(rng.integers(0, 86400)))
        self._event_index: dict[int, tuple[list, np.ndarray, np.ndarray]] = {}
        self.n_train, self.n_guard, self.n_test = split or split_sizes(self.n_frames, cfg)
        if self.n_train + self.n_guard + self.n_test != self.n_frames or min(self.n_train, self.n_guard, self.n_test) < 0:
            raise FmDataError(f"expected train + guard + test = {self.n_frames} frames, got {split}")
        self._build_scene(rng)
        self._build_events(rng)

    # -- split
    def split(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Return the split codes (schema.SPLIT_TRAIN / SPLIT_NONE / SPLIT_TEST) of frames [start, stop)."""
        stop = self.n_frames if stop is None else stop
        f = np.arange(start, stop)
        out = np.full(f.shape, schema.SPLIT_TRAIN, np.int8)
        out[f >= self.n_train] = schema.SPLIT_NONE
        out[f >= self.n_train + self.n_guard] = schema.SPLIT_TEST
        return out

    def split_indices(self) -> dict[str, np.ndarray]:
        """Return the frame indices of each split: {"train": ..., "test": ..., "none": ...}."""
        f = np.arange(self.n_frames)
        edge = self.n_train + self.n_guard
        return {"train": f[:self.n_train], "none": f[self.n_train:edge], "test": f[edge:]}

    # -- scene
    def _build_scene(self, rng: np.random.Generator) -> None:
        h, w = self.cfg.height, self.cfg.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        y, x = yy / h, xx / w
        self.shell_top = 0.2 + 0.06 * float(rng.random())
        rust = _value_noise(rng, (h, w), 4)
        grain = _value_noise(rng, (h, w), 16, octaves=2)
        shade = 0.45 + 0.55 * np.cos((x - 0.5 - 0.1 * (rng.random() - 0.5)) * np.pi * 0.95)
        ring = 1.0 - 0.35 * np.exp(-(((y - 0.58 - 0.1 * rng.random()) * h) / 1.2) ** 2)
        seams = 1.0 - 0.25 * (np.abs(((x * 5 + rng.random()) % 1.0) - 0.5) < 0.5 / max(w / 5, 2))
        lum = shade * ring * seams * (0.75 + 0.35 * rust) * (0.9 + 0.2 * grain)
        base = np.array([92, 78, 68], np.float32) * (0.9 + 0.2 * rng.random(3)).astype(np.float32)
        shell = lum[..., None] * base
        above = y < self.shell_top
        shell[above] = (np.array([22, 16, 14], np.float32) * (0.8 + 0.4 * grain[above, None]))
        self.shell = shell.astype(np.float32)
        # Flame tongues: glow that falls off below a wavy edge near the shell's top.
        self._bank, self._noise_bank = _bank_sizes(h, w)
        flames = np.empty((self._bank, h, w), np.float32)
        for k in range(self._bank):
            edge = self.shell_top + 0.06 * np.sin(2 * np.pi * (x[0] * rng.uniform(1.5, 4) + rng.random()))
            edge = edge + 0.08 * (_value_noise(rng, (1, w), 3, octaves=2)[0] - 0.3)
            depth = (y - edge[None, :]) / 0.07
            flames[k] = np.where(depth < 0, 1.0, np.exp(-depth**2)) * (0.7 + 0.3 * _value_noise(rng, (h, w), 3))
        self.flames = flames
        self.mists = np.stack([_value_noise(rng, (h, w), 3) for _ in range(self._bank)]).astype(np.float32)
        self.noise = rng.normal(0, 2.5, (self._noise_bank, h, w, 3)).astype(np.float32)
        self._xx, self._yy = xx, yy
        self._flame_color = np.array([235, 165, 55], np.float32)
        self._hot_color = np.array([255, 96, 40], np.float32)
        self._fog_color = np.array([196, 200, 204], np.float32)

    def _build_events(self, rng: np.random.Generator) -> None:
        cfg, n, fps = self.cfg, self.n_frames, self.cfg.fps
        h, w = cfg.height, cfg.width
        spans = _schedule(rng, n, fps, cfg.anomaly_gap_s, cfg.anomaly_duration_s)
        # Both split blocks get at least one anomaly when they are long enough for one.
        blocks = [(0, self.n_train), (self.n_train + self.n_guard, n)]
        for b0, b1 in blocks:
            if b1 - b0 >= max(6, int(2 * fps)) and not any(s < b1 and e > b0 for s, e in spans):
                length = max(3, min(int(cfg.anomaly_duration_s[0] * fps), (b1 - b0) * 2 // 3))
                s = b0 + (b1 - b0 - length) // 2
                spans = sorted(spans + [(s, s + length)])
        lo = min(h, w)
        self.anomalies: list[Anomaly] = []
        for s, e in spans:
            radius = max(1.5, float(rng.uniform(*cfg.anomaly_radius)) * lo)
            cy = rng.uniform(self.shell_top * h + radius + 1, h - radius - 1) if h > 8 else h / 2
            cx = rng.uniform(radius + 1, w - radius - 1) if w > 8 else w / 2
            self.anomalies.append(Anomaly(
                start=s, stop=e, cy=float(cy), cx=float(cx), radius=radius, aspect=float(rng.uniform(0.7, 1.4)),
                phase=min(2, int(3 * cx / w)),
                response_a=float(rng.uniform(*cfg.current_response_a)
                                 * (rng.uniform(0.3, 0.5) if rng.random() < cfg.weak_response_share else 1.0)),
                shape_key=int(rng.integers(0, 2**62))))
        mist = [Episode(s, e, float(rng.uniform(1.02, 1.35) if rng.random() < cfg.mist_dense_share
                                    else rng.uniform(0.18, 0.48)))
                for s, e in _schedule(rng, n, fps, cfg.mist_gap_s, cfg.mist_duration_s)]
        self.mist = sorted(mist, key=lambda ep: ep.start)
        self.flares = [Episode(s, e, float(rng.uniform(0.5, 1.0)))
                       for s, e in _schedule(rng, n, fps, cfg.flare_gap_s, (1.0, 5.0))]
        # Normal current fluctuations: most move all phases together, some push one phase up the
        # way an anomaly does (without its harder ripple), so the current alone can be fooled.
        self.fluctuations = []
        for s, e in _schedule(rng, n, fps, cfg.fluctuation_gap_s, (2.0, 12.0)):
            if rng.random() < cfg.fluctuation_single_share:
                self.fluctuations.append(Episode(s, e, float(rng.uniform(0.5, 1.0) * cfg.fluctuation_a),
                                                 int(rng.integers(0, 3))))
            else:
                self.fluctuations.append(Episode(s, e, float(rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
                                                             * cfg.fluctuation_a)))
        # The electrode regulation keeps the three phases near one level; they differ by a few hundred A.
        self.levels = rng.uniform(*cfg.current_level_a) + rng.uniform(-250.0, 250.0, size=3)
        self.ripple_periods = rng.uniform(1.2, 3.0, size=3)
        self.ripple_phases = rng.uniform(0, 2 * np.pi, size=3)

    def _active(self, events: list, start: int, stop: int) -> list:
        """Events of ``events`` (sorted, non-overlapping) that overlap frames [start, stop)."""
        key = id(events)
        index = self._event_index.get(key)
        if index is None or index[0] is not events:
            index = (events, np.array([e.start for e in events], np.int64), np.array([e.stop for e in events], np.int64))
            self._event_index[key] = index
        _, starts, stops = index
        return events[int(np.searchsorted(stops, start, "right")):int(np.searchsorted(starts, stop, "left"))]

    @lru_cache(maxsize=8)  # noqa: B019 - a plan lives as long as its writer; 8 entries per plan are the point
    def _spot_distance(self, a: Anomaly) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Distance to the spot's centre with an irregular, spot-specific outline, and the box
        (y0, y1, x0, x1) that holds every pixel the spot ever covers."""
        rng = np.random.default_rng(a.shape_key)
        dy = (self._yy - a.cy) / a.aspect
        dx = (self._xx - a.cx) * a.aspect
        theta = np.arctan2(dy, dx)
        wobble = 1.0 + 0.18 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.1 * np.sin(5 * theta + rng.uniform(0, 6.3))
        d = (np.sqrt(dy**2 + dx**2) / wobble).astype(np.float32)
        ys, xs = np.nonzero(d <= a.radius + 0.5)
        return d, (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)

    def spot_radius(self, a: Anomaly, frames: np.ndarray) -> np.ndarray:
        """Radius (pixels) of spot ``a`` at ``frames``: grows from 1.5 px to its peak, then fades back."""
        u = (frames - a.start + 0.5) / (a.stop - a.start)
        grow = np.sin(np.pi * np.clip(u, 0, 1)) ** 0.7
        r = 1.5 + (a.radius - 1.5) * grow
        return np.where((frames >= a.start) & (frames < a.stop), r, 0.0)

    # -- rendering
    def render(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Render frames [start, stop): return (video (n, H, W, 3) uint8, mask (n, H, W) uint8).

        Images are in true orientation (row = MATLAB's first index). The mask is 1 exactly on
        the pixels a hot spot covers, whether or not mist hides it.
        """
        if not (0 <= start <= stop <= self.n_frames):
            raise FmDataError(f"expected a frame range within 0..{self.n_frames}, got {start}..{stop}")
        h, w = self.cfg.height, self.cfg.width
        video = np.empty((stop - start, h, w, 3), np.uint8)
        mask = np.zeros((stop - start, h, w), np.uint8)
        # Small sub-blocks keep the float work in cache; the result does not depend on their size.
        step = max(1, (1 << 19) // (h * w * 3))
        for s in range(start, stop, step):
            e = min(stop, s + step)
            self._render_into(s, e, video[s - start:e - start], mask[s - start:e - start])
        return video, mask

    def _render_into(self, start: int, stop: int, out: np.ndarray, mask: np.ndarray) -> None:
        cfg, k = self.cfg, self._keys
        f = np.arange(start, stop)
        t = f / cfg.fps
        # Light drift: global gain and a warm/cool tint, both slow.
        gain = 1.0 + 0.14 * _smooth(k[0], t, 45.0) + 0.05 * _smooth(k[1], t, 6.0)
        warm = 0.05 * _smooth(k[2], t, 60.0)
        tint = np.stack([gain * (1 + warm), gain, gain * (1 - warm)], axis=1).astype(np.float32)
        img = self.shell[None] * tint[:, None, None, :]
        # Flame: cross-fade between two tongue patterns every 0.2 s; flicker and flares scale it.
        slot = t / 0.2
        s0 = np.floor(slot).astype(np.int64)
        mix = (slot - s0).astype(np.float32)
        i0 = (_hash(k[3], s0) % np.uint64(self._bank)).astype(np.intp)
        i1 = (_hash(k[3], s0 + 1) % np.uint64(self._bank)).astype(np.intp)
        strength = 0.75 + 0.25 * _smooth(k[4], t, 0.15) + 0.15 * _smooth(k[5], t, 9.0)
        for ep in self._active(self.flares, start, stop):
            strength = strength + ep.level * _envelope(f, ep.start, ep.stop, 0.3 * cfg.fps)
        strength = np.clip(strength, 0.2, None).astype(np.float32)
        flame = self.flames[i0] * ((1 - mix) * strength)[:, None, None]
        flame += self.flames[i1] * (mix * strength)[:, None, None]
        img += flame[..., None] * self._flame_color
        # Hot spots, then the mask; only the box around each spot is touched.
        for a in self._active(self.anomalies, start, stop):
            lo, hi = max(a.start, start), min(a.stop, stop)
            sel = slice(lo - start, hi - start)
            d, (y0, y1, x0, x1) = self._spot_distance(a)
            radius = self.spot_radius(a, f[sel]).astype(np.float32)[:, None, None]
            box = d[None, y0:y1, x0:x1]
            inside = box <= radius
            mask[sel, y0:y1, x0:x1] |= inside
            u = (f[sel] - a.start + 0.5) / (a.stop - a.start)
            glow = (0.85 + 0.15 * np.sin(np.pi * np.clip(u, 0, 1))).astype(np.float32)[:, None, None]
            heat = np.where(inside, glow * (1.0 - 0.35 * (box / np.maximum(radius, 1e-3)) ** 2), 0.0)[..., None]
            hot = self._hot_color * gain[sel, None, None, None].astype(np.float32)
            part = img[sel, y0:y1, x0:x1]
            part += heat * (hot - part)
        # Water mist: a veil whose density follows the episodes; dense mist hides everything.
        density = np.zeros(f.size)
        for ep in self._active(self.mist, start, stop):
            density = np.maximum(density, ep.level * _envelope(f, ep.start, ep.stop, 0.15 * (ep.stop - ep.start)))
        veiled = np.nonzero(density > 0)[0]
        if veiled.size:
            v = slice(int(veiled[0]), int(veiled[-1]) + 1)  # alpha is 0 on clear frames in between
            mi = (_hash(k[6], f[v] // max(1, int(cfg.fps))) % np.uint64(self._bank)).astype(np.intp)
            # alpha = density * (1 + 1.25 * pattern): a density of 1 or more covers every pixel.
            alpha = self.mists[mi]
            alpha *= 1.25 * density[v, None, None].astype(np.float32)
            alpha += density[v, None, None].astype(np.float32)
            np.clip(alpha, 0, 1, out=alpha)
            fog = self._fog_color * (0.9 + 0.1 * gain[v, None, None, None]).astype(np.float32)
            part = img[v]
            part += alpha[..., None] * (fog - part)
        # Sensor noise from a bank, picked per frame by hash.
        img += self.noise[(_hash(k[7], f) % np.uint64(self._noise_bank)).astype(np.intp)]
        np.clip(img, 0, 255, out=img)
        out[...] = img

    def mist_density(self, start: int, stop: int) -> np.ndarray:
        """Return the mist density of frames [start, stop): 0 clear, >= 1.0 hides the whole frame.

        A pixel's veil opacity is density * (1 + 1.25 * pattern), pattern in [0, 1], clipped to 1.
        """
        f = np.arange(start, stop)
        density = np.zeros(f.size)
        for ep in self._active(self.mist, start, stop):
            density = np.maximum(density, ep.level * _envelope(f, ep.start, ep.stop, 0.15 * (ep.stop - ep.start)))
        return density

    def current(self, start: int, stop: int) -> np.ndarray:
        """Return the current (n, 3) in amperes, phases A, B, C, one sample per frame [start, stop).

        Frames beyond ``n_frames`` are allowed (a 2 Hz log covers the last partial second).
        """
        f = np.arange(start, stop)
        return self._current_at(f.astype(np.float64), f)

    def _current_at(self, f: np.ndarray, noise_index: np.ndarray) -> np.ndarray:
        """Current (n, 3) at fractional frame positions ``f`` (sorted); noise drawn by ``noise_index``."""
        cfg, k = self.cfg, self._keys
        if f.size == 0:
            return np.empty((0, 3))
        start, stop = int(np.floor(f[0])), int(np.floor(f[-1])) + 1
        t = f / cfg.fps
        common = 600 * _smooth(k[8], t, 40.0) + 250 * _smooth(k[9], t, 6.0)
        out = np.empty((f.size, 3))
        shift = np.zeros((f.size, 3))
        for ep in self._active(self.fluctuations, start, stop):
            e = _envelope(f, ep.start, ep.stop, 0.5 * cfg.fps)
            if ep.phase < 0:
                common = common + ep.level * e
            else:
                share = np.full(3, -0.45)
                share[ep.phase] = 1.0
                shift += e[:, None] * share[None, :] * ep.level
        boost = np.zeros((f.size, 3))
        for a in self._active(self.anomalies, start, stop):
            e = _envelope(f, a.start, a.stop, 1.0 * cfg.fps)
            share = np.full(3, -0.45)
            share[a.phase] = 1.0
            boost += e[:, None] * share[None, :] * a.response_a
        for p in range(3):
            level = self.levels[p] + common + 150 * _smooth(k[10 + p], t, 20.0) + boost[:, p] + shift[:, p]
            excite = np.clip(boost[:, p] / 1000.0, 0, None)  # the responding phase ripples harder
            sigma = cfg.current_ripple * level * (1 + excite)
            wave = np.sin(2 * np.pi * t / self.ripple_periods[p] + self.ripple_phases[p])
            out[:, p] = level + sigma * (_normal(k[13 + p], noise_index) + 0.6 * wave)
        return np.clip(out, 3000.0, 16000.0)

    def current_2hz(self, row_start: int, row_stop: int) -> np.ndarray:
        """Return 2 Hz current rows [row_start, row_stop): each the mean of its half second of samples."""
        fps = self.cfg.fps
        edges = np.ceil(np.arange(row_start, row_stop + 1) * 0.5 * fps - 1e-9).astype(np.int64)
        per_frame = self.current(int(edges[0]), int(edges[-1]))
        starts = edges[:-1] - edges[0]
        counts = np.diff(edges)
        if (counts <= 0).any():  # under 2 fps some half seconds hold no frame: sample the row times
            rows = np.arange(row_start, row_stop)
            return self._current_at(rows * 0.5 * fps, rows + (1 << 40))
        return np.add.reduceat(per_frame, starts, axis=0) / counts[:, None]

    def n_current_rows(self) -> int:
        """Rows of the 2 Hz current log: two per second, covering every frame's second."""
        return 2 * int(np.ceil(self.n_frames / self.cfg.fps - 1e-9))

    def frame_seconds(self, start: int, stop: int) -> np.ndarray:
        """Whole seconds since ``origin`` of frames [start, stop) (the 1-s timestamp resolution)."""
        return np.floor(np.arange(start, stop) / self.cfg.fps + 1e-9).astype(np.int64)

    def timestamps(self, seconds: np.ndarray) -> np.ndarray:
        """Format whole seconds since ``origin`` as 'YYYY-MM-DD HH:MM:SS' strings."""
        base = np.datetime64(self.origin.replace(microsecond=0), "s")
        text = np.datetime_as_string(base + np.asarray(seconds).astype("timedelta64[s]"), unit="s")
        return np.char.replace(text, "T", " ")

    def labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Return the frame class labels (1 when any mask pixel is 1) of [start, stop) without rendering."""
        stop = self.n_frames if stop is None else stop
        f = np.arange(start, stop)
        out = np.zeros(f.size, np.uint8)
        for a in self._active(self.anomalies, start, stop):
            out[(f >= a.start) & (f < a.stop)] = 1
        return out


def simulate(n_frames: int, cfg: SynthConfig | None = None, *, seed: int = 0, index: int = 0,
             split: tuple[int, int, int] | None = None) -> Recording:
    """Plan recording ``index`` of a dataset with ``seed``: ``n_frames`` frames (train+guard+test).

    ``split`` overrides the (train, guard, test) sizes that :func:`split_sizes` would choose.
    """
    return Recording(n_frames, cfg or SynthConfig(), seed, index, split)
