"""An open store: one object a command opens at its start and passes down (:class:`StoreHandle`).

:func:`open_store` is the one way the toolkit opens an FMF store to read it or add derived data:
every command, library function and DataLoader worker goes through it (the store at a location is
checked once there: a folder, an FMF store of a readable format version, complete). What every
reader needs first is read at most once per handle, through the checked readers, and kept:
the metadata, the recordings and their offsets, the frame-level 1-D arrays
(:meth:`StoreHandle.column`: ``split``, ``recording``, ``frame_time``, ``frame_current_end``,
``current_time``), the window tables, and what higher layers read through
:meth:`StoreHandle.cached` (the frame labels of :mod:`fmdata.derive.labels`). Kept arrays are
read-only: every consumer shares them.

A handle is a snapshot: what another writer switches in after it was opened is seen through
:meth:`StoreHandle.reopen`, which returns a fresh handle. The toolkit's derived writers, given a
handle, write through a handle of their own opened with mode "r+" (``reopen("r+")``) and make the
given one drop what they replaced (:meth:`StoreHandle.forget`), so that it reads the new labels or
table.

A handle pickles to its location alone (DataLoader workers and Dask tasks receive it): the
process that unpickles it opens the store again, lazily, when it first needs the root group, so
no zarr group or asyncio state crosses processes (and a worker that reads only through the fast
local reader never opens it through zarr). Library functions take a handle or anything
:meth:`Location.parse <fmdata.store.location.Location.parse>` accepts (:data:`StoreLike`) and
call ``open_store`` once: a handle passes through unchanged.
"""
from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.access import read_meta, read_offsets, read_recordings
from fmdata.store.checksums import axis_name, damaged, undecodable
from fmdata.store.columns import read_column
from fmdata.store.location import Location, LocationLike
from fmdata.store.window_table import WindowTable, list_window_tables, read_window_table

if TYPE_CHECKING:  # an optional dependency (the ``xarray`` extra): only the view's return type
    import xarray

T = TypeVar("T")
MODES = ("r", "r+")
# the frame and current axes' arrays an xarray view shows (beside the coordinates)
_VIEW_ARRAYS = (schema.VIDEO, schema.MASK, schema.FRAME_CURRENT_END, schema.CURRENT, *schema.DERIVED_FRAME_ARRAYS)


@dataclass(frozen=True, eq=False)
class StoreHandle:
    """An open FMF store (see the module docstring); get one from :func:`open_store`.

    ``location`` is where it lives, ``mode`` "r" (read) or "r+" (read and add derived arrays).
    ``store["video"]`` is the zarr array at a path; ``meta``, ``recordings`` and the columns are
    read once, checked, and kept.
    """

    location: Location
    mode: str = "r"
    require_complete: bool = True
    _kept: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    # ---- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, store: StoreLike, mode: str = "r", *, require_complete: bool = True) -> StoreHandle:
        """Open the store at ``store`` (or return the handle ``store`` when it is already open in a mode
        that allows ``mode``); :func:`open_store` says more."""
        if mode not in MODES:
            raise FmDataError(f"expected mode 'r' or 'r+', got {mode!r}", field="mode")
        if isinstance(store, StoreHandle) and (store.mode == mode or mode == "r"):
            if require_complete and not store.meta.complete:
                raise _incomplete(store.location)
            return store
        loc = store.location if isinstance(store, StoreHandle) else Location.parse(store)
        path = loc.local_path if not loc.is_url else None
        if path is not None and not os.path.isdir(path):
            raise FmDataError("expected an FMF Zarr store (a folder), got nothing there" if not os.path.exists(path)
                              else "expected an FMF Zarr store (a folder), got a file", str(loc))
        root = loc.open_group(mode)
        meta = read_meta(root, str(loc))
        if require_complete and not meta.complete:
            raise _incomplete(loc)
        handle = cls(loc, mode, require_complete)
        handle.__dict__.update(root=root, meta=meta)  # what the cached properties would open and read again
        return handle

    def reopen(self, mode: str | None = None) -> StoreHandle:
        """Return a new handle of this store, opened again (in ``mode``, this one's by default): it
        sees what writers switched in since this one was opened."""
        return type(self).open(self.location, mode or self.mode, require_complete=self.require_complete)

    @cached_property
    def root(self) -> zarr.Group:
        """The store's root zarr group (a handle unpickled in another process opens its store here, once)."""
        return type(self).open(self.location, self.mode, require_complete=self.require_complete).root

    @cached_property
    def meta(self) -> schema.StoreMeta:
        """The store's metadata (root attribute ``fmf_store``)."""
        return read_meta(self.root, str(self.location))

    def __str__(self) -> str:
        return str(self.location)

    # ---- pickling: the location alone ----------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"location": self.location, "mode": self.mode, "require_complete": self.require_complete}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_kept", {})
        object.__setattr__(self, "_lock", threading.RLock())

    # ---- what is read once ----------------------------------------------------------------------
    def cached(self, key: Any, read: Callable[[], T]) -> T:
        """Return what ``read()`` returned the first time this handle was asked for ``key``.

        For readers in higher layers (frame labels): what they read through a handle is read once
        per handle, as the columns are.
        """
        with self._lock:
            if key not in self._kept:
                self._kept[key] = read()
            return self._kept[key]

    def forget(self, *keys: Any) -> None:
        """Drop what this handle kept under ``keys`` (:meth:`cached` keys; a window table is
        ``("window_table", name)``, the list of tables ``"window_tables"``): a writer that replaced
        derived data of this store drops it, so this handle reads the new version."""
        with self._lock:
            for key in keys:
                self._kept.pop(key, None)

    def column(self, name: str) -> np.ndarray:
        """Return the whole 1-D array ``name`` (``split``, ``frame_time``, ...), read once through
        :func:`fmdata.store.columns.read_column` (checked), read-only."""
        return self.cached(("column", name), lambda: _frozen(read_column(self.root[name], where=str(self))))

    @cached_property
    def recordings(self) -> tuple[schema.RecordingInfo, ...]:
        """The recordings' provenance (root attribute ``fmf_recordings``), in store order."""
        return tuple(read_recordings(self.root))

    @property
    def recording_names(self) -> tuple[str, ...]:
        """The recordings' names, in store order."""
        return tuple(r.name for r in self.recordings)

    @cached_property
    def offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """(frame_offsets, current_offsets): int64 of length R + 1, recording r's frames are
        ``[f[r], f[r + 1])``; checked against their checksums, read-only."""
        frames, current = read_offsets(self.root)
        return _frozen(frames), _frozen(current)

    @property
    def frame_offsets(self) -> np.ndarray:
        """Recording r's frames are ``[frame_offsets[r], frame_offsets[r + 1])`` (int64, R + 1)."""
        return self.offsets[0]

    @property
    def current_offsets(self) -> np.ndarray:
        """Recording r's current rows are ``[current_offsets[r], current_offsets[r + 1])`` (int64, R + 1)."""
        return self.offsets[1]

    @property
    def split(self) -> np.ndarray:
        """Each frame's split code (int8: ``schema.SPLIT_TRAIN``, ``SPLIT_TEST``, ``SPLIT_NONE``)."""
        return self.column(schema.SPLIT)

    @property
    def frame_recording(self) -> np.ndarray:
        """Each frame's recording id (the ``recording`` array, as int64 for indexing)."""
        return self.cached("frame_recording", lambda: _frozen(np.asarray(self.column(schema.RECORDING), np.int64)))

    @property
    def frame_time(self) -> np.ndarray:
        """Each frame's time (float64, seconds since its recording's origin)."""
        return self.column(schema.FRAME_TIME)

    @property
    def frame_current_end(self) -> np.ndarray:
        """Each frame's global current row one past the last row at or before its time (int64)."""
        return self.column(schema.FRAME_CURRENT_END)

    @property
    def current_time(self) -> np.ndarray:
        """Each current row's time (float64, seconds since its recording's origin)."""
        return self.column(schema.CURRENT_TIME)

    def recording_index(self, recording: int | str) -> int:
        """Return the id of ``recording`` (an id or a name); FmDataError (field ``recording``) when
        the store has no such recording."""
        names = self.recording_names
        n = len(self.frame_offsets) - 1
        if str(recording) in names:
            return names.index(str(recording))
        if str(recording).lstrip("-").isdigit() and 0 <= int(recording) < n:
            return int(recording)
        raise FmDataError(f"expected a recording id 0..{n - 1} or a name in {list(names)}, got {recording!r}",
                          field="recording")

    def frames_of(self, recording: int | str) -> slice:
        """The global frames of ``recording`` (an id or a name), as a slice."""
        r = self.recording_index(recording)
        return slice(int(self.frame_offsets[r]), int(self.frame_offsets[r + 1]))

    def current_rows_of(self, recording: int | str) -> slice:
        """The global current rows of ``recording`` (an id or a name), as a slice."""
        r = self.recording_index(recording)
        return slice(int(self.current_offsets[r]), int(self.current_offsets[r + 1]))

    # ---- arrays and window tables ---------------------------------------------------------------
    def __getitem__(self, path: str) -> Any:
        """The zarr array (or group) at ``path`` (``"video"``, ``"windows/train"``); not read."""
        return self.root[path]

    def __contains__(self, path: object) -> bool:
        return path in self.root

    @property
    def attrs(self) -> Any:
        """The root group's attributes (``fmf_store``, ``fmf_recordings``, ``fmf_stats`` ...), as zarr
        reads them now."""
        return self.root.attrs

    @property
    def window_tables(self) -> tuple[str, ...]:
        """The names of the store's window tables (sorted)."""
        return self.cached("window_tables", lambda: tuple(list_window_tables(self.root)))

    def window_table(self, name: str) -> WindowTable:
        """The window table ``windows/<name>``, read once and checked (its table read-only);
        FmDataError when there is none of that name or it is damaged."""
        def read() -> WindowTable:
            wt = read_window_table(self.root, name)
            return WindowTable(_frozen(wt.table), wt.columns, wt.params)
        return self.cached(("window_table", name), read)

    # ---- an xarray view ---------------------------------------------------------------------------
    def to_xarray(self, recording: int | str | None = None) -> xarray.Dataset:
        """Return a lazy ``xarray.Dataset`` of the store, or of one ``recording`` (an id or a name).

        Dims are the arrays' ``dimension_names`` (``frame``, ``y``, ``x``, ``channel``, ``sample``,
        ``phase``). Coordinates: ``frame`` and ``sample`` (global indices), ``frame_time`` and
        ``current_time`` (seconds), ``recording`` (each frame's recording name), ``split`` (each
        frame's split name), ``phase`` ("A", "B", "C"). Data variables (``video``, ``mask``,
        ``current``, ``frame_current_end``, and the labels when the store has them) are Dask arrays
        of the store's write blocks: nothing is read until they are computed, then only the chunks
        a selection needs, through zarr, which checks each chunk's CRC-32C (store format 2; a
        damaged chunk is the one-line FmDataError naming the array and rows). Needs xarray
        (``pip install 'fmf-toolkit[xarray]'``).
        """
        # Optional dependencies, imported only by this view: xarray (the ``xarray`` extra) and
        # dask.array (a dependency of fmdata, heavy to import for processes that never make a view).
        try:
            import xarray as xr
        except ImportError:
            raise FmDataError("expected xarray for an xarray view, got none installed "
                              "(pip install 'fmf-toolkit[xarray]')") from None
        import dask.array as da

        frames = slice(0, self.meta.n_frames) if recording is None else self.frames_of(recording)
        rows = slice(0, self.meta.n_current) if recording is None else self.current_rows_of(recording)
        axes = {"frame": frames, "sample": rows}
        names = np.asarray(self.recording_names + ("",), dtype=object)  # "" never shows: every frame has one
        coords: dict[str, Any] = {
            "frame": ("frame", np.arange(frames.start, frames.stop)),
            "frame_time": ("frame", self.frame_time[frames]),
            "recording": ("frame", names[self.frame_recording[frames]]),
            "split": ("frame", _split_names(self.split[frames])),
            "sample": ("sample", np.arange(rows.start, rows.stop)),
            "current_time": ("sample", self.current_time[rows]),
            "phase": ("phase", list(schema.PHASES)),
        }
        data = {}
        for name in _VIEW_ARRAYS:
            if name not in self.root:
                continue
            arr = self.root[name]
            dims = tuple(arr.metadata.dimension_names or schema.DIMS[name])
            # a Dask chunk per write block (a shard): Dask reads only what a selection needs of it
            block = arr.shards or arr.chunks
            reads = _CheckedReads(arr, str(self))
            lazy = da.from_array(reads, chunks=block, asarray=True, lock=False, name=f"fmf-{name}-{uuid.uuid4().hex}",
                                 meta=np.empty((0,) * reads.ndim, reads.dtype))  # told, not probed by a read
            data[name] = (dims, lazy[axes[dims[0]]])
        attrs = {"store": str(self), "fps": self.meta.fps}
        if recording is not None:
            attrs["recording"] = self.recording_names[self.recording_index(recording)]
        return xr.Dataset(data, coords=coords, attrs=attrs)


class _CheckedReads:
    """A zarr array as Dask reads it: each chunk through zarr, which checks its CRC-32C (format 2);
    a failure is the one-line error naming the array and rows."""

    def __init__(self, array: zarr.Array, where: str) -> None:
        self.array, self.where = array, where
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), len(array.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except Exception as exc:  # zarr's crc32c codec (ValueError) or a decoder failing on damaged bytes
            first = key[0] if isinstance(key, tuple) else key
            lo, hi, _ = first.indices(self.shape[0]) if isinstance(first, slice) else (0, self.shape[0], 1)
            raise damaged(self.array.path, axis_name(self.array), lo, hi, undecodable(exc), self.where) from None


def _split_names(codes: np.ndarray) -> np.ndarray:
    """Each split code's name ("train", "test", "none")."""
    names = np.full(len(codes), "", dtype=object)
    for code, name in schema.SPLIT_NAMES.items():
        names[codes == code] = name
    return names


def _frozen(values: np.ndarray) -> np.ndarray:
    """``values`` made read-only: a handle's arrays are shared by every consumer."""
    values.flags.writeable = False
    return values


def _incomplete(loc: Location) -> FmDataError:
    return FmDataError("store is incomplete (its writer did not finish); re-run `fmdata convert --resume`", str(loc))


StoreLike = StoreHandle | LocationLike


def open_store(store: StoreLike, mode: str = "r", *, require_complete: bool = True) -> StoreHandle:
    """Open the FMF store at ``store`` (a local path, an fsspec URL, a Location) and return its handle.

    The one open function of the toolkit (:meth:`StoreHandle.open`). ``mode`` is "r" (read only)
    or "r+" (read and add derived arrays). A handle given as ``store`` is returned as it is (one
    open per call tree) unless ``mode`` "r+" is asked of a read-only one. Raises FmDataError when
    nothing is there, when it is not an FMF store of a readable format version, or (unless
    ``require_complete=False``) when its writer never finished.
    """
    return StoreHandle.open(store, mode, require_complete=require_complete)


def location_of(store: StoreLike) -> Location:
    """The Location of ``store`` (a handle's, or ``store`` parsed), without opening anything."""
    return store.location if isinstance(store, StoreHandle) else Location.parse(store)
