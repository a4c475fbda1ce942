"""fmmodel predict: the predictions store, alignment to labelled frames, masks, overlay video."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from fmdata.errors import FmDataError
from fmdata.store import open_store, schema
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import load_reference_model
from fmmodel.runs.train import train
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.predict import predict, read_predictions

from builders import cached_store, store64_with_table
from runs import FIXTURES, learned_run, needs_fixtures, quick_config


def _fmmodel(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "fmmodel")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_class_predictions_align_with_frames_and_agree_with_evaluate(tmp_path_factory, tmp_path):
    run, store = learned_run(tmp_path_factory)
    out = tmp_path / "pred.zarr"
    r = _fmmodel("predict", "--store", store, "--checkpoint", os.path.join(run, "last.pt"), "--out", str(out),
                 "--split", "test", "--workers", "0", "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    pred = read_predictions(str(out))
    assert pred["prob"].metadata.dimension_names == ("window", "class")
    assert pred["frame"].metadata.dimension_names == ("window",)
    assert "mask_pred" not in pred
    frames, prob = pred["frame"][:], pred["prob"][:]
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    root = open_store(store)
    split = np.asarray(root[schema.SPLIT][:])
    # one row per labelled frame of the test split, in frame order, with its split and label
    np.testing.assert_array_equal(frames, np.flatnonzero(split == schema.SPLIT_TEST))
    np.testing.assert_array_equal(pred["split"][:], split[frames])
    np.testing.assert_array_equal(pred["label"][:], np.asarray(root[schema.FRAME_LABEL][:])[frames])
    np.testing.assert_array_equal(pred["recording"][:], np.asarray(root[schema.RECORDING][:])[frames])
    # F1 on the test rows, recomputed with numpy, equals what evaluate reports
    y, yhat = pred["label"][:] == 1, prob[:, 1] >= 0.5
    tp, fp, fn = np.sum(y & yhat), np.sum(~y & yhat), np.sum(y & ~yhat)
    report = evaluate(store, os.path.join(run, "last.pt"), workers=0, device="cpu", progress=False)
    assert report["metrics"]["overall"]["class"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-6)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_existing_output_is_refused_unless_overwrite(tmp_path_factory, tmp_path):
    run, store = learned_run(tmp_path_factory)
    out = tmp_path / "p.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FmModelError, match="overwrite"):
        predict(store, os.path.join(run, "last.pt"), str(out), device="cpu", workers=0, progress=False)
    assert (out / "keep.txt").read_text() == "user data"
    # --overwrite replaces an earlier predictions store, never other data (nor the store it reads)
    with pytest.raises(FmDataError, match="not a predictions store"):
        predict(store, os.path.join(run, "last.pt"), str(out), overwrite=True, device="cpu", workers=0,
                progress=False)
    assert (out / "keep.txt").read_text() == "user data"
    for inside in (store, os.path.dirname(store)):
        with pytest.raises(FmDataError, match="apart from the store it reads") as err:
            predict(store, os.path.join(run, "last.pt"), inside, overwrite=True, device="cpu", workers=0,
                    progress=False)
        assert err.value.field == "out"
    assert open_store(store) is not None
    out = tmp_path / "new" / "folder" / "q.zarr"  # its folders are made, as for every output
    predict(store, os.path.join(run, "last.pt"), str(out), split="train", device="cpu", workers=0, progress=False)
    holder = subprocess.Popen(  # another process writing there: a second writer stops at once, naming it
        [sys.executable, "-c", "import sys, time; from fmdata.store.lock import writer_lock\n"
         "with writer_lock(sys.argv[1], 'fmmodel predict (other)'):\n    print('held', flush=True); time.sleep(60)",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FmDataError, match=r"fmmodel predict \(other\)"):
            predict(store, os.path.join(run, "last.pt"), str(out), split="test", overwrite=True, device="cpu",
                    workers=0, progress=False)
    finally:
        holder.kill()
        holder.wait()
    summary = predict(store, os.path.join(run, "last.pt"), str(out), split="test", overwrite=True, device="cpu",
                      workers=0, progress=False)
    assert read_predictions(str(out))["frame"].shape == (summary["windows"],)
    with pytest.raises(FmModelError, match="expected a local path"):
        predict(store, os.path.join(run, "last.pt"), "s3://bucket/p.zarr", device="cpu", workers=0, progress=False)
    assert not os.path.exists("s3:")


def test_segmentation_masks_come_back_in_store_orientation_with_a_video(tmp_path_factory, tmp_path):
    # a non-square store and reference preprocessing: the model sees transposed (W, H) frames
    store = cached_store(tmp_path_factory, "wide", recordings=1, frames=900, size=(32, 48), seed=5)
    run = tmp_path / "seg"
    res = train(quick_config(store, str(run), task="seg", preprocessing="reference", max_steps_per_epoch=2,
                             current_seconds=4.0, current_rows=16), progress=False)
    assert res.model.config.image_size == (48, 32)
    out, video = tmp_path / "seg.zarr", tmp_path / "overlay.mp4"
    summary = predict(store, str(run / "last.pt"), str(out), split="test", device="cpu", workers=0,
                      progress=False, video=str(video), video_max_frames=40)
    pred = read_predictions(str(out))
    masks = pred["mask_pred"][:]
    assert masks.shape == (summary["windows"], 32, 48)
    assert pred["mask_pred"].metadata.dimension_names == ("window", "y", "x")
    # recompute two windows by hand: transpose the store's frames, run the model, transpose back
    root = open_store(store)
    from fmmodel.model.checkpoint import load_model

    model, meta = load_model(str(run / "last.pt"))
    frames = pred["frame"][:2]
    video_all = np.asarray(root[schema.VIDEO][:])
    table_clip = frames[:, None] - (np.arange(10)[::-1] * 6)[None]
    clip = np.maximum(table_clip, 0)
    x = torch.from_numpy(np.transpose(video_all[clip], (0, 4, 1, 3, 2)).astype(np.float32))  # (B,3,T,W,H)
    from fmmodel.scoring.predict import ATTR_PREDICTIONS

    wp = pred.attrs[ATTR_PREDICTIONS]["window_params"]
    cur_all = np.asarray(root[schema.CURRENT][:])
    fce = np.asarray(root[schema.FRAME_CURRENT_END][:])
    t = np.asarray(root[schema.CURRENT_TIME][:])
    cur = []
    for f in frames:
        stop = fce[f]
        start = np.searchsorted(t[:stop], t[stop - 1] - wp["current_seconds"], side="right")
        cur.append(cur_all[np.linspace(start, stop - 1, wp["current_rows"]).astype(np.int64)])
    with torch.no_grad():
        logits = model(video=x, current=torch.from_numpy(np.stack(cur).astype(np.float32)))
    expect = np.swapaxes((torch.softmax(logits, 1)[:, 1] >= 0.5).numpy().astype(np.uint8), 1, 2)
    agree = np.mean(expect == masks[:2])
    assert agree > 0.999, agree
    cap = cv2.VideoCapture(str(video))
    n, shape = 0, None
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n, shape = n + 1, img.shape
    assert n == min(40, summary["windows"]) and shape[1] == 48 * 4 and shape[0] > 32 * 4
    # --overwrite replaces predict's own store and video (and nothing else: tests/test_overwrite.py)
    predict(store, str(run / "last.pt"), str(out), split="test", device="cpu", workers=0, progress=False,
            video=str(video), video_max_frames=10, overwrite=True)
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == min(10, summary["windows"])
    cap.release()


@needs_fixtures
def test_reference_checkpoint_predictions_match_a_by_hand_reference_forward(tmp_path_factory, tmp_path):
    store = store64_with_table(tmp_path_factory)
    with np.load(FIXTURES / "vicu_cls.npz") as z:
        sd = {k[len("state/"):]: torch.from_numpy(np.array(z[k])) for k in z.files if k.startswith("state/")}
    ckpt = tmp_path / "state_dict_vicu_cls.pth"
    torch.save(sd, ckpt)
    out = tmp_path / "ref.zarr"
    predict(store, str(ckpt), str(out), fmt="reference", split="test", windows="ref10", device="cpu", workers=0,
            progress=False, batch_size=16)
    pred = read_predictions(str(out))
    frames, prob = pred["frame"][:], pred["prob"][:, 1]
    # the authors' loader: clip ending at f stepping back 18 frames, frames read as (T, C, W, H)
    # -> (C, T, W, H), float 0..255; current = the last 120 s, 240 rows by index resampling
    root = open_store(store)
    video = np.asarray(root[schema.VIDEO][:])
    cur_all, t = np.asarray(root[schema.CURRENT][:]), np.asarray(root[schema.CURRENT_TIME][:])
    fce = np.asarray(root[schema.FRAME_CURRENT_END][:])
    pick = np.array([0, len(frames) // 2, len(frames) - 1])
    clips, currents = [], []
    for f in frames[pick]:
        idx = f - np.arange(9, -1, -1) * 18
        clips.append(np.transpose(video[idx], (3, 0, 2, 1)).astype(np.float32))
        stop = fce[f]
        start = np.searchsorted(t[:stop], t[stop - 1] - 120.0, side="right")
        currents.append(cur_all[np.linspace(start, stop - 1, 240).astype(np.int32)].astype(np.float32))
    model = load_reference_model(FIXTURES / "vicu_cls.npz")
    with torch.no_grad():
        logits = model(video=torch.from_numpy(np.stack(clips)), current=torch.from_numpy(np.stack(currents)))
    np.testing.assert_allclose(prob[pick], torch.softmax(logits, 1)[:, 1].numpy(), rtol=1e-4, atol=1e-6)
