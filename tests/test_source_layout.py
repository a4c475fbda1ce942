"""The source layout: MATLAB's deflate chunks copied into the store, read by stock zarr and every reader.

Every source is a real MAT file: written the way MATLAB writes (fmdata.synth, tests/builders.py:
deflate 3, chunks near 64 KiB of several frames or of part of a frame) or by hdf5storage (another
HDF5 library; mat73 reads it). Expected values come from plain h5py (or mat73) and the
documented transposes, never from the converter's own reader.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import hdf5storage
import mat73
import numpy as np
import pytest
import zarr

from fmdata import store, synth
from fmdata.convert import convert, verify
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.block_reader import BlockReader
from fmdata.store.row_reader import LocalAxisReader
from fmdata.store.shards import CRC_BYTES, ShardLayout, shard_chunks

from builders import read_v1_independently, v1_arrays, write_v1, write_v2
from processes import FMDATA, run

SOURCE = schema.LAYOUT_SOURCE


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """MAT files with the chunk grids the layout must take as they come."""
    d = tmp_path_factory.mktemp("source-layout")
    rng = np.random.default_rng(5)
    # 510 frames of 32x32: video chunks of 16 frames, mask chunks of 64, both with a padded edge chunk
    several = synth.write_v1(d / "several.mat", frames=510, size=32, seed=3, events="dense")
    # 250x301 frames: a chunk holds one colour plane of half a frame (x padded), a mask chunk half a frame
    partial = write_v1(d / "partial.mat", v1_arrays(5, 250, 301, seed=6))
    # hdf5storage with deflate alone: h5py's own chunk guess, 18 frames x 2 colours x half x half a frame
    v, lab = rng.integers(0, 256, (30, 40, 3, 70), dtype=np.uint8), rng.random((30, 40, 70)) > 0.7
    extra = {"current": rng.normal(9000, 100, (3, 70)), "train_test_index": (np.arange(70) > 40)[None].astype(float)}
    other = d / "hdf5storage.mat"
    hdf5storage.writes({"video": v, "label": lab, **extra}, filename=str(other), truncate_existing=True,
                       options=hdf5storage.Options(matlab_compatible=True, store_python_metadata=False,
                                                   shuffle_filter=False, compressed_fletcher32_filter=False,
                                                   gzip_compression_level=3, compress_size_threshold=1024))
    # hdf5storage's defaults: shuffle, deflate 7 and fletcher32
    shuffled = d / "shuffled.mat"
    hdf5storage.savemat(str(shuffled), {"video": v, "label": lab, **extra}, store_python_metadata=False)
    return {"several": several, "partial": partial, "hdf5storage": other, "shuffled": shuffled}


def h5_truth(path: Path) -> dict[str, np.ndarray]:
    """video, mask, current of a V1 file read with plain h5py and the documented transposes."""
    return read_v1_independently(path)


def stored_chunks(out: Path, name: str) -> list[bytes]:
    """Every inner chunk of a store array as stored, CRC-32C stripped, in shard and index order."""
    lay = ShardLayout.from_metadata(json.loads((out / name / "zarr.json").read_text()))
    got: list[bytes] = []
    for s in range(-(-lay.shape[0] // lay.outer_rows)):
        raw = (out / name / Path(lay.chunk_key(s))).read_bytes()
        got += [bytes(c[:-CRC_BYTES]) for c in shard_chunks(lay, raw, name) if c is not None]
    return got


def source_chunks(path: Path, variable: str, order: tuple[int, ...]) -> list[bytes]:
    """The MAT file's chunks of ``variable`` in the store's chunk order (chunk rows, then y, x, channel)."""
    with h5py.File(path, "r") as f:
        ds = f[variable]
        grid = [-(-s // c) for s, c in zip(ds.shape, ds.chunks)]
        inverse = np.argsort(order)  # store axis j is the file's axis inverse[j]
        store_grid = [grid[inverse[j]] for j in range(len(order))]
        out = []
        for g in np.ndindex(*store_grid):
            h5 = tuple(g[order[i]] * ds.chunks[i] for i in range(len(order)))
            out.append(ds.id.read_direct_chunk(h5)[1])
        return out


# ---- copied byte for byte, read by stock zarr --------------------------------------------------------
def test_chunks_are_copied_byte_for_byte_and_stock_zarr_reads_every_frame(files, tmp_path):
    src = files["several"]
    out = tmp_path / "s.zarr"
    res = run([FMDATA, "convert", src, out, "--layout", "source", "--workers", "2", "--no-progress"])
    assert res.returncode == 0, res.stderr
    assert "video: copied: the source's deflate chunks of 16x32x32x3" in res.stdout
    assert "mask: copied: the source's deflate chunks of 64x32x32" in res.stdout
    meta = store.open_store(out).meta
    assert meta.layouts == {schema.VIDEO: SOURCE, schema.MASK: SOURCE} and meta.version == 3
    for name, variable in ((schema.VIDEO, "video"), (schema.MASK, "label")):
        assert stored_chunks(out, name) == source_chunks(src, variable, schema.SOURCE_ORDER[name]), name
    with h5py.File(src, "r") as f:
        video_bytes = f["video"].id.get_storage_size()
    shards = sum(p.stat().st_size for p in (out / schema.VIDEO / "c").rglob("*") if p.is_file())
    assert shards <= 1.001 * video_bytes  # the index and a CRC-32C per chunk: 20 bytes per 48 KiB
    # a reader that knows only zarr and numcodecs: no fmdata in the process
    script = textwrap.dedent(f"""
        import sys, json, h5py, numpy as np, zarr
        root = zarr.open_group({str(out)!r}, mode="r")
        with h5py.File({str(src)!r}, "r") as f:
            video, mask = f["video"][()].transpose(0, 3, 2, 1), f["label"][()].transpose(0, 2, 1)
            current = f["current"][()]
        ok = {{"video": all(np.array_equal(root["video"][i], video[i]) for i in range(len(video))),
              "mask": all(np.array_equal(root["mask"][i], mask[i]) for i in range(len(mask))),
              "current": np.array_equal(root["current"][:], current),
              "fmdata": any(m.split(".")[0] in ("fmdata", "fmmodel", "fmcli") for m in sys.modules)}}
        print(json.dumps(ok))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"video": True, "mask": True, "current": True, "fmdata": False}
    res = run([FMDATA, "verify", out, "--source", src, "--workers", "1", "--no-progress"])
    assert res.returncode == 0 and "every element equal the sources" in res.stdout, res.stdout + res.stderr


def test_a_local_conversion_imports_no_dask(files, tmp_path):
    # a 1 GB copy takes ~2 s, of which importing dask would be ~0.15 s in each process: the command
    # and the library import dask only where Dask computes (labels, stats, a cluster), and the spawned
    # workers import the same modules as the command, so the command's modules stand for theirs
    out = tmp_path / "s.zarr"
    code = textwrap.dedent(f"""
        import sys
        from fmcli.fmdata_main import main
        main(["convert", {str(files["several"])!r}, {str(out)!r}, "--layout", "source", "--workers", "2",
              "--no-progress"], standalone_mode=False)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    assert store.open_store(out).meta.layouts == {schema.VIDEO: SOURCE, schema.MASK: SOURCE}


@pytest.mark.parametrize("name", ["several", "partial", "hdf5storage"])
def test_every_reader_reads_any_chunk_grid(files, tmp_path, name):
    src = files[name]
    out = tmp_path / "s.zarr"
    report = convert([str(src)], out, workers=1, layout=SOURCE, progress=False)
    assert set(report.paths) == {schema.VIDEO, schema.MASK} and all(
        p.startswith("copied") for p in report.paths.values()), report.paths
    if name == "hdf5storage":
        loaded = mat73.loadmat(str(src))  # another library's reading of the same file
        want = {schema.VIDEO: np.moveaxis(loaded["video"], 3, 0), schema.MASK: np.moveaxis(loaded["label"], 2, 0)}
    else:
        want = h5_truth(src)
    root = store.open_store(out)
    n = root[schema.VIDEO].shape[0]
    rng = np.random.default_rng(0)
    index = np.concatenate([rng.integers(0, n, 40), [n - 1, 0, n - 1]])  # repeats, any order, the padded end
    for array in (schema.VIDEO, schema.MASK):
        truth = want[array].astype(np.uint8)
        np.testing.assert_array_equal(root[array][:], truth)  # zarr
        np.testing.assert_array_equal(BlockReader(root[array]).read(0, n), truth)  # labels, stats, resident load
        reader = LocalAxisReader(str(out / array))  # training reads
        np.testing.assert_array_equal(reader.take(index), truth[index])
        cached = LocalAxisReader(str(out / array), cache_bytes=1 << 20)
        np.testing.assert_array_equal(cached.take(index), truth[index])
    assert verify(out, [str(src)], workers=1, progress=False).ok


def test_a_chunk_of_several_frames_is_decoded_once_per_read(files, tmp_path):
    out = tmp_path / "s.zarr"
    convert([str(files["several"])], out, workers=1, layout=SOURCE, progress=False)
    reader = LocalAxisReader(str(out / schema.VIDEO))
    assert reader.layout.inner_rows == 16
    calls = []
    decode = reader._decode
    reader._decode = lambda buf, dest: (calls.append(1), decode(buf, dest))[1]
    frames = reader.take(np.array([3, 17, 1, 0, 15, 2]))  # two chunks: frames 0..15 and 16..31
    assert len(calls) == 2
    np.testing.assert_array_equal(frames, h5_truth(files["several"])[schema.VIDEO][[3, 17, 1, 0, 15, 2]])


# ---- the plain path where copying would be wrong ------------------------------------------------------
def test_what_cannot_be_copied_takes_the_plain_path_and_says_why(files, tmp_path):
    d = tmp_path
    # hdf5storage's defaults: shuffle and fletcher32 before and after deflate
    report = convert([str(files["shuffled"])], d / "a.zarr", workers=1, layout=SOURCE, progress=False)
    for name in (schema.VIDEO, schema.MASK):
        assert "filters shuffle, deflate(7), fletcher32" in report.paths[name], report.paths
    assert store.open_store(d / "a.zarr").meta.layouts == {}  # a store of format 2
    # a MATLAB v7 file; masks of class double (0/1 numbers: their type changes)
    v7 = synth.write_v1(d / "v7.mat", frames=40, size=16, seed=1, storage="v7")
    report = convert([str(v7)], d / "b.zarr", workers=1, layout=SOURCE, progress=False)
    assert all("MATLAB v5 file (not HDF5)" in p for p in report.paths.values()), report.paths
    double = write_v1(d / "double.mat", v1_arrays(300, 32, 32, seed=2), classes={"label": "double"})
    report = convert([str(double)], d / "c.zarr", workers=1, layout=SOURCE, progress=False)
    assert report.paths[schema.VIDEO].startswith("copied") and "class double" in report.paths[schema.MASK]
    # --mask-nonzero maps the mask: decoded; the video is still copied
    report = convert([str(files["several"])], d / "e.zarr", workers=1, layout=SOURCE, mask_nonzero=True,
                     progress=False)
    assert report.paths[schema.VIDEO].startswith("copied") and "--mask-nonzero" in report.paths[schema.MASK]
    # a second recording that starts off the chunk grid (510 frames: 31 chunks of 16 and 14 frames)
    second = synth.write_v1(d / "second.mat", frames=510, size=32, seed=4)
    report = convert([str(files["several"]), str(second)], d / "f.zarr", workers=1, layout=SOURCE, progress=False)
    assert "recording second starts at store frame 510, not on the 16-frame chunk grid" in report.paths[schema.VIDEO]
    # V2 videos this small are compact (inside the HDF5 object header): no chunks
    v2 = write_v2(d / "v2", {"r1": 29})
    report = convert([str(v2)], d / "g.zarr", workers=1, layout=SOURCE, progress=False)
    assert "compact storage" in report.paths[schema.VIDEO]
    for out, sources in (("a", [files["shuffled"]]), ("b", [v7]), ("c", [double]), ("e", [files["several"]]),
                         ("f", [files["several"], second]), ("g", [v2])):
        assert verify(d / f"{out}.zarr", [str(s) for s in sources], workers=1, progress=False).ok, out
    np.testing.assert_array_equal(store.open_store(d / "a.zarr")[schema.VIDEO][:],
                                  np.moveaxis(mat73.loadmat(str(files["shuffled"]))["video"], 3, 0))


def test_recordings_on_the_chunk_grid_are_copied_and_a_refused_mask_stops_the_conversion(tmp_path):
    a = synth.write_v1(tmp_path / "a.mat", frames=512, size=32, seed=1)
    b = synth.write_v1(tmp_path / "b.mat", frames=200, size=32, seed=2)  # chunks of 13 and 50 frames
    c = synth.write_v1(tmp_path / "c.mat", frames=512, size=32, seed=3)
    out = tmp_path / "ac.zarr"
    report = convert([str(a), str(c)], out, workers=2, layout=SOURCE, progress=False)
    assert all(p.startswith("copied") for p in report.paths.values()), report.paths
    root = store.open_store(out)
    want = [h5_truth(a), h5_truth(c)]
    for name in (schema.VIDEO, schema.MASK):
        np.testing.assert_array_equal(root[name][:], np.concatenate([w[name] for w in want]))
    report = convert([str(a), str(b)], tmp_path / "ab.zarr", workers=1, layout=SOURCE, progress=False)
    assert "chunk shapes differ" in report.paths[schema.VIDEO]
    v2 = synth.write_v2(tmp_path / "v2", recordings=2, frames=512, size=32, seed=4)  # videos/*.mat 'data', 'label'
    report = convert([str(v2)], tmp_path / "v2.zarr", workers=1, layout=SOURCE, progress=False)
    assert all(p.startswith("copied") for p in report.paths.values()), report.paths
    assert verify(tmp_path / "v2.zarr", [str(v2)], workers=1, progress=False).ok
    bad = v1_arrays(300, 32, 32, seed=9)
    bad["label"] = bad["label"].astype(np.uint8) * 3
    bad_file = write_v1(tmp_path / "bad.mat", bad, classes={"label": "uint8"})
    with pytest.raises(FmDataError, match="expected 'label' values 0 or 1, got 3 at frame 100; --mask-nonzero"):
        convert([str(bad_file)], tmp_path / "bad.zarr", workers=1, layout=SOURCE, progress=False)
    assert not (tmp_path / "bad.zarr").exists()


def test_a_chunk_the_file_stored_without_its_filter_is_compressed_and_verified(files, tmp_path):
    src = tmp_path / "masked.mat"
    src.write_bytes(files["several"].read_bytes())
    with h5py.File(src, "r+") as f:  # HDF5 skips an optional filter per chunk; this chunk is then raw
        ds = f["video"]
        raw = np.ascontiguousarray(ds[16:32])
        ds.id.write_direct_chunk((16, 0, 0, 0), raw.tobytes(), filter_mask=1)
        assert ds.id.get_chunk_info_by_coord((16, 0, 0, 0)).filter_mask == 1
    out = tmp_path / "m.zarr"
    report = convert([str(src)], out, workers=1, layout=SOURCE, progress=False)
    assert report.paths[schema.VIDEO].startswith("copied")
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")[schema.VIDEO][:], h5_truth(src)[schema.VIDEO])
    assert verify(out, [str(src)], workers=1, progress=False).ok


def test_store_meta_refuses_unknown_layouts():
    good = schema.StoreMeta(1, 1, 1, 2, 2, 25.0, layouts={schema.VIDEO: SOURCE}).to_dict()
    assert schema.StoreMeta.from_dict(good).layout(schema.VIDEO) == SOURCE
    assert schema.StoreMeta.from_dict(good).layout(schema.MASK) == schema.LAYOUT_PLAIN
    with pytest.raises(FmDataError, match="expected array layouts"):
        schema.StoreMeta.from_dict({**good, "layouts": {schema.VIDEO: "weird"}})
