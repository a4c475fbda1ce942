"""Open and validate FMF sources: the one validator, used by ``fmdata convert`` and ``fmdata inspect``.

:func:`open_sources` validates everything that is cheap (file types, variables, classes, ranks,
frame counts, CSV and JSON content) and returns picklable :class:`RecordingSource` plans with
no open handles; :mod:`fmdata.sources.readers` reads them. The layouts are described in
:mod:`fmdata.sources.layouts`. :func:`v2_folder_problems` lists every structural problem of a
V2 folder (missing or extra pieces, unknown JSON keys) at once; ``open_sources`` raises the
first of them, ``fmdata inspect`` shows them all and then runs ``open_sources`` too, so that
inspect flags exactly what convert refuses.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmdata.errors import FmDataError
from fmdata.sources import matinfo
from fmdata.sources.hdf5_chunks import copy_problem, deflate_level
from fmdata.sources.layouts import (
    CURRENT_CLASSES,
    DEFAULT_FPS,
    LAYOUT_V1,
    LAYOUT_V2,
    MASK_CLASSES,
    V1_VARIABLES,
    V2_FOLDERS,
    V2_SPLIT_FILES,
    V2_VARIABLES,
    V2_VIDEOS,
    check_fps,
    v2_files,
    v2_key,
)
from fmdata.sources.v2_text import (
    currents_zone,
    fingerprint,
    format_zone,
    iso,
    read_currents,
    read_split_json,
    read_timestamps,
    split_codes,
    timestamps_zone,
)
from fmdata.store import schema


@dataclass(frozen=True)
class VarSpec:
    """One validated source variable: its name in the file and how it is laid out.

    ``frame_chunk`` is the source's chunk length along the frame axis (the HDF5 chunk grid that
    reads align to; the whole variable for contiguous, compact and v5 storage). ``dropped`` is
    True when MATLAB dropped the trailing frame axis because the recording has one frame.
    ``row`` (split only) is True for MATLAB (1, N), False for (N, 1). For video and mask,
    ``h5_chunks`` is the chunk shape (h5py order) when the chunks can be copied into a store of
    the source layout as they are, and ``copy_note`` says why not otherwise
    (:func:`fmdata.sources.hdf5_chunks.copy_problem`); ``deflate_level`` is the chunks' level.
    """

    name: str
    matlab_class: str
    matlab_shape: tuple[int, ...]
    frame_chunk: int
    frame_bytes: int
    dropped: bool = False
    row: bool = True
    h5_chunks: tuple[int, ...] | None = None
    copy_note: str = ""
    deflate_level: int = 3


@dataclass(frozen=True)
class RecordingSource:
    """A validated recording: where its data is and what it holds. Picklable, no open handles.

    ``path`` is what the user named (V1 file or V2 folder); ``mat_path`` the MAT file with video
    and mask. V2 recordings also name their CSV and JSON files. ``fingerprint`` lists
    (path, size, mtime_ns) of every file read, so a resumed conversion can tell the sources
    did not change.
    """

    name: str
    layout: str
    path: str
    mat_path: str
    mat_format: str
    n_frames: int
    height: int
    width: int
    n_current: int
    video: VarSpec
    mask: VarSpec
    current: VarSpec | None = None
    split: VarSpec | None = None
    currents_csv: str = ""
    timestamps_csv: str = ""
    train_json: str = ""
    test_json: str = ""
    fps: float = DEFAULT_FPS
    origin: str = ""
    source_bytes: int = 0
    fingerprint: tuple[tuple[str, int, int], ...] = ()
    storage: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    mask_nonzero: bool = False

    def info(self) -> schema.RecordingInfo:
        """Return the provenance record written into the store for this recording."""
        return schema.RecordingInfo(name=self.name, source_path=self.path, source_bytes=self.source_bytes,
                                    layout=self.layout, n_frames=self.n_frames, n_current=self.n_current,
                                    origin=self.origin, source_storage=self.storage,
                                    mask_nonzero=self.mask_nonzero)


# ---- what a source is -----------------------------------------------------------------------------
def folder_layout(folder: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """What the folder source ``folder`` is: the one rule of ``fmdata inspect``, ``convert`` and ``verify``.

    Returns ``(LAYOUT_V2, [folder])`` for a V2 folder (it holds one of ``videos/``, ``currents/``,
    ``timestamps/``, ``train.json``, ``test.json``; :func:`v2_folder_problems` says what else it
    needs) and ``(LAYOUT_V1, files)`` for a folder of V1 files (``files``: its ``*.mat`` files, in
    name order; hidden files and other files are not sources). Raises FmDataError, one line naming
    the folder, for a folder with neither, or with both.
    """
    folder = os.fspath(folder)
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    v2 = [n for n in names if (n in V2_FOLDERS and os.path.isdir(os.path.join(folder, n))) or n in V2_SPLIT_FILES.values()]
    mats = [os.path.join(folder, n) for n in names
            if os.path.splitext(n)[1].lower() == ".mat" and os.path.isfile(os.path.join(folder, n))]
    if v2 and mats:
        raise FmDataError(f"expected a V2 folder or a folder of V1 .mat files, got both: {', '.join(v2)} beside "
                          f"{len(mats)} .mat file(s) such as {os.path.basename(mats[0])}", folder)
    if v2:
        return LAYOUT_V2, [folder]
    if mats:
        return LAYOUT_V1, mats
    raise FmDataError(f"expected a V1 MAT file, a folder of them or a V2 folder ({'/, '.join(V2_FOLDERS)}/, "
                      "train.json, test.json), got a folder with none of them", folder)


def is_source(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a source :func:`open_sources` would take for one: a MAT file (by its
    first bytes) or a folder that :func:`folder_layout` accepts. Reads at most a file's header."""
    p = os.fspath(path)
    try:
        if os.path.isdir(p):
            folder_layout(p)
            return True
        return os.path.isfile(p) and matinfo.sniff_format(p) is not None
    except (FmDataError, OSError):
        return False


# ---- opening and validating ---------------------------------------------------------------------
def open_sources(paths: list[str] | tuple[str, ...], fps: float = DEFAULT_FPS, *,
                 mask_nonzero: bool = False) -> list[RecordingSource]:
    """Validate every source path and return its recordings in order (V2 folders: by name; folders
    of V1 files: their ``*.mat`` files in name order, :func:`folder_layout`).

    ``fps`` is the frame rate of V1 files (they carry no timestamps). ``mask_nonzero`` reads
    every mask value above 0 as 1, as the authors' loader does (by default a value other than 0
    or 1 is refused while reading). Raises FmDataError with one line naming the file and the
    problem for anything that cannot be converted, and when recordings disagree on frame size.
    """
    if not paths:
        raise FmDataError("expected at least one source (a V1 MAT file, a folder of them or a V2 folder), got none",
                          field="sources")
    check_fps(fps)
    out: list[RecordingSource] = []
    seen: set[str] = set()
    for given in paths:
        given = os.path.abspath(os.fspath(given))
        if not os.path.exists(given):
            raise FmDataError("expected a V1 MAT file, a folder of them or a V2 folder, got nothing there", given)
        layout, files = folder_layout(given) if os.path.isdir(given) else (LAYOUT_V1, [given])
        for p in files:
            if os.path.realpath(p) in seen:  # the same recording twice would double its frames in both splits
                raise FmDataError("expected each source once, got this one again", p)
            seen.add(os.path.realpath(p))
            if layout == LAYOUT_V2:
                out.extend(_open_v2(p, fps))
            else:
                out.append(_open_v1(p, fps))
    if mask_nonzero:
        out = [dataclasses.replace(r, mask_nonzero=True) for r in out]
    first = out[0]
    for r in out[1:]:
        if (r.height, r.width) != (first.height, first.width):
            raise FmDataError(f"expected frames of {first.height}x{first.width} like {first.name}, "
                              f"got {r.height}x{r.width}", r.mat_path)
    return out


def _describe(path: str) -> matinfo.MatFileInfo:
    fmt = matinfo.sniff_format(path)
    if fmt is None:
        with open(path, "rb") as fh:
            head = fh.read(128)
        if head.startswith(b"MATLAB 7.3 MAT-file"):
            raise FmDataError("expected an HDF5 file after the 512-byte MATLAB v7.3 header, got a corrupt or "
                              "truncated one", path)
        raise FmDataError("expected a MATLAB MAT file (v7.3 or v7), got an unknown file type", path)
    if fmt == "4":
        raise FmDataError("expected a MATLAB v7.3 or v7 MAT file, got the old v4 format", path)
    return matinfo.describe(path)


def _variable(info: matinfo.MatFileInfo, name: str) -> matinfo.VariableInfo:
    for v in info.variables:
        if v.name == name:
            if v.empty:
                raise FmDataError(f"expected variable {name!r} to hold data, got an empty array", info.path)
            if v.dtype in ("group",) or v.matlab_class in ("struct", "cell", "char", "function_handle"):
                raise FmDataError(f"expected variable {name!r} to be a numeric array, got MATLAB class "
                                  f"{v.matlab_class}", info.path)
            if v.layout == "sparse":
                raise FmDataError(f"expected variable {name!r} to be a full numeric array, got a sparse "
                                  f"{v.matlab_class} matrix", info.path)
            if "(" in v.dtype or "[" in v.dtype or "complex" in v.dtype:
                raise FmDataError(f"expected variable {name!r} to hold real numbers, got {v.dtype}", info.path)
            problem = v.problem()
            if problem:
                raise FmDataError(problem, info.path)
            return v
    raise FmDataError(f"expected a variable {name!r}, got only {sorted(v.name for v in info.variables)}", info.path)


def _check_class(info: matinfo.MatFileInfo, v: matinfo.VariableInfo, allowed: tuple[str, ...]) -> None:
    if v.matlab_class not in allowed:
        raise FmDataError(f"expected {v.name!r} of MATLAB class {' or '.join(allowed)}, got {v.matlab_class}",
                          info.path)


def _frame_chunk(v: matinfo.VariableInfo, axis: int = 0) -> int:
    """Frames per source chunk along h5py axis ``axis`` (the frame axis); 1 when not chunked.

    Contiguous, compact and v5 variables have no chunk grid: any read range is as cheap as any
    other, so they align to single frames.
    """
    if v.layout == "chunked" and v.h5_chunks and v.h5_shape and len(v.h5_chunks) == len(v.h5_shape):
        return max(1, int(v.h5_chunks[axis]))
    return 1


def _video_mask_specs(info: matinfo.MatFileInfo, video_name: str,
                      mask_name: str) -> tuple[VarSpec, VarSpec, int, int, int]:
    """Validate video and mask variables; return their specs, N, H, W."""
    p = info.path
    video = _variable(info, video_name)
    _check_class(info, video, ("uint8",))
    vs = video.shape
    if len(vs) == 4 and vs[2] == 3:
        h, w, n, dropped = vs[0], vs[1], vs[3], False
    elif len(vs) == 3 and vs[2] == 3:
        h, w, n, dropped = vs[0], vs[1], 1, True
    else:
        raise FmDataError(f"expected {video_name!r} of MATLAB shape (H, W, 3, N), got {vs}", p)
    mask = _variable(info, mask_name)
    _check_class(info, mask, MASK_CLASSES)
    ms = mask.shape
    if not ((len(ms) == 3 and ms[:2] == (h, w)) or (n == 1 and ms == (h, w))):
        raise FmDataError(f"expected {mask_name!r} of MATLAB shape ({h}, {w}, {n}) to match {video_name!r}, "
                          f"got {ms}", p)
    n_mask = ms[2] if len(ms) == 3 else 1
    if n_mask != n:
        raise FmDataError(f"expected {mask_name!r} to have {n} frames like {video_name!r}, got {n_mask}", p)
    item = int(np.dtype(matinfo.CLASS_DTYPES.get(mask.matlab_class, np.dtype("u1"))).itemsize)
    vspec = VarSpec(video_name, video.matlab_class, vs, _frame_chunk(video), h * w * 3, dropped,
                    **_copy_fields(info, video, dropped))
    mask_dropped = len(ms) == 2
    mspec = VarSpec(mask_name, mask.matlab_class, ms, _frame_chunk(mask), h * w * item, mask_dropped,
                    **_copy_fields(info, mask, mask_dropped))
    return vspec, mspec, int(n), int(h), int(w)


def _copy_fields(info: matinfo.MatFileInfo, v: matinfo.VariableInfo, dropped: bool) -> dict[str, Any]:
    """The VarSpec fields that say whether the chunks of video or mask variable ``v`` can be copied."""
    note = copy_problem(v, info.format)
    if note is None and dropped:
        note = "a single frame (MATLAB dropped the frame axis)"
    if note is not None:
        return {"copy_note": note}
    assert v.h5_chunks is not None
    return {"h5_chunks": tuple(int(c) for c in v.h5_chunks), "deflate_level": deflate_level(v)}


def _storage(info: matinfo.MatFileInfo, names: tuple[str, ...]) -> dict[str, Any]:
    return {"format": info.format, "header": info.header, "file_bytes": info.file_bytes,
            "variables": {v.name: v.to_dict() for v in info.variables if v.name in names}}


def _open_v1(path: str, fps: float) -> RecordingSource:
    info = _describe(path)
    names = V1_VARIABLES
    video, mask, n, h, w = _video_mask_specs(info, names["video"], names["mask"])
    cur = _variable(info, names["current"])
    _check_class(info, cur, CURRENT_CLASSES)
    if len(cur.shape) != 2 or cur.shape[0] != 3:
        raise FmDataError(f"expected {names['current']!r} of MATLAB shape (3, N), got {cur.shape}", path)
    if cur.shape[1] != n:
        raise FmDataError(f"expected {names['current']!r} to have {n} samples (one per frame), got {cur.shape[1]}",
                          path)
    spl = _variable(info, names["split"])
    _check_class(info, spl, MASK_CLASSES)
    if len(spl.shape) != 2 or 1 not in spl.shape or max(spl.shape) != n:
        raise FmDataError(f"expected {names['split']!r} of MATLAB shape (1, {n}), got {spl.shape}", path)
    item = int(np.dtype(matinfo.CLASS_DTYPES[cur.matlab_class]).itemsize)
    cspec = VarSpec(cur.name, cur.matlab_class, cur.shape, _frame_chunk(cur), 3 * item)
    row = spl.shape[0] == 1
    sspec = VarSpec(spl.name, spl.matlab_class, spl.shape, _frame_chunk(spl, 0 if row else 1), 8, row=row)
    size = os.path.getsize(path)
    return RecordingSource(
        name=os.path.splitext(os.path.basename(path))[0], layout=LAYOUT_V1, path=path, mat_path=path,
        mat_format=info.format, n_frames=n, height=h, width=w, n_current=n, video=video, mask=mask,
        current=cspec, split=sspec, fps=float(fps), source_bytes=size, fingerprint=(fingerprint(path),),
        storage=_storage(info, tuple(names.values())))


def v2_folder_problems(folder: str | os.PathLike[str]) -> list[FmDataError]:
    """Return every structural problem of the V2 folder ``folder``, each a one-line error naming a path.

    Missing or extra pieces (sub-folders, split files, CSVs without or for no video), unparsable
    split files and keys that name no video; empty when the pieces fit together (their content
    is checked by :func:`open_sources`).
    """
    folder = os.fspath(folder)
    problems: list[FmDataError] = []
    for sub in V2_FOLDERS:
        if not os.path.isdir(os.path.join(folder, sub)):
            problems.append(FmDataError(f"expected a V2 folder with {'/, '.join(V2_FOLDERS)}/, train.json and "
                                        f"test.json, got no {sub}/", folder))
    for fname in V2_SPLIT_FILES.values():
        if not os.path.isfile(os.path.join(folder, fname)):
            problems.append(FmDataError(f"expected {fname} in the V2 folder, got none", folder))
    listing = {sub: sorted(f for f in os.listdir(os.path.join(folder, sub)) if not f.startswith("."))
               for sub in V2_FOLDERS if os.path.isdir(os.path.join(folder, sub))}
    names = v2_names(folder, problems)
    if V2_VIDEOS in listing and not names:
        problems.append(FmDataError(f"expected at least one {V2_VIDEOS}/<name>.mat, got none", folder))
    for sub in V2_FOLDERS[1:]:
        expected = {f"{n}.csv" for n in names}
        for f in listing.get(sub, []):
            if f not in expected:
                problems.append(FmDataError(f"expected only files named after {V2_VIDEOS}/*.mat in {sub}/, got an "
                                            "extra file", os.path.join(folder, sub, f)))
        if sub in listing:
            for f in sorted(expected - set(listing[sub])):
                problems.append(FmDataError("expected this file for its video, got none", os.path.join(folder, sub, f)))
    keys = {v2_key(n) for n in names}
    splits: dict[str, dict[str, list[int]]] = {}
    for k, fname in V2_SPLIT_FILES.items():
        path = os.path.join(folder, fname)
        if not os.path.isfile(path):
            continue
        try:
            splits[k] = read_split_json(path)
        except FmDataError as exc:
            problems.append(exc)
            continue
        for key in splits[k]:
            if key not in keys:
                problems.append(FmDataError(f"expected keys naming {V2_VIDEOS}/*.mat, got an extra key {key!r}", path))
    if len(splits) == len(V2_SPLIT_FILES):
        for key in sorted(keys):
            if all(key not in d for d in splits.values()):
                problems.append(FmDataError(f"expected an entry {key!r} in train.json or test.json, got none", folder))
    return problems


def v2_names(folder: str, problems: list[FmDataError] | None = None) -> list[str]:
    """Return the recording names of a V2 folder (its ``videos/*.mat`` stems, sorted); other files in
    ``videos/`` are added to ``problems`` (when given)."""
    videos = os.path.join(folder, V2_VIDEOS)
    if not os.path.isdir(videos):
        return []
    names = []
    for f in sorted(f for f in os.listdir(videos) if not f.startswith(".")):
        stem, ext = os.path.splitext(f)
        if ext.lower() != ".mat":
            if problems is not None:
                problems.append(FmDataError(f"expected only .mat files in {V2_VIDEOS}/, got an extra file",
                                            os.path.join(videos, f)))
            continue
        names.append(stem)
    return names


def _open_v2(folder: str, fps: float) -> list[RecordingSource]:
    problems = v2_folder_problems(folder)
    if problems:
        raise problems[0]
    train_json, test_json = (os.path.join(folder, V2_SPLIT_FILES[k]) for k in ("train", "test"))
    train, test = read_split_json(train_json), read_split_json(test_json)
    out = []
    for name in v2_names(folder):
        mat, cur_csv, ts_csv = v2_files(folder, name)
        info = _describe(mat)
        video, mask, n, h, w = _video_mask_specs(info, V2_VARIABLES["video"], V2_VARIABLES["mask"])
        split_codes(train, test, v2_key(name), n, train_json, test_json)
        frame_ts = read_timestamps(ts_csv)
        if len(frame_ts) != n:
            raise FmDataError(f"expected one timestamp row per frame ({n}), got {len(frame_ts)}", ts_csv)
        cur_ts, _ = read_currents(cur_csv)
        zone, cur_zone = timestamps_zone(ts_csv), currents_zone(cur_csv)
        # before the time spans: zoned times are UTC instants, naive ones wall-clock times, and the
        # two compared would make a mere mix of forms look like currents that do not cover the frames
        if zone is not None and cur_zone is None:
            raise FmDataError(f"expected current times with a UTC offset, as the frame times in {ts_csv} have "
                              f"({format_zone(zone)}), got times without one", cur_csv)
        if zone is None and cur_zone is not None:
            raise FmDataError(f"expected current times without a UTC offset, as the frame times in {ts_csv} are, "
                              f"got times with one ({format_zone(cur_zone)})", cur_csv)
        if cur_ts[0] > frame_ts[0] or cur_ts[-1] < frame_ts[-1]:
            raise FmDataError(f"expected current rows covering the frames' time span {iso(frame_ts[0])} .. "
                              f"{iso(frame_ts[-1])}, got {iso(cur_ts[0])} .. {iso(cur_ts[-1])}", cur_csv)
        origin = min(frame_ts[0], cur_ts[0])
        files = (mat, cur_csv, ts_csv)
        out.append(RecordingSource(
            name=name, layout=LAYOUT_V2, path=folder, mat_path=mat, mat_format=info.format, n_frames=n,
            height=h, width=w, n_current=len(cur_ts), video=video, mask=mask, currents_csv=cur_csv,
            timestamps_csv=ts_csv, train_json=train_json, test_json=test_json, fps=float(fps),
            origin=iso(origin, zone), source_bytes=sum(os.path.getsize(f) for f in files),
            fingerprint=tuple(fingerprint(f) for f in files + (train_json, test_json)),
            storage={**_storage(info, tuple(V2_VARIABLES.values())),
                     "currents_csv": os.path.getsize(cur_csv), "timestamps_csv": os.path.getsize(ts_csv)}))
    return out
