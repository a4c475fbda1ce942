"""``fmdata stats``: what a store holds, per split and per recording, and normalisation statistics.

The summary (frames, abnormal frames and their share, abnormal-pixel share, duration, and the
window counts and class balance of a window table) comes from the small frame-level arrays.
The normalisation statistics come from the TRAINING split only and are computed with Dask over
the video and current chunks:

* video: per-channel mean and standard deviation (population, ddof=0) of the 0..255 values of
  every pixel of every training frame, from exact per-channel 256-bin histograms;
* current: per-phase mean, standard deviation (ddof=0), minimum and maximum, in amperes, over the
  training current rows. A current row belongs to the first frame that sees it (the first frame
  at or after its time); rows of training frames are training rows.

They are stored in the root attribute ``fmf_stats`` for the trainer, with their provenance and
the CRC-32C of their content (checked by every reader and by ``fmdata verify``), and reused while
the video, current and split stay the same (``force`` recomputes). Writing them (or the labels
they need) holds the store's writer lock; a summary of a store whose statistics and labels are
up to date writes nothing and takes no lock, and neither does one of a read-only store (there,
missing statistics are computed and reported but not stored).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import zarr
from dask import delayed

from fmdata.compute.dask_cluster import DaskOptions, Runner, dask_runner
from fmdata.derive.labels import WORKER_MODULES, compute_labels, labels_up_to_date, read_labels, require_writable
from fmdata.store import schema
from fmdata.store.access import store_writable
from fmdata.store.block_reader import BlockReader, block_frames, block_ranges
from fmdata.store.checksums import attribute_checksum, check_attribute
from fmdata.store.derived import store_writer
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.provenance import array_fingerprint, matches, reconsolidate, values_digest
from fmdata.version import __version__

STATS_ALGORITHM = 1
SPLITS = (schema.SPLIT_TRAIN, schema.SPLIT_TEST, schema.SPLIT_NONE)


@dataclass(frozen=True)
class StatsReport:
    """What :func:`compute_stats` found: the store's summary per split and recording, a window
    table's class balance (``windows``, when asked), and the training-split normalisation
    statistics (``normalization``; ``normalization_status`` "computed", "up to date", "no
    training frames" or, on a read-only store, "computed, not stored (read-only store)")."""

    store: str
    frames: int
    n_recordings: int
    fps: float
    height: int
    width: int
    splits: dict[str, dict[str, Any]]
    recordings: list[dict[str, Any]]
    windows: dict[str, Any] | None
    normalization: dict[str, Any] | None
    normalization_status: str

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-able dict (``fmdata stats --json``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def table(self) -> str:
        """Return the report as aligned plain-text tables (``fmdata stats``)."""
        return format_stats(self.to_dict())


def _share(part: float, whole: float) -> float | None:
    return None if not whole else float(part) / float(whole)


def train_current_rows(split: np.ndarray, recording: np.ndarray, frame_current_end: np.ndarray,
                       current_offsets: np.ndarray) -> np.ndarray:
    """Return a bool (n_current,) array: rows owned by training frames.

    Row r is owned by the first frame of its recording whose ``frame_current_end`` exceeds r;
    rows after a recording's last frame are owned by nobody.
    """
    m = int(current_offsets[-1])
    rows = np.arange(m)
    owner = np.searchsorted(frame_current_end, rows, side="right")
    row_rec = np.repeat(np.arange(len(current_offsets) - 1), np.diff(current_offsets))
    ok = owner < len(split)
    owner_ok = np.minimum(owner, max(len(split) - 1, 0))
    return ok & (recording[owner_ok] == row_rec) & (split[owner_ok] == schema.SPLIT_TRAIN) if len(split) else ok


# ---- Dask tasks (run on workers; small results) ------------------------------------------------
def video_histogram(block: np.ndarray, select: np.ndarray | None) -> np.ndarray:
    """Return per-channel 256-bin histograms (3, 256) int64 of the selected frames of a video block."""
    frames = block if select is None else block[select]
    flat = frames.reshape(-1, frames.shape[-1])
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])]).astype(np.int64)


def current_moments(block: np.ndarray, select: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray,
                                                                          np.ndarray, np.ndarray]:
    """Return (count, mean, M2, min, max) per phase of the selected rows of a current block."""
    x = block if select is None else block[select]
    if not len(x):
        nan = np.full(block.shape[1], np.nan)
        return 0, nan, nan, nan, nan
    mean = x.mean(axis=0)
    return len(x), mean, ((x - mean) ** 2).sum(axis=0), x.min(axis=0), x.max(axis=0)


def combine_moments(parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Merge per-block moments (Chan et al.'s pairwise update); return count, mean, std, min, max."""
    n = 0
    mean: Any = None
    m2: Any = None
    lo: Any = None
    hi: Any = None
    for cnt, mu, sq, mn, mx in parts:
        if not cnt:
            continue
        if not n:
            n, mean, m2, lo, hi = cnt, mu.copy(), sq.copy(), mn.copy(), mx.copy()
            continue
        delta = mu - mean
        total = n + cnt
        mean = mean + delta * (cnt / total)
        m2 = m2 + sq + delta ** 2 * (n * cnt / total)
        n, lo, hi = total, np.minimum(lo, mn), np.maximum(hi, mx)
    if not n or mean is None or m2 is None or lo is None or hi is None:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"count": int(n), "mean": mean.tolist(), "std": np.sqrt(m2 / n).tolist(), "min": lo.tolist(),
            "max": hi.tolist()}


def histogram_moments(hist: np.ndarray) -> tuple[int, list[float], list[float]]:
    """Return (pixels per channel, mean, std) from (channels, 256) histograms, in exact integers."""
    v = np.arange(hist.shape[1], dtype=object)
    n = int(hist[0].sum())
    means, stds = [], []
    for h in hist.astype(object):
        s1, s2 = int((h * v).sum()), int((h * v * v).sum())
        means.append(s1 / n)
        stds.append(float(np.sqrt((s2 * n - s1 * s1) / (n * n))))
    return n, means, stds


# ---- normalisation -----------------------------------------------------------------------------
def _norm_provenance(root: zarr.Group, split: np.ndarray, fce: np.ndarray) -> dict[str, Any]:
    return {"video": array_fingerprint(root[schema.VIDEO]), "current": array_fingerprint(root[schema.CURRENT]),
            "split_sha256": values_digest(split), "frame_current_end_sha256": values_digest(fce),
            "algorithm": STATS_ALGORITHM}


def _reduce_block(fn: Any, reader: BlockReader, start: int, stop: int, select: np.ndarray | None) -> Any:
    """Dask task: read rows [start, stop) and reduce the selected ones with ``fn``."""
    return fn(reader.read(start, stop), select)


def _block_tasks(arr: zarr.Array, fn: Any, select: np.ndarray) -> tuple[list[Any], list[int]]:
    """One delayed ``fn(block, selection)`` per scan block of ``arr`` holding any selected row."""
    reader = BlockReader(arr)
    tasks, weights = [], []
    for a, b in block_ranges(int(arr.shape[0]), block_frames(arr)):
        sel = select[a:b]
        if sel.any():
            tasks.append(delayed(_reduce_block, pure=False)(fn, reader, a, b, None if sel.all() else sel))
            weights.append(b - a)
    return tasks, weights


def _row_bytes(arr: zarr.Array) -> int:
    return int(np.prod(arr.shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize


def _normalisation(root: zarr.Group, split: np.ndarray, recording: np.ndarray, fce: np.ndarray,
                   c_off: np.ndarray, runner: Runner) -> dict[str, Any]:
    train = split == schema.SPLIT_TRAIN
    rows = train_current_rows(split, recording, fce, c_off)
    t0 = time.perf_counter()
    v_tasks, v_w = _block_tasks(root[schema.VIDEO], video_histogram, train)
    c_tasks, c_w = _block_tasks(root[schema.CURRENT], current_moments, rows)
    # One computation for both, the current blocks first: they run beside the video blocks instead
    # of after them (on one worker while the others wait). Progress in bytes read.
    frame_bytes, row_bytes = _row_bytes(root[schema.VIDEO]), _row_bytes(root[schema.CURRENT])
    parts = runner.compute(c_tasks + v_tasks, desc="stats", unit="B",
                           weights=[w * row_bytes for w in c_w] + [w * frame_bytes for w in v_w])
    moments, hists = parts[:len(c_tasks)], parts[len(c_tasks):]
    pixels, v_mean, v_std = histogram_moments(np.sum(hists, axis=0))
    cur = combine_moments(moments)
    return {"split": "train", "frames": int(train.sum()), "pixels_per_channel": pixels,
            "video_mean": v_mean, "video_std": v_std, "video_scale": "uint8 values 0..255, channels R, G, B",
            "current_rows": cur["count"], "current_mean": cur["mean"], "current_std": cur["std"],
            "current_min": cur["min"], "current_max": cur["max"], "current_scale": "amperes, phases A, B, C",
            "ddof": 0, "seconds": time.perf_counter() - t0, "scheduler": runner.description}


# ---- summary -----------------------------------------------------------------------------------
def _counts(sel: np.ndarray, label: np.ndarray, pixels: np.ndarray, frame_pixels: int, fps: float) -> dict[str, Any]:
    n = int(sel.sum())
    ab = int(label[sel].sum())
    return {"frames": n, "abnormal_frames": ab, "abnormal_frame_share": _share(ab, n),
            "abnormal_pixel_share": _share(int(pixels[sel].sum(dtype=np.int64)), n * frame_pixels),
            "duration_s": n / fps if fps else None}


def _window_summary(store: StoreHandle, name: str, n_rec: int) -> dict[str, Any]:
    wt = store.window_table(name)
    split, label, rec = wt.column("split"), wt.column("label"), wt.column("recording")

    def bal(sel: np.ndarray) -> dict[str, Any]:
        n, ab = int(sel.sum()), int((label[sel] == 1).sum())
        return {"windows": n, "abnormal": ab, "normal": n - ab, "abnormal_share": _share(ab, n)}

    return {"name": name, "params": {k: wt.params.get(k) for k in ("policy", "frames", "frame_step", "current_seconds",
                                                                    "current_rows", "stride")},
            "windows": len(wt), "splits": {schema.SPLIT_NAMES[s]: bal(split == s) for s in SPLITS[:2]},
            "recordings": [bal(rec == r) for r in range(n_rec)]}


def compute_stats(store: StoreLike, *, windows: str | None = None, force: bool = False,
                  options: DaskOptions = DaskOptions()) -> StatsReport:
    """Summarise ``store`` (an open store or its location) and store its training-split
    normalisation statistics.

    Computes frame labels first if needed. ``windows`` names a window table to summarise.
    Normalisation statistics are recomputed only when the data changed or ``force``. On a
    read-only store nothing is written: up-to-date results are read, missing statistics are
    computed and reported but not stored (status "computed, not stored (read-only store)"), and
    missing labels are an FmDataError saying what to run.
    """
    store = open_store(store)
    loc = store.location
    writable = store_writable(loc)
    labelled = labels_up_to_date(store)
    if not writable and not labelled:
        require_writable(loc)
    split, fce = store.split, store.frame_current_end
    stored = store.root.attrs.get(schema.ATTR_STATS)
    if isinstance(stored, dict):
        check_attribute(stored, schema.ATTR_STATS, str(loc))
    expected = _norm_provenance(store.root, split, fce)
    has_train = bool((split == schema.SPLIT_TRAIN).any())
    old = stored.get("provenance") if isinstance(stored, dict) else None
    fresh = matches(old, expected) and not force
    need_dask = (has_train and not fresh) or not labelled
    status, norm = "no training frames", None
    # a read-only store is never locked: it is only read (labels up to date, checked above)
    with (store_writer(loc, "fmdata stats") if need_dask and writable else contextlib.nullcontext(),
          dask_runner(options, preload=WORKER_MODULES) if need_dask else contextlib.nullcontext() as runner):
        if not labelled:
            compute_labels(store, options=options, runner=runner)
            store = store.reopen()  # a view with the new labels (consolidated metadata included)
        recording = store.frame_recording
        if has_train and fresh:
            status, norm = "up to date", {k: v for k, v in stored.items() if k not in ("provenance", "checksum")}
        elif has_train:
            assert runner is not None  # need_dask was true
            norm = _normalisation(store.root, split, recording, fce, store.current_offsets, runner)
            if writable:
                value = json.loads(json.dumps({**norm, "provenance": {**expected, "toolkit_version": __version__}}))
                root = store.reopen("r+").root
                root.attrs[schema.ATTR_STATS] = {**value, "checksum": attribute_checksum(value)}
                reconsolidate(root)
                status = "computed"
            else:
                status = "computed, not stored (read-only store)"
    return _summary(store, split, recording, windows, norm, status)


def _summary(store: StoreHandle, split: np.ndarray, recording: np.ndarray, windows: str | None,
             norm: dict[str, Any] | None, status: str) -> StatsReport:
    meta = store.meta
    label, pixels = read_labels(store)
    f_off, c_off = store.offsets
    infos = store.recordings
    frame_time = store.frame_time
    fp = meta.height * meta.width
    recs = []
    for r in range(meta.n_recordings):
        sel = recording == r
        lo, hi = int(f_off[r]), int(f_off[r + 1])
        info = infos[r] if r < len(infos) else None
        recs.append({"recording": r, "name": info.name if info else str(r), "layout": info.layout if info else "",
                     **_counts(sel, label, pixels, fp, meta.fps),
                     "train_frames": int((split[lo:hi] == schema.SPLIT_TRAIN).sum()),
                     "test_frames": int((split[lo:hi] == schema.SPLIT_TEST).sum()),
                     "time_span_s": float(frame_time[hi - 1] - frame_time[lo]) if hi > lo else 0.0,
                     "current_rows": int(c_off[r + 1] - c_off[r])})
    return StatsReport(store=str(store), frames=meta.n_frames, n_recordings=meta.n_recordings, fps=meta.fps,
                       height=meta.height, width=meta.width,
                       splits={schema.SPLIT_NAMES[s]: _counts(split == s, label, pixels, fp, meta.fps) for s in SPLITS},
                       recordings=recs,
                       windows=_window_summary(store, windows, meta.n_recordings) if windows else None,
                       normalization=norm, normalization_status=status)


# ---- text --------------------------------------------------------------------------------------
def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.2f}%"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_stats(s: dict[str, Any]) -> str:
    """Return a stats dict (:meth:`StatsReport.to_dict`) as aligned plain-text tables."""
    out = [f"{s['store']}: {s['n_recordings']} recording(s), {s['frames']:,} frames of "
           f"{s['height']}x{s['width']} at {s['fps']:g} fps", ""]
    cols = ["frames", "abnormal", "abnormal %", "pixel %", "duration s"]
    row = lambda name, d: [name, _fmt(d["frames"]), _fmt(d["abnormal_frames"]), _fmt(d["abnormal_frame_share"], True),
                           _fmt(d["abnormal_pixel_share"], True), _fmt(d["duration_s"])]
    out.append(_table(["split"] + cols, [row(k, v) for k, v in s["splits"].items()]))
    out.append("")
    out.append(_table(["recording"] + cols + ["train", "test", "current rows"],
                      [row(f"{r['recording']} {r['name']}", r) + [_fmt(r["train_frames"]), _fmt(r["test_frames"]),
                                                                  _fmt(r["current_rows"])] for r in s["recordings"]]))
    w = s.get("windows")
    if w:
        p = w["params"]
        out += ["", f"windows {w['name']!r}: {w['windows']:,} ({p['policy']}, {p['frames']} frames step "
                    f"{p['frame_step']}, {p['current_rows']} current rows over {p['current_seconds']:g} s, "
                    f"stride {p['stride']})"]
        bal = lambda name, d: [name, _fmt(d["windows"]), _fmt(d["abnormal"]), _fmt(d["normal"]),
                               _fmt(d["abnormal_share"], True)]
        rows = [bal(k, v) for k, v in w["splits"].items()]
        rows += [bal(f"recording {i}", d) for i, d in enumerate(w["recordings"])]
        out.append(_table(["windows", "total", "abnormal", "normal", "abnormal %"], rows))
    n = s.get("normalization")
    out.append("")
    if not n:
        out.append(f"normalisation: {s['normalization_status']}")
        return "\n".join(out)
    kept = "" if "not stored" in s["normalization_status"] else f"; stored in attribute {schema.ATTR_STATS!r}"
    out.append(f"normalisation ({s['normalization_status']}; train split: {n['frames']:,} frames, "
               f"{n['current_rows']:,} current rows{kept})")
    num = lambda v: "-" if v is None else f"{v:,.2f}"
    rows = [[f"video {c}", num(m), num(sd), "", ""] for c, m, sd in zip("RGB", n["video_mean"], n["video_std"])]
    if n["current_rows"]:
        rows += [[f"current {ph} (A)", num(n["current_mean"][i]), num(n["current_std"][i]),
                  num(n["current_min"][i]), num(n["current_max"][i])] for i, ph in enumerate(schema.PHASES)]
    out.append(_table(["channel", "mean", "std", "min", "max"], rows))
    return "\n".join(out)
