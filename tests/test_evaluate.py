"""fmmodel evaluate: toolkit and reference checkpoints, the report and pictures, refused pickles."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from fmdata.derive import build_window_table, load_index
from fmdata.store import WindowParams, open_store, schema
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import save_checkpoint
from fmmodel.model.registry import build_model
from fmmodel.runs.train import train
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.predict import predict, read_predictions
from fmmodel.scoring.report import (
    OUTCOMES,
    Example,
    choose_examples,
    curve_titles,
    example_captions,
    outcome,
    write_report,
)

from builders import SHORT_WINDOWS, cached_store, converted_store, store64_with_table
from runs import FIXTURES, LEARN_STORE, learned_run, needs_fixtures, quick_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fmmodel(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "fmmodel")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def _test_windows(store, report):
    """Number of test-split windows the evaluator should have scored (stride 1, its parameters)."""

    p = report["windows"]["params"]
    wp = WindowParams(**{k: p[k] for k in ("frames", "frame_step", "current_seconds", "current_rows", "policy")})
    wt = build_window_table(load_index(open_store(store)), wp)
    return int(np.sum(wt.column("split") == schema.SPLIT_TEST))


def test_evaluate_cli_writes_report_and_pictures(tmp_path_factory, tmp_path):
    run, store = learned_run(tmp_path_factory)
    out = tmp_path / "eval"
    r = _fmmodel("evaluate", store, "--checkpoint", os.path.join(run, "best.pt"), "--out", str(out),
                 "--workers", "0", "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "class level" in r.stdout and str(out / "report.json") in r.stdout
    report = json.load(open(out / "report.json"))
    for name in ("roc.png", "pr.png", "confusion.png", "examples.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    c = report["metrics"]["overall"]["class"]
    assert c["n"] == report["windows"]["count"] == _test_windows(store, report)
    assert sum(map(sum, c["confusion"])) == c["n"]
    per = report["metrics"]["recordings"]
    assert sum(e["class"]["n"] for e in per.values()) == c["n"]
    assert all(e["name"].startswith("synth-") for e in per.values())
    assert len(per) == LEARN_STORE["recordings"]
    for k in ("accuracy", "f1", "precision", "recall", "fdr", "mdr", "auroc", "ap"):
        assert 0.0 <= c[k] <= 1.0
    assert report["fps"] > 0 and report["split"] == "test" and report["orientation"] == "true"
    # the pictures say what they show: the curves' titles name model, checkpoint, split and samples
    titles = curve_titles(report)
    (tn, fp), (fn, tp) = c["confusion"]
    assert titles["what"].startswith(f"{report['variant']} (") and titles["what"].endswith("best.pt), test split")
    assert titles["class"] == f"{c['n']:,} windows ({fn + tp:,} abnormal, {tn + fp:,} normal)"
    # the examples: headed by outcome, named by recording as the tables name them, different stretches
    shown = report["examples"]
    names = {e["name"] for e in per.values()}
    assert len(shown) == 8 and {e["recording"] for e in shown} <= names
    assert len({e["outcome"] for e in shown}) >= 3 and {e["outcome"] for e in shown} <= {n for n, _ in OUTCOMES}
    p = report["windows"]["params"]
    span = (p["frames"] - 1) * p["frame_step"] + 1
    for i, a in enumerate(shown):
        for b in shown[i + 1:]:
            assert a["recording"] != b["recording"] or abs(a["frame"] - b["frame"]) >= span, (a, b)
    # a report that fails half-way leaves no folder it made (the curves were written before the failure)
    bad = Example(image=np.zeros((8, 8, 5), np.uint8), true_mask=np.ones((8, 8), np.uint8), pred_mask=None,
                  recording="x", frame=0, seconds=0.0, label=1, prob=0.9)
    with pytest.raises(ValueError):
        write_report(tmp_path / "new" / "eval", report, examples=[bad])
    assert sorted(os.listdir(tmp_path)) == ["eval"]


def test_examples_come_from_different_stretches_of_the_recordings():
    """The examples picture (issue 18): per outcome, most confident first, but never two frames of
    the same stretch (a window span apart), other recordings first."""
    rng = np.random.default_rng(0)
    n = 3000
    recording = np.repeat([0, 1, 2], n // 3)
    frame = np.tile(np.arange(n // 3), 3)
    target = (rng.random(n) < 0.4).astype(np.int64)
    prob = np.where(target == 1, rng.uniform(0.3, 0.9, n), rng.uniform(0.05, 0.7, n))
    # a run of very confident neighbouring hits in recording 1: the old choice took all of them
    prob[1200:1220], target[1200:1220] = 0.999, 1
    chosen = choose_examples(prob, target, recording, frame, k=8, min_gap=163)
    assert len(chosen) == 8 and len(set(chosen)) == 8
    outcomes = [outcome(int(target[i]), float(prob[i])) for i in chosen]
    assert sorted(outcomes) == sorted(n for n, _ in OUTCOMES for _ in range(2))  # two of each, round after round
    for a in chosen:
        for b in chosen:
            assert a == b or recording[a] != recording[b] or abs(frame[a] - frame[b]) >= 163
    hits = [i for i, o in zip(chosen, outcomes) if o == "hit"]
    assert 1200 <= hits[0] < 1220 and recording[hits[1]] != recording[hits[0]]  # the best, then another recording


def test_segmentation_report_has_pixel_metrics(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    run = tmp_path / "seg"
    train(quick_config(store, str(run), task="seg", max_steps_per_epoch=3), progress=False)
    report = evaluate(store, str(run / "last.pt"), out=str(tmp_path / "eval"), workers=0, device="cpu",
                      progress=False, examples=4)
    p = report["metrics"]["overall"]["pixel"]
    n = report["metrics"]["overall"]["class"]["n"]
    assert p["pixels"] == n * 32 * 32 == sum(map(sum, p["confusion"]))
    for k in ("pixel_accuracy", "mean_pixel_accuracy", "miou", "auroc", "ap"):
        assert 0.0 <= p[k] <= 1.0, k
    assert len(p["iou"]) == 2 and p["auc_thresholds"] > 100
    assert all("pixel" in e for e in report["metrics"]["recordings"].values())
    assert (tmp_path / "eval" / "examples.png").read_bytes()[:8] == PNG_MAGIC


def _reference_pth(tmp_path, variant="vicu_cls"):
    with np.load(FIXTURES / f"{variant}.npz") as z:
        sd = {k[len("state/"):]: torch.from_numpy(np.array(z[k])) for k in z.files if k.startswith("state/")}
    path = tmp_path / f"state_dict_{variant}.pth"
    torch.save(sd, path)  # exactly how the authors publish theirs: a plain state_dict
    return path


@pytest.fixture(scope="module")
def store64(tmp_path_factory):
    return store64_with_table(tmp_path_factory)


@needs_fixtures
def test_reference_checkpoint_evaluates_with_reference_inputs(store64, tmp_path):
    ckpt = _reference_pth(tmp_path)
    # a stored reference-shaped table (10 frames step 18, 240 rows over 120 s), every 10th window
    r = _fmmodel("evaluate", "--store", store64, "--checkpoint", str(ckpt), "--format", "reference",
                 "--windows", "ref10", "--out", str(tmp_path / "ev"), "--workers", "0", "--device", "cpu",
                 "--no-progress", "--batch-size", "16")
    assert r.returncode == 0, r.stderr
    report = json.load(open(tmp_path / "ev" / "report.json"))
    assert report["variant"] == "vicu_cls" and report["orientation"] == "reference"
    assert report["preprocessing"] == "reference" and report["windows"]["name"] == "ref10"
    table = open_store(store64).window_table("ref10")
    assert report["windows"]["count"] == int(np.sum(table.column("split") == schema.SPLIT_TEST)) > 0
    # a table whose clips do not fit the model is refused
    with pytest.raises(FmModelError, match="10 frames"):
        evaluate(store64, str(ckpt), fmt="reference", windows="short", device="cpu", workers=0, progress=False)


class _Marker:
    """Unpickling this would create a file: proof that refused checkpoints run no code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_checkpoint_with_a_pickled_object_is_refused(store64, tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "fmf-toolkit-checkpoint", "state_dict": {}, "payload": _Marker(str(marker))}, evil)
    for fmt in ("auto", "reference", "toolkit"):
        with pytest.raises(FmModelError, match="pickled Python object"):
            evaluate(store64, str(evil), fmt=fmt, device="cpu", workers=0, progress=False)
    r = _fmmodel("evaluate", "--store", store64, "--checkpoint", str(evil), "--device", "cpu")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "pickled" in r.stderr and str(evil) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    with pytest.raises(FmModelError, match="none.pt"):
        evaluate(store64, str(tmp_path / "none.pt"), device="cpu", progress=False)


def test_example_captions_say_what_each_picture_shows():
    img, mask = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    cls = [Example(image=img, true_mask=mask, pred_mask=None, recording="batch_05", frame=1205, seconds=48.2,
                   label=1, prob=0.2)]
    key, captions = example_captions(cls)
    assert "predicts a class only" in key and "red =" not in key
    assert captions == ["batch_05, frame 1,205 (48.2 s)\np 0.20"] and cls[0].outcome == "miss"
    seg = [Example(image=img, true_mask=mask, pred_mask=mask, recording="batch_01", frame=9, seconds=0.4, label=0,
                   prob=0.7)]
    key, captions = example_captions(seg)
    assert "red = predicted mask" in key and captions[0].endswith("p 0.70") and seg[0].outcome == "false alarm"


def test_a_tie_of_the_logits_is_normal_in_evaluate_predict_and_the_pictures(tmp_path_factory, tmp_path):
    """One decision rule (issue 16, fidelity 10): equal logits (softmax p == 0.5 exactly) are class 0,
    normal, as the authors' argmax decides, in evaluate's class and pixel confusion matrices,
    predict's pred and mask_pred, and the example pictures' captions."""
    store = converted_store(tmp_path_factory)
    classifier = build_model("current_cls", size="tiny", heads=3, current_rows=20)
    segmenter = build_model("vicu_seg", size="tiny", image_size=(16, 16), frames=4, current_rows=20)
    for layer in (classifier.head, segmenter.head.classifier):  # logits = bias, the same for both classes
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.fill_(0.25)
    run = dict(device="cpu", workers=0, progress=False)
    for name, model in (("cls", classifier), ("seg", segmenter)):
        ckpt = tmp_path / f"{name}.pt"
        save_checkpoint(ckpt, model, orientation="reference", preprocessing="reference",
                        info={"window": SHORT_WINDOWS.to_dict()} if name == "seg" else None)
        report = evaluate(store, str(ckpt), examples=0, **run)
        (tn, fp), (fn, tp) = report["metrics"]["overall"]["class"]["confusion"]
        assert fp == tp == 0 and tn + fn == report["windows"]["count"] > 0, name
        if name == "seg":
            (_, pixel_fp), (_, pixel_tp) = report["metrics"]["overall"]["pixel"]["confusion"]
            assert pixel_fp == pixel_tp == 0
        out = predict(store, str(ckpt), str(tmp_path / f"{name}.zarr"), **run)["out"]
        pred = read_predictions(out)
        assert (np.asarray(pred["prob"][:, 1]) == 0.5).all() and not np.asarray(pred["pred"][:]).any(), name
        if name == "seg":
            assert not np.asarray(pred["mask_pred"][:]).any()
    img, mask = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    tie = Example(image=img, true_mask=mask, pred_mask=None, recording="batch_01", frame=5, seconds=0.2, label=1,
                  prob=0.5)
    assert tie.outcome == "miss" and example_captions([tie])[1] == ["batch_01, frame 5 (0.2 s)\np 0.50"]
