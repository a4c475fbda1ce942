"""``fmmodel alarms`` (issue 19, item 6): alarms scored as events against a store's labels.

A predictions store's windows are decided and alarmed as ``fmmodel watch`` would (the same raises
as a real replay), a watch's own event log is judged with its scores file, the figures follow the
known onsets (recall, delay, false alarms per hour with the Poisson bound, chatter, NAB), the
report and timeline are written and replaced only when ours, bad input is one line.

The store is the oracle's (tests/watch_models.py): 36 s at 25 fps with three marked events, all of
it the test split, so that the replay and the predictions watch the same frames.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fmdata.derive import compute_labels
from fmdata.store import WindowParams, schema
from fmmodel.model.checkpoint import save_checkpoint
from fmmodel.model.registry import build_model, user_variant
from fmmodel.model.user_models import DataDescription, find_source
from fmmodel.online import Sources, WatchSettings, watch
from fmmodel.scoring.alarms import WATCH_POLICY
from fmmodel.scoring.predict import predict

from builders import marked_recording, recording, write_store
from processes import FMMODEL, one_line_error, run

HERE = Path(__file__).resolve().parent
ORACLE = f"{HERE / 'watch_models.py'}:oracle"
PARAMS = WindowParams(frames=4, frame_step=3, current_seconds=6.0, current_rows=12)
EVENTS = [(4.13, 8.0), (15.55, 17.2), (24.0, 30.31)]
EVERY, TOLERANCE = 0.5, 2.0
# what the options below give: fmmodel watch's default policy with these fields
POLICY = dataclasses.replace(WATCH_POLICY, raise_threshold=0.1, clear_threshold=0.05, smoothing="none", on_delay=1.0,
                             hold=1.0)
POLICY_ARGS = ["--raise-threshold", "0.1", "--clear-threshold", "0.05", "--smoothing", "none", "--on-delay", "1",
               "--hold", "1", "--every", str(EVERY), "--tolerance", str(TOLERANCE)]
PNG = b"\x89PNG\r\n\x1a\n"


def oracle_checkpoint(path: Path) -> str:
    data = DataDescription(task="cls", modality="both", frame_size=(16, 16), clip_frames=PARAMS.frames,
                           current_rows=PARAMS.current_rows)
    net = build_model(user_variant(ORACLE, find_source(ORACLE)), description=data)
    save_checkpoint(path, net, orientation="reference", preprocessing={"name": "reference"},
                    info={"window": PARAMS.to_dict(), "fps": 25.0})
    return str(path)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> SimpleNamespace:
    """The oracle's store, checkpoint, predictions of every window, and a replay's event log and scores."""
    folder = tmp_path_factory.mktemp("alarm-report")
    rec = marked_recording(36, EVENTS, seed=1)
    rec = dataclasses.replace(rec, split=np.full(rec.split.shape, schema.SPLIT_TEST, rec.split.dtype))
    store = write_store(folder / "oracle.zarr", [rec])
    ckpt = oracle_checkpoint(folder / "oracle.pt")
    pred = str(folder / "pred.zarr")
    predict(store, ckpt, pred, workers=0, device="cpu", progress=False, trusted=[ORACLE], data="lazy")
    events, scores = folder / "events.jsonl", folder / "scores.jsonl"
    report = watch(ckpt, Sources(replay=store, speed=None),
                   WatchSettings(every=EVERY, policy=POLICY, events=str(events), scores=str(scores), threads=1,
                                 metrics_every=0.0), trusted=[ORACLE])
    raises = [e["time"] for e in report.events if e["type"] == "process" and e["kind"] == "raise"]
    return SimpleNamespace(store=store, ckpt=ckpt, pred=pred, events=events, scores=scores, raises=raises)


def alarms(*args: object) -> dict:
    res = run([FMMODEL, "alarms", *args, "--json"])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def nab_of_raises(raises: list[float], tolerance: float) -> float:
    """NAB's normalised score of one raise per event, no false alarm (A_TP = A_FN = 1: both profiles)."""
    def sigma(y: float) -> float:
        return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0
    raw = 0.0
    for (onset, offset), t in zip(EVENTS, raises):  # labelled from the first marked frame to the first unmarked
        start, end = math.ceil(round(onset * 25, 6)) / 25, math.ceil(round(offset * 25, 6)) / 25 + tolerance
        raw += sigma((t - end) / (end - start)) / sigma(-1.0)
    n = len(EVENTS)
    return 100.0 * (raw + n) / (2.0 * n)


def test_a_predictions_store_raises_the_alarms_watch_raised(oracle, tmp_path):
    """Every event detected at the first decision at or after its onset plus the on-delay, as the
    replay raised it; no false alarm (its bound: 3.00 per normal hour watched), no chatter."""
    report = alarms("--store", oracle.store, "--predictions", oracle.pred, *POLICY_ARGS, "--out", tmp_path / "r")
    o = report["overall"]
    assert (o["events"], o["detected"], o["recall"]) == (3, 3, 1.0)
    assert (o["false_alarms"], o["chatter"], o["re_raises"], o["false_alarms_per_hour"]) == (0, 0, 0, 0.0)
    assert o["false_alarms_per_hour_upper95"] == pytest.approx(-math.log(0.05) / o["normal_hours"], rel=1e-6)
    detected = [e["detected_at"] for e in report["events"]]
    assert detected == pytest.approx(oracle.raises, abs=1e-9)  # the replay's raises, event for event
    onsets = [math.ceil(round(a * 25, 6)) / 25 for a, _ in EVENTS]  # the first marked frame's time
    assert [e["onset_time"] for e in report["events"]] == pytest.approx(onsets, abs=1e-9)
    want = [math.ceil(round(a / EVERY, 9)) * EVERY + POLICY.on_delay - a for a in onsets]
    assert o["delays"] == pytest.approx(want, abs=1e-9)
    assert (o["delay_median"], o["delay_max"]) == pytest.approx((np.median(want), max(want)), abs=1e-9)
    assert o["delay_p90"] == pytest.approx(np.percentile(want, 90), abs=1e-9)
    nab = nab_of_raises(oracle.raises, TOLERANCE)
    assert o["nab"]["standard"] == pytest.approx(nab, abs=1e-9)
    assert o["nab"]["reward_low_FP_rate"] == pytest.approx(nab, abs=1e-9)
    assert report["policy"] == POLICY.to_dict() and report["every"] == EVERY and report["decisions"] > 60
    # the files: ours, replaced by the next run, a real PNG
    files = report["files"]
    assert json.loads(Path(files["report"]).read_text())["overall"] == o
    assert Path(files["timeline"]).read_bytes()[:8] == PNG
    again = alarms("--store", oracle.store, "--predictions", oracle.pred, *POLICY_ARGS, "--out", tmp_path / "r")
    assert again["overall"] == o


def test_a_watch_event_log_is_judged_as_its_predictions(oracle, tmp_path):
    """The replay's own log and scores file give the figures its predictions give; without the
    scores file the whole recording counts as watched."""
    by_pred = alarms("--store", oracle.store, "--predictions", oracle.pred, *POLICY_ARGS)["overall"]
    report = alarms("--store", oracle.store, "--events", oracle.events, "--scores", oracle.scores,
                    "--tolerance", str(TOLERANCE), "--out", tmp_path / "r")
    o = report["overall"]
    for key in ("events", "detected", "delays", "false_alarms", "chatter", "re_raises", "nab"):
        assert o[key] == pytest.approx(by_pred[key], abs=1e-9), key
    assert report["kind"] == "events" and report["policy"] is None and report["health_alarms"] == {}
    assert report["decisions"] == len(oracle.scores.read_text().splitlines())
    assert Path(report["files"]["timeline"]).read_bytes()[:8] == PNG
    whole = alarms("--store", oracle.store, "--events", oracle.events, "--tolerance", str(TOLERANCE))["overall"]
    assert whole["detected"] == 3 and whole["normal_hours"] >= o["normal_hours"]


def test_false_alarms_and_chatter_of_a_log_are_counted(oracle, tmp_path):
    """The replay's log with an alarm added in normal time (a false alarm) and a re-raise one
    half a second after the first event's alarm cleared (chatter): rate k / normal hours, bound 4.74."""
    lines = [json.loads(line) for line in oracle.events.read_text().splitlines()]
    process = [e for e in lines if e["type"] == "process"]
    first_clear = process[1]
    chatter = first_clear["time"] + 0.5
    assert first_clear["kind"] == "clear" and chatter + 0.25 < EVENTS[0][1] + TOLERANCE  # inside the event's window
    extra = []
    for start in (chatter, 12.0):  # chatter, then a false alarm (no event from 8 s to 15.55 s)
        raise_ = {**process[0], "time": start, "raised_at": start, "frame": None}
        clear = {**first_clear, "time": start + 0.25, "raised_at": start, "frame": None}
        extra += [raise_, clear]
    merged = sorted(process + extra, key=lambda e: e["time"])
    for number, i in enumerate(range(0, len(merged), 2)):
        merged[i]["alarm"] = merged[i + 1]["alarm"] = number
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in merged))
    o = alarms("--store", oracle.store, "--events", log, "--scores", oracle.scores, "--tolerance", str(TOLERANCE),
               "--chatter-seconds", "5")["overall"]
    assert (o["detected"], o["false_alarms"], o["chatter"]) == (3, 1, 1)
    assert o["false_alarms_per_hour"] == pytest.approx(1 / o["normal_hours"], rel=1e-9)
    assert o["false_alarms_per_hour_upper95"] == pytest.approx(4.7439 / o["normal_hours"], rel=1e-4)
    assert o["nab"]["reward_low_FP_rate"] < o["nab"]["standard"] < 100


def test_bad_input_is_one_line(oracle, tmp_path):
    other = write_store(tmp_path / "other.zarr", [recording("v1", 900, 1, h=16, w=16)])
    # a store without frame labels: read-only here, so the command says how to make them
    one_line_error(run([FMMODEL, "alarms", "--store", other, "--predictions", oracle.pred]), 1, "fmdata labels")
    compute_labels(other)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"type": "process", "kind": "raise", "time": 1.0}\nnot json\n')
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "report.json").write_text('{"mine": 1}')
    cases = [
        (["--store", oracle.store], 2, "--predictions or --events"),
        (["--store", oracle.store, "--predictions", oracle.pred, "--events", oracle.events], 2, "both"),
        (["--store", oracle.store, "--predictions", oracle.pred, "--scores", oracle.scores], 2, "--scores"),
        (["--store", other, "--predictions", oracle.pred], 2, "frame labels differ"),
        (["--store", oracle.store, "--events", garbage], 1, "line 2"),
        (["--store", oracle.store, "--events", oracle.events, "--recording", "nine"], 2, "'nine'"),
        (["--store", oracle.store, "--predictions", oracle.pred, "--out", foreign], 1, "report.json"),
        (["--store", oracle.store, "--predictions", oracle.pred, "--clear-threshold", "0.9"], 2, "clear"),
    ]
    for args, code, needle in cases:
        one_line_error(run([FMMODEL, "alarms", *args]), code, needle)
    assert (foreign / "report.json").read_text() == '{"mine": 1}' and not (foreign / "timeline.png").exists()
