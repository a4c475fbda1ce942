"""fmdata.store.columns.read_column: whole 1-D arrays, fast where local, identical everywhere."""
from __future__ import annotations

import numpy as np
import zarr

from fmdata.store import Chunking, schema
from fmdata.store.columns import read_column

from builders import make_store, recording


def test_read_column_equals_zarr_local_and_remote(tmp_path):
    recs = [recording("v1", 700, seed=1), recording("v2", 300, seed=2)]
    for where in (str(tmp_path / "a.zarr"), "memory://fmf-columns-test/a.zarr"):
        make_store(where, recs, chunking=Chunking(1, 16, 50))
        root = zarr.open_group(where, mode="r")
        for name in (schema.SPLIT, schema.RECORDING, schema.FRAME_TIME, schema.FRAME_CURRENT_END,
                     schema.CURRENT_TIME, schema.CURRENT, schema.MASK):
            want = root[name][...]
            got = read_column(root[name])
            assert got.dtype == want.dtype and np.array_equal(got, want), (where, name)
        assert read_column(root[schema.SPLIT], np.int64).dtype == np.int64
