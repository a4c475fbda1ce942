"""Derived arrays (labels, window tables): checksummed, written aside, and switched in together.

A derived array is rewritten whole (``labels --force``, ``windows --force``) while other
processes may be reading the old one. :func:`write_derived` never writes into an array a reader
may have open. For a local store it builds every new array complete in a hidden staging folder
beside the store (``.<store>.tmp-<pid>-<id>``: with the ``crc32c`` codec, its ``fmf_checksums``
and its attributes), then, holding the store's switch lock exclusively
(:func:`fmdata.store.lock.switching`), **switches** them in:

1. it writes a journal (``switch.json`` in the staging folder: each new array's target and the
   inode of its folder), the point after which the switch only goes forward;
2. it swaps each new array with the old one in one atomic step
   (:func:`fmdata.store.atomic.exchange`; where the platform cannot, it renames the old one
   aside and the new one in), so the old array stays at its path until the new one is there;
3. it deletes the journal, then the staging folder with the old arrays.

Readers hold the switch lock shared while they read (:func:`fmdata.store.lock.reading`), so they
see the old set or the new set, never a mix, a missing array or a half-written one. Ctrl-C
during the switch is held until the switch is complete (then the command exits 130). A writer
killed before step 1 leaves the old set; one killed after it leaves a journal. The next writer
of the store, holding its writer lock (:func:`store_writer`: ``labels``, ``windows``, ``stats``,
``convert``), first finishes every journalled switch (:func:`recover`: an array whose folder has
the journalled inode is in; any other is switched in) and deletes every staging folder that
dead writers left: none of them can still be live, since each was made under the lock it holds.

``--force`` replaces only what the command made: an existing array at a target path must be a
Zarr array with the new array's dimension names (a label array, a window table); a group, a
plain folder or another array there is refused and kept (docs/reliability.md).

URL stores (no rename, no locks) are written in place, attributes last, as before: a reader
there may see an array being rewritten (docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.atomic import exchange, leftovers, remove_tree, replace_text, temp_sibling
from fmdata.store.checksums import block_checksums, checksum_attr
from fmdata.store.failpoints import pause_point
from fmdata.store.layout import codecs_for
from fmdata.store.location import Location, LocationLike
from fmdata.store.lock import store_folder, switching, writer_lock
from fmdata.store.outputs import refusal
from fmdata.store.provenance import reconsolidate

JOURNAL = "switch.json"  # in a staging folder: its switch has begun and only goes forward


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
    when another process is writing the store, or when a path holds something other than an array
    like the new one (nothing is written then)."""
    for a in arrays:
        _checked(a.path)
    folder = store_folder(root)
    if folder is None:
        check_targets(root, [(a.path, a.dimension_names) for a in arrays], command)
        for a in arrays:
            parent, _, name = a.path.rpartition("/")
            _create(root.require_group(parent) if parent else root, name, a, overwrite=True)
        reconsolidate(root)
        return
    real = Path(os.path.realpath(folder))
    with store_writer(str(real), command):
        check_targets(root, [(a.path, a.dimension_names) for a in arrays], command)
        # beside the store, so that nothing inside it shows while it is built; inside it only
        # where the store is a mount point of its own (a rename cannot cross file systems)
        staging = temp_sibling(real, "tmp")
        if os.stat(real.parent).st_dev != os.stat(real).st_dev:
            staging = real / staging.name
        staging.mkdir()
        try:
            entries = []
            for i, a in enumerate(arrays):
                _create(zarr.storage.LocalStore(staging / str(i)), None, a)
                entries.append({"new": str(i), "path": a.path, "inode": os.stat(staging / str(i)).st_ino})
                parent = a.path.rpartition("/")[0]
                if parent:
                    root.require_group(parent)
            pause_point("derived:staged")
            with switching(str(real)), _sigint_held():
                replace_text(staging / JOURNAL, json.dumps({"switch": entries}))
                _switch(real, staging, entries)
        finally:
            if not (staging / JOURNAL).exists():  # a journalled switch is finished by the next writer
                remove_tree(staging)
        reconsolidate(root)


def _switch(real: Path, staging: Path, entries: list[dict[str, Any]]) -> None:
    """Move the journalled new arrays of ``staging`` into the store ``real``, skipping those already
    in (their folder has the journalled inode), then drop the journal. Holds no lock itself."""
    for k, entry in enumerate(entries):
        target = real.joinpath(*_checked(str(entry["path"])))
        new = staging / str(entry["new"])
        if _inode(target) == entry["inode"] or _inode(new) != entry["inode"]:
            continue  # in already (or not ours to move)
        if not os.path.lexists(target):
            os.replace(new, target)
        elif not exchange(new, target):  # no atomic swap here: the old array aside, then the new one in
            os.replace(target, staging / f"{entry['new']}.old")
            if k == 0:
                pause_point("derived:switching")
            os.replace(new, target)
            continue
        if k == 0:
            pause_point("derived:switching")
    os.unlink(staging / JOURNAL)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_ino
    except OSError:
        return None


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while the block runs and raise KeyboardInterrupt after it, so that an
    interrupted switch is complete before the command exits. Only the main thread can: elsewhere
    the block runs as it is (a journalled switch is then finished by the next writer)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def recover(real: str | os.PathLike[str]) -> None:
    """Finish the switches that writers killed after their journal left, and delete every staging
    folder (and ``.old-`` sibling) they left beside the local store folder ``real`` or inside it.
    The caller holds the store's writer lock, so that no live writer's staging is touched."""
    store = Path(real)
    for stale in leftovers(store) + leftovers(store / store.name):
        journal = stale / JOURNAL
        if stale.is_dir() and not stale.is_symlink() and journal.is_file():
            try:
                entries = json.loads(journal.read_text(encoding="utf-8"))["switch"]
            except (OSError, ValueError, KeyError, TypeError):
                entries = None  # a journal cut short is written before any switching: nothing moved yet
            if isinstance(entries, list):
                with switching(str(store)):
                    _switch(store, stale, entries)
        remove_tree(stale)


@contextlib.contextmanager
def store_writer(location: LocationLike, command: str) -> Iterator[None]:
    """Hold the writer lock of the store at ``location`` (:func:`fmdata.store.lock.writer_lock`,
    re-entrant) and, first, :func:`recover` what killed writers of a local store left."""
    with writer_lock(location, command):
        folder = store_folder(Location.parse(location))
        if folder is not None and os.path.isdir(folder):
            recover(os.path.realpath(folder))
        yield


def check_targets(root: zarr.Group, targets: Sequence[tuple[str, tuple[str, ...]]], command: str) -> None:
    """Raise FmDataError (nothing written) when a target ``(path, dimension names)`` of a derived
    writer ``command`` holds anything but an array of those dimensions: the derived writers
    replace only what they made (a label array, a window table), never a user's group or folder."""
    folder = store_folder(root)
    real = Path(os.path.realpath(folder)) if folder is not None else None
    for path, dims in targets:
        if real is not None:
            target = real.joinpath(*_checked(path))
            got = _local_node(target, dims) if os.path.lexists(target) else None
            where = str(target)
        else:
            got, where = None, path
            if path in root:
                node = root[path]
                found = tuple(node.metadata.dimension_names or ()) if isinstance(node, zarr.Array) else None
                got = _unlike(found, dims)
        if got is not None:
            raise refusal(where, command, got, option="--force")


def _local_node(target: Path, dims: tuple[str, ...]) -> str | None:
    """What the folder ``target`` holds, when it is not an array of dimensions ``dims`` (else None)."""
    try:
        meta = json.loads((target / "zarr.json").read_text(encoding="utf-8")) if not target.is_symlink() else None
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        return "something that is not a Zarr array"
    if meta.get("node_type") != "array":
        return "a Zarr group"
    return _unlike(tuple(meta.get("dimension_names") or ()), dims)


def _unlike(found: tuple[Any, ...] | None, dims: tuple[str, ...]) -> str | None:
    """None when an array of dimension names ``found`` may be replaced by one of ``dims``; else what it is."""
    if found is None:
        return "a Zarr group"
    if tuple(found) != tuple(dims):
        return f"an array of dimensions {tuple(found)}"
    return None
