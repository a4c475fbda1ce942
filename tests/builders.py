"""Builders of test data, all in one place: recordings in memory, stores, window tables, source files.

* Recordings in memory, in store orientation (:class:`fmdata.store.RecordingArrays`):
  ``recording`` (random frames; V1-like current one row per frame, or V2-like 2 Hz current with
  whole-second timestamps), ``synthetic_recording`` (a textured, flickering shell with a bright
  spot that comes and goes: compresses like camera images) and ``simulated_recordings`` (the
  toolkit's own simulation, fmdata.synth, dense events: something a model can learn from).
* Stores: ``write_store`` / ``make_store`` / ``synthetic_store`` write them; ``cached_store`` and
  ``store64_with_table`` build one per test session.
* Window tables without the toolkit's builder: ``frame_index`` (what a store would give) and
  ``clip_window_table`` (every window whose clip lies in its recording).
* Source files written the way MATLAB writes them (512-byte MATLAB header, ``MATLAB_class``,
  reversed dimensions, ``logical`` as uint8, deflate-3 chunks near 64 KiB, small variables
  compact): ``write_v1`` and ``write_v2``; ``read_v1_independently`` and
  ``read_v2_independently`` read them back with plain h5py, csv and json and the documented
  transposes only, so tests do not trust the converter's own reader.

Everything is seeded.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmdata import store, synth
from fmdata.compute import DaskOptions
from fmdata.convert import convert
from fmdata.derive import FrameIndex, compute_stats, make_windows
from fmdata.store import schema
from fmdata.store.window_table import WindowParams, WindowTable, window_columns, write_window_table
from fmdata.synth import MatWriter

# Shorter, more frequent events than the default simulation: a short recording then holds enough
# anomalies (and mist episodes) for a model to generalise from and for a test split to score.
DENSE_EVENTS = synth.EVENT_PROFILES["dense"]


# ---- recordings in memory ------------------------------------------------------------------------
def split_from_runs(runs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Return an int8 split array from (split code, length) runs."""
    return np.concatenate([np.full(n, code, np.int8) for code, n in runs]) if runs else np.zeros(0, np.int8)


def train_gap_test(n: int, train: float = 0.6, gap: float = 0.1) -> np.ndarray:
    """Return the benchmark's split shape: a train block, an unused guard gap, a test block."""
    a, b = int(n * train), int(n * gap)
    return split_from_runs([(schema.SPLIT_TRAIN, a), (schema.SPLIT_NONE, b), (schema.SPLIT_TEST, n - a - b)])


def v1_times(n: int, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (frame_time, current_time, frame_current_end) of a V1-like recording of n frames."""
    t = np.arange(n) / fps
    return t, t.copy(), np.arange(1, n + 1, dtype=np.int64)


def v2_times(n: int, rng: np.random.Generator, fps: float = 24.5, lead: int = 130, tail: int = 2,
             gap_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (frame_time, current_time, frame_current_end) of a V2-like recording.

    Current seconds run from ``lead`` seconds before the first frame (negative: current starts
    after the video) to ``tail`` seconds after the last; each second is missing with probability
    ``gap_prob``; each present second has two rows.
    """
    frame_time = np.floor(rng.random() + np.arange(n) / fps) + 1000.0
    seconds = np.arange(frame_time[0] - lead, frame_time[-1] + tail + 1)
    if gap_prob:
        seconds = seconds[rng.random(len(seconds)) >= gap_prob]
    if not len(seconds):
        seconds = np.array([frame_time[-1]])
    current_time = np.repeat(seconds, 2).astype(np.float64)
    fce = np.searchsorted(current_time, frame_time, side="right").astype(np.int64)
    return frame_time, current_time, fce


def masks(n: int, h: int, w: int, rng: np.random.Generator, p_abnormal: float = 0.3) -> np.ndarray:
    """Return (n, h, w) uint8 masks: a random rectangle of ones on about ``p_abnormal`` of frames."""
    m = np.zeros((n, h, w), np.uint8)
    for i in np.flatnonzero(rng.random(n) < p_abnormal):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[i, y:y + rng.integers(1, h // 2 + 2), x:x + rng.integers(1, w // 2 + 2)] = 1
    return m


def recording(layout: str, n: int, seed: int, h: int = 8, w: int = 6, split: np.ndarray | None = None,
              **v2_kwargs: float) -> store.RecordingArrays:
    """Return a V1-like (``layout="v1"``) or V2-like (``"v2"``) recording of n frames."""
    rng = np.random.default_rng(seed)
    if layout == "v1":
        frame_time, current_time, fce = v1_times(n)
    else:
        frame_time, current_time, fce = v2_times(n, rng, **v2_kwargs)
    m = len(current_time)
    return store.RecordingArrays(
        video=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        mask=masks(n, h, w, rng),
        split=train_gap_test(n) if split is None else split.astype(np.int8),
        frame_time=frame_time,
        current=rng.normal(9000.0, 800.0, (m, 3)),
        current_time=current_time,
        frame_current_end=fce,
        info=schema.RecordingInfo(name=f"{layout}-{seed}", source_path="memory", source_bytes=0, layout=layout,
                                  n_frames=n, n_current=m))


def synthetic_recording(n_frames: int, height: int, width: int, *, seed: int, name: str = "rec",
                        fps: float = 25.0, current_hz: float | None = None) -> store.RecordingArrays:
    """Return one recording in store orientation.

    ``current_hz=None`` gives one current row per frame (layout V1); a number gives rows at that
    rate with their own time axis (layout V2 uses 2 Hz).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shell = 110 + 50 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    tint = np.array([1.0, 0.7, 0.45], np.float32)
    t = np.arange(n_frames, dtype=np.float32)
    flicker = 12 * np.sin(t / 9.0)[:, None, None]
    base = shell[None] + flicker + rng.normal(0, 2.0, (n_frames, height, width)).astype(np.float32)
    # A hot spot that is present in some stretches of frames and moves slowly.
    present = (np.sin(t / 23.0 + seed) > 0.3)
    cy = (height / 2 + height / 4 * np.sin(t / 31.0))[:, None, None]
    cx = (width / 2 + width / 4 * np.cos(t / 29.0))[:, None, None]
    spot = ((y[None] - cy) ** 2 + (x[None] - cx) ** 2) < (min(height, width) / 6) ** 2
    mask = (spot & present[:, None, None]).astype(np.uint8)
    video = np.clip(base[..., None] * tint + mask[..., None] * np.array([120, 40, 0], np.float32), 0, 255)
    video = video.astype(np.uint8)
    split = np.full(n_frames, schema.SPLIT_TRAIN, np.int8)
    train_end, test_start = int(n_frames * 0.6), int(n_frames * 0.65)
    split[train_end:test_start] = schema.SPLIT_NONE
    split[test_start:] = schema.SPLIT_TEST
    frame_time = t.astype(np.float64) / fps
    if current_hz is None:
        current_time = frame_time.copy()
    else:
        current_time = np.arange(0, frame_time[-1] + 1e-9, 1.0 / current_hz)
    level = 9000 + 1500 * np.sin(current_time[:, None] / 40.0 + np.arange(3))
    current = level + rng.normal(0, 60, (len(current_time), 3))
    frame_current_end = np.searchsorted(current_time, frame_time, side="right").astype(np.int64)
    info = schema.RecordingInfo(name=name, source_path=f"{name}.mat", source_bytes=0,
                                layout="v1" if current_hz is None else "v2",
                                n_frames=n_frames, n_current=len(current_time))
    return store.RecordingArrays(video=video, mask=mask, split=split, frame_time=frame_time, current=current,
                           current_time=current_time, frame_current_end=frame_current_end, info=info)


def simulated_recordings(recordings: int = 6, frames: int = 1500, size: int | tuple[int, int] = 32, seed: int = 0,
                         cfg: synth.SynthConfig | None = None) -> tuple[list[synth.Recording], list[store.RecordingArrays]]:
    """Return (plans, arrays) of ``recordings`` simulated V1-like recordings (dense events by default).

    Each recording has one current row per frame (current_time = frame_time), frame_current_end
    = i + 1, and the synthetic split (train block, guard gap of frames in neither split, test
    block). The plans let tests ask which frames mist hides.
    """
    h, w = (size, size) if isinstance(size, int) else size
    cfg = cfg or synth.SynthConfig(height=h, width=w, **DENSE_EVENTS)
    plans, arrays = [], []
    for i in range(recordings):
        rec = synth.simulate(frames, cfg, seed=seed, index=i)
        video, mask = rec.render(0, frames)
        t = np.arange(frames) / cfg.fps
        arrays.append(store.RecordingArrays(
            video=video, mask=mask, split=rec.split(0, frames), frame_time=t, current=rec.current(0, frames),
            current_time=t.copy(), frame_current_end=np.arange(1, frames + 1, dtype=np.int64),
            info=schema.RecordingInfo(name=f"synth-{i}", source_path="memory", source_bytes=0, layout="v1",
                                      n_frames=frames, n_current=frames)))
        plans.append(rec)
    return plans, arrays


# ---- stores --------------------------------------------------------------------------------------
def write_store(path, recordings: Sequence[store.RecordingArrays], chunk: int = 1, shard: int | None = 16) -> str:
    """Write ``recordings`` as a complete store at ``path``; return the path as a string."""
    store.write_store_from_arrays(path, recordings, fps=25.0, chunking=store.Chunking(chunk, shard, 64))
    return str(path)


def make_store(path: str | os.PathLike[str], recordings: Sequence[store.RecordingArrays], *,
               chunking: store.Chunking = store.Chunking(), table: WindowTable | None = None,
               table_name: str = "w") -> str:
    """Write ``recordings`` (and ``table`` as windows/<table_name>) into a new store; return its path."""
    root = store.write_store_from_arrays(path, recordings, fps=25.0, chunking=chunking)
    if table is not None:
        write_window_table(root, table_name, table)
    return os.fspath(path)


def synthetic_store(path: str | os.PathLike[str], recordings: int = 6, frames: int = 1500,
                    size: int | tuple[int, int] = 32, seed: int = 0,
                    cfg: synth.SynthConfig | None = None) -> list[synth.Recording]:
    """Write a complete store of ``recordings`` simulated recordings at ``path``; return their plans."""
    plans, arrays = simulated_recordings(recordings, frames, size, seed, cfg)
    store.write_store_from_arrays(path, arrays, fps=(cfg or synth.SynthConfig()).fps, chunking=store.Chunking(4, 512))
    return plans


def cached_store(tmp_path_factory, name: str = "model-store", **kwargs) -> str:
    """Return the path of a synthetic store built once per test session (stats included)."""
    path = tmp_path_factory.getbasetemp() / name
    if not (path / "zarr.json").exists():
        synthetic_store(path, **kwargs)
        compute_stats(str(path))
    return str(path)


def store64_with_table(tmp_path_factory) -> str:
    """A 64x64 one-recording store (reference model inputs) with stored window tables "ref10"
    (reference windows, every 10th) and "short" (4-frame clips), built once per session."""
    path = cached_store(tmp_path_factory, "store64", recordings=1, frames=500, size=64, seed=3)
    if "ref10" not in store.open_store(path).window_tables:
        make_windows(path, "ref10", WindowParams(stride=10))
        make_windows(path, "short", WindowParams(frames=4, stride=10))
    return path


# Short windows for 16x16 stores of a few hundred frames: 4 frames step 2, 10 s of current as 20 rows.
SHORT_WINDOWS = WindowParams(frames=4, frame_step=2, current_seconds=10.0, current_rows=20)


def converted_store(tmp_path_factory, name: str = "converted16", frames: int = 1200, size: int = 16) -> str:
    """A store converted by ``fmdata convert`` from a synthetic V1 file (dense events), with labels
    and the window table "w" (SHORT_WINDOWS), built once per session; copy it before changing it."""
    folder = tmp_path_factory.getbasetemp() / name
    path = folder / "store.zarr"
    if not (path / "zarr.json").exists():
        folder.mkdir(exist_ok=True)
        src = synth.write_v1(folder / "rec.mat", frames=frames, size=size, seed=5, events="dense")
        convert([str(src)], str(path), workers=1, progress=False)
        make_windows(str(path), "w", SHORT_WINDOWS, options=DaskOptions(progress=False))
    return str(path)


def corrupt_file(path: str | os.PathLike[str], start: float = 0.1, stop: float = 0.5) -> None:
    """Flip every 7th byte between fractions ``start`` and ``stop`` of a file (a shard's inner
    chunks lie before its index, at the end): what a bad disk or a bad copy does."""
    data = bytearray(Path(path).read_bytes())
    for i in range(int(len(data) * start), int(len(data) * stop), 7):
        data[i] ^= 0xFF
    Path(path).write_bytes(bytes(data))


# ---- window tables ---------------------------------------------------------------------------------
def frame_index(recordings: Sequence[store.RecordingArrays], frame_label: np.ndarray | None = None) -> FrameIndex:
    """Return the FrameIndex a store of ``recordings`` would give, without writing one."""
    f_off = np.concatenate([[0], np.cumsum([len(r.split) for r in recordings])]).astype(np.int64)
    c_off = np.concatenate([[0], np.cumsum([len(r.current_time) for r in recordings])]).astype(np.int64)
    if frame_label is None:
        frame_label = np.concatenate([(r.mask == 1).any(axis=(1, 2)) for r in recordings]).astype(np.uint8)
    return FrameIndex(
        split=np.concatenate([r.split for r in recordings]).astype(np.int8),
        recording=np.repeat(np.arange(len(recordings)), np.diff(f_off)),
        frame_current_end=np.concatenate([r.frame_current_end + c_off[i] for i, r in enumerate(recordings)]),
        frame_label=frame_label, frame_offsets=f_off, current_offsets=c_off,
        current_time=np.concatenate([r.current_time for r in recordings]))


def clip_window_table(recordings: Sequence[store.RecordingArrays], *, frames: int = 10, step: int = 18,
                       current_rows: int = 240, current_span: int = 3000, stride: int = 1) -> WindowTable:
    """Return the table of every window whose whole clip lies in its recording (vectorised)."""
    f_off = np.concatenate([[0], np.cumsum([len(r.video) for r in recordings])])
    c_off = np.concatenate([[0], np.cumsum([len(r.current) for r in recordings])])
    parts = []
    for r, rec in enumerate(recordings):
        first = (frames - 1) * step
        local = np.arange(first, len(rec.video), stride)
        clip = local[:, None] - step * np.arange(frames - 1, -1, -1)[None, :]
        stop = rec.frame_current_end[local]
        start = np.maximum(stop - current_span, 0)
        label = rec.mask[local].reshape(len(local), -1).any(axis=1)
        cols = [local + f_off[r], np.full(len(local), r), rec.split[local], label,
                start + c_off[r], stop + c_off[r]]
        parts.append(np.column_stack([np.column_stack(cols), clip + f_off[r]]).astype(np.int64))
    table = np.concatenate(parts) if parts else np.zeros((0, len(schema.WINDOW_COLUMNS) + frames), np.int64)
    params = {"frames": frames, "frame_step": step, "current_rows": current_rows,
              "current_seconds": current_span / 25.0, "policy": "reference", "stride": stride}
    return WindowTable(table=table, columns=window_columns(frames), params=params)



# ---- source files ----------------------------------------------------------------------------------
def v1_arrays(n: int, h: int = 6, w: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random MATLAB-order V1 variables: video (H, W, 3, N), label (H, W, N), current (3, N), split (1, N)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w, n), dtype=bool)
    label[1:3, 2:5, n // 3:n // 2] = True
    return {
        "video": rng.integers(0, 256, (h, w, 3, n), dtype=np.uint8),
        "label": label,
        "current": rng.normal(9000.0, 300.0, (3, n)),
        "train_test_index": (np.arange(n) >= (2 * n) // 3).astype(np.float64)[None, :],
    }


def write_v1(path: str | os.PathLike[str], arrays: dict[str, Any], storage: str = "matlab",
             classes: dict[str, str] | None = None) -> Path:
    """Write MATLAB-order ``arrays`` as a v7.3 MAT file (``classes`` overrides MATLAB classes)."""
    classes = classes or {}
    with MatWriter(path, storage=storage, threads=1) as wr:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.ndim < 2:
                arr = arr.reshape(1, -1)
            wr.write(name, arr, classes.get(name))
    return Path(path)


def read_v1_independently(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a V1 file with plain h5py into store orientation (the documented transposes)."""
    with h5py.File(path, "r") as f:
        return {
            schema.VIDEO: f["video"][()].transpose(0, 3, 2, 1),  # (N, 3, W, H) -> (N, H, W, 3)
            schema.MASK: f["label"][()].transpose(0, 2, 1),  # (N, W, H) -> (N, H, W)
            schema.CURRENT: f["current"][()].astype(np.float64),  # MATLAB (3, N) is h5py (N, 3)
            schema.SPLIT: f["train_test_index"][()].reshape(-1).astype(np.int8),
        }


def read_v2_independently(folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Read one V2 recording with h5py, the csv module and json: arrays in store orientation."""
    folder = Path(folder)
    with h5py.File(folder / "videos" / f"{name}.mat", "r") as f:
        video = f["data"][()].transpose(0, 3, 2, 1)
        mask = f["label"][()].transpose(0, 2, 1)
    with open(folder / "currents" / f"{name}.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    cur_ts = np.array([r[0] for r in rows], dtype="datetime64[s]")
    current = np.array([[float(x) for x in r[1:4]] for r in rows])
    with open(folder / "timestamps" / f"{name}.csv", newline="") as fh:
        frame_ts = np.array([r[0] for r in list(csv.reader(fh))[1:]], dtype="datetime64[s]")
    split = np.full(len(video), schema.SPLIT_NONE, np.int8)
    split[json.loads((folder / "train.json").read_text()).get(f"{name}.mat", [])] = schema.SPLIT_TRAIN
    split[json.loads((folder / "test.json").read_text()).get(f"{name}.mat", [])] = schema.SPLIT_TEST
    return {"video": video, "mask": mask, "current": current, "current_ts": cur_ts, "frame_ts": frame_ts,
            "split": split}


def write_v2(folder: str | os.PathLike[str], recordings: dict[str, int], h: int = 6, w: int = 10,
             seed: int = 0) -> Path:
    """Write a small V2 folder: per recording ``name: n_frames`` at 5 fps with 2 Hz current."""
    folder = Path(folder)
    for sub in ("videos", "currents", "timestamps"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    train, test = {}, {}
    origin = np.datetime64("2023-05-10T21:33:27")
    for k, (name, n) in enumerate(recordings.items()):
        a = v1_arrays(n, h, w, seed + k)
        write_v1(folder / "videos" / f"{name}.mat", {"data": a["video"], "label": a["label"]})
        secs = np.arange(n) // 5  # 5 frames per second
        stamps = [str(origin + np.timedelta64(int(s), "s")).replace("T", " ") for s in secs]
        with open(folder / "timestamps" / f"{name}.csv", "w", newline="") as fh:
            fh.write("timestamp,frame\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps)))
        rng = np.random.default_rng(seed + 100 + k)
        with open(folder / "currents" / f"{name}.csv", "w", newline="") as fh:
            fh.write("timestamp,A,B,C\n")
            for s in range(int(secs[-1]) + 1):
                for _ in range(2):
                    t = str(origin + np.timedelta64(s, "s")).replace("T", " ")
                    fh.write(f"{t},{rng.normal(9000, 300):.1f},{rng.normal(9000, 300):.1f},{rng.normal(9000, 300):.1f}\n")
        cut = (2 * n) // 3
        train[f"{name}.mat"] = list(range(0, cut - 2))
        test[f"{name}.mat"] = list(range(cut, n))
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "test.json").write_text(json.dumps(test))
    return folder


def leftovers(out: str | os.PathLike[str]) -> list[str]:
    """Names next to ``out`` that a failed conversion might have left: out itself, partial siblings."""
    out = Path(out)
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))


def score_stream(duration: float, events: Sequence[tuple[float, float]], *, seed: int, period: float = 0.5,
                 jitter: float = 0.1, skip: float = 0.0, dropout: float = 0.0, noise: float = 0.6,
                 rise: float = 1.5, flares: Sequence[tuple[float, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Decision times and scores of a model watching ``duration`` seconds of a recording.

    A decision every ``period`` seconds, each moved by up to ``jitter`` of a period; a fraction
    ``skip`` of them missing and ``dropout`` NaN (no frame). The score is a probability: low
    (0.1) in normal time, climbing with time constant ``rise`` towards 0.92 from each event's
    (onset, offset) start and falling back after its end; ``flares`` (start, stop) are normal
    spans that look abnormal (0.8). Gaussian noise of ``noise`` in logit space on top.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, duration, period)
    t = t + rng.uniform(-jitter, jitter, t.size) * period
    t = np.sort(t[(t >= 0) & (rng.random(t.size) >= skip)])
    level = np.full(t.size, 0.1)
    for (start, stop), high in [*((e, 0.92) for e in events), *((f, 0.8) for f in flares)]:
        on = (t >= start) & (t < stop)
        level[on] = np.maximum(level[on], 0.1 + (high - 0.1) * (1 - np.exp(-(t[on] - start) / rise)))
        after = t >= stop
        level[after] = np.maximum(level[after], 0.1 + (high - 0.1) * np.exp(-(t[after] - stop) / rise))
    logit = np.log(level / (1 - level)) + rng.normal(0.0, noise, t.size)
    score = 1 / (1 + np.exp(-logit))
    score[rng.random(t.size) < dropout] = np.nan
    return t, score


def marked_recording(seconds: float, events: Sequence[tuple[float, float]] = (), *, fps: float = 25.0, size: int = 16,
                     seed: int = 0, name: str = "marked") -> store.RecordingArrays:
    """A V1-like recording (one current row per frame) whose abnormal pixels are marked in the video.

    Between each event's (onset, offset) seconds a 6x6 hot spot is abnormal (the mask is 1 there)
    and painted pure red (255, 0, 0); every other pixel is random below 200. So a model can read a
    frame's labelled abnormal share off the frame itself (the oracle of tests/watch_models.py).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    t = np.arange(n) / fps
    video = rng.integers(0, 200, (n, size, size, 3), dtype=np.uint8)
    mask = np.zeros((n, size, size), np.uint8)
    for onset, offset in events:
        mask[(t >= onset) & (t < offset), 5:11, 5:11] = 1
    video[mask == 1] = (255, 0, 0)
    return store.RecordingArrays(
        video=video, mask=mask, split=train_gap_test(n), frame_time=t, current=rng.normal(9000.0, 300.0, (n, 3)),
        current_time=t.copy(), frame_current_end=np.arange(1, n + 1, dtype=np.int64),
        info=schema.RecordingInfo(name=name, source_path="memory", source_bytes=0, layout="v1", n_frames=n,
                                  n_current=n))
