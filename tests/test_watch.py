"""``fmmodel watch`` (issue 19): online equals offline, alarms on known events, health alarms on
injected faults, a slow model, live sources for real, interruption, metrics and bad input.

Stores are small (16x16 frames, tens of seconds) and replays run at ``--speed max`` where the
point is the decisions, in real time where it is the timing. A user's oracle model
(tests/watch_models.py) scores the labelled abnormal share of a frame, so alarm timings can be
checked exactly against the labels."""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fmcli.fmmodel_main import main as fmmodel_main
from fmdata.derive import compute_stats
from fmdata.store import WindowParams, open_store
from fmmodel.data.preprocessing import read_normalization
from fmmodel.model.checkpoint import save_checkpoint
from fmmodel.model.registry import build_model, user_variant
from fmmodel.model.user_models import DataDescription, find_source
from fmmodel.online import HealthLimits, Sources, WatchSettings, watch
from fmmodel.online.live import epoch_seconds
from fmmodel.online.publish import mask_from_rle, mask_rle
from fmmodel.scoring.alarms import AlarmEvent, AlarmPolicy
from fmmodel.scoring.events import labelled_events, score_alarms
from fmmodel.scoring.predict import predict, read_predictions

from builders import marked_recording, recording, write_store
from processes import FMMODEL, one_line_error, run, start

HERE = Path(__file__).resolve().parent
ORACLE, SLOW = f"{HERE / 'watch_models.py'}:oracle", f"{HERE / 'watch_models.py'}:slow"
CLIP_CNN = f"{HERE.parent / 'examples' / 'custom_model' / 'tiny_models.py'}:clip_cnn"
# short windows: 4 frames 3 apart, 6 s of current as 12 rows (windows reach the recordings' starts)
PARAMS = WindowParams(frames=4, frame_step=3, current_seconds=6.0, current_rows=12)
FAST = dict(threads=1, metrics_every=0.0)


def checkpoint(path: Path, model: str, *, preprocessing: str = "reference", store: str | None = None,
               params: WindowParams = PARAMS, modality: str = "both", task: str = "cls", fps: float = 25.0) -> str:
    """A checkpoint of ``model`` (a variant or a user's factory) with fresh weights, windows ``params``."""
    torch.manual_seed(0)
    if ":" in model:
        data = DataDescription(task=task, modality=modality, frame_size=(16, 16), clip_frames=params.frames,
                               current_rows=params.current_rows)
        net = build_model(user_variant(model, find_source(model)), description=data)
    else:
        net = build_model(model, size="tiny", image_size=(16, 16), frames=params.frames,
                          current_rows=params.current_rows)
    prep: dict = {"name": preprocessing}
    if preprocessing == "normalized":
        assert store is not None
        norm = read_normalization(dict(open_store(store).attrs), store)
        prep["normalization"] = {k: v.tolist() for k, v in norm.items()}
    save_checkpoint(path, net, orientation="reference" if preprocessing == "reference" else "true",
                    preprocessing=prep, info={"window": params.to_dict(), "fps": fps})
    return str(path)


def alarm_events_of(events: list[dict], kind: str = "process") -> list[AlarmEvent]:
    names = [f.name for f in dataclasses.fields(AlarmEvent)]
    out = []
    for e in events:
        if e["type"] == kind:
            d = {k: e[k] for k in names}
            d["smoothed"] = -math.inf if d["smoothed"] is None else d["smoothed"]
            out.append(AlarmEvent(**d))
    return out


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory) -> str:
    """A store of a V1-like recording (one current row per frame) and a V2-like one (2 Hz current,
    whole-second timestamps, current from 5 s before the video), with statistics."""
    path = tmp_path_factory.mktemp("watch") / "two.zarr"
    write_store(path, [recording("v1", 300, 1, h=16, w=16), recording("v2", 300, 2, h=16, w=16, lead=5)])
    compute_stats(str(path))
    return str(path)


@pytest.mark.parametrize("model,preprocessing", [("vicu_cls", "reference"), ("vicu_seg", "normalized"),
                                                 ("video_cls", "reference"), ("current_cls", "normalized"),
                                                 (CLIP_CNN, "normalized")])
def test_online_scores_equal_predict_for_the_same_windows(two_layouts, tmp_path, model, preprocessing):
    """Every decision of a replay scores the window that the stored rules give its anchor frame:
    its score equals ``fmmodel predict``'s for that frame (fp32, <= 1e-5), on both current layouts."""
    ckpt = checkpoint(tmp_path / "m.pt", model, preprocessing=preprocessing, store=two_layouts)
    trusted = [model] if ":" in model else []
    predict(two_layouts, ckpt, str(tmp_path / "p.zarr"), workers=0, device="cpu", progress=False, trusted=trusted,
            data="lazy")
    pred = read_predictions(str(tmp_path / "p.zarr"))
    offline = dict(zip(pred["frame"][:].tolist(), pred["prob"][:, 1].tolist()))
    for rec in ("0", "1"):
        report = watch(ckpt, Sources(replay=two_layouts, recording=rec, speed=None),
                       WatchSettings(every=0.2, **FAST), trusted=trusted, keep_decisions=True)
        both = [(d.frame, d.score) for d in report.decisions if d.frame in offline]
        assert len(both) > 40, (rec, len(report.decisions))
        diff = max(abs(score - offline[frame]) for frame, score in both)
        assert diff <= 1e-5, (model, rec, diff)
        assert report.metrics["skipped"] == 0 and report.metrics["suppressed"] == 0


EVENTS = [(4.13, 8.0), (15.55, 17.2), (24.0, 30.31)]


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory) -> str:
    """36 s at 25 fps with three marked events (EVENTS)."""
    path = tmp_path_factory.mktemp("oracle") / "oracle.zarr"
    return write_store(path, [marked_recording(36, EVENTS, seed=1)])


def test_the_oracle_raises_every_event_after_the_on_delay_to_the_decision(oracle_store, tmp_path):
    ckpt = checkpoint(tmp_path / "oracle.pt", ORACLE)
    every, policy = 0.5, AlarmPolicy(raise_threshold=0.1, clear_threshold=0.05, on_delay=1.0, hold=1.0)
    report = watch(ckpt, Sources(replay=oracle_store, speed=None),
                   WatchSettings(every=every, policy=policy, events=str(tmp_path / "events.jsonl"), **FAST),
                   trusted=[ORACLE])
    alarms = alarm_events_of(report.events)
    root = open_store(oracle_store)
    times, labels = root["frame_time"][:], (root["mask"][:] == 1).any(axis=(1, 2))
    labelled = labelled_events(labels, times, np.zeros(len(times), np.int64))
    score = score_alarms({0: alarms}, labelled, tolerance=2.0)
    figures = score.overall
    assert figures.events == len(EVENTS) == figures.detected
    assert figures.false_alarms == 0 and figures.chatter == 0 and figures.re_raises == 0
    for outcome in score.outcomes:  # the first decision at or after the onset, plus the on-delay
        first = math.ceil(round(outcome.onset_time / every, 9)) * every
        assert outcome.delay == pytest.approx(first + policy.on_delay - outcome.onset_time, abs=1e-9)
    written = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(report.events))
    assert [e["kind"] for e in written if e["type"] == "process"] == ["raise", "clear"] * 3


def test_injected_faults_raise_their_health_alarm_within_2_s_and_no_process_alarm(tmp_path_factory, tmp_path):
    store = write_store(tmp_path_factory.mktemp("faults") / "normal.zarr", [marked_recording(40, seed=2)])
    ckpt = checkpoint(tmp_path / "oracle.pt", ORACLE)
    faults = {"dropped": 5.0, "frozen": 14.0, "current_gap": 23.0, "clock_skew": 32.0}
    report = watch(ckpt, Sources(replay=store, speed=None, inject="drop=0.1@5-10,freeze=14-19,gap=23-28,skew=2@32"),
                   WatchSettings(every=0.5, **FAST), trusted=[ORACLE])
    raised: dict[str, list[float]] = {}
    for e in report.events:
        assert e["type"] == "health", e  # no process alarm
        if e["kind"] == "raise":
            raised.setdefault(e["name"], []).append(e["time"])
    assert set(raised) == set(faults), raised
    for name, onset in faults.items():
        assert onset <= raised[name][0] <= onset + 2.0, (name, raised[name])
    # a clean replay of the same store raises nothing at all
    clean = watch(ckpt, Sources(replay=store, speed=None), WatchSettings(every=0.5, **FAST), trusted=[ORACLE])
    assert clean.events == []


def test_a_slow_model_skips_decisions_and_keeps_input_age_and_memory_bounded(oracle_store, tmp_path):
    ckpt = checkpoint(tmp_path / "slow.pt", SLOW, modality="video")
    lines: list[dict] = []
    report = watch(ckpt, Sources(replay=oracle_store, speed=1.0),
                   WatchSettings(every=0.1, duration=3.0, threads=1, metrics_every=0.5),
                   trusted=[SLOW], keep_decisions=True, on_metrics=lambda kind, snap: lines.append(snap))
    m = report.metrics
    assert m["decisions"] >= 4 and m["skipped"] >= 1.5 * m["decisions"], m
    ages = [d.age for d in report.decisions]
    assert max(ages) < 0.3 + 0.1 + 0.2, ages  # the model's time, a tick, and a margin for a busy machine
    assert ages[-1] <= ages[0] + 0.1  # bounded: no backlog builds up
    assert m["latency_ms"]["p50"] >= 290
    assert "latency" in {e["name"] for e in report.events if e["kind"] == "raise"}
    assert lines[-1]["rss_mib"] - lines[0]["rss_mib"] < 10, [x["rss_mib"] for x in lines]


def test_mask_run_lengths_round_trip():
    rng = np.random.default_rng(0)
    for mask in (rng.random((7, 5)) < 0.3, np.ones((3, 4), bool), np.zeros((2, 2), bool)):
        rle = mask_rle(mask)
        np.testing.assert_array_equal(mask_from_rle(rle), mask.astype(np.uint8))
        assert rle["abnormal_pixels"] == int(mask.sum())


# ---- real processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigint_stops_watch_with_130_its_final_metrics_line_and_the_events_so_far(oracle_store, tmp_path):
    """A real-time replay: metrics lines, a Prometheus endpoint scraped for real, then SIGINT."""
    ckpt = checkpoint(tmp_path / "oracle.pt", ORACLE)
    port = free_port()
    events = tmp_path / "events.jsonl"
    proc = start([FMMODEL, "watch", "--checkpoint", ckpt, "--model", ORACLE, "--replay", oracle_store,
                  "--speed", "4", "--every", "0.25", "--raise-threshold", "0.1", "--clear-threshold", "0.05",
                  "--on-delay", "0", "--metrics-every", "0.5",
                  "--events", events, "--prometheus", port, "--threads", "1", "--no-progress"])
    try:
        lines = []
        for line in proc.stdout:  # metrics lines as they come
            lines.append(json.loads(line))
            if lines[-1]["stream_time"] > 5.0 and events.exists() and events.read_text():
                break
        assert lines and all(x["kind"] == "metrics" for x in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            scraped = r.read().decode()
        assert "fmf_watch_decisions_total" in scraped and 'fmf_watch_latency_ms{quantile="p99"}' in scraped
        decisions = next(float(x.split()[-1]) for x in scraped.splitlines()
                         if x.startswith("fmf_watch_decisions_total"))
        assert decisions > 0
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("Error: interrupted after"), err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["kind"] == "final" and final["decisions"] >= lines[-1]["decisions"]
    written = [json.loads(x) for x in events.read_text().splitlines()]
    assert written and written[0]["kind"] == "raise" and written[0]["type"] == "process"


APPENDER = textwrap.dedent('''
    import datetime, sys, time
    path, t0 = sys.argv[1], float(sys.argv[2])
    k = 0
    while True:  # a logger of 25 rows a second, written a tenth of a second at a time
        time.sleep(max(0.0, t0 + (k + 3) * 0.04 - time.time()))
        rows = ""
        for j in range(k, k + 3):
            stamp = datetime.datetime.fromtimestamp(t0 + j * 0.04).isoformat(sep=" ", timespec="milliseconds")
            rows += f"{stamp},{9000 + j % 50},{9100 - j % 30},{9050 + j % 20}\\n"
        if k == 30:
            rows += "a line a logger garbled,1,2\\n"
        with open(path, "a") as fh:
            fh.write(rows)
        k += 3
''')


def test_live_video_file_and_appended_csv_give_the_replays_decisions(tmp_path):
    """A video file written with OpenCV and a current CSV another process appends while watch runs:
    every live decision scores what a replay of the same data scores for that anchor frame."""
    n, fps = 100, 25.0
    rng = np.random.default_rng(3)
    writer = cv2.VideoWriter(str(tmp_path / "cam.avi"), cv2.VideoWriter_fourcc(*"MJPG"), fps, (16, 16))
    for _ in range(n):
        writer.write(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    writer.release()
    csv = tmp_path / "current.csv"
    t0 = float(math.floor(time.time()))
    history = [datetime.datetime.fromtimestamp(t0 - 10 + j * 0.04).isoformat(sep=" ", timespec="milliseconds")
               for j in range(250)]  # the log's last 10 s before the test
    csv.write_text("timestamp,phase_A,phase_B,phase_C\n" + "".join(f"{s},8000,8100,8050\n" for s in history))
    appender = subprocess.Popen([sys.executable, "-c", APPENDER, str(csv), str(t0)])
    ckpt = checkpoint(tmp_path / "m.pt", "vicu_cls")
    try:
        result = run([FMMODEL, "watch", "--checkpoint", ckpt, "--video", tmp_path / "cam.avi", "--current", csv,
                      "--every", "0.2", "--scores", tmp_path / "scores.jsonl", "--metrics-every", "1",
                      "--threads", "1", "--no-progress"], timeout=120)
    finally:
        appender.kill()
        appender.wait()
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.strip().splitlines()[-1])  # a file ends the watch: its final metrics line
    assert final["kind"] == "final" and final["frames_in"] == n and final["current_rows_in"] > 250
    assert final["current_rows_bad"] == 1  # skipped and counted, the watch goes on
    live = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(live) >= 10, live

    # the same data as a store: the frames as OpenCV decodes them at the times watch stamped them,
    # every row the log holds now, on the watch's clock (seconds since its origin)
    cap, frames = cv2.VideoCapture(str(tmp_path / "cam.avi")), []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    start = live[0]["stamp"] - live[0]["frame"] / fps
    frame_time = start + np.arange(n) / float(fps)
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:] if not line.startswith("a line")]
    stamps = np.array([epoch_seconds(r[0]) - final["origin"] for r in rows])
    values = np.array([[float(v) for v in r[1:]] for r in rows])
    rec = recording("v1", n, 0, h=16, w=16)
    rec = dataclasses.replace(rec, video=np.stack(frames), frame_time=frame_time, current=values, current_time=stamps,
                              frame_current_end=np.searchsorted(stamps, frame_time, side="right").astype(np.int64),
                              info=dataclasses.replace(rec.info, n_current=len(stamps)))
    store = write_store(tmp_path / "same.zarr", [rec])
    replayed = watch(ckpt, Sources(replay=store, speed=None), WatchSettings(every=0.5 / fps, **FAST),
                     keep_decisions=True)
    offline = {d.frame: d.score for d in replayed.decisions}
    assert len(offline) == n
    for d in live:
        assert abs(d["score"] - offline[d["frame"]]) <= 1e-5, d


MQTT_BROKER_CONFIG = textwrap.dedent('''
    listeners:
      default:
        type: tcp
        bind: 127.0.0.1:{port}
    plugins:
      amqtt.plugins.authentication.AnonymousAuthPlugin:
        allow_anonymous: true
      amqtt.plugins.sys.broker.BrokerSysPlugin:
        sys_interval: 0
''')


def test_mqtt_current_in_and_events_out_through_a_real_broker(tmp_path):
    mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the online extra) is not installed")
    broker_script = Path(sys.executable).parent / "amqtt"
    if not broker_script.exists():
        pytest.skip("amqtt (a pure-Python MQTT broker, in the test extra) is not installed")
    port = free_port()
    (tmp_path / "broker.yaml").write_text(MQTT_BROKER_CONFIG.format(port=port))
    broker = subprocess.Popen([str(broker_script), "-c", str(tmp_path / "broker.yaml")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    received: list[dict] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    try:
        deadline = time.time() + 30
        while True:
            try:
                client.connect("127.0.0.1", port)
                break
            except OSError:
                assert time.time() < deadline and broker.poll() is None, "the MQTT broker did not start"
                time.sleep(0.1)
        client.subscribe("fmf/events", qos=1)
        client.loop_start()
        writer = cv2.VideoWriter(str(tmp_path / "cam.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (16, 16))
        rng = np.random.default_rng(4)
        for _ in range(75):
            writer.write(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        writer.release()

        def publish_rows() -> None:  # a current logger publishing two rows a second, 3 s of history first
            t0 = math.floor(time.time())
            for s in range(-3, 6):
                time.sleep(max(0.0, t0 + s - time.time()))
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0 + s))
                client.publish("fmf/current", f"{stamp},9000,9100,9050\n{stamp},9001,9101,9051", qos=1)

        publisher = threading.Thread(target=publish_rows, daemon=True)
        publisher.start()
        ckpt = checkpoint(tmp_path / "m.pt", "vicu_cls")
        report = watch(ckpt, Sources(video=str(tmp_path / "cam.avi"), mqtt_broker=f"127.0.0.1:{port}",
                                     mqtt_current_topic="fmf/current"),
                       WatchSettings(every=0.2, mqtt_events_topic="fmf/events",
                                     policy=AlarmPolicy(raise_threshold=0.0, clear_threshold=0.0), **FAST))
        publisher.join(timeout=10)
        deadline = time.time() + 10
        while len(received) < len(report.events) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
        broker.terminate()
        broker.wait(timeout=10)
    assert report.metrics["current_rows_in"] >= 4 and report.metrics["decisions"] > 0
    assert any(e["type"] == "process" and e["kind"] == "raise" for e in report.events)
    assert received == json.loads(json.dumps(report.events))


def test_a_camera_that_cannot_open_is_one_line_exit_1(tmp_path):
    ckpt = checkpoint(tmp_path / "m.pt", "video_cls")
    one_line_error(run([FMMODEL, "watch", "--checkpoint", ckpt, "--video", "57", "--no-progress"]), 1,
                   "camera that OpenCV can open")


def test_bad_input_is_one_line_with_exit_1_or_2(tmp_path, oracle_store):
    ckpt = checkpoint(tmp_path / "m.pt", "vicu_cls")
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (16, 16))
    for _ in range(5):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    writer.release()
    good_csv = tmp_path / "ok.csv"
    good_csv.write_text("timestamp,phase_A,phase_B,phase_C\n2024-01-01 00:00:00,1,2,3\n")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("timestamp,phase_A,phase_B\n2024-01-01 00:00:00,1,2\n")
    long_ckpt = checkpoint(tmp_path / "long.pt", "vicu_cls", params=dataclasses.replace(PARAMS, current_seconds=1e7))
    cases = [  # (arguments, exit code, what the line says)
        (["--video", video, "--current", bad_csv, "--fps", "25"], 1, "expected the V2 current layout's header"),
        (["--replay", oracle_store, "--checkpoint", long_ckpt], 2, "more history than the stream can hold"),
        (["--video", video, "--current", good_csv], 1, "expected a video at the 25 fps"),
        (["--replay", oracle_store, "--speed", "fast"], 2, "--speed"),
        (["--replay", oracle_store, "--inject", "melt=3"], 2, "--inject"),
        (["--replay", oracle_store, "--video", video], 2, "--replay"),
        (["--replay", oracle_store, "--clear-threshold", "0.9"], 2, "--clear-threshold"),
    ]
    for args, code, needle in cases:
        argv = ["watch", "--checkpoint", ckpt, *args, "--no-progress"] if "--checkpoint" not in args else \
            ["watch", *args, "--no-progress"]
        r = CliRunner().invoke(fmmodel_main, [str(a) for a in argv])
        errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert r.exit_code == code and len(errors) == 1 and needle in errors[0], (args, r.exit_code, r.output)
        assert "Traceback" not in r.output


def test_health_limits_and_faults_refuse_nonsense():
    with pytest.raises(Exception, match="expected a finite number > 0"):
        HealthLimits(frame_timeout=0)
