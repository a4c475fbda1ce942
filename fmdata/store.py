"""Open, create and describe FMF stores (format v1, see :mod:`fmdata.schema`).

``open_store`` accepts a local path or an fsspec URL (``s3://``, ``memory://``, ``file://``).
``create_arrays`` lays out every source array with the default codecs and chunking;
``write_store_from_arrays`` writes a small, complete store from in-memory recordings (tests,
demos); large sources go through ``fmdata.convert`` instead, which streams.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from fmdata import remote, schema
from fmdata.errors import FmDataError

# Defaults suit random reads of short frame windows: a chunk is one frame (a 10-frame clip with
# step 18 touches 10 different frames anyway), shards group many frames into one file.
DEFAULT_CHUNK_FRAMES = 1
DEFAULT_SHARD_FRAMES = 256
DEFAULT_CURRENT_CHUNK = 65536


# Video codec, chosen by measurement (docs/store-format.md, benchmarks/bench_convert.py layout):
# bit-shuffling whole RGB pixels (typesize 3) before zstd makes one-frame chunks smaller than
# MATLAB's deflate-3 source (0.97 x) at about 250 MB/s encode and ~35 us decode per 64x64 frame.
VIDEO_CLEVEL = 1
VIDEO_TYPESIZE = 3


def _compressor(shuffle: BloscShuffle, level: int = 3, typesize: int | None = None) -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=level, shuffle=shuffle, typesize=typesize)


def codecs_for(name: str) -> dict[str, Any]:
    """Return ``create_array`` keyword arguments (compressors) for array ``name``.

    Masks (0/1 bytes) are bit-shuffled, which packs eight pixels per byte before zstd; numeric
    series are byte-shuffled; video is bit-shuffled per RGB pixel (blosc typesize 3), which
    measured smaller than plain zstd and than MATLAB's deflate (see docs/store-format.md).
    Every codec is stock blosc, readable with zarr + numcodecs.
    """
    if name == schema.MASK:
        return {"compressors": [_compressor(BloscShuffle.bitshuffle)]}
    if name == schema.VIDEO:
        return {"compressors": [_compressor(BloscShuffle.bitshuffle, VIDEO_CLEVEL, VIDEO_TYPESIZE)]}
    return {"compressors": [_compressor(BloscShuffle.shuffle)]}


def is_url(path: str | os.PathLike[str]) -> bool:
    """Return True when ``path`` is an fsspec URL rather than a local path."""
    return "://" in os.fspath(path)


def _store_like(path: str | os.PathLike[str], mode: str, storage_options: dict | None) -> Any:
    # URL handling (file://, s3:// endpoints from the environment, ...) lives in fmdata.remote.
    return remote.zarr_store(path, mode, storage_options)


def open_store(
    path: str | os.PathLike[str],
    mode: str = "r",
    *,
    require_complete: bool = True,
    storage_options: dict | None = None,
) -> zarr.Group:
    """Open the store at ``path`` (local path or fsspec URL) and return its root group.

    ``mode`` is "r" (read only) or "r+" (read and add derived arrays). Raises FmDataError when
    nothing is there, when it is not an FMF store, or (unless ``require_complete=False``) when
    its writer never finished.
    """
    if mode not in ("r", "r+"):
        raise FmDataError(f"expected mode 'r' or 'r+', got {mode!r}")
    p = os.fspath(path)
    if not is_url(p) and not os.path.isdir(p):
        raise FmDataError("expected an FMF Zarr store (a folder), got nothing there" if not os.path.exists(p)
                          else "expected an FMF Zarr store (a folder), got a file", p)
    try:
        root = zarr.open_group(store=_store_like(p, mode, storage_options), mode=mode, zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:
        raise FmDataError(f"expected a Zarr v3 group, got none ({exc.__class__.__name__})", p) from None
    except (PermissionError, *remote.backend_errors()) as exc:  # no credentials, endpoint down, access denied
        raise FmDataError(f"expected a reachable store, got {exc.__class__.__name__}: {exc}", p) from None
    meta = read_meta(root, p)
    if require_complete and not meta.complete:
        raise FmDataError("store is incomplete (its writer did not finish); re-run `fmdata convert --resume`", p)
    return root


def read_meta(root: zarr.Group, where: str = "store") -> schema.StoreMeta:
    """Return the StoreMeta of an open root group; FmDataError if the attribute is missing."""
    d = root.attrs.get(schema.ATTR_STORE)
    if not isinstance(d, dict):
        raise FmDataError(f"expected attribute {schema.ATTR_STORE!r} (an FMF store), got none", where)
    try:
        return schema.StoreMeta.from_dict(d)
    except FmDataError as exc:
        raise FmDataError(str(exc), where) from None


def read_recordings(root: zarr.Group) -> list[schema.RecordingInfo]:
    """Return the per-recording provenance list of an open store."""
    return [schema.RecordingInfo.from_dict(d) for d in root.attrs.get(schema.ATTR_RECORDINGS, [])]


def read_offsets(root: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame_offsets, current_offsets), each int64 of length R + 1."""
    return (np.asarray(root[schema.RECORDING_FRAME_OFFSETS][:], dtype=np.int64),
            np.asarray(root[schema.RECORDING_CURRENT_OFFSETS][:], dtype=np.int64))


@dataclass(frozen=True)
class Chunking:
    """Chunk and shard lengths along the frame axis (and the current axis)."""

    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    shard_frames: int | None = DEFAULT_SHARD_FRAMES
    current_chunk: int = DEFAULT_CURRENT_CHUNK

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise FmDataError(f"expected chunk frames >= 1, got {self.chunk_frames}")
        if self.shard_frames is not None and (self.shard_frames < self.chunk_frames
                                              or self.shard_frames % self.chunk_frames):
            raise FmDataError(f"expected shard frames to be a multiple of chunk frames "
                              f"({self.chunk_frames}), got {self.shard_frames}")

    @property
    def write_block(self) -> int:
        """Frames per independent write unit (a whole shard, or a whole chunk if unsharded)."""
        return self.shard_frames or self.chunk_frames


def create_frame_array(root: zarr.Group, name: str, n_frames: int, frame_shape: Sequence[int],
                       chunking: Chunking, overwrite: bool = False) -> zarr.Array:
    """Create frame-axis array ``name`` (dtype and dims from the schema) and return it."""
    shape = (n_frames, *frame_shape)
    chunks = (chunking.chunk_frames, *frame_shape)
    shards = None if chunking.shard_frames is None else (chunking.shard_frames, *frame_shape)
    return root.create_array(
        name, shape=shape, dtype=schema.DTYPES[name], chunks=chunks, shards=shards,
        dimension_names=schema.DIMS[name], fill_value=0, overwrite=overwrite, **codecs_for(name))


def create_arrays(root: zarr.Group, n_frames: int, n_current: int, height: int, width: int,
                  n_recordings: int, chunking: Chunking = Chunking(), overwrite: bool = False) -> None:
    """Create every source array of format v1 (empty) in ``root``.

    Per-frame 1-D arrays use the video's shard length as their chunk, so that a writer that
    covers whole video shards also covers whole chunks of every other frame array.
    """
    create_frame_array(root, schema.VIDEO, n_frames, (height, width, 3), chunking, overwrite)
    create_frame_array(root, schema.MASK, n_frames, (height, width), chunking, overwrite)
    block = chunking.write_block
    for name in (schema.SPLIT, schema.RECORDING, schema.FRAME_TIME, schema.FRAME_CURRENT_END):
        root.create_array(name, shape=(n_frames,), dtype=schema.DTYPES[name], chunks=(block,),
                          dimension_names=schema.DIMS[name], fill_value=0, overwrite=overwrite,
                          **codecs_for(name))
    root.create_array(schema.CURRENT, shape=(n_current, 3), dtype=schema.DTYPES[schema.CURRENT],
                      chunks=(chunking.current_chunk, 3), dimension_names=schema.DIMS[schema.CURRENT],
                      fill_value=0.0, overwrite=overwrite, **codecs_for(schema.CURRENT))
    root.create_array(schema.CURRENT_TIME, shape=(n_current,), dtype=schema.DTYPES[schema.CURRENT_TIME],
                      chunks=(chunking.current_chunk,), dimension_names=schema.DIMS[schema.CURRENT_TIME],
                      fill_value=0.0, overwrite=overwrite, **codecs_for(schema.CURRENT_TIME))
    for name in (schema.RECORDING_FRAME_OFFSETS, schema.RECORDING_CURRENT_OFFSETS):
        root.create_array(name, shape=(n_recordings + 1,), dtype="int64", chunks=(n_recordings + 1,),
                          dimension_names=schema.DIMS[name], fill_value=0, overwrite=overwrite)


@dataclass
class RecordingArrays:
    """One recording held in memory, already in store orientation (see fmdata.schema).

    ``frame_current_end`` is local to the recording (0..n_current); ``split`` uses the schema's
    split codes. Used for tests and small synthetic stores.
    """

    video: np.ndarray  # (N, H, W, 3) uint8
    mask: np.ndarray  # (N, H, W) uint8
    split: np.ndarray  # (N,) int8
    frame_time: np.ndarray  # (N,) float64
    current: np.ndarray  # (M, 3) float64
    current_time: np.ndarray  # (M,) float64
    frame_current_end: np.ndarray  # (N,) int64, local
    info: schema.RecordingInfo


def write_store_from_arrays(path: str | os.PathLike[str], recordings: Sequence[RecordingArrays],
                            fps: float, chunking: Chunking = Chunking(), created_by: str = "",
                            storage_options: dict | None = None) -> zarr.Group:
    """Write a complete store holding ``recordings`` at ``path`` (must not exist); return its root.

    ``path`` may be an fsspec URL (``storage_options`` as for :func:`open_store`); the
    ``complete`` flag is written last, so an interrupted write never looks complete.
    """
    if not recordings:
        raise FmDataError("expected at least one recording, got none")
    n_frames = sum(len(r.video) for r in recordings)
    n_current = sum(len(r.current) for r in recordings)
    h, w = recordings[0].video.shape[1:3]
    root = zarr.open_group(store=_store_like(path, "w", storage_options), mode="w-", zarr_format=3)
    create_arrays(root, n_frames, n_current, h, w, len(recordings), chunking)
    f_off = np.concatenate([[0], np.cumsum([len(r.video) for r in recordings])]).astype(np.int64)
    c_off = np.concatenate([[0], np.cumsum([len(r.current) for r in recordings])]).astype(np.int64)
    root[schema.VIDEO][:] = np.concatenate([r.video for r in recordings])
    root[schema.MASK][:] = np.concatenate([r.mask for r in recordings])
    root[schema.SPLIT][:] = np.concatenate([r.split for r in recordings]).astype(np.int8)
    root[schema.RECORDING][:] = np.repeat(np.arange(len(recordings), dtype=np.int32), np.diff(f_off))
    root[schema.FRAME_TIME][:] = np.concatenate([r.frame_time for r in recordings])
    root[schema.FRAME_CURRENT_END][:] = np.concatenate(
        [r.frame_current_end + c_off[i] for i, r in enumerate(recordings)])
    root[schema.CURRENT][:] = np.concatenate([r.current for r in recordings])
    root[schema.CURRENT_TIME][:] = np.concatenate([r.current_time for r in recordings])
    root[schema.RECORDING_FRAME_OFFSETS][:] = f_off
    root[schema.RECORDING_CURRENT_OFFSETS][:] = c_off
    root.attrs[schema.ATTR_RECORDINGS] = [r.info.to_dict() for r in recordings]
    meta = schema.StoreMeta(n_frames=n_frames, n_current=n_current, n_recordings=len(recordings),
                            height=int(h), width=int(w), fps=float(fps), complete=True, created_by=created_by)
    root.attrs[schema.ATTR_STORE] = meta.to_dict()
    return root
