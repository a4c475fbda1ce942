"""How batches of :class:`fmmodel.data.dataset.FmfWindowDataset` travel from DataLoader workers.

A batch is one flat byte buffer holding every field (``WindowBatch``), so a worker sends one
shared-memory handle per batch rather than one per tensor, and the default collate's per-item
stacking is skipped (:func:`collate_windows`). Workers may fill a ring of shared buffers
(``SharedRing``) instead of allocating a fresh one per batch; see its docstring for why that is
safe and when the main process copies a batch out.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data


def new_shared(nbytes: int) -> torch.Tensor:
    """Return a flat uninitialised uint8 tensor in shared memory (as torch's default_collate allocates)."""
    template = torch.empty(0, dtype=torch.uint8)
    return template.new(template._typed_storage()._new_shared(nbytes, device="cpu"))


class SharedRing:
    """Shared-memory batch buffers that one worker fills round-robin, ``slots`` batches apart.

    A fresh shared-memory buffer per batch costs the worker a page fault per 4 KiB (on virtual
    machines, more than decoding the batch); reused ones are faulted in once. A buffer is reused
    ``slots`` batches of the same worker later. The DataLoader hands a worker a new batch only
    when the main process has taken an earlier one off the queue, so with ``slots`` greater than
    ``prefetch_factor`` every batch has been unpickled before its buffer is refilled: unpickling
    copies it out (``copy_on_receive``), or, where batches are pinned, the pin thread does.
    """

    def __init__(self, slots: int) -> None:
        self.slots, self.turn = slots, -1
        self.buffers: dict[int, torch.Tensor] = {}

    def next(self, nbytes: int) -> torch.Tensor:
        """Return the next buffer of the ring as ``nbytes`` uint8 (growing it when too small)."""
        self.turn = (self.turn + 1) % self.slots
        buf = self.buffers.get(self.turn)
        if buf is None or buf.numel() < nbytes:
            buf = self.buffers[self.turn] = new_shared(nbytes)
        return buf[:nbytes]


Layout = tuple[tuple[str, int, tuple[int, ...], str], ...]  # (key, byte offset, shape, dtype)


def _views(flat: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Return the named tensors that ``layout`` places in the flat byte buffer ``flat``."""
    out = {}
    for key, offset, shape, dtype in layout:
        tdtype = getattr(torch, dtype)
        nbytes = int(np.prod(shape)) * torch.empty(0, dtype=tdtype).element_size()
        out[key] = flat[offset:offset + nbytes].view(tdtype).view(shape)
    return out


def _receive(flat: torch.Tensor, layout: Layout, copy: bool) -> dict[str, torch.Tensor]:
    """Unpickle a worker's batch: the dict of tensors, copied out of the shared buffer if ``copy``."""
    return _views(flat.clone() if copy else flat, layout)


class _PackedBatch:
    """What a worker sends: one shared buffer plus its layout, unpickled as the dict of tensors.

    One buffer means one shared-memory handle per batch instead of one per tensor.
    """

    def __init__(self, flat: torch.Tensor, layout: Layout, copy: bool) -> None:
        self.flat, self.layout, self.copy = flat, layout, copy

    def __reduce__(self) -> tuple[Any, tuple[torch.Tensor, Layout, bool]]:
        return _receive, (self.flat, self.layout, self.copy)


class WindowBatch(Sequence):
    """A batch fetched by :meth:`FmfWindowDataset.__getitems__`: batched tensors, viewable as items.

    ``tensors`` maps each item key to a tensor with a leading batch axis (all views of one flat
    buffer). Indexing gives one item (views), so torch's default collate still works;
    :func:`collate_windows` skips that copy.
    """

    def __init__(self, flat: torch.Tensor, layout: Layout, copy_on_receive: bool = False) -> None:
        self.flat, self.layout, self.copy_on_receive = flat, layout, copy_on_receive
        self.tensors = _views(flat, layout)
        self._n = int(layout[0][2][0])

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:  # type: ignore[override]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return {k: v[i] for k, v in self.tensors.items()}


def collate_windows(batch: Any) -> Any:
    """Collate for DataLoaders over FmfWindowDataset: a WindowBatch passes through as its dict.

    In a worker it becomes a _PackedBatch, which arrives in the main process as the same dict.
    """
    if isinstance(batch, WindowBatch):
        if torch.utils.data.get_worker_info() is not None:
            return _PackedBatch(batch.flat, batch.layout, batch.copy_on_receive)
        return dict(batch.tensors)
    return torch.utils.data.default_collate(batch)


def allocate_batch(fields: Sequence[tuple[str, tuple[int, ...], str]], ring: SharedRing | None = None,
                   copy_on_receive: bool = True) -> WindowBatch:
    """Return an uninitialised WindowBatch with ``fields`` (key, shape, dtype name) in one buffer.

    The buffer comes from ``ring`` when given (its batches are then copied out on arrival unless
    ``copy_on_receive`` is False), else from shared memory inside a DataLoader worker (sending a
    tensor from a worker moves it there anyway, a copy of the whole batch), else from the heap.
    """
    layout, offset = [], 0
    for key, shape, dtype in fields:
        layout.append((key, offset, tuple(shape), dtype))
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        offset += -(-nbytes // 64) * 64  # 64-byte aligned fields
    if ring is not None:
        return WindowBatch(ring.next(offset), tuple(layout), copy_on_receive=copy_on_receive)
    if torch.utils.data.get_worker_info() is not None:
        return WindowBatch(new_shared(offset), tuple(layout))
    return WindowBatch(torch.empty(offset, dtype=torch.uint8), tuple(layout))
