"""Window tables round-trip through a store, and an unfinished one is refused."""
import numpy as np
import pytest
import zarr

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.window_table import (
    WindowTable,
    list_window_tables,
    read_window_table,
    window_columns,
    write_window_table,
)


def test_round_trip_keeps_rows_columns_and_params(tmp_path):
    root = zarr.open_group(tmp_path / "s.zarr", mode="w")
    table = np.arange(33, dtype=np.int64).reshape(3, 11)
    write_window_table(root, "w", WindowTable(table, window_columns(5), {"current_rows": 240}))
    wt = read_window_table(zarr.open_group(tmp_path / "s.zarr", mode="r"), "w")
    np.testing.assert_array_equal(wt.table, table)
    np.testing.assert_array_equal(wt.clip, table[:, len(schema.WINDOW_COLUMNS):])
    np.testing.assert_array_equal(wt.column("label"), table[:, 3])
    assert wt.current_rows == 240 and list_window_tables(root) == ["w"]
    with pytest.raises(FmDataError, match="exists"):
        write_window_table(root, "w", wt)


def test_a_table_whose_writer_stopped_before_the_columns_is_refused(tmp_path):
    root = zarr.open_group(tmp_path / "s.zarr", mode="w")
    root.require_group(schema.WINDOWS_GROUP).create_array("half", shape=(4, 11), dtype="int64")
    with pytest.raises(FmDataError, match="incomplete"):
        read_window_table(root, "half")
    with pytest.raises(FmDataError, match="expected a window table named 'nope'"):
        read_window_table(root, "nope")
