"""The authors' evaluation protocol where it differs from the toolkit's (issue 11, items 12 and 13;
issue 16, fidelity 9).

Current-only models: the authors score one sample per distinct test second, abnormal when any of
the 25 frames from that second's first frame (over all the recording's frames, whatever their
split) is; the toolkit scores every test frame. Pixel
metrics: the authors keep a class absent from target and prediction in the means as 0. Both
follow the authors for checkpoints in their format (or ``--protocol reference``), the toolkit
otherwise. The expected samples are computed here from the store's arrays, independently."""
import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from fmcli.fmmodel_main import main as fmmodel_main
from fmdata.compute import DaskOptions
from fmdata.derive import build_window_table, load_index, make_windows
from fmdata.store import WindowParams, open_store, schema
from fmmodel.data.windows import read_per_second_samples
from fmmodel.model.checkpoint import export_reference, save_checkpoint
from fmmodel.model.registry import build_model
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.metrics import pixel_scores_from_confusion

from builders import SHORT_WINDOWS, converted_store, make_store, recording, split_from_runs

EVAL = dict(device="cpu", workers=0, progress=False, examples=0)


@pytest.fixture(scope="module")
def store16(tmp_path_factory):
    return converted_store(tmp_path_factory)


def _authors_current_samples(store):
    """(samples, abnormal samples, test frames) of the authors' CurrentDataset on the test split, and
    the samples' first frames, computed from the store's arrays frame by frame."""
    root = open_store(store)
    split, rec = root[schema.SPLIT][:], root[schema.RECORDING][:]
    t, label = root[schema.FRAME_TIME][:], root[schema.FRAME_LABEL][:]
    offsets = root[schema.RECORDING_FRAME_OFFSETS][:]
    firsts, abnormal = [], 0
    for r in range(len(offsets) - 1):
        seen = set()
        for f in np.flatnonzero((split == schema.SPLIT_TEST) & (rec == r)):
            second = int(np.floor(t[f]))
            if second in seen:
                continue
            seen.add(second)
            # the second's first frame among ALL the recording's frames, whatever its split
            first = next(g for g in range(offsets[r], offsets[r + 1]) if int(np.floor(t[g])) == second)
            firsts.append(first)
            abnormal += int(label[first:min(first + 25, offsets[r + 1])].any())
    return len(firsts), abnormal, int((split == schema.SPLIT_TEST).sum()), firsts


def test_current_only_model_per_second_under_reference_per_frame_otherwise(store16, tmp_path):
    model = build_model("current_cls", size="tiny", heads=3, current_rows=20)
    toolkit_ckpt = tmp_path / "current.pt"
    save_checkpoint(toolkit_ckpt, model, orientation="reference", preprocessing="reference")
    authors_ckpt = export_reference(tmp_path / "state_dict_current_cls.pth", model)
    samples, abnormal, test_frames, _ = _authors_current_samples(store16)
    per_frame = evaluate(store16, str(toolkit_ckpt), **EVAL)
    assert per_frame["protocol"] == "toolkit" and per_frame["windows"]["count"] == test_frames
    frame_positives = per_frame["metrics"]["overall"]["class"]["positives"]
    # the scenario tells the protocols apart: fewer samples, another share of abnormal ones
    assert 1 < samples < test_frames and abnormal / samples != frame_positives / test_frames
    for report in (evaluate(store16, str(authors_ckpt), fmt="reference", **EVAL),  # the authors' format
                   evaluate(store16, str(toolkit_ckpt), protocol="reference", **EVAL)):  # or asked for
        c = report["metrics"]["overall"]["class"]
        assert report["protocol"] == "reference" and (c["n"], c["positives"]) == (samples, abnormal)
        assert "distinct test second" in report["conventions"]["samples"]
    kept = evaluate(store16, str(authors_ckpt), fmt="reference", protocol="toolkit", **EVAL)
    assert kept["windows"]["count"] == test_frames  # per frame stays available
    r = CliRunner().invoke(fmmodel_main, ["evaluate", "--store", store16, "--checkpoint", str(authors_ckpt),
                                          "--device", "cpu", "--workers", "0", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["overall"]["class"]["n"] == samples  # stderr: the data path's line


@pytest.fixture(scope="module")
def second_split_store(tmp_path_factory):
    """A V1 store (25 fps: second k is frames 25k..25k+24) whose test block starts mid-second: second 2
    is frames 50..74, of which 50..59 are training frames. Only frames 50..59 and 190..199 are
    abnormal, so second 2's sample is abnormal by the authors' rule (its first frame is 50) and
    normal if it started at the first test frame, 60; a store table of every 4th window and a
    strict one beside it."""
    split = split_from_runs([(schema.SPLIT_TRAIN, 60), (schema.SPLIT_TEST, 140)])
    rec = recording("v1", 200, 7, h=4, w=4, split=split)
    mask = np.zeros_like(rec.mask)
    mask[50:60, 0, 0] = mask[190:200, 1, 1] = 1
    path = make_store(tmp_path_factory.mktemp("second") / "s.zarr", [dataclasses.replace(rec, mask=mask)])
    shape = dict(frames=10, frame_step=2, current_seconds=2.0, current_rows=20)
    make_windows(path, "every4", WindowParams(**shape, stride=4), options=DaskOptions(progress=False))
    make_windows(path, "strict", WindowParams(**shape, policy="strict"), options=DaskOptions(progress=False))
    return path


def test_a_seconds_first_frame_in_the_training_block_decides_its_sample(second_split_store, tmp_path):
    """The authors' sample of a second starts at that second's first frame whatever its split (here a
    training frame), for its label and its current; the stride and policy of the scored table do not
    change the samples."""
    store = second_split_store
    samples, abnormal, _, firsts = _authors_current_samples(store)
    assert (samples, abnormal, firsts) == (6, 2, [50, 75, 100, 125, 150, 175])
    root = open_store(store)
    wt = read_per_second_samples(root, WindowParams(frames=10, current_rows=20), "test")
    assert wt.column("frame").tolist() == firsts and wt.column("label").tolist() == [1, 0, 0, 0, 0, 1]
    assert (wt.column("split") == schema.SPLIT_TEST).all()
    own = build_window_table(load_index(root), WindowParams(frames=10, current_rows=20))
    at_first = own.subset(np.searchsorted(own.column("frame"), firsts))  # the windows of those frames
    np.testing.assert_array_equal(wt.table[:, 4:6], at_first.table[:, 4:6])  # current rows end at that second
    model = build_model("current_cls", size="tiny", heads=3, current_rows=20)
    ckpt = tmp_path / "current.pt"
    save_checkpoint(ckpt, model, orientation="reference", preprocessing="reference")
    for windows in (None, "every4", "strict"):
        c = evaluate(store, str(ckpt), protocol="reference", windows=windows, **EVAL)["metrics"]["overall"]["class"]
        assert (c["n"], c["positives"]) == (samples, abnormal), windows


def test_pixel_rule_for_a_class_absent_from_target_and_prediction():
    toolkit = pixel_scores_from_confusion(np.array([[10000, 0], [0, 0]]))
    authors = pixel_scores_from_confusion(np.array([[10000, 0], [0, 0]]), rule="reference")
    assert (toolkit["miou"], toolkit["mean_pixel_accuracy"], toolkit["iou"]) == (1.0, 1.0, [1.0, None])
    assert authors["miou"] == pytest.approx(0.5) and authors["mean_pixel_accuracy"] == pytest.approx(0.5)
    assert authors["iou"] == pytest.approx([1.0, 0.0], abs=1e-8)
    cm = np.array([[90, 4], [2, 4]])  # both classes present: the rules agree up to the authors' 1e-5
    got = pixel_scores_from_confusion(cm, rule="reference")
    assert got["iou"] == pytest.approx([90 / (96 + 1e-5), 4 / (10 + 1e-5)], rel=1e-12)
    assert got["miou"] == pytest.approx(pixel_scores_from_confusion(cm)["miou"], rel=1e-5)


def test_evaluate_applies_the_pixel_rule_of_its_protocol(store16, tmp_path):
    model = build_model("vicu_seg", size="tiny", image_size=(16, 16), frames=4, current_rows=20)
    ckpt = tmp_path / "seg.pt"
    save_checkpoint(ckpt, model, orientation="reference", preprocessing="reference",
                    info={"window": SHORT_WINDOWS.to_dict()})
    for rule in ("toolkit", "reference"):
        report = evaluate(store16, str(ckpt), protocol=rule, **EVAL)
        entries = [report["metrics"]["overall"], *report["metrics"]["recordings"].values()]
        for entry in entries:
            pixel = entry["pixel"]
            assert pixel["rule"] == rule
            want = pixel_scores_from_confusion(np.array(pixel["confusion"]), rule=rule)
            assert (pixel["miou"], pixel["mean_pixel_accuracy"]) == (want["miou"], want["mean_pixel_accuracy"])
