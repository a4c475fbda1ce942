"""Window tables: one row per training sample, stored as ``windows/<name>`` in a store.

A table is a (window, field) int64 Zarr array. Its columns are ``schema.WINDOW_COLUMNS``
followed by one ``clip_XX`` column per clip frame (oldest first, the labelled frame last); all
frame and current indices are global (store-wide). The parameters that built it sit in the
array's attributes, so a reader knows, e.g., how many current rows a window resamples to.
``fmdata.windows`` builds tables; this module only stores and loads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from fmdata import schema
from fmdata.errors import FmDataError


@dataclass(frozen=True)
class WindowTable:
    """An in-memory window table.

    ``table`` is int64 (n_windows, n_columns); ``columns`` names its columns; ``params`` holds
    the building parameters (at least ``frames``, ``frame_step``, ``current_rows``,
    ``current_seconds``, ``policy``, ``stride``).
    """

    table: np.ndarray
    columns: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.table.ndim != 2 or self.table.shape[1] != len(self.columns):
            raise FmDataError(f"expected a table with {len(self.columns)} columns, got shape {self.table.shape}")
        if tuple(self.columns[:len(schema.WINDOW_COLUMNS)]) != schema.WINDOW_COLUMNS:
            raise FmDataError(f"expected leading columns {schema.WINDOW_COLUMNS}, got {self.columns}")

    def __len__(self) -> int:
        return int(self.table.shape[0])

    def column(self, name: str) -> np.ndarray:
        """Return one column (a view) by name."""
        return self.table[:, self.columns.index(name)]

    @property
    def clip(self) -> np.ndarray:
        """Return the clip frame indices, (n_windows, frames), oldest first."""
        start = len(schema.WINDOW_COLUMNS)
        return self.table[:, start:]

    @property
    def current_rows(self) -> int:
        """Return the number of current rows each window is resampled to."""
        return int(self.params["current_rows"])


def window_columns(frames: int) -> tuple[str, ...]:
    """Return the full column tuple of a table whose clips have ``frames`` frames."""
    return schema.WINDOW_COLUMNS + tuple(schema.clip_column(i) for i in range(frames))


def write_window_table(root: zarr.Group, name: str, wt: WindowTable, overwrite: bool = False) -> zarr.Array:
    """Store ``wt`` as ``windows/<name>`` in an open (writable) store; return the array."""
    if not name or "/" in name:
        raise FmDataError(f"expected a window table name without '/', got {name!r}")
    group = root.require_group(schema.WINDOWS_GROUP)
    if name in group and not overwrite:
        raise FmDataError(f"window table {name!r} exists; pass --force to replace it")
    rows = max(len(wt), 1)
    arr = group.create_array(
        name, shape=wt.table.shape, dtype="int64", chunks=(min(rows, 65536), wt.table.shape[1]),
        dimension_names=("window", "field"), fill_value=0, overwrite=True)
    if len(wt):
        arr[:] = wt.table
    # The column names go in last: a table interrupted while filling has none and is refused.
    arr.attrs.update({"columns": list(wt.columns), "params": wt.params})
    return arr


def list_window_tables(root: zarr.Group) -> list[str]:
    """Return the names of the window tables in a store (sorted)."""
    if schema.WINDOWS_GROUP not in root:
        return []
    return sorted(name for name, _ in root[schema.WINDOWS_GROUP].arrays())


def read_window_table(root: zarr.Group, name: str) -> WindowTable:
    """Load ``windows/<name>`` from an open store; FmDataError if it is absent."""
    names = list_window_tables(root)
    if name not in names:
        raise FmDataError(f"expected a window table named {name!r}, got {names or 'none'} "
                          f"(build one with `fmdata windows STORE --name {name}`)")
    arr = root[schema.WINDOWS_GROUP][name]
    if "columns" not in arr.attrs:
        raise FmDataError(f"window table {name!r} is incomplete (its writer did not finish); rebuild it with --force")
    table = np.asarray(arr[:], dtype=np.int64) if arr.shape[0] else np.zeros(arr.shape, np.int64)
    return WindowTable(table=table, columns=tuple(arr.attrs["columns"]), params=dict(arr.attrs.get("params", {})))
