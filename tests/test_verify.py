"""fmdata verify: checksums and element-wise comparison find exactly what was damaged."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import zarr

from fmdata import store, synth
from fmdata.convert import convert, verify
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.shard_writer import ShardWriter
from fmdata.store.shards import ShardLayout, decode_index, encode_index

from builders import v1_arrays, write_v1, write_v2

FMDATA = os.path.join(os.path.dirname(sys.executable), "fmdata")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    v1 = write_v1(d / "a.mat", v1_arrays(60, 5, 7, seed=11))
    v2 = write_v2(d / "v2", {"b": 25}, h=5, w=7)
    out = d / "good.zarr"
    convert([str(v1), str(v2)], out, workers=1, shard_frames=8, progress=False)
    return d, [str(v1), str(v2)], out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_fresh_store_verifies_and_the_cli_exits_0(converted):
    _, sources, out = converted
    res = subprocess.run([FMDATA, "verify", str(out), "--source", sources[0], "--source", sources[1],
                          "--workers", "2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("OK ") and "every element equal the sources" in res.stdout
    report = verify(out, workers=1, progress=False)
    assert report.ok and not report.compared_with_sources and report.blocks_checked > 0


def test_a_changed_block_is_reported_by_array_and_frames(converted, tmp_path):
    _, sources, good = converted
    bad = _copy(good, tmp_path / "bad.zarr")
    root = zarr.open_group(bad, mode="r+")
    video = root[schema.VIDEO][16:24]
    video[3, 2, 1, 0] ^= 0xFF  # frame 19: one value, rewritten as a valid shard
    ShardWriter(root[schema.VIDEO]).write(2, video)
    split = root[schema.SPLIT][:]
    split[70] = schema.SPLIT_TEST if split[70] != schema.SPLIT_TEST else schema.SPLIT_TRAIN
    ShardWriter(root[schema.SPLIT]).write(70 // 8, split[64:72])
    report = verify(bad, workers=1, progress=False)
    assert [str(p) for p in report.problems] == ["split frames 64..71: checksum differs from the one recorded",
                                                 "video frames 16..23: checksum differs from the one recorded"]
    report = verify(bad, sources, workers=1, progress=False)
    lines = [str(p) for p in report.problems]
    assert "video frames 16..23: 1 element(s) in 1 frame(s) differ from the source (first at frame 19)" in lines
    assert "split frames 64..71: 1 element(s) in 1 frame(s) differ from the source (first at frame 70)" in lines
    res = subprocess.run([FMDATA, "verify", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1 and "video frames 16..23" in res.stdout and "Traceback" not in res.stderr


def test_damaged_and_missing_shards_are_found(converted, tmp_path):
    _, _, good = converted
    bad = _copy(good, tmp_path / "dmg.zarr")
    shard = bad / schema.MASK / "c" / "3" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-6] ^= 0x55  # inside the shard index: its CRC32C no longer matches
    shard.write_bytes(bytes(data))
    (bad / schema.VIDEO / "c" / "5" / "0" / "0" / "0").unlink()  # zarr reads it back as fill values
    report = verify(bad, workers=1, progress=False)
    kinds = {(p.array, p.start, p.kind) for p in report.problems}
    # a lost file is called what it is, not a checksum difference of the zeros zarr reads in its place
    assert (schema.MASK, 24, "unreadable") in kinds and (schema.VIDEO, 40, "missing") in kinds
    assert len(report.problems) == 2
    assert "video frames 40..47: expected the chunk file c/5/0/0/0, got none" in report.summary()


def test_different_sources_and_missing_checksums_are_reported(converted, tmp_path):
    d, sources, good = converted
    other = write_v1(tmp_path / "a.mat", v1_arrays(60, 5, 7, seed=12))  # same shapes, other values
    report = verify(good, [str(other), sources[1]], workers=1, progress=False)
    (p,) = [p for p in report.problems if p.array == schema.VIDEO]
    assert (p.start, p.stop, p.rows, p.first) == (0, 64, 60, 0)  # blocks merged into one range; exact counts
    report = verify(good, sources[1:], workers=1, progress=False)
    assert [p.array for p in report.problems] == ["recordings"] and "sources give" in str(report.problems[0])
    bare = _copy(good, tmp_path / "bare.zarr")
    arr = zarr.open_array(bare / schema.CURRENT, mode="r+")
    arr.update_attributes({schema.ATTR_CHECKSUMS: None})
    arr.attrs.pop(schema.ATTR_CHECKSUMS)
    report = verify(bare, workers=1, progress=False)
    assert [str(p) for p in report.problems] == ["current: no checksums recorded"]


def test_an_incomplete_store_is_one_clear_error(converted, tmp_path):
    _, _, good = converted
    half = _copy(good, tmp_path / "half.zarr")
    store.set_complete(zarr.open_group(half, mode="r+"), False)
    with pytest.raises(FmDataError, match="incomplete"):
        verify(half, progress=False)
    res = subprocess.run([FMDATA, "verify", str(half)], capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "incomplete" in res.stderr
    assert store.open_store(good)  # the original is untouched


def test_a_copied_store_is_compared_chunk_by_chunk_with_its_sources(tmp_path):
    a = synth.write_v1(tmp_path / "a.mat", frames=512, size=32, seed=1)  # chunks of 16 and 64 frames
    (tmp_path / "other").mkdir()
    b = synth.write_v1(tmp_path / "other" / "a.mat", frames=512, size=32, seed=2)  # same grid, other values
    out = tmp_path / "s.zarr"
    convert([str(a)], out, workers=1, layout=schema.LAYOUT_SOURCE, shard_frames=256, progress=False)
    assert verify(out, [str(a)], workers=2, progress=False).ok
    lines = [str(p) for p in verify(out, [str(b)], workers=1, progress=False).problems]
    assert "video frames 0..511: 32 of 32 copied chunk(s) differ from the source's (first at frame 0)" in lines
    assert any(line.startswith("mask frames 0..511: ") and "copied chunk(s) differ" in line for line in lines), lines
    # a chunk replaced by another valid one (its own CRC-32C right): the shard file's checksum tells
    lay = ShardLayout.from_metadata(json.loads((out / schema.VIDEO / "zarr.json").read_text()))
    shard = out / schema.VIDEO / lay.chunk_key(0)
    raw = shard.read_bytes()
    index = decode_index(raw[-lay.index_nbytes:], lay, "video")
    (o1, n1), (o2, n2) = (tuple(int(v) for v in index[k]) for k in (1, 2))
    swapped = raw[:o1] + raw[o2:o2 + n2] + raw[o1:o1 + n1] + raw[o2 + n2:-lay.index_nbytes]
    index = index.copy()
    index[1], index[2] = (o1, n2), (o1 + n2, n1)  # frames 16..31 and 32..47 swapped, the index consistent
    shard.write_bytes(swapped + b"".join(encode_index(index, lay)))
    report = verify(out, workers=1, progress=False)
    assert [str(p) for p in report.problems] == ["video frames 0..255: checksum differs from the one recorded"]
    report = verify(out, [str(a)], workers=1, progress=False)
    assert [str(p) for p in report.problems] == [
        "video frames 0..255: checksum differs from the one recorded",
        "video frames 0..255: 2 of 16 copied chunk(s) differ from the source's (first at frame 16)"]
