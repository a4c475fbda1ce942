"""The lazy torch dataset (fmmodel.data.dataset), its fast reader (fmmodel.reader) and loaders (fmmodel.data.sampling).

Every check compares against arrays read independently: plain zarr reads of the store plus the
documented transposes, never the dataset's own reading code.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import zarr

from fmdata.errors import FmDataError
from fmdata.store import Chunking, open_store, schema
from fmdata.store.row_reader import LocalAxisReader, ZarrAxisReader, open_axis_reader
from fmmodel.data.dataset import FmfWindowDataset, WindowBatch, collate_windows
from fmmodel.data.sampling import ClassBalancedSampler, ShuffleSampler, make_loader, set_loader_epoch
from fmmodel.errors import FmModelError

from builders import clip_window_table, make_store, synthetic_recording

H, W = 12, 20  # not square, so that a wrong transpose cannot pass
T, STEP, ROWS, SPAN = 4, 5, 16, 40
STATS = {"video_mean": [100.0, 70.0, 45.0], "video_std": [30.0, 20.0, 12.0],
         "current_mean": [9000.0, 9100.0, 8900.0], "current_std": [900.0, 1000.0, 1100.0]}


@pytest.fixture(scope="module")
def recordings():
    return [synthetic_recording(330, H, W, seed=1, name="a"), synthetic_recording(170, H, W, seed=2, name="b")]


@pytest.fixture(scope="module")
def table(recordings):
    return clip_window_table(recordings, frames=T, step=STEP, current_rows=ROWS, current_span=SPAN)


@pytest.fixture(scope="module")
def store(tmp_path_factory, recordings, table):
    # Current chunks of 50 rows: many windows straddle a chunk boundary.
    path = make_store(tmp_path_factory.mktemp("ds") / "s.zarr", recordings,
                      chunking=Chunking(chunk_frames=1, shard_frames=16, current_chunk=50), table=table)
    root = zarr.open_group(path, mode="r+")
    root.attrs[schema.ATTR_STATS] = STATS
    return path


def expected_items(path: str, rows: np.ndarray, *, orientation: str, normalized: bool = False,
                   name: str = "w", stats: dict = STATS) -> dict:
    """Items of window-table rows ``rows``, from plain zarr reads and numpy transposes."""
    root = zarr.open_group(path, mode="r")
    tab = root["windows"][name]
    cols = list(tab.attrs["columns"])
    rows_ = tab[:][rows]
    clip_idx = rows_[:, len(schema.WINDOW_COLUMNS):]
    video = root[schema.VIDEO][:][clip_idx]  # (B, T, H, W, 3)
    mask = root[schema.MASK][:][rows_[:, cols.index("frame")]]  # (B, H, W)
    current = root[schema.CURRENT][:]
    # The reference resamples window-local rows: linspace(0, n - 1, rows).astype(int32).
    cur = np.stack([current[a + np.linspace(0, b - a - 1, ROWS).astype(np.int32)]
                    for a, b in rows_[:, [cols.index("current_start"), cols.index("current_stop")]]])
    if orientation == "reference":  # the reference loader's frames: (W, H)
        clip = video.transpose(0, 4, 1, 3, 2)
        mask = mask.transpose(0, 2, 1)
    else:
        clip = video.transpose(0, 4, 1, 2, 3)
    clip = clip.astype(np.float32)
    if normalized:
        clip = ((clip - np.array(stats["video_mean"])[:, None, None, None])
                / np.array(stats["video_std"])[:, None, None, None]).astype(np.float32)
        cur = (cur - np.array(stats["current_mean"])) / np.array(stats["current_std"])
    return {"clip": clip, "mask": mask, "current": cur.astype(np.float32),
            "label": rows_[:, cols.index("label")], "frame": rows_[:, cols.index("frame")],
            "recording": rows_[:, cols.index("recording")]}


def batch_of(ds: FmfWindowDataset, idx) -> dict:
    return {k: v.numpy() for k, v in collate_windows(ds.__getitems__(list(idx))).items()}


def test_reference_items_equal_independent_reads(store):
    ds = FmfWindowDataset(store, "w", preprocessing="reference")
    assert ds.orientation == "reference" and ds.item_frame_shape == (W, H)
    idx = np.arange(len(ds))
    got = batch_of(ds, idx)
    want = expected_items(store, idx, orientation="reference")
    assert got["clip"].shape == (len(ds), 3, T, W, H) and got["clip"].dtype == np.float32
    assert got["mask"].shape == (len(ds), W, H) and got["current"].shape == (len(ds), ROWS, 3)
    for key in ("clip", "mask", "label", "frame", "recording"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_array_equal(got["current"], want["current"])  # raw amperes, exactly
    assert got["label"].sum() > 0 and (got["label"] == 0).sum() > 0
    # Single-item access agrees with the batched path.
    item = ds[7]
    np.testing.assert_array_equal(item["clip"].numpy(), want["clip"][7])
    assert item["label"].dtype == torch.int64 and item["mask"].dtype == torch.uint8


def test_normalized_items_use_stored_stats_and_true_orientation(store):
    ds = FmfWindowDataset(store, "w", preprocessing="normalized", split="test")
    assert ds.orientation == "true" and ds.describe()["normalization"]["video_std"] == STATS["video_std"]
    rows = ds._window
    got = batch_of(ds, range(len(ds)))
    want = expected_items(store, rows, orientation="true", normalized=True)
    np.testing.assert_allclose(got["clip"], want["clip"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["current"], want["current"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["mask"], want["mask"])
    root = zarr.open_group(store, mode="r")
    assert np.all(root[schema.SPLIT][:][got["frame"]] == schema.SPLIT_TEST)


def test_normalized_without_stats_is_a_clear_error(tmp_path, recordings, table):
    path = make_store(tmp_path / "nostats.zarr", recordings[:1],
                      table=clip_window_table(recordings[:1], frames=T, step=STEP, current_rows=ROWS))
    with pytest.raises(FmModelError, match="fmdata stats"):
        FmfWindowDataset(path, "w", preprocessing="normalized")


@pytest.mark.parametrize("preprocessing", ["reference", "normalized"])
def test_flip_moves_clip_and_mask_together(store, preprocessing):
    plain = FmfWindowDataset(store, "w", preprocessing=preprocessing)
    aug = FmfWindowDataset(store, "w", preprocessing=preprocessing, augment=True, seed=3)
    idx = np.arange(len(aug))
    a, p = batch_of(aug, idx), batch_of(plain, idx)
    flipped = a["flipped"]
    assert 0.35 < flipped.mean() < 0.65
    np.testing.assert_array_equal(a["clip"][~flipped], p["clip"][~flipped])
    np.testing.assert_array_equal(a["clip"][flipped], p["clip"][flipped][..., ::-1])
    np.testing.assert_array_equal(a["mask"][flipped], p["mask"][flipped][..., ::-1])
    np.testing.assert_array_equal(a["current"], p["current"])
    # In the true image the reference flip reverses rows (MATLAB's H), the normalized one columns.
    root = zarr.open_group(store, mode="r")
    k = int(np.flatnonzero(flipped & (a["label"] == 1))[0])
    true_mask = root[schema.MASK][int(a["frame"][k])]
    want = true_mask[::-1, :].T if preprocessing == "reference" else true_mask[:, ::-1]
    np.testing.assert_array_equal(a["mask"][k], want)
    # Deterministic for (seed, epoch, window); another epoch or seed flips differently.
    again = FmfWindowDataset(store, "w", preprocessing=preprocessing, augment=True, seed=3)
    np.testing.assert_array_equal(batch_of(again, idx[::-1])["flipped"], flipped[::-1])
    aug.set_epoch(1)
    assert not np.array_equal(batch_of(aug, idx)["flipped"], flipped)
    aug.set_epoch(0)
    np.testing.assert_array_equal(batch_of(aug, idx)["flipped"], flipped)


def test_modality_and_target_select_what_is_read(store):
    video_cls = FmfWindowDataset(store, "w", modality="video", target="cls")
    item = video_cls[0]
    assert "clip" in item and "current" not in item and "mask" not in item
    current_seg = FmfWindowDataset(store, "w", modality="current", target="seg")
    item = current_seg[0]
    assert "clip" not in item and "current" in item and "mask" in item
    assert set(current_seg._readers) == {schema.CURRENT, schema.MASK}


def test_uint8_video_equals_float(store):
    f = batch_of(FmfWindowDataset(store, "w"), range(20))
    u = batch_of(FmfWindowDataset(store, "w", video_dtype="uint8"), range(20))
    assert u["clip"].dtype == np.uint8
    np.testing.assert_array_equal(u["clip"].astype(np.float32), f["clip"])
    with pytest.raises(FmModelError, match="video_dtype"):
        FmfWindowDataset(store, "w", preprocessing="normalized", video_dtype="uint8")


@pytest.mark.parametrize("name", [schema.VIDEO, schema.MASK, schema.CURRENT])
def test_fast_reader_equals_zarr_reader(store, name):
    root = zarr.open_group(store, mode="r")
    fast = open_axis_reader(open_store(store), name, mode="fast", cache_bytes=1 << 16)
    slow = ZarrAxisReader(root[name])
    assert isinstance(fast, LocalAxisReader)
    rng = np.random.default_rng(0)
    n = root[name].shape[0]
    for index in (rng.integers(0, n, 300), np.sort(rng.choice(n, 50, replace=False)), np.array([n - 1, 0, n - 1])):
        np.testing.assert_array_equal(fast.take(index), slow.take(index))
        np.testing.assert_array_equal(fast.take(index), root[name][:][index])
    with pytest.raises(FmDataError):
        fast.take(np.array([n]))


def test_zarr_fallback_dataset_equals_fast(store):
    fast = FmfWindowDataset(store, "w", reader="fast", augment=True)
    slow = FmfWindowDataset(store, "w", reader="zarr", augment=True)
    idx = np.random.default_rng(1).permutation(len(fast))[:64]
    a, b = batch_of(fast, idx), batch_of(slow, idx)
    assert fast._readers[schema.VIDEO].kind == "fast" and slow._readers[schema.VIDEO].kind == "zarr"
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("chunking", [Chunking(8, 16, 64), Chunking(1, None, 7), Chunking(8, None, 1000)],
                         ids=["chunk8-shard16", "chunk1-unsharded", "chunk8-unsharded"])
def test_chunkings_give_identical_items(tmp_path, store, recordings, table, chunking):
    other = make_store(tmp_path / "other.zarr", recordings, chunking=chunking, table=table)
    idx = np.random.default_rng(2).permutation(len(table))[:80]
    a = batch_of(FmfWindowDataset(store, "w", augment=True), idx)
    ds = FmfWindowDataset(other, "w", augment=True)
    b = batch_of(ds, idx)
    assert ds._readers[schema.VIDEO].kind == "fast"
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _epochs(loader, clone: bool) -> list[list[dict]]:
    epochs = []
    for epoch in (0, 1):  # persistent workers must see the new epoch's flips
        set_loader_epoch(loader, epoch)
        epochs.append([{k: v.clone() for k, v in b.items()} if clone else b for b in loader])
    return epochs


def test_loader_with_two_workers_yields_the_same_as_none(store):
    ds = FmfWindowDataset(store, "w", augment=True, seed=5)
    kw = dict(batch_size=32, shuffle=True, seed=11, prefetch_factor=2)
    runs = {
        "none": _epochs(make_loader(ds, workers=0, **kw), clone=False),
        # Workers refill a ring of shared buffers; batches are copied out on arrival, so keeping
        # every batch of two epochs (no clone) must still give intact data.
        "two": _epochs(make_loader(ds, workers=2, **kw), clone=False),
        # Zero-copy views of the ring are only valid until a few batches later: clone at once.
        "two-zero-copy": _epochs(make_loader(ds, workers=2, zero_copy=True, **kw), clone=True),
    }
    n_batches = -(-len(ds) // 32)
    for name in ("two", "two-zero-copy"):
        for e in (0, 1):
            assert len(runs["none"][e]) == len(runs[name][e]) == n_batches
            for b0, b2 in zip(runs["none"][e], runs[name][e]):
                assert b0.keys() == b2.keys()
                for key in b0:
                    torch.testing.assert_close(b0[key], b2[key], rtol=0, atol=0, msg=f"{name} {key}")
    windows0 = torch.cat([b["window"] for b in runs["none"][0]])
    windows1 = torch.cat([b["window"] for b in runs["none"][1]])
    assert sorted(windows0.tolist()) == list(range(len(ds)))
    assert not torch.equal(windows0, windows1)  # another epoch, another order
    flips = {int(w): bool(f) for b in runs["none"][1] for w, f in zip(b["window"], b["flipped"])}
    again = FmfWindowDataset(store, "w", augment=True, seed=5)
    again.set_epoch(1)
    assert [flips[int(w)] for w in again._window] == list(again.flips(np.arange(len(again))))


def test_loader_refuses_fork(store):
    ds = FmfWindowDataset(store, "w")
    with pytest.raises(FmModelError, match="fork"):
        make_loader(ds, batch_size=4, workers=1, context="fork")


def test_pickling_carries_no_handles(store):
    ds = FmfWindowDataset(store, "w")
    first = batch_of(ds, [0, 1])
    assert ds._readers is not None
    blob = pickle.dumps(ds)
    assert b"LocalAxisReader" not in blob
    clone = pickle.loads(blob)
    assert clone._readers is None
    np.testing.assert_array_equal(batch_of(clone, [0, 1])["clip"], first["clip"])


def test_default_collate_also_works(store):
    ds = FmfWindowDataset(store, "w")
    batch = ds.__getitems__([3, 4, 5])
    assert isinstance(batch, WindowBatch) and len(batch) == 3
    collated = torch.utils.data.default_collate(list(batch))
    for k, v in collate_windows(batch).items():
        assert torch.equal(collated[k], v)


def test_window_table_object_and_rows_subset(store, table):
    with pytest.raises(FmModelError, match="rows"):
        FmfWindowDataset(store, "w", rows=[len(table)])
    by_name = FmfWindowDataset(store, "w", rows=np.arange(10, 30))
    by_obj = FmfWindowDataset(store, table, rows=np.arange(10, 30))
    assert len(by_name) == 20
    np.testing.assert_array_equal(batch_of(by_name, range(20))["clip"], batch_of(by_obj, range(20))["clip"])
    np.testing.assert_array_equal(batch_of(by_obj, range(20))["window"], np.arange(10, 30))
    np.testing.assert_array_equal(by_obj.window_rows, np.arange(10, 30))
    np.testing.assert_array_equal(by_obj.labelled_frames, table.column("frame")[10:30])
    np.testing.assert_array_equal(by_obj.recording_ids, table.column("recording")[10:30])


def test_subset_equals_a_dataset_built_with_those_rows(store):
    ds = FmfWindowDataset(store, "w", split="train", augment=True, seed=4)
    pick = np.sort(np.random.default_rng(0).choice(len(ds), size=25, replace=False))
    part, built = ds.subset(pick), FmfWindowDataset(store, "w", split="train", augment=True, seed=4, rows=pick)
    assert len(part) == len(built) == 25 and len(ds) > 25
    for epoch in (0, 1):
        part.set_epoch(epoch)
        built.set_epoch(epoch)
        a, b = batch_of(part, range(25)), batch_of(built, range(25))
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} epoch {epoch}")
    assert ds.epoch == 0  # the subset's epoch is its own
    with pytest.raises(FmModelError, match="rows"):
        ds.subset([len(ds)])


def test_bad_tables_and_names_are_clear_errors(store, table):
    with pytest.raises(FmModelError, match="window table named 'nope'"):
        FmfWindowDataset(store, "nope")
    bad = table.table.copy()
    bad[0, len(schema.WINDOW_COLUMNS)] = 10**9
    with pytest.raises(FmModelError, match="clip frames"):
        FmfWindowDataset(store, type(table)(bad, table.columns, table.params))
    bad = table.table.copy()
    bad[:, schema.WINDOW_COLUMNS.index("current_stop")] = bad[:, schema.WINDOW_COLUMNS.index("current_start")]
    with pytest.raises(FmModelError, match="current row ranges"):
        FmfWindowDataset(store, type(table)(bad, table.columns, table.params))
    with pytest.raises(FmModelError, match="preprocessing"):
        FmfWindowDataset(store, "w", preprocessing="imagenet")


def test_corrupt_shard_index_is_detected(tmp_path, recordings, table):
    path = make_store(tmp_path / "c.zarr", recordings, chunking=Chunking(1, 16), table=table)
    shard = os.path.join(path, schema.VIDEO, "c", "0", "0", "0", "0")
    with open(shard, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"\xff\x00\xff")
    ds = FmfWindowDataset(path, "w")
    with pytest.raises(FmModelError, match="CRC-32C"):
        ds.__getitems__([0])


def test_remote_style_url_reads_through_zarr(tmp_path, recordings, table):
    url = "memory://fmf-dataset-test/s.zarr"
    make_store(url, recordings[:1], table=clip_window_table(recordings[:1], frames=T, step=STEP,
                                                             current_rows=ROWS, current_span=SPAN))
    local = make_store(tmp_path / "l.zarr", recordings[:1], table=clip_window_table(
        recordings[:1], frames=T, step=STEP, current_rows=ROWS, current_span=SPAN))
    remote = FmfWindowDataset(url, "w")
    a, b = batch_of(remote, range(30)), batch_of(FmfWindowDataset(local, "w"), range(30))
    assert remote._readers[schema.VIDEO].kind == "zarr"
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_samplers_are_deterministic_and_balanced():
    labels = np.array([0] * 900 + [1] * 100)
    s = ClassBalancedSampler(labels, seed=4)
    first = list(s)
    assert list(ClassBalancedSampler(labels, seed=4)) == first and len(first) == 1000
    assert 0.4 < labels[first].mean() < 0.6
    s.set_epoch(1)
    assert list(s) != first
    sh = ShuffleSampler(50, seed=1)
    assert sorted(sh) == list(range(50)) and list(sh) == list(ShuffleSampler(50, seed=1))
    parts = [list(ShuffleSampler(50, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(p) == 16 for p in parts) and len(set(sum(parts, []))) == 48


def test_tables_and_stats_from_fmdata_derivations(tmp_path, recordings):
    """The dataset over what `fmdata windows` and `fmdata stats` write (V1 and 2 Hz V2 currents)."""
    from fmdata.compute import DaskOptions
    from fmdata.derive import compute_stats, make_windows
    from fmdata.store import WindowParams, current_row_indices

    v2 = synthetic_recording(260, H, W, seed=3, name="v2", current_hz=2.0)
    path = make_store(tmp_path / "derived.zarr", [recordings[1], v2])
    quiet = DaskOptions(progress=False)
    params = WindowParams(frames=T, frame_step=STEP, current_seconds=3.0, current_rows=ROWS)
    make_windows(path, "ref", params, options=quiet)
    make_windows(path, "strict", WindowParams(**{**params.__dict__, "policy": "strict"}), options=quiet)
    compute_stats(path, options=quiet)
    stats = zarr.open_group(path, mode="r").attrs[schema.ATTR_STATS]
    for name in ("ref", "strict"):
        ds = FmfWindowDataset(path, name, preprocessing="normalized")
        idx = np.arange(len(ds))
        got = batch_of(ds, idx)
        want = expected_items(path, ds._window, orientation="true", normalized=True, name=name, stats=stats)
        np.testing.assert_allclose(got["clip"], want["clip"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["current"], want["current"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["mask"], want["mask"])
        # The rows each window is read as are fmdata.windows' own resampling rule.
        raw = batch_of(FmfWindowDataset(path, name), idx)["current"]
        current = zarr.open_group(path, mode="r")[schema.CURRENT][:]
        starts, stops = ds._cur_start, ds._cur_stop
        for k in range(0, len(ds), 7):
            np.testing.assert_array_equal(
                raw[k], current[current_row_indices(starts[k], stops[k], ROWS)].astype(np.float32))
        assert {0, 1} <= set(got["recording"].tolist()) and got["label"].any()
