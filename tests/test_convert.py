"""Conversion to store format v1: content, layout, alignment, overwrite/resume, kill and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from fmdata import store, synth
from fmdata.convert import convert, driver, verify
from fmdata.convert.ledger import LEDGER_PREFIX
from fmdata.convert.plan import CURRENT_AXIS, FRAME_AXIS, plan_conversion
from fmdata.errors import FmDataError
from fmdata.sources import RecordingSource, VarSpec, matinfo, open_sources
from fmdata.store import Location, schema
from fmdata.store.checksums import block_checksum, read_checksums
from fmdata.store.layout import SHARD_BYTES_MAX, default_chunking, override_chunking
from fmdata.store.shard_writer import ShardWriter

from builders import leftovers, read_v1_independently, read_v2_independently, v1_arrays, write_v1, write_v2
from processes import descendants, running

SOURCE_ARRAYS = schema.FRAME_ARRAYS + schema.CURRENT_ARRAYS


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A V1 file and a V2 folder with two recordings, frames 6x10 (H != W)."""
    d = tmp_path_factory.mktemp("mixed")
    v1 = write_v1(d / "first.mat", v1_arrays(50, 6, 10, seed=1))
    v2 = write_v2(d / "v2", {"r1": 29, "r2": 40})
    return d, [str(v1), str(v2)]


def test_a_last_shard_shorter_than_one_chunk_converts(mixed, tmp_path):
    _, sources = mixed
    # 119 frames in shards of 5: the last holds 4 frames, less than one 5-frame chunk
    convert(sources, tmp_path / "short.zarr", workers=1, chunk_frames=5, shard_frames=5, progress=False)
    convert(sources, tmp_path / "plain.zarr", workers=1, progress=False)
    a, b = store.open_store(tmp_path / "short.zarr"), store.open_store(tmp_path / "plain.zarr")
    assert a[schema.VIDEO].shape[0] == 119 and a[schema.VIDEO].chunks[0] != b[schema.VIDEO].chunks[0]
    for name in (schema.VIDEO, schema.MASK, schema.SPLIT, schema.RECORDING, schema.FRAME_TIME):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_v1_and_v2_convert_losslessly_with_aligned_indices(mixed, tmp_path):
    d, sources = mixed
    out = tmp_path / "s.zarr"
    # chunk 3 / shard 12: shards straddle recording boundaries and the last shard is short
    report = convert(sources, out, workers=2, chunk_frames=3, shard_frames=12, progress=False)
    assert (report.n_recordings, report.n_frames, report.units_resumed) == (3, 50 + 29 + 40, 0)
    root = store.open_store(out)
    meta = root.meta
    assert (meta.complete, meta.height, meta.width, meta.fps, meta.n_recordings) == (True, 6, 10, 25.0, 3)
    f_off, c_off = root.offsets
    np.testing.assert_array_equal(f_off, [0, 50, 79, 119])
    v1 = read_v1_independently(sources[0])
    r1, r2 = read_v2_independently(d / "v2", "r1"), read_v2_independently(d / "v2", "r2")
    np.testing.assert_array_equal(c_off, [0, 50, 50 + len(r1["current"]), 50 + len(r1["current"]) + len(r2["current"])])
    want = {
        schema.VIDEO: np.concatenate([v1[schema.VIDEO], r1["video"], r2["video"]]),
        schema.MASK: np.concatenate([v1[schema.MASK], r1["mask"], r2["mask"]]),
        schema.SPLIT: np.concatenate([v1[schema.SPLIT], r1["split"], r2["split"]]),
        schema.RECORDING: np.repeat([0, 1, 2], [50, 29, 40]),
        schema.CURRENT: np.concatenate([v1[schema.CURRENT], r1["current"], r2["current"]]),
    }
    for name, arr in want.items():
        np.testing.assert_array_equal(root[name][:], arr, err_msg=name)
    ftime = root[schema.FRAME_TIME][:]
    np.testing.assert_array_equal(ftime[:50], np.arange(50) / 25.0)
    origin = np.datetime64("2023-05-10T21:33:27")
    np.testing.assert_array_equal(ftime[50:79], (r1["frame_ts"] - origin).astype(float))
    end = root[schema.FRAME_CURRENT_END][:]
    np.testing.assert_array_equal(end[:50], np.arange(1, 51))  # V1: one current sample per frame
    np.testing.assert_array_equal(end[79:], [c_off[2] + int((r2["current_ts"] <= t).sum()) for t in r2["frame_ts"]])
    ctime = root[schema.CURRENT_TIME][:]
    assert (ctime[c_off[1]:c_off[2]][end[50:79] - c_off[1] - 1] <= ftime[50:79]).all()
    infos = root.recordings
    assert [(i.name, i.layout, i.n_frames) for i in infos] == [("first", "v1", 50), ("r1", "v2", 29), ("r2", "v2", 40)]
    assert infos[0].source_path == sources[0] and infos[0].source_bytes == os.path.getsize(sources[0])
    assert infos[0].source_storage["variables"]["video"] == json.loads(json.dumps(
        matinfo.describe(sources[0]).variable("video").to_dict()))
    assert infos[1].source_storage["format"] == "7.3" and set(infos[1].source_storage["variables"]) == {"data", "label"}
    for name in SOURCE_ARRAYS:
        arr = root[name]
        assert tuple(arr.metadata.dimension_names) == schema.DIMS[name] and str(arr.dtype) == schema.DTYPES[name]
        rows, values = read_checksums(arr)
        assert len(values) == -(-arr.shape[0] // rows)
        assert values[-1] == block_checksum(arr[(len(values) - 1) * rows:], schema.DTYPES[name])
    assert root[schema.VIDEO].chunks == (3, 6, 10, 3) and root[schema.VIDEO].shards == (12, 6, 10, 3)
    assert not [p for p in os.listdir(out) if "ledger" in p]  # the resume ledger is gone
    assert leftovers(out) == ["s.zarr"]
    assert verify(out, sources, workers=1, progress=False).ok


def test_store_opens_with_plain_zarr_and_xarray(mixed, tmp_path):
    xr = pytest.importorskip("xarray")
    out = tmp_path / "x.zarr"
    convert(mixed[1][:1], out, workers=1, progress=False)
    ds = xr.open_zarr(out, consolidated=False)
    assert ds[schema.VIDEO].dims == ("frame", "y", "x", "channel") and ds.sizes["frame"] == 50
    assert ds[schema.CURRENT].dims == ("sample", "phase")
    plain = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(ds[schema.MASK][7].values, plain[schema.MASK][7])


def test_default_chunking_suits_short_windows_and_bounds_shard_memory():
    c = default_chunking(64, 64)
    assert (c.chunk_frames, c.shard_frames) == (1, 256)
    big = default_chunking(720, 1280)
    assert big.shard_frames * 720 * 1280 * 3 <= SHARD_BYTES_MAX and big.shard_frames >= 1
    assert override_chunking(c, chunk_frames=3).shard_frames == 258  # rounded up to a multiple
    assert override_chunking(c, shard_frames=64).shard_frames == 64
    with pytest.raises(FmDataError, match="multiple of the frames per chunk"):
        override_chunking(c, chunk_frames=4, shard_frames=6)
    with pytest.raises(FmDataError, match="positive"):
        override_chunking(c, chunk_frames=0)


def test_shard_writer_output_reads_back_with_stock_zarr(tmp_path):
    root = zarr.open_group(tmp_path / "w.zarr", mode="w", zarr_format=3)
    store.create_arrays(root, 23, 5, 4, 3, 1, store.Chunking(2, 6, 4))
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (23, 4, 3, 3), dtype=np.uint8)
    mask = np.zeros((23, 4, 3), np.uint8)
    mask[9, 1, 2] = 1  # mostly empty chunks, which are left out of the shard
    current = rng.normal(0, 1, (5, 3))
    for name, data in ((schema.VIDEO, video), (schema.MASK, mask), (schema.CURRENT, current)):
        w = ShardWriter(root[name])
        for s in range(-(-len(data) // w.shard_len)):
            a, b = w.shard_range(s)
            w.write(s, data[a:b])
        np.testing.assert_array_equal(zarr.open_array(tmp_path / "w.zarr" / name, mode="r")[:], data)
    with pytest.raises(FmDataError, match="whole shard"):
        ShardWriter(root[schema.VIDEO]).write(0, video[:5])


def _fake_source(n: int, m: int) -> RecordingSource:
    spec = VarSpec("video", "uint8", (2, 2, 3, n), 1, 12)
    return RecordingSource(name="x", layout="v1", path="x", mat_path="x", mat_format="7.3", n_frames=n, height=2,
                           width=2, n_current=m, video=spec, mask=spec)


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=4), chunk=st.integers(1, 4),
       per_shard=st.integers(1, 8), current_chunk=st.integers(1, 50))
def test_units_cover_every_row_once_on_whole_shards(lengths, chunk, per_shard, current_chunk):
    recs = [_fake_source(n, n // 2 + 1) for n in lengths]
    plan = plan_conversion(recs, store.Chunking(chunk, chunk * per_shard, current_chunk))
    for axis, total, block in ((FRAME_AXIS, plan.n_frames, chunk * per_shard),
                               (CURRENT_AXIS, plan.n_current, current_chunk)):
        units = [u for u in plan.units if u.axis == axis]
        assert units[0].start == 0 and units[-1].stop == total
        assert all(u.stop == v.start for u, v in zip(units, units[1:]))
        assert all(u.start % block == 0 and (u.stop % block == 0 or u.stop == total) for u in units)
        offsets = plan.frame_offsets if axis == FRAME_AXIS else plan.current_offsets
        for u in units:
            assert u.pieces[0].global_start == u.start and u.pieces[-1].global_stop == u.stop
            for p in u.pieces:
                assert p.global_start - offsets[p.recording] == p.local_start
                assert 0 <= p.local_start < p.local_stop <= offsets[p.recording + 1] - offsets[p.recording]


def test_existing_outputs_and_leftover_partials_need_to_be_named(mixed, tmp_path):
    src = mixed[1][:1]
    out = tmp_path / "o.zarr"
    convert(src, out, workers=1, progress=False)
    before = (out / "zarr.json").read_bytes()
    with pytest.raises(FmDataError, match=r"got one that exists \(--overwrite replaces it\)"):
        convert(src, out, workers=1, progress=False)
    assert (out / "zarr.json").read_bytes() == before
    convert(src, out, workers=1, overwrite=True, progress=False, chunk_frames=2)
    assert store.open_store(out)[schema.VIDEO].chunks[0] == 2 and leftovers(out) == ["o.zarr"]
    folder = tmp_path / "notastore"
    folder.mkdir()
    (folder / "keep.txt").write_text("user data")
    with pytest.raises(FmDataError, match="not an FMF store"):
        convert(src, folder, workers=1, overwrite=True, progress=False)
    assert (folder / "keep.txt").read_text() == "user data"
    partial = tmp_path / ".p.zarr.partial-abc"
    partial.mkdir()
    with pytest.raises(FmDataError, match="--resume to continue it or --overwrite"):
        convert(src, tmp_path / "p.zarr", workers=1, progress=False)


def _ledger_entries(tmp_path: Path, name: str) -> int:
    parts = [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.partial-")]
    return len(os.listdir(parts[0] / LEDGER_PREFIX)) if parts and (parts[0] / LEDGER_PREFIX).exists() else 0


@pytest.fixture(scope="module")
def synth_v1(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "rec.mat"
    return synth.write_v1(path, frames=2048, size=32, seed=7)  # chunks of 16 (video) and 64 (mask) frames


@pytest.mark.parametrize("layout", [schema.LAYOUT_PLAIN, schema.LAYOUT_SOURCE])
def test_a_killed_conversion_resumes_to_the_same_store(synth_v1, tmp_path, layout):
    out = tmp_path / "k.zarr"
    cmd = [os.path.join(os.path.dirname(sys.executable), "fmdata"), "convert", str(synth_v1), str(out),
           "--workers", "2", "--shard-frames", "32", "--layout", layout, "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _ledger_entries(tmp_path, "k.zarr") < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    family = descendants(proc.pid)  # its worker and multiprocessing's resource tracker
    # the driver alone, mid-way, as the OOM killer would: its worker ends with it (parent-death
    # signal), and the resource tracker, left alive, removes the pool's named semaphores from
    # /dev/shm (killing the whole session would leave them there for good)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    while running(family) and time.monotonic() < deadline + 60:
        time.sleep(0.01)  # polling a condition, not timing one
    assert not running(family), family
    assert not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".k.zarr.partial-")]
    with pytest.raises(FmDataError, match="incomplete"):
        store.open_store(partial)
    done = _ledger_entries(tmp_path, "k.zarr")
    # a kill inside zarr's LocalStore write leaves its temporary file beside the entries (empty or
    # half-written, never renamed onto a key): the ledger is not torn by it
    (partial / LEDGER_PREFIX / f"u9999.{'0' * 32}.partial").write_bytes(b'{"key": "u99')
    report = convert([str(synth_v1)], out, workers=2, shard_frames=32, resume=True, progress=False, layout=layout)
    assert 2 <= report.units_resumed <= done < report.units
    assert verify(out, [str(synth_v1)], workers=1, progress=False).ok
    ref = tmp_path / "ref.zarr"
    convert([str(synth_v1)], ref, workers=1, shard_frames=32, progress=False, layout=layout)
    assert store.open_store(out).meta.layouts == store.open_store(ref).meta.layouts
    a, b = store.open_store(out), store.open_store(ref)
    for name in SOURCE_ARRAYS:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        assert read_checksums(a[name]) == read_checksums(b[name])
    assert leftovers(out) == ["k.zarr"]


def test_resume_refuses_changed_sources(tmp_path):
    src = write_v1(tmp_path / "a.mat", v1_arrays(40, 4, 4, seed=2))
    out = tmp_path / "r.zarr"
    plan = plan_conversion(open_sources([str(src)]))
    staging = tmp_path / ".r.zarr.partial-test"
    driver._create(Location.parse(staging), plan)  # as an interrupted run leaves it
    write_v1(src, v1_arrays(40, 4, 4, seed=3))  # the source changes meanwhile
    with pytest.raises(FmDataError, match="same sources"):
        convert([str(src)], out, workers=1, resume=True, progress=False)
    assert staging.exists()  # kept: the user decides (--overwrite starts again)
    convert([str(src)], out, workers=1, overwrite=True, progress=False)
    assert leftovers(out) == ["r.zarr"]


def test_cli_convert_shows_progress_and_reports(mixed, tmp_path):
    out = tmp_path / "c.zarr"
    exe = os.path.join(os.path.dirname(sys.executable), "fmdata")
    res = subprocess.run([exe, "convert", *mixed[1], str(out), "--workers", "1", "--progress", "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "frame/s" in res.stderr and "convert" in res.stderr  # tqdm bar with rate
    report = json.loads(res.stdout)
    assert report["n_frames"] == 119 and report["chunking"]["shard_frames"] == 256
