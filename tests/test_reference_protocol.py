"""The authors' evaluation protocol where it differs from the toolkit's (issue 11, items 12 and 13).

Current-only models: the authors score one sample per distinct test second, abnormal when any of
the 25 frames from that second's first frame is; the toolkit scores every test frame. Pixel
metrics: the authors keep a class absent from target and prediction in the means as 0. Both
follow the authors for checkpoints in their format (or ``--protocol reference``), the toolkit
otherwise. The expected samples are computed here from the store's arrays, independently."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from fmcli.fmmodel_main import main as fmmodel_main
from fmdata.store import open_store, schema
from fmmodel.checkpoint import export_reference, save_checkpoint
from fmmodel.evaluate import evaluate
from fmmodel.metrics import pixel_scores_from_confusion
from fmmodel.registry import build_model

from builders import SHORT_WINDOWS, converted_store

EVAL = dict(device="cpu", workers=0, progress=False, examples=0)


@pytest.fixture(scope="module")
def store16(tmp_path_factory):
    return converted_store(tmp_path_factory)


def _authors_current_samples(store):
    """(samples, abnormal samples) of the authors' CurrentDataset on the test split, from the arrays."""
    root = open_store(store)
    split, rec = root[schema.SPLIT][:], root[schema.RECORDING][:]
    t, label = root[schema.FRAME_TIME][:], root[schema.FRAME_LABEL][:]
    offsets = root[schema.RECORDING_FRAME_OFFSETS][:]
    samples = abnormal = 0
    for r in range(len(offsets) - 1):
        seen = set()
        for f in np.flatnonzero((split == schema.SPLIT_TEST) & (rec == r)):
            second = int(np.floor(t[f]))
            if second in seen:
                continue
            seen.add(second)
            samples += 1
            abnormal += int(label[f:min(f + 25, offsets[r + 1])].any())
    return samples, abnormal, int((split == schema.SPLIT_TEST).sum())


def test_current_only_model_per_second_under_reference_per_frame_otherwise(store16, tmp_path):
    model = build_model("current_cls", size="tiny", heads=3, current_rows=20)
    toolkit_ckpt = tmp_path / "current.pt"
    save_checkpoint(toolkit_ckpt, model, orientation="reference", preprocessing="reference")
    authors_ckpt = export_reference(tmp_path / "state_dict_current_cls.pth", model)
    samples, abnormal, test_frames = _authors_current_samples(store16)
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
