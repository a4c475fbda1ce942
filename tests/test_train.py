"""fmmodel train: the validation hold-out, the run folder, resume, bad input, and that it learns."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fmdata.derive import build_window_table, ensure_labels, load_index
from fmdata.store import WindowParams, open_store, schema
from fmmodel.data.holdout import holdout_split
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import load_checkpoint
from fmmodel.runs.config import TrainConfig
from fmmodel.runs.train import resume_run, train
from fmmodel.scoring.evaluate import evaluate

from builders import cached_store
from runs import SMALL_WINDOWS, learned_run, quick_config


def test_holdout_is_a_tail_block_of_training_windows_with_no_shared_input(tmp_path_factory):
    path = cached_store(tmp_path_factory)
    root = open_store(path)

    ensure_labels(path)
    root = open_store(path)
    wt = build_window_table(load_index(root), WindowParams(**SMALL_WINDOWS))
    f_off, _ = root.offsets
    fce = np.asarray(root[schema.FRAME_CURRENT_END][:])
    tr, va, info = holdout_split(wt, fce, f_off, 0.1)
    split, rec, frame = wt.column("split"), wt.column("recording"), wt.column("frame")
    assert np.all(split[tr] == schema.SPLIT_TRAIN) and np.all(split[va] == schema.SPLIT_TRAIN)
    assert not set(tr) & set(va)
    assert info["val_windows"] == len(va) and "never the test split" in info["note"]
    for r in np.unique(rec):
        t_r, v_r = tr[rec[tr] == r], va[rec[va] == r]
        all_train = np.flatnonzero((split == schema.SPLIT_TRAIN) & (rec == r))
        # validation is the tail: every training-split window after the first validation frame
        assert set(v_r) == set(all_train[frame[all_train] >= frame[v_r].min()])
        assert len(v_r) == int(np.ceil(0.1 * len(all_train)))
        # inputs (clip frames and the frames whose current rows a window reads) never overlap
        clip_tr, clip_va = wt.clip[t_r], wt.clip[v_r]
        cur_first_va = np.searchsorted(fce, wt.column("current_start")[v_r], side="right")
        assert clip_tr.max() < min(clip_va.min(), cur_first_va.min())
        # and training windows lost to the gap are no more than one window span's worth
        span = max(int(SMALL_WINDOWS["current_seconds"] * 25), (SMALL_WINDOWS["frames"] - 1) * SMALL_WINDOWS["frame_step"])
        dropped = len(all_train) - len(v_r) - len(t_r)
        assert 0 < dropped <= span + 1
    tr0, va0, _ = holdout_split(wt, fce, f_off, 0.0)
    assert len(va0) == 0 and len(tr0) == int(np.sum(split == schema.SPLIT_TRAIN))


def test_config_round_trip_and_unknown_keys():
    cfg = TrainConfig("s.zarr", "run", task="seg", modality="both", epochs=3, window=WindowParams.reference(
        "both", frames=4), model={"size": "tiny"})
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.variant == "vicu_seg" and again.window.frames == 4
    assert TrainConfig("s", "r", modality="video", window=WindowParams.reference("video")).window.frames == 8
    with pytest.raises(FmModelError, match="unknown"):
        TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 1.0})
    with pytest.raises(FmModelError, match="modality/task"):
        TrainConfig("s", "r", task="seg", modality="current")


def test_it_learns_and_leaves_a_complete_run_folder(tmp_path_factory):
    """A small cross-modal classifier reaches class F1 >= 0.9 on the synthetic test split."""
    run, store = learned_run(tmp_path_factory)
    names = set(os.listdir(run))
    assert {"config.json", "last.pt", "best.pt", "metrics.csv", "tb"} <= names
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run, "tb")))
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["validation"]["fraction"] == 0.0 and cfg["validation"]["train_windows"] > 1000
    rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    assert [int(r["epoch"]) for r in rows] == list(range(1, cfg["epochs"] + 1))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    ck = load_checkpoint(os.path.join(run, "last.pt"))
    assert ck.meta.orientation == "true" and ck.meta.preprocessing["name"] == "normalized"
    assert ck.meta.info["fps"] == 25.0  # the rate its windows' frame steps were counted at (fmmodel watch checks it)
    assert ck.extra["epoch"] == cfg["epochs"] and isinstance(ck.extra["rng"]["torch"], torch.Tensor)
    report = evaluate(store, os.path.join(run, "last.pt"), workers=0, device="cpu", progress=False)
    c = report["metrics"]["overall"]["class"]
    print("learned:", report["summary"])
    assert c["f1"] >= 0.9, report["summary"]


def test_resume_continues_exactly_where_it_stopped(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    straight = train(quick_config(store, str(tmp_path / "straight"), epochs=2), progress=False)
    first = train(quick_config(store, str(tmp_path / "split"), epochs=1), progress=False)
    assert len(first.history) == 1
    resumed = resume_run(str(tmp_path / "split"), epochs=2, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    a = straight.model.state_dict()
    b = resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-6)
    # the run folder is never silently reused
    with pytest.raises(FmModelError, match="--resume"):
        train(quick_config(store, str(tmp_path / "split"), epochs=1), progress=False)


def _fmmodel(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "fmmodel")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_cli_bad_input_is_one_line(tmp_path):
    r = _fmmodel("train", "--store", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "missing.zarr" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _fmmodel("train", "--out", str(tmp_path / "run"), "--resume")
    assert r.returncode == 1 and "last.pt" in r.stderr and "Traceback" not in r.stderr
    r = _fmmodel("train", "--store", str(tmp_path / "s.zarr"), "--windows", "w", "--frames", "8")
    assert r.returncode == 2 and "--windows trains on a stored table's own windows" in r.stderr
    assert not (tmp_path / "runs").exists() and "Traceback" not in r.stderr
