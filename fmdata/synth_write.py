"""Write simulated recordings in the users' file layouts (fmf-benchmark.md §2), streaming.

* V1: one MATLAB file per recording with ``video`` (H, W, 3, N) uint8, ``current`` (3, N)
  double, ``label`` (H, W, N) logical and ``train_test_index`` (1, N) double (0 train, 1 test).
  V1 has no code for "neither split", so a V1 file holds the train and the test block only: the
  guard frames are simulated (time runs on across them) but not written, and the file jumps
  over them between its last train and first test frame.
* V2: a folder with ``videos/<name>.mat`` ('data', 'label'), ``currents/<name>.csv`` (2 Hz),
  ``timestamps/<name>.csv`` (one row per frame), ``train.json`` and ``test.json``; guard frames
  are in the video and in neither list.

Storage of the MAT files: "matlab" (v7.3, MATLAB-like chunks and deflate), "contiguous" (v7.3,
uncompressed) or "v7" (the older format via scipy, whole arrays in memory: small files only).
Frames are rendered and written in blocks aligned to the chunk grid, so memory stays bounded.
Everything is written into a hidden temporary sibling and renamed into place when complete;
an existing output is refused unless ``overwrite=True``. The same arguments give the same bytes.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from fmdata import matfile, schema, synth
from fmdata.errors import FmDataError

LAYOUTS = ("v1", "v2")
STORAGES = ("matlab", "contiguous", "v7")
DEFAULT_BLOCK_FRAMES = 512
CURRENT_HEADER = "timestamp,phase_A,phase_B,phase_C"
TIMESTAMP_HEADER = "timestamp,frame"


def recording_name(index: int) -> str:
    """Return the file stem of recording ``index`` (0-based): batch_01, batch_02, ..."""
    return f"batch_{index + 1:02d}"


def parse_size(text: str | int | tuple[int, int]) -> tuple[int, int]:
    """Parse a frame size "H" or "HxW" (or an int / pair) into (H, W); raise FmDataError if nonsense."""
    if isinstance(text, tuple):
        h, w = text
    elif isinstance(text, int):
        h = w = text
    else:
        parts = str(text).lower().replace("×", "x").split("x")
        try:
            if len(parts) not in (1, 2):
                raise ValueError
            h = int(parts[0])
            w = int(parts[-1])
        except ValueError:
            raise FmDataError(f"--size: expected H or HxW in pixels (e.g. 64 or 48x64), got {text!r}") from None
    if not (4 <= h <= 2048 and 4 <= w <= 2048):
        raise FmDataError(f"--size: expected 4..2048 pixels per side, got {h}x{w}")
    return int(h), int(w)


@dataclass
class Progress:
    """Counts written frames into an optional tqdm bar (rate and ETA)."""

    total: int
    enabled: bool = False
    _bar: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="frame", unit_scale=True, desc="synth", leave=False)

    def update(self, n: int) -> None:
        """Add ``n`` written frames."""
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()


# ---- output placement -------------------------------------------------------------------------
def _prepare_target(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FmDataError("expected a new output path, got one that already exists (pass --overwrite to replace it)",
                              out)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FmDataError("expected a folder to write into, got a path through a file", out) from None
    except OSError as exc:
        raise FmDataError(f"cannot create the parent folder: {exc.strerror or exc}", out) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FmDataError(f"expected a writable folder, got {parent} without write permission", out)


def _place(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` onto ``out``, removing what ``out`` held only after success."""
    trash = None
    if out.exists() or out.is_symlink():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
    os.replace(tmp, out)
    if trash is not None:
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash)
        else:
            trash.unlink()


def _temp_sibling(out: Path, is_dir: bool) -> Path:
    """A hidden, unused sibling name; folders are created now (with the umask's permissions)."""
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    if is_dir:
        tmp.mkdir()
    else:
        tmp.touch(exist_ok=False)
    return tmp


def _cleanup(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def _atomic(out: Path, is_dir: bool, overwrite: bool, body: Callable[[Path], None]) -> Path:
    _prepare_target(out, overwrite)
    try:
        tmp = _temp_sibling(out, is_dir)
    except OSError as exc:
        raise FmDataError(f"cannot write here: {exc.strerror or exc}", out) from None
    try:
        body(tmp)
        _place(tmp, out)
    except OSError as exc:
        _cleanup(tmp)
        raise FmDataError(f"cannot write: {exc.strerror or exc}", out) from None
    except BaseException:
        _cleanup(tmp)
        raise
    return out


# ---- recordings as MAT variables --------------------------------------------------------------
def _config(size: tuple[int, int] | int | str, fps: float, events: str = "standard") -> synth.SynthConfig:
    h, w = parse_size(size)
    if events not in synth.EVENT_PROFILES:
        raise FmDataError(f"--events: expected one of {sorted(synth.EVENT_PROFILES)}, got {events!r}")
    cfg = synth.SynthConfig(height=h, width=w, fps=float(fps), **synth.EVENT_PROFILES[events])
    cfg.validate()
    return cfg


def _check_frames(frames: int) -> int:
    if isinstance(frames, bool) or int(frames) != frames or frames < 1:
        raise FmDataError(f"--frames: expected a whole number of frames >= 1, got {frames!r}")
    if frames > 2**31 - 1:
        raise FmDataError(f"--frames: expected fewer than 2^31 frames, got {frames}")
    return int(frames)


def plan_v1(frames: int, cfg: synth.SynthConfig, seed: int, index: int) -> synth.Recording:
    """Plan a V1 recording whose file holds ``frames`` frames (train then test, guard simulated but cut)."""
    train, guard, test = synth.split_sizes(frames, cfg)
    return synth.simulate(frames + guard, cfg, seed=seed, index=index, split=(train + guard, guard, test))


def plan_v2(frames: int, cfg: synth.SynthConfig, seed: int, index: int) -> synth.Recording:
    """Plan a V2 recording of ``frames`` frames (train, guard, test all in the video)."""
    return synth.simulate(frames, cfg, seed=seed, index=index)


def v1_frames(rec: synth.Recording) -> np.ndarray:
    """Simulated frame index of every frame a V1 file holds (the guard gap left out)."""
    idx = np.arange(rec.n_train + rec.n_test)
    return np.where(idx < rec.n_train, idx, idx + rec.n_guard)


def _runs(sim: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """Split sorted simulated indices into contiguous runs: (position, first, stop)."""
    breaks = np.nonzero(np.diff(sim) != 1)[0] + 1
    edges = np.concatenate([[0], breaks, [sim.size]])
    for a, b in zip(edges[:-1], edges[1:]):
        yield int(a), int(sim[a]), int(sim[b - 1]) + 1


def _render_rows(rec: synth.Recording, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render video, mask and per-frame current for simulated frames ``sim`` (runs of consecutive frames)."""
    parts = [(rec.render(a, b), rec.current(a, b)) for _, a, b in _runs(sim)]
    video = np.concatenate([p[0][0] for p in parts]) if len(parts) > 1 else parts[0][0][0]
    mask = np.concatenate([p[0][1] for p in parts]) if len(parts) > 1 else parts[0][0][1]
    current = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return video, mask, current


def _created(rec: synth.Recording) -> _dt.datetime:
    """A header date derived from the plan (the end of the recording plus a minute), not the clock."""
    return rec.origin + _dt.timedelta(seconds=int(rec.n_frames / rec.cfg.fps) + 60)


def _block_frames(h: int, w: int, requested: int | None, chunk_frames: tuple[int, ...] = (1,)) -> int:
    """Frames per block: about 8 MiB of video, a multiple of every variable's chunk frames."""
    step = int(np.lcm.reduce([max(1, c) for c in chunk_frames]))
    want = requested or max(1, (8 << 20) // (3 * h * w))
    return max(step, want // step * step)


def _write_recording_mat(path: Path, rec: synth.Recording, sim: np.ndarray, storage: str, names: dict[str, str],
                         progress: Progress, block: int | None = None) -> None:
    """Write one recording's frames ``sim`` into a MAT file with the given variable names.

    ``names`` maps "video", "label" and optionally "current", "train_test_index" to variable names.
    """
    cfg = rec.cfg
    h, w, n = cfg.height, cfg.width, sim.size
    split = rec.split()[sim]
    if storage == "v7":
        _write_v7_recording(path, rec, sim, names, progress, _block_frames(h, w, block), split)
        return
    with matfile.MatWriter(path, storage=storage, created=_created(rec)) as mw:
        video = mw.create(names["video"], (h, w, 3, n), "uint8")
        label = mw.create(names["label"], (h, w, n), "logical")
        current = mw.create(names["current"], (3, n), "double") if "current" in names else None
        bf = _block_frames(h, w, block, (video.chunk_frames, label.chunk_frames))
        for s in range(0, n, bf):
            e = min(n, s + bf)
            frames, masks, amps = _render_rows(rec, sim[s:e])
            # (n, H, W, 3) -> MATLAB (H, W, 3, n); the writer's transpose yields h5py's (n, 3, W, H).
            video.write(frames.transpose(1, 2, 3, 0), s)
            label.write(masks.transpose(1, 2, 0), s)
            if current is not None:
                current.write(amps.T, s)
            progress.update(e - s)
        if "train_test_index" in names:
            mw.write(names["train_test_index"], (split == schema.SPLIT_TEST).astype(np.float64)[None, :], "double")


def _write_v7_recording(path: Path, rec: synth.Recording, sim: np.ndarray, names: dict[str, str],
                        progress: Progress, bf: int, split: np.ndarray) -> None:
    cfg = rec.cfg
    n = sim.size
    need = cfg.height * cfg.width * 3 * n
    if need > matfile.V7_MAX_VARIABLE_BYTES:
        raise FmDataError(f"--storage v7: expected a video under 2^31 bytes (the v7 format's limit per variable), "
                          f"got {need / 2**30:.1f} GiB; use --storage matlab", path)
    video = np.empty((cfg.height, cfg.width, 3, n), np.uint8)
    label = np.empty((cfg.height, cfg.width, n), bool)
    current = np.empty((3, n))
    for s in range(0, n, bf):
        e = min(n, s + bf)
        frames, masks, amps = _render_rows(rec, sim[s:e])
        video[..., s:e] = frames.transpose(1, 2, 3, 0)
        label[..., s:e] = masks.transpose(1, 2, 0).astype(bool)
        current[:, s:e] = amps.T
        progress.update(e - s)
    variables: dict[str, Any] = {names["video"]: video, names["label"]: label}
    if "current" in names:
        variables[names["current"]] = current
    if "train_test_index" in names:
        variables[names["train_test_index"]] = (split == schema.SPLIT_TEST).astype(np.float64)[None, :]
    matfile.write_v7(path, variables, created=_created(rec))


V1_NAMES = {"video": "video", "label": "label", "current": "current", "train_test_index": "train_test_index"}
V2_NAMES = {"video": "data", "label": "label"}


# ---- public writers ---------------------------------------------------------------------------
def _checked_options(size: tuple[int, int] | int | str, fps: float, events: str, frames: int, storage: str,
                     recordings: int = 1) -> tuple[synth.SynthConfig, int]:
    """Validate the writers' common options before any output exists; return (config, frames)."""
    _check_storage(storage)
    cfg = _config(size, fps, events)
    frames = _check_frames(frames)
    _check_storage(storage, cfg, frames)
    _check_recordings(recordings)
    return cfg, frames


def write_v1(path: str | os.PathLike[str], *, frames: int, size: tuple[int, int] | int | str = (64, 64),
             fps: float = 25.0, seed: int = 0, storage: str = "matlab", index: int = 0, overwrite: bool = False,
             progress: bool = False, block_frames: int | None = None, events: str = "standard") -> Path:
    """Write one synthetic V1 recording (``frames`` frames) to the MAT file ``path``; return the path.

    ``index`` picks the recording of the seeded dataset (recording i of a set uses index i).
    Raises FmDataError for bad options or an existing ``path`` (unless ``overwrite``).
    """
    cfg, frames = _checked_options(size, fps, events, frames, storage)
    rec = plan_v1(frames, cfg, seed, index)
    bar = Progress(frames, progress)
    try:
        return _atomic(Path(path), False, overwrite,
                       lambda tmp: _write_recording_mat(tmp, rec, v1_frames(rec), storage, V1_NAMES, bar, block_frames))
    finally:
        bar.close()


def write_v1_set(folder: str | os.PathLike[str], *, recordings: int, frames: int,
                 size: tuple[int, int] | int | str = (64, 64), fps: float = 25.0, seed: int = 0,
                 storage: str = "matlab", overwrite: bool = False, progress: bool = False,
                 events: str = "standard") -> Path:
    """Write ``recordings`` V1 files ``batch_01.mat`` ... into a new ``folder``; return the folder."""
    cfg, frames = _checked_options(size, fps, events, frames, storage, recordings)
    bar = Progress(frames * recordings, progress)

    def body(tmp: Path) -> None:
        for i in range(recordings):
            rec = plan_v1(frames, cfg, seed, i)
            _write_recording_mat(tmp / f"{recording_name(i)}.mat", rec, v1_frames(rec), storage, V1_NAMES, bar)

    try:
        return _atomic(Path(folder), True, overwrite, body)
    finally:
        bar.close()


def write_v2(folder: str | os.PathLike[str], *, recordings: int = 1, frames: int,
             size: tuple[int, int] | int | str = (64, 64), fps: float = 25.0, seed: int = 0,
             storage: str = "matlab", overwrite: bool = False, progress: bool = False,
             events: str = "standard") -> Path:
    """Write a synthetic V2 folder (videos/, currents/, timestamps/, train.json, test.json); return it.

    Each of the ``recordings`` holds ``frames`` frames; 'data' and 'label' go into
    ``videos/<name>.mat``, the current at 2 Hz into ``currents/<name>.csv``.
    """
    cfg, frames = _checked_options(size, fps, events, frames, storage, recordings)
    bar = Progress(frames * recordings, progress)

    def body(tmp: Path) -> None:
        for sub in ("videos", "currents", "timestamps"):
            (tmp / sub).mkdir()
        train: dict[str, list[int]] = {}
        test: dict[str, list[int]] = {}
        for i in range(recordings):
            rec = plan_v2(frames, cfg, seed, i)
            name = recording_name(i)
            _write_recording_mat(tmp / "videos" / f"{name}.mat", rec, np.arange(rec.n_frames), storage, V2_NAMES, bar)
            _write_current_csv(tmp / "currents" / f"{name}.csv", rec)
            _write_timestamps_csv(tmp / "timestamps" / f"{name}.csv", rec)
            parts = rec.split_indices()
            train[f"{name}.mat"] = parts["train"].tolist()
            test[f"{name}.mat"] = parts["test"].tolist()
        (tmp / "train.json").write_text(json.dumps(train, separators=(",", ":")))
        (tmp / "test.json").write_text(json.dumps(test, separators=(",", ":")))

    try:
        return _atomic(Path(folder), True, overwrite, body)
    finally:
        bar.close()


def _write_current_csv(path: Path, rec: synth.Recording, rows_per_block: int = 1 << 16) -> None:
    """currents/<name>.csv: header, then (timestamp, A, B, C) two rows per second, amperes to 0.1 A."""
    total = rec.n_current_rows()
    with open(path, "w", newline="\n") as fh:
        fh.write(CURRENT_HEADER + "\n")
        for r0 in range(0, total, rows_per_block):
            r1 = min(total, r0 + rows_per_block)
            amps = rec.current_2hz(r0, r1)
            stamps = rec.timestamps(np.arange(r0, r1) // 2)
            fh.write("".join(f"{s},{a:.1f},{b:.1f},{c:.1f}\n" for s, (a, b, c) in zip(stamps, amps.tolist())))


def _write_timestamps_csv(path: Path, rec: synth.Recording, rows_per_block: int = 1 << 16) -> None:
    """timestamps/<name>.csv: header, then one row per frame: its timestamp (1 s resolution), frame index."""
    with open(path, "w", newline="\n") as fh:
        fh.write(TIMESTAMP_HEADER + "\n")
        for f0 in range(0, rec.n_frames, rows_per_block):
            f1 = min(rec.n_frames, f0 + rows_per_block)
            stamps = rec.timestamps(rec.frame_seconds(f0, f1))
            fh.write("".join(f"{s},{i}\n" for i, s in zip(range(f0, f1), stamps)))


def _check_storage(storage: str, cfg: synth.SynthConfig | None = None, frames: int = 0) -> None:
    if storage not in STORAGES:
        raise FmDataError(f"--storage: expected one of {', '.join(STORAGES)}, got {storage!r}")
    if storage == "v7" and cfg is not None:
        need = cfg.height * cfg.width * 3 * frames
        if need > matfile.V7_MAX_VARIABLE_BYTES:
            raise FmDataError(f"--storage v7: expected a video under 2^31 bytes (the v7 format's limit per variable), "
                              f"got {need / 2**30:.1f} GiB; use --storage matlab")


def _check_recordings(recordings: int) -> None:
    if isinstance(recordings, bool) or int(recordings) != recordings or not (1 <= recordings <= 99):
        raise FmDataError(f"--recordings: expected 1..99, got {recordings!r}")


@dataclass
class SynthResult:
    """What :func:`synthesize` wrote: the output path, its files, frames and the time it took."""

    out: Path
    layout: str
    files: list[Path]
    frames: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-able dict."""
        return {"out": str(self.out), "layout": self.layout, "files": [str(f) for f in self.files],
                "frames": self.frames, "seconds": round(self.seconds, 3),
                "frames_per_second": round(self.frames / self.seconds, 1) if self.seconds > 0 else None}


def synthesize(out: str | os.PathLike[str], *, layout: str = "v1", storage: str = "matlab", recordings: int = 1,
               frames: int = 2000, size: tuple[int, int] | int | str = (64, 64), fps: float = 25.0, seed: int = 0,
               overwrite: bool = False, progress: bool = False,
               preview: str | os.PathLike[str] | None = None, events: str = "standard") -> SynthResult:
    """Write a synthetic dataset to ``out`` in ``layout`` "v1" or "v2"; return a :class:`SynthResult`.

    V1 with one recording writes the file ``out``; V1 with several writes ``out/batch_01.mat``
    ... ; V2 always writes the folder ``out``. ``preview`` names a PNG to draw of the first
    recording (frames, masks, current). ``events`` names a profile of synth.EVENT_PROFILES.
    """
    if layout not in LAYOUTS:
        raise FmDataError(f"--layout: expected v1 or v2, got {layout!r}")
    _check_recordings(recordings)
    if preview is not None:  # fail before the long part, not after it
        try:
            Path(preview).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FmDataError(f"--preview: cannot create its folder: {exc.strerror or exc}", preview) from None
    t0 = time.perf_counter()
    kw = dict(frames=frames, size=size, fps=fps, seed=seed, storage=storage, overwrite=overwrite, progress=progress,
              events=events)
    if layout == "v2":
        path = write_v2(out, recordings=recordings, **kw)
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif recordings == 1:
        path = write_v1(out, **kw)
        files = [path]
    else:
        path = write_v1_set(out, recordings=recordings, **kw)
        files = sorted(path.glob("*.mat"))
    seconds = time.perf_counter() - t0
    if preview is not None:
        cfg = _config(size, fps, events)
        plan = plan_v2 if layout == "v2" else plan_v1
        plot_preview(plan(int(frames), cfg, seed, 0), preview)
    return SynthResult(out=path, layout=layout, files=files, frames=int(frames) * recordings, seconds=seconds)


# ---- a picture ----------------------------------------------------------------------------------
def _pick_frames(rec: synth.Recording, count: int) -> list[tuple[int, str]]:
    """Frames worth showing: clear normal, clear anomaly, anomaly under dense mist, light mist, flare."""
    picks: list[tuple[int, str]] = []
    labels = rec.labels()
    density = rec.mist_density(0, rec.n_frames)
    clear = density < 0.02
    candidates = [
        (np.nonzero((labels == 0) & clear)[0], "normal"),
        (np.nonzero((labels == 1) & clear)[0], "hot spot"),
        (np.nonzero((labels == 1) & (density >= 1.0))[0], "hot spot under dense mist"),
        (np.nonzero((labels == 0) & (density > 0.15) & (density < 0.6))[0], "light mist"),
        (np.nonzero((labels == 1) & (density > 0.15) & (density < 0.6))[0], "hot spot, light mist"),
    ]
    for frames, title in candidates:
        if frames.size and len(picks) < count:
            a = next((a for a in rec.anomalies if a.start <= frames[frames.size // 2] < a.stop), None)
            f = int(frames[frames.size // 2])
            if a is not None and title.startswith("hot spot"):  # show the spot near its largest
                inside = frames[(frames >= a.start) & (frames < a.stop)]
                f = int(inside[np.argmin(np.abs(inside - (a.start + a.stop) // 2))])
            picks.append((f, title))
    return picks


def _life_frames(rec: synth.Recording, count: int) -> list[tuple[int, str]]:
    """Frames across the life of the first hot spot that mist never touches (appear, grow, fade)."""
    for a in rec.anomalies:
        if a.stop - a.start >= count and not rec.mist_density(a.start, a.stop).any():
            frames = np.linspace(a.start, a.stop - 1, count).round().astype(int)
            return [(int(f), f"+{(f - a.start) / rec.cfg.fps:.1f} s") for f in frames]
    return []


def plot_preview(rec: synth.Recording, path: str | os.PathLike[str], count: int = 5) -> Path:
    """Draw frames with their masks (typical scenes, then the life of one hot spot) and the three
    current phases of ``rec`` to the PNG ``path``; return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(_pick_frames(rec, count), "{title}"), (_life_frames(rec, 6), "one hot spot {title}")]
    rows = [r for r in rows if r[0]]
    cols = max(3, *(len(r[0]) for r in rows))
    fig = plt.figure(figsize=(2.0 * cols, 2.1 * 2 * len(rows) + 3.0), layout="constrained")
    grid = fig.add_gridspec(2 * len(rows) + 1, cols, height_ratios=[1] * (2 * len(rows)) + [1.6])
    for r, (picks, fmt) in enumerate(rows):
        for i, (f, title) in enumerate(picks):
            video, mask = rec.render(f, f + 1)
            ax = fig.add_subplot(grid[2 * r, i])
            ax.imshow(video[0], interpolation="nearest")
            ax.set_title(f"frame {f}\n" + fmt.format(title=title), fontsize=8)
            ax.axis("off")
            ax = fig.add_subplot(grid[2 * r + 1, i])
            ax.imshow(mask[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"mask: {int(mask[0].sum())} px", fontsize=8)
            ax.axis("off")
    ax = fig.add_subplot(grid[-1, :])
    step = max(1, rec.n_frames // 4000)
    frames = np.arange(0, rec.n_frames, step)
    amps = rec.current(0, rec.n_frames)[::step]
    t = frames / rec.cfg.fps
    for p, name in enumerate(schema.PHASES):
        ax.plot(t, amps[:, p], lw=0.6, label=f"phase {name}")
    for a in rec.anomalies:
        ax.axvspan(a.start / rec.cfg.fps, a.stop / rec.cfg.fps, color="red", alpha=0.12, lw=0)
    for ep in rec.mist:
        if ep.level >= 1.0:
            ax.axvspan(ep.start / rec.cfg.fps, ep.stop / rec.cfg.fps, ymax=0.06, color="0.4", lw=0)
    edge = (rec.n_train, rec.n_train + rec.n_guard)
    ax.axvspan(edge[0] / rec.cfg.fps, edge[1] / rec.cfg.fps, color="0.85", lw=0)
    ax.text(edge[1] / rec.cfg.fps, ax.get_ylim()[1], " test", va="top", fontsize=8)
    ax.set_xlabel("seconds (red: hot spot active; dark bars: dense mist; grey: guard gap)")
    ax.set_ylabel("current (A)")
    ax.legend(loc="lower left", fontsize=7, ncol=3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
