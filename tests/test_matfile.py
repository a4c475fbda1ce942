"""MAT files: header sniffing, describing real MATLAB-written files, writing v7.3 and v7."""
import datetime as dt
from pathlib import Path

import h5py
import hdf5storage
import mat73
import numpy as np
import pytest
import scipy.io

from fmdata.errors import FmDataError
from fmdata.sources import matinfo
from fmdata.synth import matwriter

SCIPY_DATA = Path(scipy.io.__file__).parent / "matlab" / "tests" / "data"
CREATED = dt.datetime(2023, 5, 10, 21, 33, 27)


def _scipy_file(name):
    path = SCIPY_DATA / name
    if not path.exists():
        pytest.skip(f"scipy's test data lacks {name}")
    return path


# ---- sniffing and describing files MATLAB wrote -------------------------------------------------
@pytest.mark.parametrize("name, fmt", [
    ("testhdf5_7.4_GLNX86.mat", "7.3"),  # HDF5 inside, although its text says "MATLAB 7.0"
    ("testdouble_7.4_GLNX86.mat", "5"),
    ("testmatrix_6.1_SOL2.mat", "5"),
    ("big_endian.mat", "5"),
    ("testmatrix_4.2c_SOL2.mat", "4"),
    ("test_mat4_le_floats.mat", "4"),
])
def test_sniff_format_reads_the_header_of_matlab_written_files(name, fmt):
    assert matinfo.sniff_format(_scipy_file(name)) == fmt


def test_sniff_format_says_none_for_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("MATLAB is not in this file\n" * 20)
    (tmp_path / "empty.mat").write_bytes(b"")
    (tmp_path / "zeros.mat").write_bytes(bytes(1024))
    for name in ("notes.txt", "empty.mat", "zeros.mat"):
        assert matinfo.sniff_format(tmp_path / name) is None
    with pytest.raises(FmDataError, match="folder"):
        matinfo.sniff_format(tmp_path)


def test_describe_matlab_written_v73_file():
    info = matinfo.describe(_scipy_file("testhdf5_7.4_GLNX86.mat"))
    assert info.format == "7.3" and info.header.startswith("MATLAB 7.0 MAT-file")
    v = info.variable("testdouble")
    with h5py.File(info.path, "r") as f:
        ds = f["testdouble"]
        assert v.h5_shape == ds.shape and v.shape == tuple(reversed(ds.shape))
        assert ds.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS  # MATLAB 7.4 (2008) chose this
    assert (v.matlab_class, v.layout, v.chunks, v.filters) == ("double", "contiguous", None, [])
    assert v.stored_bytes == v.data_bytes == 9 * 8


@pytest.mark.parametrize("name", ["testdouble_7.4_GLNX86.mat", "testmatrix_6.1_SOL2.mat", "test3dmatrix_7.4_GLNX86.mat",
                                  "testbool_8_WIN64.mat", "testmatrix_4.2c_SOL2.mat"])
def test_describe_v5_and_v4_files_agree_with_scipy(name):
    path = _scipy_file(name)
    info = matinfo.describe(path)
    whos = scipy.io.whosmat(path)
    assert [(v.name, v.shape, v.matlab_class) for v in info.variables] == [(n, tuple(s), c) for n, s, c in whos]
    data = scipy.io.loadmat(path)
    for v in info.variables:
        if v.matlab_class in ("double", "logical", "uint8"):
            assert np.shape(data[v.name]) == v.shape
    if info.format == "5":  # MATLAB 7 compresses every variable; 6.x files do not
        expect = "compressed" if "_7." in name or "_8_" in name else "uncompressed"
        assert {v.layout for v in info.variables} == {expect}
        assert sum(v.stored_bytes for v in info.variables) == info.file_bytes - 128


@pytest.mark.parametrize("name", ["corrupted_zlib_data.mat", "corrupted_zlib_checksum.mat", "malformed1.mat",
                                  "bad_miuint32.mat", "bad_miutf8_array_name.mat", "broken_utf8.mat"])
def test_describe_scipy_corrupt_files_raise_or_describe_without_crashing(name):
    path = _scipy_file(name)
    try:
        info = matinfo.describe(path)
    except FmDataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:  # corrupt data payloads can leave the headers intact: then the description stands
        assert info.format == "5" and info.variables


def test_describe_refuses_truncated_hdf5(tmp_path):
    src = tmp_path / "whole.mat"
    matwriter.write_mat73(src, {"x": np.arange(40000, dtype=np.float64).reshape(200, 200)}, created=CREATED)
    cut = tmp_path / "cut.mat"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert matinfo.sniff_format(cut) == "7.3"
    with pytest.raises(FmDataError, match="truncated or corrupt"):
        matinfo.describe(cut)
    (tmp_path / "text.mat").write_text("hello")
    with pytest.raises(FmDataError, match="unknown file type"):
        matinfo.describe(tmp_path / "text.mat")


# ---- writing v7.3 -------------------------------------------------------------------------------
def _arrays(n, h=20, w=12, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (h, w, 3, n), dtype=np.uint8),
        "label": rng.random((h, w, n)) > 0.9,
        "current": rng.normal(9000, 300, (3, n)),
        "train_test_index": (np.arange(n) >= n - n // 4).astype(np.float64)[None, :],
    }


def _write_streamed(path, arrays, storage, block):
    n = arrays["video"].shape[-1]
    with matwriter.MatWriter(path, storage=storage, created=CREATED) as w:
        video = w.create("video", arrays["video"].shape, "uint8")
        label = w.create("label", arrays["label"].shape, "logical")
        current = w.create("current", arrays["current"].shape, "double")
        for s in range(0, n, block):
            video.write(arrays["video"][..., s:s + block])
            label.write(arrays["label"][..., s:s + block])
            current.write(arrays["current"][:, s:s + block], s)
        w.write("train_test_index", arrays["train_test_index"])


@pytest.mark.parametrize("storage, block", [("matlab", 40), ("matlab", 7), ("contiguous", 64)])
def test_v73_writer_round_trips_through_h5py_mat73_and_hdf5storage(tmp_path, storage, block):
    arrays = _arrays(301)
    path = tmp_path / "rec.mat"
    _write_streamed(path, arrays, storage, block)
    raw = path.read_bytes()
    assert raw[:20] == b"MATLAB 7.3 MAT-file,"
    assert b"Created on: Wed May 10 21:33:27 2023 HDF5 schema 1.00 ." in raw[:116]
    assert raw[124:128] == b"\x00\x02IM" and raw[512:520] == b"\x89HDF\r\n\x1a\n"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        v = f["video"]
        assert v.shape == (301, 3, 12, 20) and v.attrs["MATLAB_class"] == b"uint8"
        np.testing.assert_array_equal(v[...].transpose(3, 2, 1, 0), arrays["video"])  # documented transpose
        lab = f["label"]
        assert lab.dtype == np.uint8 and lab.attrs["MATLAB_class"] == b"logical"
        assert lab.attrs["MATLAB_int_decode"] == 1
        np.testing.assert_array_equal(lab[...].transpose(2, 1, 0), arrays["label"])
        np.testing.assert_array_equal(f["current"][...].T, arrays["current"])
        layout = v.id.get_create_plist().get_layout()
        if storage == "matlab":
            assert layout == h5py.h5d.CHUNKED and v.compression == "gzip" and v.compression_opts == 3
            assert not v.shuffle and np.prod(v.chunks) <= 64 * 1024 and v.chunks[1:] == (3, 12, 20)
        else:
            assert layout == h5py.h5d.CONTIGUOUS and v.compression is None
        # a 301-element vector is well under 10 KB: compact, as MATLAB stores small variables
        assert f["train_test_index"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
    m = mat73.loadmat(path)
    np.testing.assert_array_equal(m["video"], arrays["video"])
    np.testing.assert_array_equal(np.asarray(m["label"], bool), arrays["label"])
    np.testing.assert_array_equal(m["current"], arrays["current"])
    h = hdf5storage.loadmat(str(path))
    np.testing.assert_array_equal(h["video"], arrays["video"])
    assert h["label"].dtype == bool
    np.testing.assert_array_equal(h["label"], arrays["label"])
    np.testing.assert_array_equal(h["train_test_index"], arrays["train_test_index"])


def test_describe_reports_what_the_writer_chose(tmp_path):
    path = tmp_path / "rec.mat"
    _write_streamed(path, _arrays(1000, 64, 64), "matlab", 100)
    info = matinfo.describe(path)
    assert info.format == "7.3" and info.header.startswith("MATLAB 7.3 MAT-file, Platform: GLNXA64")
    video = info.variable("video")
    assert video.shape == (64, 64, 3, 1000) and video.matlab_class == "uint8" and video.layout == "chunked"
    assert video.chunks == (64, 64, 3, 4) and video.filters == ["deflate(3)"]
    label = info.variable("label")
    assert label.logical and label.matlab_class == "logical" and label.chunks[:2] == (64, 64)
    assert info.variable("train_test_index").layout == "compact"  # 1000 doubles: 8 kB, under ~10 KB
    with pytest.raises(FmDataError, match="variable 'nope'"):
        info.variable("nope")


def test_matlab_chunks_cap_near_64k_and_prefer_whole_frames():
    assert matwriter.matlab_chunks((100000, 3, 64, 64), 1) == (4, 3, 64, 64)
    assert matwriter.matlab_chunks((100000, 3), 8) == (1563, 3)
    big = matwriter.matlab_chunks((50, 3, 256, 256), 1)  # one frame is 192 KiB: chunks split the frame
    assert big[0] == 1 and np.prod(big) <= 64 * 1024
    assert matwriter.matlab_chunks((10, 10), 8) == (10, 10)


def test_single_frame_drops_trailing_singleton_like_matlab(tmp_path):
    path = tmp_path / "one.mat"
    frame = np.random.default_rng(1).integers(0, 256, (16, 8, 3, 1), dtype=np.uint8)
    with matwriter.MatWriter(path, created=CREATED) as w:
        w.create("video", frame.shape, "uint8").write(frame)
    with h5py.File(path, "r") as f:
        assert f["video"].shape == (3, 8, 16)
    assert matinfo.describe(path).variable("video").shape == (16, 8, 3)
    np.testing.assert_array_equal(mat73.loadmat(path)["video"], frame[..., 0])


def test_writer_rejects_bad_blocks_and_deletes_unfinished_files(tmp_path):
    path = tmp_path / "bad.mat"
    with pytest.raises(FmDataError, match="expected blocks of shape"):
        with matwriter.MatWriter(path, created=CREATED) as w:
            w.create("video", (4, 4, 3, 10), "uint8").write(np.zeros((4, 5, 3, 2), np.uint8))
    assert not path.exists()
    with pytest.raises(FmDataError, match="frames within"):
        with matwriter.MatWriter(path, created=CREATED) as w:
            w.create("video", (4, 4, 3, 10), "uint8").write(np.zeros((4, 4, 3, 4), np.uint8), 8)
    with pytest.raises(FmDataError, match="MATLAB class"):
        with matwriter.MatWriter(path, created=CREATED) as w:
            w.create("x", (2, 2), "quaternion")
    assert not path.exists()


def test_same_input_same_bytes(tmp_path):
    arrays = _arrays(120)
    _write_streamed(tmp_path / "a.mat", arrays, "matlab", 13)
    _write_streamed(tmp_path / "b.mat", arrays, "matlab", 13)
    assert (tmp_path / "a.mat").read_bytes() == (tmp_path / "b.mat").read_bytes()


# ---- writing v7 ---------------------------------------------------------------------------------
def test_v7_writer_is_readable_by_scipy_and_keeps_logical(tmp_path):
    arrays = _arrays(50)
    path = matwriter.write_v7(tmp_path / "old.mat", arrays, created=CREATED)
    assert matinfo.sniff_format(path) == "5"
    assert path.read_bytes()[:116].decode().startswith("MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Wed May 10")
    data = scipy.io.loadmat(path)
    np.testing.assert_array_equal(data["video"], arrays["video"])
    np.testing.assert_array_equal(data["label"], arrays["label"])  # scipy hands logical back as uint8
    info = matinfo.describe(path)
    assert info.variable("label").matlab_class == "logical"
    assert {v.layout for v in info.variables} == {"compressed"}
    again = matwriter.write_v7(tmp_path / "again.mat", arrays, created=CREATED)
    assert again.read_bytes() == path.read_bytes()
