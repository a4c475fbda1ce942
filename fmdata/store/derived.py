"""Derived arrays (labels, window tables): checksummed, written aside, and switched in together.

A derived array is rewritten whole (``labels --force``, ``windows --force``) while other
processes may be reading the old one. :func:`write_derived` never writes into an array a reader
may have open. For a local store it builds every new array complete in a hidden folder beside
the store (``.<store>.tmp-*``: with the ``crc32c`` codec, its ``fmf_checksums`` and its
attributes), then, holding the store's switch lock exclusively
(:func:`fmdata.store.lock.switching`), renames each old array aside and each new one into
place, and deletes the old ones after. Readers hold the switch lock shared while they read
(:func:`fmdata.store.lock.reading`), so they see the old set or the new set, never a mix, a
missing array or a half-written one. A writer killed before the switch leaves the old set (and
a hidden folder that the next writer deletes); one killed during it leaves arrays whose
provenance disagrees, which count as stale and are recomputed. The whole write runs under the
store's writer lock (:func:`fmdata.store.lock.writer_lock`, re-entrant).

URL stores (no rename, no locks) are written in place, attributes last, as before: a reader
there may see an array being rewritten (docs/reliability.md).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.atomic import leftovers, remove_tree, temp_sibling
from fmdata.store.checksums import block_checksums, checksum_attr
from fmdata.store.failpoints import pause_point
from fmdata.store.layout import codecs_for
from fmdata.store.lock import store_folder, switching, writer_lock
from fmdata.store.provenance import reconsolidate


@dataclass(frozen=True)
class DerivedArray:
    """One derived array to write: its ``path`` below the store root ("frame_label", "windows/ref10"),
    ``data`` (written whole), chunk length along axis 0, dimension names and attributes."""

    path: str
    data: np.ndarray
    chunk_rows: int
    dimension_names: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape: ``chunk_rows`` (at least 1) rows, whole along every other axis."""
        return (max(1, int(self.chunk_rows)), *self.data.shape[1:])

    def all_attributes(self) -> dict[str, Any]:
        """The attributes to store: the given ones and the CRC-32C of every chunk of the data."""
        rows = self.chunks[0]
        return {**self.attributes, schema.ATTR_CHECKSUMS: checksum_attr(rows, block_checksums(self.data, rows))}


def _checked(path: str) -> list[str]:
    parts = path.split("/")
    if any(p in ("", ".", "..", "zarr.json") or os.sep in p for p in parts):
        raise FmDataError(f"expected a derived array path of plain names, got {path!r}")
    return parts


def _create(store: Any, name: str | None, a: DerivedArray, overwrite: bool = False) -> zarr.Array:
    """Create ``a`` (data, then attributes last) in a group, or as the root array of a store when ``name`` is None."""
    kw: dict[str, Any] = dict(shape=a.data.shape, dtype=a.data.dtype, chunks=a.chunks,
                              dimension_names=a.dimension_names, fill_value=0, **codecs_for(a.path))
    if name is None:
        arr = zarr.create_array(store=store, zarr_format=3, **kw)
    else:
        arr = store.create_array(name, overwrite=overwrite, **kw)
    if a.data.size:
        arr[...] = a.data
    arr.update_attributes(a.all_attributes())
    return arr


def write_derived(root: zarr.Group, arrays: Sequence[DerivedArray], command: str) -> None:
    """Write ``arrays`` into the store whose root group is ``root``, replacing any of the same path, so
    that readers see all old or all new (see the module docstring). ``command`` names the writer in
    the writer lock; a store with consolidated metadata is re-consolidated after. Raises FmDataError
    when another process is writing the store."""
    for a in arrays:
        _checked(a.path)
    folder = store_folder(root)
    if folder is None:
        for a in arrays:
            parent, _, name = a.path.rpartition("/")
            _create(root.require_group(parent) if parent else root, name, a, overwrite=True)
        reconsolidate(root)
        return
    real = Path(os.path.realpath(folder))
    with writer_lock(str(real), command):
        for stale in leftovers(real):
            remove_tree(stale)
        # beside the store, so that nothing inside it shows while it is built; inside it only
        # where the store is a mount point of its own (a rename cannot cross file systems)
        staging = temp_sibling(real, "tmp")
        if os.stat(real.parent).st_dev != os.stat(real).st_dev:
            staging = real / staging.name
        staging.mkdir()
        try:
            for i, a in enumerate(arrays):
                _create(zarr.storage.LocalStore(staging / str(i)), None, a)
                parent = a.path.rpartition("/")[0]
                if parent:
                    root.require_group(parent)
            pause_point("derived:staged")
            with switching(str(real)):
                for i, a in enumerate(arrays):
                    target = real.joinpath(*_checked(a.path))
                    if target.exists():
                        os.replace(target, staging / f"{i}.old")
                        if i == 0:
                            pause_point("derived:switching")
                    os.replace(staging / str(i), target)
        finally:
            remove_tree(staging)
        reconsolidate(root)
