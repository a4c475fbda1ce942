"""BlockReader returns exactly what zarr returns, for every layout and range."""
from __future__ import annotations

import google_crc32c
import numpy as np
import pytest
import zarr

from fmdata import store
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.block_reader import BlockReader, block_frames, block_ranges
from fmdata.store.row_reader import LocalAxisReader


@pytest.mark.parametrize("chunk,shard", [(1, 16), (4, 16), (5, None), (16, 16)])
def test_reads_equal_zarr_for_every_range(tmp_path, chunk, shard):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    store.create_arrays(root, 83, 10, 5, 4, 1, store.Chunking(chunk, shard, 7))
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (83, 5, 4, 3), dtype=np.uint8)
    video[40:60] = 0  # compressible stretch
    root[schema.VIDEO][:64] = video[:64]  # frames 64.. never written: fill value
    root[schema.CURRENT][:] = rng.normal(9000, 10, (10, 3))
    r = BlockReader(root[schema.VIDEO])
    assert r.fast and r.block == (shard or chunk)
    want = root[schema.VIDEO][:]
    for a, b in [(0, 83), (0, r.block), (r.block, 83), (3, 50), (80, 83), (0, 200)]:
        np.testing.assert_array_equal(r.read(a, b), want[a:b])
    cur = BlockReader(root[schema.CURRENT])
    np.testing.assert_array_equal(cur.read(0, 10), root[schema.CURRENT][:])
    np.testing.assert_array_equal(cur.read(7, 10), root[schema.CURRENT][7:10])


def test_other_layouts_fall_back_to_zarr(tmp_path):
    # gzip chunks are decoded by the shard codec directly; chunks split along a second axis are
    # not, and go through zarr: both read what zarr reads
    for name, chunks, fast in (("gzip.zarr", (8, 4), True), ("split.zarr", (8, 2), False)):
        arr = zarr.create_array(str(tmp_path / name), shape=(30, 4), chunks=chunks, dtype="int32",
                                compressors=[zarr.codecs.GzipCodec()])
        arr[:] = np.arange(120).reshape(30, 4)
        r = BlockReader(arr)
        assert r.fast == fast
        np.testing.assert_array_equal(r.read(0, 30), arr[:])


def test_a_corrupt_shard_index_is_an_error(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    store.create_arrays(root, 32, 4, 2, 2, 1, store.Chunking(1, 16))
    root[schema.MASK][:] = 1
    shard = tmp_path / "s.zarr" / schema.MASK / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(FmDataError, match="shard index with a valid CRC-32C, got a mismatch"):
        BlockReader(root[schema.MASK]).read(0, 16)


def test_a_shard_index_pointing_outside_its_shard_is_damage_naming_the_rows(tmp_path):
    """An index whose CRC-32C holds but whose entry points past the file (a shard cut short and an
    index of another shard put back, say): both readers name the shard's rows, and the row reader
    never asks pread for 2^62 bytes."""
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    store.create_arrays(root, 32, 4, 2, 2, 1, store.Chunking(1, 16))
    root[schema.MASK][:] = 1
    shard = tmp_path / "s.zarr" / schema.MASK / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * 16 + 4):-4]), "<u8").reshape(16, 2).copy()
    index[3, 1] = 2**62
    data[-(16 * 16 + 4):] = index.tobytes() + google_crc32c.value(index.tobytes()).to_bytes(4, "little")
    shard.write_bytes(bytes(data))
    end = len(data) - 16 * 16 - 4  # where the index starts
    message = f"mask frames 16..31: expected inner chunks within bytes 0..{end} of the shard, got chunk 3"
    with pytest.raises(FmDataError, match=message):
        BlockReader(root[schema.MASK]).read(16, 32)
    with pytest.raises(FmDataError, match=message):
        LocalAxisReader(str(tmp_path / "s.zarr" / schema.MASK)).take(np.array([19]))


def test_block_sizes_hold_whole_write_units(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    store.create_arrays(root, 1000, 4, 8, 8, 1, store.Chunking(1, 16))
    assert block_frames(root[schema.VIDEO], 16 * 192 * 3) == 48
    assert block_frames(root[schema.VIDEO], 1) == 16
    assert block_frames(root[schema.VIDEO]) == 1000
    assert block_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_stream_hands_over_scattered_rows_block_by_block(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    store.create_arrays(root, 100, 4, 3, 2, 1, store.Chunking(1, 8))
    video = np.random.default_rng(1).integers(0, 256, (100, 3, 2, 3), dtype=np.uint8)
    root[schema.VIDEO][:] = video
    reader = BlockReader(root[schema.VIDEO])
    rows = np.array([2, 3, 4, 9, 30, 31, 60, 99], np.int64)  # blocks of 24 rows: 0-23, 24-47, 48-71, 96-99
    got = np.zeros((rows.size, 3, 2, 3), np.uint8)
    calls = []

    def put(lo, hi, values):
        calls.append((lo, hi))
        got[lo:hi] = values

    reader.stream(rows, 24, put)
    np.testing.assert_array_equal(got, video[rows])
    assert calls == [(0, 4), (4, 6), (6, 7), (7, 8)]  # one call per block holding wanted rows, none for 72-95
