"""Write simulated recordings in the users' file layouts (docs/reference-protocol.md, "Data"), streaming.

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
Everything is written into a hidden temporary sibling and renamed into place when complete
(:func:`fmdata.store.outputs.atomic_output`); an existing output is refused unless
``overwrite=True``, and then replaced only when synth wrote all of it (its MAT files carry
:data:`~fmdata.synth.ownership.SYNTH_NOTE` at the end of their header text; see
:mod:`fmdata.synth.ownership`). The same arguments give the same bytes.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fmdata.compute.memory import format_bytes
from fmdata.errors import FmDataError
from fmdata.sources.layouts import (
    LAYOUT_V1,
    LAYOUT_V2,
    LAYOUTS,
    V1_VARIABLES,
    V2_CURRENT_HEADER,
    V2_FOLDERS,
    V2_SPLIT_FILES,
    V2_TIMESTAMP_HEADER,
    V2_VARIABLES,
    v2_files,
    v2_key,
)
from fmdata.sources.matinfo import V7_MAX_VARIABLE_BYTES
from fmdata.store import schema
from fmdata.store.outputs import atomic_output, check_replaceable, folders_made_for
from fmdata.synth import simulation as synth
from fmdata.synth.matwriter import MatWriter, write_v7
from fmdata.synth.ownership import COMMAND, SYNTH_NOTE, recording_name, refuse_foreign
from fmdata.synth.picture import plot_preview

STORAGES = ("matlab", "contiguous", "v7")
DEFAULT_BLOCK_FRAMES = 512


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
            raise FmDataError(f"expected a frame size H or HxW in pixels (e.g. 64 or 48x64), got {text!r}",
                              field="size") from None
    if not (4 <= h <= 2048 and 4 <= w <= 2048):
        raise FmDataError(f"expected 4..2048 pixels per side, got {h}x{w}", field="size")
    return int(h), int(w)


@dataclass
class Progress:
    """Counts written frames into an optional tqdm bar (rate and ETA)."""

    total: int
    enabled: bool = False
    _bar: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.enabled:
            self._bar = tqdm(total=self.total, unit="frame", unit_scale=True, desc="synth", leave=False)

    def update(self, n: int) -> None:
        """Add ``n`` written frames."""
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()


# ---- recordings as MAT variables --------------------------------------------------------------
def _config(size: tuple[int, int] | int | str, fps: float, events: str = "standard") -> synth.SynthConfig:
    h, w = parse_size(size)
    if events not in synth.EVENT_PROFILES:
        raise FmDataError(f"expected an event profile in {sorted(synth.EVENT_PROFILES)}, got {events!r}", field="events")
    cfg = synth.SynthConfig(height=h, width=w, fps=float(fps), **synth.EVENT_PROFILES[events])
    cfg.validate()
    return cfg


def _check_frames(frames: int) -> int:
    if isinstance(frames, bool) or int(frames) != frames or frames < 1:
        raise FmDataError(f"expected a whole number of frames >= 1, got {frames!r}", field="frames")
    if frames > 2**31 - 1:
        raise FmDataError(f"expected fewer than 2^31 frames, got {frames}", field="frames")
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

    ``names`` maps the roles "video", "mask" and optionally "current", "split" to variable names
    (:mod:`fmdata.sources.layouts`).
    """
    cfg = rec.cfg
    h, w, n = cfg.height, cfg.width, sim.size
    split = rec.split()[sim]
    if storage == "v7":
        _write_v7_recording(path, rec, sim, names, progress, _block_frames(h, w, block), split)
        return
    with MatWriter(path, storage=storage, created=_created(rec), note=SYNTH_NOTE) as mw:
        video = mw.create(names["video"], (h, w, 3, n), "uint8")
        label = mw.create(names["mask"], (h, w, n), "logical")
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
        if "split" in names:
            mw.write(names["split"], (split == schema.SPLIT_TEST).astype(np.float64)[None, :], "double")


def _write_v7_recording(path: Path, rec: synth.Recording, sim: np.ndarray, names: dict[str, str],
                        progress: Progress, bf: int, split: np.ndarray) -> None:
    cfg = rec.cfg
    n = sim.size
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
    variables: dict[str, Any] = {names["video"]: video, names["mask"]: label}
    if "current" in names:
        variables[names["current"]] = current
    if "split" in names:
        variables[names["split"]] = (split == schema.SPLIT_TEST).astype(np.float64)[None, :]
    write_v7(path, variables, created=_created(rec), note=SYNTH_NOTE)


# ---- public writers ---------------------------------------------------------------------------
def _output(path: str | os.PathLike[str], *, folder: bool, overwrite: bool) -> AbstractContextManager[Path]:
    """:func:`fmdata.store.outputs.atomic_output` for synth's outputs: with ``overwrite`` an existing
    output is replaced only when synth wrote all of it (:mod:`fmdata.synth.ownership`)."""
    if overwrite:
        refuse_foreign(path)
    return atomic_output(path, folder=folder, overwrite=overwrite)


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
        with _output(path, folder=False, overwrite=overwrite) as tmp:
            _write_recording_mat(tmp, rec, v1_frames(rec), storage, V1_VARIABLES, bar, block_frames)
        return Path(path)
    finally:
        bar.close()


def write_v1_set(folder: str | os.PathLike[str], *, recordings: int, frames: int,
                 size: tuple[int, int] | int | str = (64, 64), fps: float = 25.0, seed: int = 0,
                 storage: str = "matlab", overwrite: bool = False, progress: bool = False,
                 events: str = "standard") -> Path:
    """Write ``recordings`` V1 files ``batch_01.mat`` ... into a new ``folder``; return the folder."""
    cfg, frames = _checked_options(size, fps, events, frames, storage, recordings)
    bar = Progress(frames * recordings, progress)

    try:
        with _output(folder, folder=True, overwrite=overwrite) as tmp:
            for i in range(recordings):
                rec = plan_v1(frames, cfg, seed, i)
                _write_recording_mat(tmp / f"{recording_name(i)}.mat", rec, v1_frames(rec), storage, V1_VARIABLES,
                                     bar)
        return Path(folder)
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
        for sub in V2_FOLDERS:
            (tmp / sub).mkdir()
        train: dict[str, list[int]] = {}
        test: dict[str, list[int]] = {}
        for i in range(recordings):
            rec = plan_v2(frames, cfg, seed, i)
            name = recording_name(i)
            mat, currents_csv, timestamps_csv = (Path(f) for f in v2_files(tmp, name))
            _write_recording_mat(mat, rec, np.arange(rec.n_frames), storage, V2_VARIABLES, bar)
            _write_current_csv(currents_csv, rec)
            _write_timestamps_csv(timestamps_csv, rec)
            parts = rec.split_indices()
            train[v2_key(name)] = parts["train"].tolist()
            test[v2_key(name)] = parts["test"].tolist()
        (tmp / V2_SPLIT_FILES["train"]).write_text(json.dumps(train, separators=(",", ":")))
        (tmp / V2_SPLIT_FILES["test"]).write_text(json.dumps(test, separators=(",", ":")))

    try:
        with _output(folder, folder=True, overwrite=overwrite) as tmp:
            body(tmp)
        return Path(folder)
    finally:
        bar.close()


def _write_current_csv(path: Path, rec: synth.Recording, rows_per_block: int = 1 << 16) -> None:
    """currents/<name>.csv: header, then (timestamp, A, B, C) two rows per second, amperes to 0.1 A."""
    total = rec.n_current_rows()
    with open(path, "w", newline="\n") as fh:
        fh.write(V2_CURRENT_HEADER + "\n")
        for r0 in range(0, total, rows_per_block):
            r1 = min(total, r0 + rows_per_block)
            amps = rec.current_2hz(r0, r1)
            stamps = rec.timestamps(np.arange(r0, r1) // 2)
            fh.write("".join(f"{s},{a:.1f},{b:.1f},{c:.1f}\n" for s, (a, b, c) in zip(stamps, amps.tolist())))


def _write_timestamps_csv(path: Path, rec: synth.Recording, rows_per_block: int = 1 << 16) -> None:
    """timestamps/<name>.csv: header, then one row per frame: its timestamp (1 s resolution), frame index."""
    with open(path, "w", newline="\n") as fh:
        fh.write(V2_TIMESTAMP_HEADER + "\n")
        for f0 in range(0, rec.n_frames, rows_per_block):
            f1 = min(rec.n_frames, f0 + rows_per_block)
            stamps = rec.timestamps(rec.frame_seconds(f0, f1))
            fh.write("".join(f"{s},{i}\n" for i, s in zip(range(f0, f1), stamps)))


def _check_storage(storage: str, cfg: synth.SynthConfig | None = None, frames: int = 0) -> None:
    if storage not in STORAGES:
        raise FmDataError(f"expected a storage in {STORAGES}, got {storage!r}", field="storage")
    if storage == "v7" and cfg is not None:
        need = cfg.height * cfg.width * 3 * frames
        if need > V7_MAX_VARIABLE_BYTES:
            raise FmDataError(f"expected a video under 2^31 bytes for storage v7 (the format's limit per "
                              f"variable), got {format_bytes(need)}; use storage 'matlab'", field="storage")


def _check_recordings(recordings: int) -> None:
    if isinstance(recordings, bool) or int(recordings) != recordings or not (1 <= recordings <= 99):
        raise FmDataError(f"expected 1..99 recordings, got {recordings!r}", field="recordings")


@dataclass
class SynthResult:
    """What :func:`synthesize` wrote: the output path, its files, frames and the time it took."""

    out: Path
    layout: str
    files: list[Path]
    frames: int
    seconds: float
    storage: str = "matlab"
    preview: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-able dict."""
        return {"out": str(self.out), "layout": self.layout, "files": [str(f) for f in self.files],
                "frames": self.frames, "seconds": round(self.seconds, 3),
                "frames_per_second": round(self.frames / self.seconds, 1) if self.seconds > 0 else None}

    def summary(self) -> str:
        """Return the human summary: what was written where, how fast, and the files."""
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        lines = [f"wrote {self.frames} frames ({self.layout}, {self.storage}) to {self.out} in {self.seconds:.1f} s "
                 f"({rate:,.0f} frames/s)"]
        lines += [f"  {f}" for f in self.files]
        if self.preview is not None:
            lines.append(f"preview: {self.preview}")
        return "\n".join(lines)


def synthesize(out: str | os.PathLike[str], *, layout: str = LAYOUT_V1, storage: str = "matlab", recordings: int = 1,
               frames: int = 2000, size: tuple[int, int] | int | str = (64, 64), fps: float = 25.0, seed: int = 0,
               overwrite: bool = False, progress: bool = False,
               preview: str | os.PathLike[str] | None = None, events: str = "standard") -> SynthResult:
    """Write a synthetic dataset to ``out`` in ``layout`` "v1" or "v2"; return a :class:`SynthResult`.

    V1 with one recording writes the file ``out`` (or ``out/batch_01.mat`` when ``out`` ends with a
    path separator, as a folder does: ``raw/``); V1 with several writes ``out/batch_01.mat``
    ... ; V2 always writes the folder ``out``. ``preview`` names a PNG to draw of the first
    recording (frames, masks, current); an existing picture is refused unless ``overwrite``, as the
    recordings are. ``events`` names a profile of synth.EVENT_PROFILES.
    """
    if layout not in LAYOUTS:
        raise FmDataError(f"expected a layout in {LAYOUTS}, got {layout!r}", field="layout")
    _check_recordings(recordings)
    if overwrite:  # what --overwrite would replace, before anything is written (the picture's folder included)
        refuse_foreign(out)
    # a failed synth leaves no folder it made (the recordings' or the picture's)
    with folders_made_for(*([out] if preview is None else [out, preview])):
        if preview is not None:  # fail before the long part, not after it
            try:
                Path(preview).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FmDataError(f"cannot create the picture's folder: {exc.strerror or exc}", preview,
                                  field="preview") from None
            # the picture, like the recordings, replaces nothing unless told, and then only synth's own
            check_replaceable(preview, overwrite=overwrite, command=COMMAND)
        t0 = time.perf_counter()
        if layout == LAYOUT_V2:
            path = write_v2(out, recordings=recordings, frames=frames, size=size, fps=fps, seed=seed, storage=storage,
                            overwrite=overwrite, progress=progress, events=events)
            files = sorted(p for p in path.rglob("*") if p.is_file())
        elif recordings == 1 and not os.fspath(out).endswith(("/", os.sep)):
            path = write_v1(out, frames=frames, size=size, fps=fps, seed=seed, storage=storage, overwrite=overwrite,
                            progress=progress, events=events)
            files = [path]
        else:
            path = write_v1_set(out, recordings=recordings, frames=frames, size=size, fps=fps, seed=seed, storage=storage,
                                overwrite=overwrite, progress=progress, events=events)
            files = sorted(path.glob("*.mat"))
        seconds = time.perf_counter() - t0
        if preview is not None:
            cfg = _config(size, fps, events)
            plan = plan_v2 if layout == LAYOUT_V2 else plan_v1
            plot_preview(plan(int(frames), cfg, seed, 0), preview)
        return SynthResult(out=path, layout=layout, files=files, frames=int(frames) * recordings, seconds=seconds,
                           storage=storage, preview=None if preview is None else Path(preview))
