"""Opening and validating sources, and the chunk-aligned block readers (fmdata.sources)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmdata.sources import RecordingReader, open_reader, open_sources
from fmdata.sources.hdf5_chunks import aligned_ranges, direct_chunks
from fmdata.store import schema

from builders import read_v1_independently, read_v2_independently, v1_arrays, write_v1, write_v2


def _read_all(rd: RecordingReader, n: int, h: int, w: int, piece: int = 7) -> dict[str, np.ndarray]:
    """Read a whole recording through the streams in odd-sized pieces (not the source's chunks)."""
    video, mask = np.empty((n, h, w, 3), np.uint8), np.empty((n, h, w), np.uint8)
    vs, ms = rd.video_stream(0, n), rd.mask_stream(0, n)
    for a in range(0, n, piece):
        vs.take_into(video[a:a + piece])
        ms.take_into(mask[a:a + piece])
    return {schema.VIDEO: video, schema.MASK: mask, schema.SPLIT: rd.split(0, n),
            schema.CURRENT: rd.current(0, rd.src.n_current)}


def test_v1_reader_gives_store_orientation_like_an_independent_h5py_read(tmp_path):
    n, h, w = 300, 6, 10  # H != W, so a missing transpose cannot pass
    path = write_v1(tmp_path / "rec.mat", v1_arrays(n, h, w, seed=3))
    (src,) = open_sources([str(path)])
    assert (src.name, src.layout, src.n_frames, src.height, src.width, src.n_current) == ("rec", "v1", n, h, w, n)
    assert src.video.frame_chunk > 1  # MATLAB-like chunks span several frames: reads must align to them
    ref = read_v1_independently(path)
    with open_reader(src, block_frames=16) as rd:
        got = _read_all(rd, n, h, w)
        np.testing.assert_array_equal(rd.frame_time(0, 5), np.arange(5) / 25.0)
        np.testing.assert_array_equal(rd.frame_current_end(10, 13), [11, 12, 13])
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert src.info().source_storage["variables"]["video"]["matlab_class"] == "uint8"


def test_v1_reader_agrees_with_a_matlab_file_library(tmp_path):
    hdf5storage = pytest.importorskip("hdf5storage")
    n, h, w = 40, 5, 9
    arrays = v1_arrays(n, h, w, seed=4)
    path = write_v1(tmp_path / "rec.mat", arrays)
    m = hdf5storage.loadmat(str(path))  # MATLAB order, as MATLAB itself shows the variables
    (src,) = open_sources([str(path)])
    with open_reader(src) as rd:
        got = _read_all(rd, n, h, w)
    for i in (0, 17, n - 1):
        np.testing.assert_array_equal(got[schema.VIDEO][i], m["video"][:, :, :, i])
        np.testing.assert_array_equal(got[schema.MASK][i], m["label"][:, :, i].astype(np.uint8))
    np.testing.assert_array_equal(got[schema.CURRENT], m["current"].T)


@pytest.mark.parametrize("storage", ["contiguous", "v7"])
def test_other_storages_read_the_same(tmp_path, storage):
    n, h, w = 50, 4, 7
    arrays = v1_arrays(n, h, w, seed=5)
    ref_path = write_v1(tmp_path / "ref.mat", arrays)
    if storage == "v7":
        from fmdata.synth import matwriter

        path = matwriter.write_v7(tmp_path / "rec.mat", arrays)
    else:
        path = write_v1(tmp_path / "rec.mat", arrays, storage="contiguous")
    (src,), (ref,) = open_sources([str(path)]), open_sources([str(ref_path)])
    assert src.mat_format == ("5" if storage == "v7" else "7.3")
    with open_reader(src, 8) as a, open_reader(ref, 8) as b:
        got, want = _read_all(a, n, h, w), _read_all(b, n, h, w)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_single_frame_recording_whose_frame_axis_matlab_dropped(tmp_path):
    arrays = v1_arrays(1, 4, 6, seed=6)
    path = write_v1(tmp_path / "one.mat", arrays)
    with h5py.File(path) as f:
        assert f["video"].shape == (3, 6, 4) and f["label"].shape == (6, 4)  # trailing singleton dropped
    (src,) = open_sources([str(path)])
    assert src.n_frames == 1 and src.video.dropped
    with open_reader(src) as rd:
        got = _read_all(rd, 1, 4, 6)
    np.testing.assert_array_equal(got[schema.VIDEO][0], arrays["video"][:, :, :, 0])
    np.testing.assert_array_equal(got[schema.MASK][0], arrays["label"][:, :, 0])


def test_v2_folder_times_splits_and_current_index(tmp_path):
    folder = write_v2(tmp_path / "v2", {"b": 23, "a": 31})
    recs = open_sources([str(folder)])
    assert [r.name for r in recs] == ["a", "b"]  # name order
    a = recs[0]
    ref = read_v2_independently(folder, "a")
    assert a.origin == "2023-05-10T21:33:27" and a.n_current == len(ref["current"])
    with open_reader(a) as rd:
        got = _read_all(rd, a.n_frames, a.height, a.width)
        frame_time = rd.frame_time(0, a.n_frames)
        current_time = rd.current_time(0, a.n_current)
        end = rd.frame_current_end(0, a.n_frames)
    np.testing.assert_array_equal(got[schema.VIDEO], ref["video"])
    np.testing.assert_array_equal(got[schema.SPLIT], ref["split"])
    np.testing.assert_array_equal(got[schema.CURRENT], ref["current"])
    origin = np.datetime64("2023-05-10T21:33:27")
    np.testing.assert_array_equal(frame_time, (ref["frame_ts"] - origin).astype(float))
    np.testing.assert_array_equal(current_time, (ref["current_ts"] - origin).astype(float))
    # one past the last current row at or before each frame's time
    want_end = [int((ref["current_ts"] <= t).sum()) for t in ref["frame_ts"]]
    np.testing.assert_array_equal(end, want_end)
    assert (got[schema.SPLIT] == schema.SPLIT_NONE).sum() == 2  # the guard gap is in neither list


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 500), length=st.integers(1, 500), chunk=st.integers(1, 64), target=st.integers(1, 100))
def test_aligned_ranges_cover_once_and_end_on_the_chunk_grid(start, length, chunk, target):
    stop = start + length
    ranges = list(aligned_ranges(start, stop, chunk, target))
    assert ranges[0][0] == start and ranges[-1][1] == stop
    assert all(a < b for a, b in ranges) and all(r[1] == s[0] for r, s in zip(ranges, ranges[1:]))
    assert all(b % chunk == 0 for _, b in ranges[:-1])  # every inner end on the grid: no chunk read twice
    assert all(b - a >= min(target, stop - a) for a, b in ranges[:-1])


@pytest.mark.parametrize("chunks,shuffle", [((2, 3, 4, 5), False), ((3, 3, 9, 11), False), ((2, 3, 4, 5), True),
                                            ((4, 3, 9, 11), False)])
def test_direct_chunk_reads_equal_h5py_reads(tmp_path, chunks, shuffle):
    """Raw-chunk reads (libdeflate) give what h5py gives: chunks that split frames, edge chunks,
    chunks never written (fill value); other filter pipelines fall back to h5py."""

    data = np.random.default_rng(0).integers(0, 256, (10, 3, 9, 11), dtype=np.uint8)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        ds = f.create_dataset("v", shape=data.shape, dtype="u1", chunks=chunks, compression="gzip",
                              compression_opts=3, shuffle=shuffle, fillvalue=7)
        ds[:8] = data[:8]  # the last rows' chunks stay unwritten
        direct = direct_chunks(ds)
        if shuffle:
            assert direct is None
            return
        for a, b in ((0, 10), (1, 9), (3, 4), (7, 10), (2, 8)):
            np.testing.assert_array_equal(direct.read(a, b), ds[a:b])
            if direct.whole_rows:
                np.testing.assert_array_equal(np.concatenate([v for _, v in direct.rows(a, b)]), ds[a:b])
        assert (direct.read(9, 10) == 7).all()
