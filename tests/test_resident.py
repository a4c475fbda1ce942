"""The resident data path (fmmodel.data.resident, fmmodel.data.paths): the same batches as the lazy path.

Every comparison is against the lazy dataset and DataLoader over the same real store, which
tests/test_dataset.py checks against independent zarr reads.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
import zarr

import fmdata.store.block_reader
from fmdata.store import Chunking, schema
from fmdata.store.checksums import block_checksums, checksum_attr, read_checksums
from fmmodel.data.dataset import FmfWindowDataset
from fmmodel.data.paths import BatchRequest, choose_data_path, open_batches
from fmmodel.data.resident import ResidentLoader, ResidentPlan, ResidentWindows
from fmmodel.data.sampling import make_loader, make_sampler, set_loader_epoch
from fmmodel.errors import FmModelError
from fmmodel.runs.train import train
from fmmodel.runtime import distributed as dd
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.predict import predict, read_predictions

from builders import cached_store, clip_window_table, make_store, synthetic_recording
from runs import quick_config

T, STEP, ROWS, SPAN = 4, 5, 16, 40
STATS = {"video_mean": [100.0, 70.0, 45.0], "video_std": [30.0, 20.0, 12.0],
         "current_mean": [9000.0, 9100.0, 8900.0], "current_std": [900.0, 1000.0, 1100.0]}


def _store(path, h: int, w: int, chunking: Chunking) -> str:
    recs = [synthetic_recording(330, h, w, seed=1, name="a"), synthetic_recording(170, h, w, seed=2, name="b")]
    table = clip_window_table(recs, frames=T, step=STEP, current_rows=ROWS, current_span=SPAN)
    out = make_store(path, recs, chunking=chunking, table=table)
    zarr.open_group(out, mode="r+").attrs[schema.ATTR_STATS] = STATS
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 12x20 frames: a plane is 240 bytes (whole 8-byte words); current chunks of 50 rows
    return _store(tmp_path_factory.mktemp("res") / "s.zarr", 12, 20, Chunking(1, 16, 50))


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory):
    # 7x5 frames: 35-pixel planes and masks that do not fill their last packed byte
    return _store(tmp_path_factory.mktemp("res") / "odd.zarr", 7, 5, Chunking(4, 32, 64))


def _lazy_and_resident(ds, sampler, batch_size=32, epochs=(0, 1)):
    """Yield (epoch, lazy batches, resident batches) for the same dataset and sampler."""
    lazy = make_loader(ds, batch_size, 0, sampler=sampler)
    resident = ResidentLoader(ds, ResidentWindows.load(ds, "cpu"), batch_size, sampler)
    assert len(lazy) == len(resident)
    for epoch in epochs:
        set_loader_epoch(lazy, epoch)
        a = [{k: v.clone() for k, v in b.items()} for b in lazy]
        set_loader_epoch(resident, epoch)
        yield epoch, a, list(resident)


def _assert_same(a, b, what):
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b)):
        assert list(x) == list(y), what
        for key in x:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, f"{what} batch {i} {key}"
            assert torch.equal(x[key], y[key]), f"{what} batch {i} {key}"


@pytest.mark.parametrize("modality", ["both", "video", "current"])
@pytest.mark.parametrize("preprocessing,video_dtype", [("reference", "float32"), ("reference", "uint8"),
                                                       ("normalized", "float32")])
def test_resident_batches_equal_lazy_batches(store, preprocessing, video_dtype, modality):
    ds = FmfWindowDataset(store, "w", preprocessing=preprocessing, video_dtype=video_dtype, modality=modality,
                          target="both", augment=True, seed=3)
    for balanced in (False, True):
        sampler = make_sampler(ds, shuffle=not balanced, balanced=balanced, seed=7)
        flips = []
        for epoch, lazy, resident in _lazy_and_resident(ds, sampler):
            _assert_same(lazy, resident, f"{preprocessing}/{video_dtype}/{modality} balanced={balanced} e{epoch}")
            flips.append(torch.cat([b["flipped"] for b in resident]))
        assert 0 < int(flips[0].sum()) < len(flips[0])  # flips happen, and not to every window
        assert not torch.equal(flips[0], flips[1])  # another epoch, other flips


def test_odd_frame_sizes_and_sequential_order(odd_store):
    ds = FmfWindowDataset(odd_store, "w", preprocessing="reference", target="seg", augment=True, seed=1)
    assert ds.item_frame_shape == (5, 7)
    for _, lazy, resident in _lazy_and_resident(ds, None, batch_size=24, epochs=(0,)):
        _assert_same(lazy, resident, "odd, in order")
        assert torch.equal(torch.cat([b["window"] for b in resident]), torch.as_tensor(ds.window_rows))
        assert resident[-1]["label"].shape[0] == len(ds) % 24 or len(ds) % 24 == 0


def test_a_rank_holds_only_its_windows(store):
    ds = FmfWindowDataset(store, "w", target="seg", split="test")
    sampler = dd.ShardSampler(len(ds), rank=1, world_size=3)
    request = BatchRequest(ds, 16, sampler, evaluation=True)
    items = request.items()
    np.testing.assert_array_equal(items, np.arange(1, len(ds), 3))
    whole, part = ResidentPlan.of(ds), ResidentPlan.of(ds, items)
    assert part.n_items == len(items) and part.frames.size < whole.frames.size
    assert part.total_bytes < whole.total_bytes
    windows = ResidentWindows.load(ds, "cpu", items=items)
    _assert_same(list(make_loader(ds, 16, 0, sampler=sampler)), list(ResidentLoader(ds, windows, 16, sampler)),
                 "rank 1 of 3")
    with pytest.raises(FmModelError, match="resident copy holds"):  # another rank's windows are not there
        list(ResidentLoader(ds, windows, 16, dd.ShardSampler(len(ds), rank=0, world_size=3)))


def test_auto_choice_follows_the_budget():
    cpu = torch.device("cpu")
    fits = choose_data_path("auto", 1000, cpu, budget=1000)
    assert fits.path == "resident" and "needs" in fits.reason and fits.budget_source == "--resident-budget"
    over = choose_data_path("auto", 1001, cpu, budget=1000, workers=3)
    assert over.path == "lazy" and over.workers == 3 and "auto" in over.summary()
    assert choose_data_path("resident", 10**15, cpu, budget=None).path == "resident"  # asked for: taken
    default = choose_data_path("auto", 1, cpu, budget=None)
    assert default.path == "resident" and "available RAM" in default.budget_source and default.budget_bytes > 0
    with pytest.raises(FmModelError, match="data path") as exc:
        choose_data_path("eager", 1, cpu, budget=None)
    assert exc.value.field == "data"


def test_resident_load_streams_block_by_block(tmp_path, monkeypatch):
    """Host memory the load allocates is about a scan block, never a second copy of the data."""
    path = _store(tmp_path / "big.zarr", 32, 32, Chunking(1, 16, 4096))
    monkeypatch.setattr(fmdata.store.block_reader, "TARGET_BLOCK_BYTES", 64 * 1024)  # 1 shard of 16 frames
    ds = FmfWindowDataset(path, "w", target="seg")
    plan = ResidentPlan.of(ds)
    tracemalloc.start()  # numpy buffers are traced; the resident tensors themselves are torch's
    try:
        windows = ResidentWindows.load(ds, "cpu", plan=plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.nbytes["video"] == plan.frames.size * 3 * 32 * 32 > 1_000_000
    assert peak < plan.nbytes["video"] / 4, (peak, plan.nbytes)
    assert windows.describe()["total_bytes"] == plan.total_bytes
    ds2 = FmfWindowDataset(path, "w", target="seg")
    _assert_same([b for b in make_loader(ds2, 64, 0)], list(ResidentLoader(ds2, windows, 64)), "streamed")


def test_masks_other_than_0_1_are_refused(tmp_path):
    path = _store(tmp_path / "m.zarr", 12, 20, Chunking(1, 16, 50))
    root = zarr.open_group(path, mode="r+")
    mask = root[schema.MASK][:]
    mask[mask == 1] = 255
    root[schema.MASK][:] = mask  # a valid store with other values: its recorded checksums follow them
    rows, _ = read_checksums(root[schema.MASK])
    root[schema.MASK].attrs[schema.ATTR_CHECKSUMS] = checksum_attr(rows, block_checksums(mask, rows))
    ds = FmfWindowDataset(path, "w", target="seg")
    with pytest.raises(FmModelError, match="0/1"):
        ResidentWindows.load(ds, "cpu")
    # classifiers never read masks: resident works
    cls = FmfWindowDataset(path, "w", target="cls")
    assert ResidentWindows.load(cls, "cpu").describe()["mask_frames"] == 0


@pytest.mark.parametrize("task", ["cls", "seg"])
def test_training_resident_or_lazy_ends_with_equal_weights(tmp_path_factory, tmp_path, task):
    store = cached_store(tmp_path_factory)
    runs = {}
    for data in ("lazy", "resident"):
        runs[data] = train(quick_config(store, str(tmp_path / data), task=task, epochs=2, max_steps_per_epoch=3,
                                        balanced=task == "cls", data=data), progress=False)
    a, b = runs["lazy"].model.state_dict(), runs["resident"].model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    for ra, rb in zip(runs["lazy"].history, runs["resident"].history):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_loss"] == rb["val_loss"]
    cfg = json.load(open(tmp_path / "resident" / "config.json"))
    assert cfg["data"] == "resident" and cfg["runtime"]["data"]["path"] == "resident"
    loaded = cfg["runtime"]["data"]["resident"]
    assert len(loaded) == 2 and all(r["total_bytes"] > 0 for r in loaded)  # training and validation windows
    assert json.load(open(tmp_path / "lazy" / "config.json"))["runtime"]["data"]["path"] == "lazy"


def test_auto_over_budget_trains_lazy_and_says_why(tmp_path_factory, tmp_path, capfd):
    store = cached_store(tmp_path_factory)
    train(quick_config(store, str(tmp_path / "run"), epochs=1, max_steps_per_epoch=1, data="auto",
                       resident_budget=1000), progress=False)
    data = json.load(open(tmp_path / "run" / "config.json"))["runtime"]["data"]
    assert data["requested"] == "auto" and data["path"] == "lazy" and data["budget_bytes"] == 1000
    assert "data: lazy (auto: needs" in capfd.readouterr().err


def test_evaluate_and_predict_resident_equal_lazy(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory, "resident-small", recordings=2, frames=600, size=16)
    train(quick_config(store, str(tmp_path / "seg"), task="seg", epochs=1, max_steps_per_epoch=2, val_fraction=0.0,
                       current_seconds=4.0), progress=False)
    ckpt = str(tmp_path / "seg" / "last.pt")
    reports = {data: evaluate(store, ckpt, workers=0, device="cpu", progress=False, data=data)
               for data in ("lazy", "resident")}
    assert reports["resident"]["data"]["path"] == "resident" and reports["lazy"]["data"]["path"] == "lazy"
    assert reports["resident"]["metrics"] == reports["lazy"]["metrics"]
    preds = {}
    for data in ("lazy", "resident"):
        out = tmp_path / f"{data}.zarr"
        s = predict(store, ckpt, str(out), split="test", workers=0, device="cpu", progress=False, data=data)
        assert s["data"]["path"] == data
        preds[data] = read_predictions(str(out))
    for name in ("frame", "recording", "label", "prob", "pred", "mask_pred"):
        np.testing.assert_array_equal(preds["lazy"][name][:], preds["resident"][name][:], err_msg=name)


def test_open_batches_under_one_process_context(store):
    ds = FmfWindowDataset(store, "w", split="train")
    ctx = dd.DistContext()
    (source,), choice = open_batches([BatchRequest(ds, 8, make_sampler(ds, shuffle=True))], data="auto",
                                     budget=None, workers=2, ctx=ctx)
    assert choice.path == "resident" and choice.workers == 0 and isinstance(source, ResidentLoader)
    assert choice.need_bytes == ResidentPlan.of(ds).total_bytes == choice.resident[0]["total_bytes"]
    assert sum(int(b["label"].shape[0]) for b in source) == len(ds)


def _fmmodel(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "fmmodel")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_bench_data_cli(store):
    runs = {}
    for data in ("lazy", "resident"):
        r = _fmmodel("bench-data", "--store", store, "--windows", "w", "--data", data, "--workers", "0",
                     "--batch-size", "16", "--limit", "100", "--device", "cpu", "--threads", "1", "--json")
        assert r.returncode == 0, r.stderr
        runs[data] = json.loads(r.stdout)
        assert runs[data]["path"] == data and runs[data]["items"] == 100 and runs[data]["windows_per_s"] > 0
    assert runs["resident"]["data"]["resident"][0]["items"] == 100
    r = _fmmodel("bench-data", "--store", store, "--windows", "w", "--data", "resident", "--workers", "0",
                 "--limit", "100", "--device", "cpu", "--threads", "1")
    assert r.returncode == 0, r.stderr
    loads = re.findall(r"\bload(?:ed)?\b", r.stdout + r.stderr)  # the resident load is reported once
    assert "100 windows" in r.stdout and len(loads) == 1, (r.stdout, r.stderr)
    r = _fmmodel("bench-data", "--store", store, "--windows", "w", "--resident-budget", "lots")
    assert r.returncode == 2 and "--resident-budget" in r.stderr and "Traceback" not in r.stderr
