"""Resident windows: a dataset's frames held on the training device, every batch one gather there.

The lazy path (:mod:`fmmodel.data.dataset`) decodes each clip frame every time a window reads it,
about ten times an epoch. :class:`ResidentWindows` instead streams the frames, masks and current
rows that a dataset's windows need from the store once, block by block through
:class:`fmdata.store.block_reader.BlockReader`, into tensors on the device (CUDA memory on a GPU,
RAM on the CPU):

* video as uint8, one (3, H', W') plane stack per needed frame, already in the dataset's item
  orientation ((W, H) under the reference preprocessing), so a clip is a row gather with no
  transpose;
* masks of the labelled frames (only when the dataset delivers masks), oriented the same way and
  packed 8 pixels to a byte (``numpy.packbits``): 8x less memory than bytes for about 0.25 ms more
  per batch of 64 on one CPU thread (measured, docs/performance.md); masks must hold 0/1;
* the current rows of every window's range, already preprocessed (float32 amperes, or
  standardised in float64 and then cast, exactly as the lazy path computes them);
* the window table as index tensors: each window's frame slots, its first current slot and which
  resampling it uses (the offsets of :func:`fmmodel.data.dataset.current_resampling`, one row per
  distinct window length), label, recording, labelled frame and table row.

:meth:`ResidentWindows.batch` gathers a batch on the device: clips, current rows, masks and the
small fields by index, the horizontal flip of the chosen items, and the uint8 to float32 cast
with the normalised preprocessing's per-channel scale and shift (the same float32 operations, in
the same order, as :class:`~fmmodel.data.dataset.FmfWindowDataset`). :class:`ResidentLoader` walks an
epoch: its order comes from the same samplers as the lazy DataLoader (:mod:`fmmodel.data.sampling`),
its flip decisions from the dataset's own :meth:`~fmmodel.data.dataset.FmfWindowDataset.flips`, so
the batches equal the lazy path's, value for value. There are no worker processes and no
per-sample Python: an epoch sends its order and flip positions to the device once.

Host memory while loading is the resident arrays (on the CPU) plus about two scan blocks (16 MiB
each, :func:`fmdata.store.block_reader.block_frames`): nothing is ever held twice.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fmdata.compute.memory import format_bytes, total_memory
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.block_reader import BlockReader, block_frames
from fmmodel.data.dataset import FmfWindowDataset, current_resampling
from fmmodel.data.preprocessing import current_values, item_axes, orient_masks, video_scale_shift
from fmmodel.data.sampling import sampler_indices
from fmmodel.errors import FmModelError

_INDEX_BYTES = 8  # index tensors are int64
_BIT_SHIFTS = (7, 6, 5, 4, 3, 2, 1, 0)  # numpy.packbits' default (big-endian) bit order


def _packed_bytes(pixels: int) -> int:
    return -(-pixels // 8)


def check_resident_budget(budget: int | None) -> None:
    """Raise FmModelError (field ``resident_budget``) unless ``budget`` (bytes; None: the default) is
    between 0 and the memory of this machine (its RAM, or its largest GPU's when larger): no more
    can ever be held resident."""
    if budget is None:
        return
    gpus = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
    most = max([total_memory(), *gpus])
    if not 0 <= budget <= most:
        raise FmModelError(f"expected a resident budget from 0 to {format_bytes(most)} (the memory of this machine), "
                           f"got {budget:,} bytes", field="resident_budget")


@dataclass(frozen=True)
class ResidentPlan:
    """What the resident copy of a dataset's items holds, worked out before anything is read.

    ``items`` are the dataset positions it covers (None: all of them); ``frames`` the sorted global
    video frames the clips read (empty without video); ``mask_frames`` the labelled frames whose
    masks are kept (empty without masks); ``current_rows`` the sorted global current rows of every
    window's range (empty without current); ``dataset_items`` the dataset's length, ``plane`` its
    item frame shape (H', W') and ``index_bytes`` what the index tensors take. ``n_items`` and
    ``nbytes`` (what each part will take on the device) follow from these.
    """

    items: np.ndarray | None
    dataset_items: int
    frames: np.ndarray
    mask_frames: np.ndarray
    current_rows: np.ndarray
    plane: tuple[int, int]
    index_bytes: int

    @property
    def n_items(self) -> int:
        """Return the number of dataset items the copy holds."""
        return self.dataset_items if self.items is None else int(self.items.size)

    @property
    def nbytes(self) -> dict[str, int]:
        """Return the bytes each part takes: {"video", "mask", "current", "index"}."""
        x, y = self.plane
        return {"video": int(self.frames.size) * 3 * x * y, "mask": int(self.mask_frames.size) * _packed_bytes(x * y),
                "current": int(self.current_rows.size) * 3 * 4, "index": self.index_bytes}

    @property
    def total_bytes(self) -> int:
        """Return the bytes the resident arrays and index tensors take."""
        return int(sum(self.nbytes.values()))

    @classmethod
    def of(cls, ds: FmfWindowDataset, items: np.ndarray | None = None) -> ResidentPlan:
        """Plan the resident copy of dataset positions ``items`` of ``ds`` (None: every item)."""
        if items is not None:
            items = np.unique(np.asarray(items, dtype=np.int64))
            if items.size and (items[0] < 0 or items[-1] >= len(ds)):
                raise FmModelError(f"expected items in [0, {len(ds)}), got {items[0]}..{items[-1]}")
        pick: Any = slice(None) if items is None else items
        n_items = len(ds) if items is None else int(items.size)
        empty = np.zeros(0, np.int64)
        video = ds.modality != "current"
        frames = np.unique(ds.clip_frames[pick]) if video else empty
        masks = np.unique(ds.labelled_frames[pick]) if ds.target != "cls" else empty
        rows = empty
        lengths = 0
        if ds.modality != "video":
            starts, stops = ds.current_ranges
            rows = _covered_rows(starts[pick], stops[pick])
            lengths = int(np.unique(stops[pick] - starts[pick]).size)  # rows of the resampling table
        per_item = (ds.frames if video else 0) + 8  # clip slots, mask slot, current start and length, 4 fields
        index = n_items * per_item + lengths * ds.current_rows + (0 if items is None else len(ds))
        return cls(items=items, dataset_items=len(ds), frames=frames, mask_frames=masks, current_rows=rows,
                   plane=ds.item_frame_shape, index_bytes=index * _INDEX_BYTES)


def _covered_rows(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Return the sorted rows that lie in any of the ranges ``[starts[i], stops[i])`` (int64)."""
    if not len(starts):
        return np.zeros(0, np.int64)
    lo, hi = int(starts.min()), int(stops.max())
    # +1 where a range opens, -1 where one closes: a row is covered where the running sum is positive
    edges = np.bincount(starts - lo, minlength=hi - lo + 1) - np.bincount(stops - lo, minlength=hi - lo + 1)
    return np.flatnonzero(np.cumsum(edges[:-1]) > 0).astype(np.int64) + lo


def _word_rows(t: torch.Tensor) -> torch.Tensor:
    """View a contiguous uint8 batch as one row per item, in 8-byte words when the row allows it.

    ``index_copy_`` and ``index_select`` move 8-byte words several times faster than bytes on the CPU.
    """
    rows = t.reshape(t.shape[0], -1)
    return rows.view(torch.int64) if rows.shape[1] % 8 == 0 else rows


def _flip_items(x: torch.Tensor, positions: torch.Tensor) -> None:
    """Reverse, in place, the last axis of the items ``positions`` of the contiguous uint8 batch ``x``."""
    assert x.is_contiguous()  # _word_rows must be a view of x, not a copy
    if positions.numel() == 0:  # the shape is known on the host: no device synchronisation
        return
    flipped = x.index_select(0, positions).flip(-1).contiguous()
    _word_rows(x).index_copy_(0, positions, _word_rows(flipped))


class ResidentWindows:
    """The resident copy of a dataset's windows on ``device``; :meth:`batch` gathers batches there.

    Build it with :meth:`load`. ``nbytes`` says what each part takes (the plan's), ``load_seconds``
    how long the load took, ``device_bytes`` how much device memory the load allocated (CUDA only).
    """

    def __init__(self, ds: FmfWindowDataset, plan: ResidentPlan, device: torch.device) -> None:
        self.dataset, self.plan, self.device = ds, plan, torch.device(device)
        self.load_seconds = 0.0
        self.device_bytes: int | None = None
        self._video: torch.Tensor | None = None  # (frames * 3, x * y) uint8 (or int64 words)
        self._mask: torch.Tensor | None = None  # (mask frames, ceil(x * y / 8)) uint8, packed bits
        self._current: torch.Tensor | None = None  # (rows, 3) float32, preprocessed
        self._channels = torch.arange(3, device=self.device).view(1, 3, 1)
        self._scale: torch.Tensor | None = None
        self._shift: torch.Tensor | None = None
        if ds.norm is not None and ds.modality != "current":
            scale, shift = video_scale_shift(ds.norm)  # the lazy path's float32 scale and shift
            self._scale = torch.tensor(scale, device=self.device).view(1, 3, 1, 1, 1)
            self._shift = torch.tensor(shift, device=self.device).view(1, 3, 1, 1, 1)

    @property
    def nbytes(self) -> dict[str, int]:
        """Return the bytes each part takes on the device (:attr:`ResidentPlan.nbytes`)."""
        return self.plan.nbytes

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, ds: FmfWindowDataset, device: torch.device | str, *, items: np.ndarray | None = None,
             plan: ResidentPlan | None = None, progress: bool = False) -> ResidentWindows:
        """Stream what dataset positions ``items`` of ``ds`` need (None: all) onto ``device``.

        ``plan`` (from :meth:`ResidentPlan.of` with the same items) saves planning again.
        ``progress`` shows a bar in bytes. Raises FmModelError for a damaged store, masks other
        than 0/1, or a device without room (name the lazy path in that case).
        """
        plan = plan or ResidentPlan.of(ds, items)
        self = cls(ds, plan, torch.device(device))
        t0 = time.perf_counter()
        cuda = self.device.type == "cuda"
        before = torch.cuda.memory_allocated(self.device) if cuda else 0
        bar = tqdm(total=plan.total_bytes, desc="resident data", unit="B", unit_scale=True, unit_divisor=1024,
                   disable=not progress, leave=False, dynamic_ncols=True)
        try:
            root = ds.handle.root  # the dataset's open store: no second open
            self._load_index()
            bar.update(plan.nbytes["index"])
            if plan.frames.size:
                self._load_video(root, bar)
            if plan.mask_frames.size:
                self._load_masks(root, bar)
            if plan.current_rows.size:
                self._load_current(root, bar)
        except FmDataError as exc:  # a damaged store, found while reading: one line naming where
            raise FmModelError(str(exc)) from None
        except (torch.cuda.OutOfMemoryError, MemoryError):
            raise FmModelError(f"expected room for the resident data ({format_bytes(plan.total_bytes)}) on "
                               f"{self.device}, got out of memory (use the lazy data path)") from None
        finally:
            bar.close()
        if cuda:
            torch.cuda.synchronize(self.device)
            self.device_bytes = torch.cuda.memory_allocated(self.device) - before
        self.load_seconds = time.perf_counter() - t0
        return self

    def _tensor(self, values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(self.device)

    def _load_index(self) -> None:
        ds, plan = self.dataset, self.plan
        pick: Any = slice(None) if plan.items is None else plan.items
        if plan.items is not None:  # dataset position -> resident item (-1: not held by this copy)
            item_of = np.full(len(ds), -1, np.int64)
            item_of[plan.items] = np.arange(plan.items.size)
            self._item_of: torch.Tensor | None = self._tensor(item_of)
        else:
            self._item_of = None
        self._label = self._tensor(ds.labels[pick])
        self._recording = self._tensor(ds.recording_ids[pick])
        self._frame = self._tensor(ds.labelled_frames[pick])
        self._window = self._tensor(ds.window_rows[pick])
        if plan.frames.size:
            self._clip_slot = self._tensor(np.searchsorted(plan.frames, ds.clip_frames[pick]))
        if plan.mask_frames.size:
            self._mask_slot = self._tensor(np.searchsorted(plan.mask_frames, ds.labelled_frames[pick]))
        if plan.current_rows.size:
            starts, stops = ds.current_ranges
            starts, lengths = starts[pick], stops[pick] - starts[pick]
            # a window's rows are consecutive in the resident current, so its first slot suffices
            self._cur_start = self._tensor(np.searchsorted(plan.current_rows, starts))
            offsets, code = current_resampling(lengths, ds.current_rows)
            self._cur_code = self._tensor(code)
            self._cur_offsets = self._tensor(offsets)

    def _load_video(self, root: Any, bar: tqdm) -> None:
        frames = self.plan.frames
        x, y = self.plan.plane
        planes = torch.empty((frames.size, 3, x, y), dtype=torch.uint8, device=self.device)
        # store (frame, y, x, c) -> item planes (frame, c, x', y'): reference (c, x, y), true (c, y, x)
        order = (0, 3, *item_axes(self.dataset.orientation, 1))

        def put(lo: int, hi: int, values: np.ndarray) -> None:
            planes[lo:hi].copy_(self._tensor(values).permute(order))
            bar.update((hi - lo) * 3 * x * y)

        arr = root[schema.VIDEO]
        BlockReader(arr).stream(frames, block_frames(arr), put)
        self._video = _word_rows(planes.view(frames.size * 3, x, y))

    def _load_masks(self, root: Any, bar: tqdm) -> None:
        frames = self.plan.mask_frames
        x, y = self.plan.plane
        packed = torch.empty((frames.size, _packed_bytes(x * y)), dtype=torch.uint8, device=self.device)
        where = f"{self.dataset.store} ({schema.MASK})"

        def put(lo: int, hi: int, values: np.ndarray) -> None:
            top = int(values.max()) if values.size else 0
            if top > 1:
                raise FmModelError(f"expected masks of 0/1 for the resident path, got values up to {top} "
                                   "(use the lazy data path)", where)
            oriented = orient_masks(values, self.dataset.orientation)
            bits = np.packbits(np.ascontiguousarray(oriented).reshape(hi - lo, -1), axis=1)
            packed[lo:hi].copy_(self._tensor(bits))
            bar.update(bits.nbytes)

        arr = root[schema.MASK]
        BlockReader(arr).stream(frames, block_frames(arr), put)
        self._mask = packed
        self._shifts = torch.tensor(_BIT_SHIFTS, dtype=torch.uint8, device=self.device)

    def _load_current(self, root: Any, bar: tqdm) -> None:
        rows = self.plan.current_rows
        current = torch.empty((rows.size, 3), dtype=torch.float32, device=self.device)
        norm = self.dataset.norm

        def put(lo: int, hi: int, values: np.ndarray) -> None:
            current[lo:hi].copy_(self._tensor(current_values(values, norm)))
            bar.update((hi - lo) * 12)

        arr = root[schema.CURRENT]
        BlockReader(arr).stream(rows, block_frames(arr), put)
        self._current = current

    # -- batches ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.plan.n_items

    def batch(self, positions: torch.Tensor, flip_positions: torch.Tensor, flipped: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather the batch of dataset positions ``positions`` (int64, on the device).

        ``flip_positions`` (int64) are the batch positions whose clip and mask are flipped and
        ``flipped`` (bool, one per item) says the same per item. Returns the lazy dataset's batch
        dict (``clip``, ``current``, ``mask`` as the dataset delivers them, then ``label``,
        ``recording``, ``frame``, ``window``, ``flipped``), every tensor on the device.
        """
        ds = self.dataset
        r = positions if self._item_of is None else self._item_of[positions]
        n = int(positions.shape[0])
        x, y = self.plan.plane
        out: dict[str, torch.Tensor] = {}
        if self._video is not None:
            slots = self._clip_slot[r]  # (n, T)
            planes = (slots.unsqueeze(1) * 3 + self._channels).reshape(-1)  # (n, 3, T): plane of frame t, channel c
            clip = self._video.index_select(0, planes).view(torch.uint8).view(n, 3, ds.frames, x, y)
            _flip_items(clip, flip_positions)
            if ds.video_dtype == "float32":
                clip = clip.to(torch.float32)
                if self._scale is not None and self._shift is not None:
                    clip.mul_(self._scale).add_(self._shift)  # two roundings, as numpy does them
            out["clip"] = clip
        if self._current is not None:
            rows = self._cur_start[r].unsqueeze(1) + self._cur_offsets[self._cur_code[r]]
            out["current"] = self._current.index_select(0, rows.reshape(-1)).view(n, ds.current_rows, 3)
        if self._mask is not None:
            packed = self._mask.index_select(0, self._mask_slot[r])
            bits = (packed.unsqueeze(-1) >> self._shifts) & 1
            mask = bits.view(n, -1)[:, :x * y].reshape(n, x, y).contiguous()
            _flip_items(mask, flip_positions)
            out["mask"] = mask
        out.update(label=self._label[r], recording=self._recording[r], frame=self._frame[r],
                   window=self._window[r], flipped=flipped)
        return out

    def describe(self) -> dict[str, Any]:
        """Return what was loaded, for logs and reports (JSON-able)."""
        return {"device": str(self.device), "items": self.plan.n_items, "frames": int(self.plan.frames.size),
                "mask_frames": int(self.plan.mask_frames.size), "current_rows": int(self.plan.current_rows.size),
                "bytes": self.nbytes, "total_bytes": self.plan.total_bytes,
                "device_bytes_allocated": self.device_bytes, "load_seconds": self.load_seconds}


class ResidentLoader:
    """An epoch's batches of ``dataset`` gathered from its resident ``windows``; a DataLoader stand-in.

    The order is one pass of ``sampler`` (None: the items in order), cut into batches of
    ``batch_size`` exactly as a DataLoader cuts it (the last one shorter unless ``drop_last``);
    flips are the dataset's decisions for its current epoch. ``dataset`` and ``sampler`` are
    attributes, so :func:`fmmodel.data.sampling.set_loader_epoch` sets the epoch of both.
    """

    def __init__(self, dataset: FmfWindowDataset, windows: ResidentWindows, batch_size: int,
                 sampler: torch.utils.data.Sampler | None = None, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise FmModelError(f"expected batch_size >= 1, got {batch_size}", field="batch_size")
        self.dataset, self.windows, self.sampler = dataset, windows, sampler
        self.batch_size, self.drop_last = int(batch_size), bool(drop_last)

    def _count(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = self._count()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # A DataLoader draws a base seed for its workers from the global generator whenever it makes
        # an iterator (every pass without persistent workers); drawing the same here keeps the global
        # random stream, and so anything random in a training step, as the lazy path leaves it.
        torch.empty((), dtype=torch.int64).random_()
        order = sampler_indices(self.sampler, len(self.dataset))
        held = self.windows.plan.items
        if held is not None and not np.isin(order, held).all():
            raise FmModelError("expected the sampler to draw only windows the resident copy holds, got others")
        if self.drop_last:
            order = order[:len(order) // self.batch_size * self.batch_size]
        flips = self.dataset.flips(order)
        flip_at = np.flatnonzero(flips)
        device = self.windows.device
        # the epoch's order and flip positions go to the device once; batches are slices of them
        order_t, flips_t, flip_at_t = (torch.from_numpy(np.ascontiguousarray(a)).to(device)
                                       for a in (order, flips, flip_at))
        starts = np.arange(0, len(order), self.batch_size)
        cuts = np.searchsorted(flip_at, np.append(starts, len(order)))
        for k, s in enumerate(starts.tolist()):
            e = min(s + self.batch_size, len(order))
            yield self.windows.batch(order_t[s:e], flip_at_t[cuts[k]:cuts[k + 1]] - s, flips_t[s:e])
