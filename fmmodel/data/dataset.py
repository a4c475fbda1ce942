"""The lazy torch dataset over an FMF store and a window table.

One item is one row of a window table (:mod:`fmdata.store.window_table`): the clip frames, the
labelled frame's mask and class label, and the current rows of that window, read from the store.
An item is a row lookup plus slices; the heavy lifting (which chunks to decode, how) is in
:mod:`fmdata.store.row_reader`. The dataset implements ``__getitems__``, so a DataLoader fetches
a whole batch with one vectorised read per array; :func:`collate_windows` then passes the ready
batch through without copying (``fmmodel.data.sampling.make_loader`` wires this up; how batches
travel from workers is in :mod:`fmmodel.data.batches`).

Preprocessing (:mod:`fmmodel.data.preprocessing`): ``reference`` (0..255 video, raw amperes, frames
transposed as the authors' loader feeds them) or ``normalized`` (true orientation, training-split
statistics). ``orientation`` names what an instance delivers ("reference" or "true"); trainers
record it in their checkpoints. The dataset reads through an open store
(:class:`fmdata.store.handle.StoreHandle`, given or opened once); pickled to a DataLoader worker, it
carries the store's location alone, and the worker opens what it reads lazily, itself.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

import numcodecs.blosc
import numpy as np
import torch
import torch.utils.data

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.handle import StoreLike, open_store
from fmdata.store.row_reader import READER_MODES, AxisReader, open_axis_reader
from fmdata.store.window_table import WindowTable, current_row_offsets
from fmmodel.data.batches import SharedRing, WindowBatch, allocate_batch, collate_windows
from fmmodel.data.preprocessing import (
    PREPROCESSING_REFERENCE,
    PREPROCESSINGS,
    VIDEO_DTYPES,
    clip_values,
    current_values,
    input_format,
    item_axes,
    orient_masks,
    read_normalization,
)
from fmmodel.errors import FmModelError
from fmmodel.protocol import MODALITIES

TARGETS = ("cls", "seg", "both")
SPLIT_CODES = {name: code for code, name in schema.SPLIT_NAMES.items()}
_MIB = 1 << 20

__all__ = ["FmfWindowDataset", "WindowBatch", "collate_windows", "current_resampling", "TARGETS"]


@functools.lru_cache(maxsize=4096)
def _row_offsets(n: int, rows: int) -> np.ndarray:
    # one read-only copy per (length, rows) in a process, shared by every dataset and resident copy
    offsets = current_row_offsets(n, rows)
    offsets.flags.writeable = False
    return offsets


def current_resampling(lengths: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Return how windows of ``lengths`` current rows are read as ``rows`` rows: (offsets, code).

    ``offsets`` (int64, (distinct lengths, ``rows``)) holds one row of
    :func:`fmdata.store.window_table.current_row_offsets` per distinct length; window ``i`` reads
    rows ``start[i] + offsets[code[i]]`` (``code`` int64, one per window).
    """
    unique, code = np.unique(lengths, return_inverse=True)  # most windows share one length
    offsets = np.stack([_row_offsets(int(n), int(rows)) for n in unique])
    return offsets, code.reshape(-1).astype(np.int64, copy=False)


def _pick(keep: np.ndarray, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """Return ``keep[rows]`` (int indices or a boolean mask); FmModelError when ``rows`` do not index ``keep``."""
    try:
        return keep[np.asarray(rows)]
    except IndexError:
        raise FmModelError(f"expected rows indexing the {len(keep)} selected windows, got "
                           f"some out of range") from None


class FmfWindowDataset(torch.utils.data.Dataset):
    """Training/evaluation samples of an FMF store, one per window-table row.

    Args:
        store: an open store (:func:`fmdata.open_store`) or its location (a path, an fsspec URL, a
            Location; opened here, once). Workers reopen it lazily, each for itself.
        windows: the name of a window table in the store (``fmdata windows --name``) or a WindowTable.
        preprocessing: "reference" or "normalized" (see module docstring).
        augment: horizontal flip with p=0.5 of clip and mask together, decided by (seed, epoch, window).
        seed: seed of the flip decisions.
        modality: "both", "video" (no current read) or "current" (no video read).
        target: "cls" (no mask read), "seg" or "both".
        split: keep only windows of this split ("train", "test", "none"); None keeps all.
        rows: keep only these table rows (int indices or a boolean mask), applied after ``split``.
        video_dtype: "float32" (default) or "uint8" (reference preprocessing only: 4x fewer bytes
            to move; convert with ``.float()`` on the device).
        reader: "auto" (fast local reader where the layout allows, else zarr), "fast" or "zarr".
        cache_mb: byte budget (MiB, per process) of decoded chunks kept for the current array, and
            for frame arrays whose chunks hold several frames.
        checksums: check every chunk read against its stored CRC-32C (the default; a mismatch or a
            missing shard is an FmModelError naming the array and frames). False only to measure
            what the checks cost (benchmarks/bench_dataset.py).

    Items are dicts of tensors: ``clip`` (3, T, H', W') float32 (or uint8), ``current`` (R, 3)
    float32, ``mask`` (H', W') uint8, ``label``/``recording``/``frame``/``window`` int64 scalars and
    ``flipped`` bool, where (H', W') is (W, H) under reference orientation and (H, W) otherwise.
    ``clip`` is absent for modality "current", ``current`` for modality "video", ``mask`` for
    target "cls".
    """

    def __init__(self, store: StoreLike, windows: str | WindowTable, *,
                 preprocessing: str = PREPROCESSING_REFERENCE, augment: bool = False, seed: int = 0,
                 modality: str = "both", target: str = "both", split: str | None = None,
                 rows: np.ndarray | Sequence[int] | None = None, video_dtype: str = "float32",
                 reader: str = "auto", cache_mb: float = 64, checksums: bool = True) -> None:
        for name, value, allowed in (("preprocessing", preprocessing, PREPROCESSINGS),
                                     ("modality", modality, MODALITIES), ("target", target, TARGETS),
                                     ("video_dtype", video_dtype, VIDEO_DTYPES), ("reader", reader, READER_MODES)):
            if value not in allowed:
                raise FmModelError(f"expected {name} in {allowed}, got {value!r}", field=name)
        if video_dtype == "uint8" and preprocessing != PREPROCESSING_REFERENCE:
            raise FmModelError("expected video_dtype 'float32' with normalized preprocessing, got 'uint8'",
                               field="video_dtype")
        self.preprocessing, self.augment, self.seed = preprocessing, bool(augment), int(seed)
        self.modality, self.target, self.video_dtype = modality, target, video_dtype
        self.reader_mode, self.cache_bytes, self.checksums = reader, int(cache_mb * _MIB), bool(checksums)
        self.orientation = input_format(preprocessing).orientation
        try:  # parent-side metadata only; workers reopen
            self.handle = open_store(store)
            meta = self.handle.meta
            table = windows if isinstance(windows, WindowTable) else self.handle.window_table(windows)
        except FmDataError as exc:
            raise FmModelError(str(exc)) from None
        self.location = self.handle.location
        self.store = str(self.location)
        self.windows_name = windows if isinstance(windows, str) else None
        self.params = dict(table.params)
        self.frame_shape = (meta.height, meta.width)
        self.norm = (read_normalization(dict(self.handle.root.attrs), self.store) if preprocessing == "normalized"
                     else None)

        keep = np.arange(len(table))
        if split is not None:
            if split not in SPLIT_CODES:
                raise FmModelError(f"expected split in {tuple(SPLIT_CODES)}, got {split!r}")
            keep = keep[table.column("split")[keep] == SPLIT_CODES[split]]
        if rows is not None:
            keep = _pick(keep, rows)
        self._n_table = len(table)
        self._window = keep.astype(np.int64)
        self._clip = np.ascontiguousarray(table.clip[keep])
        self._frame = table.column("frame")[keep].copy()
        self._label = table.column("label")[keep].copy()
        self._recording = table.column("recording")[keep].copy()
        self._cur_start = table.column("current_start")[keep].copy()
        self._cur_stop = table.column("current_stop")[keep].copy()
        self.frames = int(self._clip.shape[1])
        self.current_rows = int(self.params["current_rows"]) if "current_rows" in self.params else 0
        self._check(meta)
        # A shared scalar: with persistent workers, set_epoch in the parent reaches every worker.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._readers: dict[str, AxisReader] | None = None
        self._flips: tuple[int, np.ndarray] | None = None
        self._scratch: dict[str, np.ndarray] = {}
        # Batch buffers reused by a worker (number of slots; 0: a fresh buffer per batch), and
        # whether the receiver may keep views of them (only when it copies at once, e.g. pins).
        # Set in the worker's copy by make_loader's worker_init; see SharedRing.
        self.reuse_buffers = 0
        self.zero_copy = False
        self._ring: SharedRing | None = None

    # -- construction checks ---------------------------------------------------------------
    def _check(self, meta: schema.StoreMeta) -> None:
        where = self.store if self.windows_name is None else f"{self.store} (windows/{self.windows_name})"
        if self.frames < 1:
            raise FmModelError("expected a window table with clip columns, got none", where)
        if len(self) == 0:
            return
        if self._clip.min() < 0 or self._clip.max() >= meta.n_frames:
            raise FmModelError(f"expected clip frames in [0, {meta.n_frames}), got "
                               f"{self._clip.min()}..{self._clip.max()}", where)
        if not np.array_equal(self._clip[:, -1], self._frame):
            raise FmModelError("expected the labelled frame as the last clip column, got other frames", where)
        if not np.isin(self._label, (0, 1)).all():
            raise FmModelError(f"expected labels 0/1, got {np.unique(self._label)}", where)
        if self.modality != "video":
            if self.current_rows < 1:
                raise FmModelError(f"expected params['current_rows'] >= 1, got {self.params.get('current_rows')!r}",
                                   where)
            if (self._cur_start.min() < 0 or self._cur_stop.max() > meta.n_current
                    or np.any(self._cur_stop <= self._cur_start)):
                raise FmModelError(f"expected non-empty current row ranges within [0, {meta.n_current}], got "
                                   f"some outside or empty", where)

    # -- public ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._frame.shape[0])

    @property
    def labels(self) -> np.ndarray:
        """Class label of every item (int64, in dataset order): for samplers and class balance."""
        return self._label

    @property
    def labelled_frames(self) -> np.ndarray:
        """Global labelled frame of every item (int64, in dataset order)."""
        return self._frame

    @property
    def recording_ids(self) -> np.ndarray:
        """Recording of every item (int64, in dataset order)."""
        return self._recording

    @property
    def window_rows(self) -> np.ndarray:
        """Window-table row of every item (int64, in dataset order)."""
        return self._window

    @property
    def clip_frames(self) -> np.ndarray:
        """Global clip frames of every item, (items, T) int64, oldest first (the labelled frame last)."""
        return self._clip

    @property
    def current_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, stop) of every item's global current rows, int64 each; read as ``current_rows`` rows."""
        return self._cur_start, self._cur_stop

    @property
    def item_frame_shape(self) -> tuple[int, int]:
        """The (H', W') of clip frames and masks as delivered: (W, H) under reference orientation."""
        a, b = item_axes(self.orientation, 0)
        return self.frame_shape[a], self.frame_shape[b]

    def subset(self, positions: np.ndarray | Sequence[int]) -> FmfWindowDataset:
        """Return the dataset of this one's items at ``positions`` (int indices or a boolean mask).

        The same as building this dataset again with those ``rows``: same table, preprocessing and
        flip decisions (epoch 0), without reading the store again.
        """
        keep = _pick(np.arange(len(self)), positions)
        out = copy.copy(self)
        out.__dict__.update(self.__getstate__())  # no open readers, caches or batch buffers
        for name in ("_window", "_clip", "_frame", "_label", "_recording", "_cur_start", "_cur_stop"):
            setattr(out, name, np.ascontiguousarray(getattr(self, name)[keep]))
        out._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        return out

    def set_epoch(self, epoch: int) -> None:
        """Select the flip decisions of ``epoch`` (reaches persistent workers; call before iterating)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        """The epoch whose flip decisions items get (set by :meth:`set_epoch`)."""
        return int(self._epoch.item())

    def describe(self) -> dict[str, Any]:
        """Return what a checkpoint should record about the inputs this dataset delivers."""
        return {"preprocessing": self.preprocessing, "orientation": self.orientation,
                "modality": self.modality, "target": self.target, "frames": self.frames,
                "current_rows": self.current_rows, "frame_shape": list(self.frame_shape),
                "item_frame_shape": list(self.item_frame_shape), "window_params": self.params,
                "normalization": None if self.norm is None else {k: v.tolist() for k, v in self.norm.items()}}

    def flips(self, index: np.ndarray) -> np.ndarray:
        """Return the flip decisions (bool) of dataset positions ``index`` in the current epoch."""
        if not self.augment:
            return np.zeros(len(index), dtype=bool)
        epoch = self.epoch
        if self._flips is None or self._flips[0] != epoch:
            gen = np.random.default_rng([self.seed, epoch])
            self._flips = (epoch, gen.random(self._n_table) < 0.5)
        return self._flips[1][self._window[index]]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Return item ``i`` (a dict of tensors, see the class docstring)."""
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> WindowBatch:
        """Fetch several items at once (the DataLoader calls this with a batch's indices)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {n} windows")
        idx = np.where(idx < 0, idx + n, idx)
        readers = self._open()
        flips = self.flips(idx)
        batch = self._allocate(len(idx))
        views = {k: v.numpy() for k, v in batch.tensors.items()}
        try:
            if "clip" in views:
                self._read_clips(readers[schema.VIDEO], idx, flips, views["clip"])
            if "current" in views:
                self._read_current(readers[schema.CURRENT], idx, views["current"])
            if "mask" in views:
                self._read_masks(readers[schema.MASK], idx, flips, views["mask"])
        except FmDataError as exc:  # a damaged store, found while reading: one line naming where
            raise FmModelError(str(exc)) from None
        views["label"][:] = self._label[idx]
        views["recording"][:] = self._recording[idx]
        views["frame"][:] = self._frame[idx]
        views["window"][:] = self._window[idx]
        views["flipped"][:] = flips
        return batch

    # -- reading ---------------------------------------------------------------------------
    def _allocate(self, n: int) -> WindowBatch:
        """Return an uninitialised batch of ``n`` items (the fields this dataset delivers)."""
        fields: list[tuple[str, tuple[int, ...], str]] = []
        if self.modality != "current":
            fields.append(("clip", (n, 3, self.frames, *self.item_frame_shape), self.video_dtype))
        if self.modality != "video":
            fields.append(("current", (n, self.current_rows, 3), "float32"))
        if self.target != "cls":
            fields.append(("mask", (n, *self.item_frame_shape), "uint8"))
        fields += [(k, (n,), "int64") for k in ("label", "recording", "frame", "window")]
        fields.append(("flipped", (n,), "bool"))
        return allocate_batch(fields, self._ring, copy_on_receive=not self.zero_copy)

    def _open(self) -> dict[str, AxisReader]:
        if self._readers is None:
            if torch.utils.data.get_worker_info() is not None:
                numcodecs.blosc.use_threads = False  # one decode thread per worker process
                if self.reuse_buffers > 0:
                    self._ring = SharedRing(self.reuse_buffers)
            names = []
            if self.modality != "current":
                names.append(schema.VIDEO)
            if self.modality != "video":
                names.append(schema.CURRENT)
            if self.target != "cls":
                names.append(schema.MASK)
            readers: dict[str, AxisReader] = {}
            try:
                for name in names:
                    # Decoded chunks are cached where a chunk serves several windows: the current
                    # array always, frame arrays only when a chunk holds more than one frame.
                    readers[name] = open_axis_reader(self.handle, name, mode=self.reader_mode,
                                                     cache_bytes=self.cache_bytes,
                                                     cache_single_rows=name == schema.CURRENT,
                                                     checksums=self.checksums)
            except FmDataError as exc:
                raise FmModelError(str(exc)) from None
            self._readers = readers
        return self._readers

    def _frames(self, reader: AxisReader, frames: np.ndarray, key: str) -> np.ndarray:
        """Return ``video/mask[frames]`` for an int array of any shape (frames axis first).

        The result lives in a scratch buffer of this process (``key``), valid until the next call:
        a batch's decoded frames are a large temporary, and reusing one keeps the allocator from
        fragmenting around the batch tensors handed out.
        """
        flat = frames.reshape(-1)
        unique, inverse = np.unique(flat, return_inverse=True)
        if unique.size > 0.8 * flat.size:  # few repeats (random windows): decode in batch order
            shape = (flat.size, *reader.shape[1:])
            scratch = self._scratch.get(key)
            if scratch is None or scratch.size < flat.size * int(np.prod(reader.shape[1:])):
                scratch = self._scratch[key] = np.empty(shape, reader.dtype)
            out = scratch.reshape(-1)[:int(np.prod(shape))].reshape(shape)
            return reader.take(flat, out=out).reshape(*frames.shape, *reader.shape[1:])
        # Many repeats (consecutive windows in evaluation): decode each frame once.
        return reader.take(unique)[inverse.reshape(frames.shape)]

    def _flip_last_axis(self, frames: np.ndarray, flips: np.ndarray) -> None:
        """Reverse, in place, the item's last axis in the flipped items of store-order frames.

        ``frames`` is (B, T, y, x, c) or (B, y, x). The reference orientation delivers (x, y), so
        its last axis is the store's y (MATLAB's H); the true orientation's is x.
        """
        axis = item_axes(self.orientation, 1 if frames.ndim == 5 else 0)[1]  # within one item
        for b in np.flatnonzero(flips):
            frames[b] = np.flip(frames[b], axis)

    def _read_clips(self, reader: AxisReader, idx: np.ndarray, flips: np.ndarray, out: np.ndarray) -> None:
        raw = self._frames(reader, self._clip[idx], "clip")  # (B, T, H, W, 3) uint8, store orientation
        self._flip_last_axis(raw, flips)
        clip_values(raw, self.orientation, self.norm, out)

    def _read_masks(self, reader: AxisReader, idx: np.ndarray, flips: np.ndarray, out: np.ndarray) -> None:
        raw = self._frames(reader, self._frame[idx], "mask")  # (B, H, W), store orientation
        self._flip_last_axis(raw, flips)
        out[...] = orient_masks(raw, self.orientation)

    def _read_current(self, reader: AxisReader, idx: np.ndarray, out: np.ndarray) -> None:
        start = self._cur_start[idx]
        lengths = self._cur_stop[idx] - start
        offsets, code = current_resampling(lengths, self.current_rows)
        rows = start[:, None] + offsets[code]
        values = reader.take(rows.reshape(-1)).reshape(len(idx), self.current_rows, 3)
        out[...] = current_values(values, self.norm)

    # -- pickling --------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = None  # open files and zarr handles never cross processes
        state["_flips"] = None
        state["_ring"] = None
        state["_scratch"] = {}
        return state
