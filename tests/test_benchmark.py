"""`fmmodel benchmark`: every (model, policy, seed) cell trained and scored once, a killed run
completed by running it again, and a table whose numbers are those of `fmmodel evaluate`."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fmmodel.errors import FmModelError
from fmmodel.model.registry import resolve_variant
from fmmodel.runs.benchmark import BenchmarkSettings, cell_folder, run_benchmark
from fmmodel.runs.benchmark_table import TABLE_JSON, TABLE_MD, TABLE_PNG, label
from fmmodel.scoring.evaluate import evaluate

from builders import cached_store

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "custom_model" / "tiny_models.py")
CLIP_CNN = f"{EXAMPLE}:clip_cnn"
MODELS = ["vicu_cls", CLIP_CNN]
SEEDS = [0, 1]
# tiny sizes, short windows (6 s of current: the validation gap stays short and strict test windows fit), a few steps per epoch
TRAIN = dict(epochs=3, batch_size=16, lr=1e-3, lr_step_epoch=3, workers=0, threads=1, device="cpu",
             max_steps_per_epoch=2, val_fraction=0.1, preprocessing="normalized",
             model={"size": "tiny", "width": 32, "heads": 2, "head_dim": 16, "mlp_dim": 64, "depth": 1})
WINDOW = dict(frames=10, frame_step=6, current_seconds=6.0, current_rows=40)
SETTINGS = BenchmarkSettings(train=TRAIN, window=WINDOW)
CLI_ARGS = ["--epochs", "3", "--batch-size", "16", "--lr", "1e-3", "--lr-step", "3", "--workers", "0",
            "--threads", "1", "--device", "cpu", "--max-steps", "2", "--val-fraction", "0.1",
            "--preprocessing", "normalized", "--frames", "10", "--frame-step", "6", "--current-seconds", "6",
            "--current-rows", "40", "--model-size", "tiny", "--model-opt", "width=32", "--model-opt", "heads=2",
            "--model-opt", "head_dim=16", "--model-opt", "mlp_dim=64", "--model-opt", "depth=1"]
CLASS_KEYS = ("accuracy", "f1", "fdr", "mdr", "auroc", "ap")


def _fmmodel(*args: str, **kw):
    exe = os.path.join(os.path.dirname(sys.executable), "fmmodel")
    return subprocess.run([exe, *args], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def bench_store(tmp_path_factory) -> str:
    return cached_store(tmp_path_factory, "bench-store", recordings=2, frames=1200, size=32, seed=4)


@pytest.fixture(scope="module")
def killed_and_rerun(bench_store, tmp_path_factory):
    """Start the benchmark CLI, SIGKILL it once the second cell has saved its first epoch, run it
    again; return (out folder, the first cell's last.pt mtime at the kill, the re-run's process)."""
    out = tmp_path_factory.mktemp("bench") / "b"
    exe = os.path.join(os.path.dirname(sys.executable), "fmmodel")
    cmd = [exe, "benchmark", "--store", bench_store, "--variants", ",".join(MODELS), "--seeds", "0,1",
           "--out", str(out), "--no-progress", *CLI_ARGS]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = Path(cell_folder(str(out), MODELS[0], "reference", 1)) / "last.pt"
    deadline = time.monotonic() + 600
    while not second.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not (out / TABLE_JSON).exists()
    first = Path(cell_folder(str(out), MODELS[0], "reference", 0)) / "last.pt"
    stamp = first.stat().st_mtime_ns
    rerun = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    return out, stamp, rerun


def test_a_killed_benchmark_completes_when_run_again(killed_and_rerun):
    out, stamp, rerun = killed_and_rerun
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["cells"] == 4 and report["skipped"] == 1 and report["resumed"] == 1 and report["trained"] == 2
    assert re.search(r"cell 2/4 vicu_cls reference seed 1: resuming at epoch [23] of 3", rerun.stderr)
    first = Path(cell_folder(str(out), MODELS[0], "reference", 0)) / "last.pt"
    assert first.stat().st_mtime_ns == stamp  # the finished cell was not trained again
    for name in (TABLE_MD, TABLE_JSON, TABLE_PNG):
        assert (out / name).stat().st_size > 0
    assert (out / TABLE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((out / TABLE_JSON).read_text())
    assert {(c["model"], c["seed"]) for c in table["cells"]} == {(m, s) for m in MODELS for s in SEEDS}
    md = (out / TABLE_MD).read_text()
    assert "| tiny_models.py:clip_cnn | reference |" in md and "| vicu_cls | reference |" in md


def test_a_second_invocation_does_no_training(killed_and_rerun, bench_store):
    out, _, _ = killed_and_rerun
    stamps = {m: os.stat(os.path.join(cell_folder(str(out), m, "reference", s), "last.pt")).st_mtime_ns
              for m in MODELS for s in SEEDS}
    report = run_benchmark(bench_store, models=MODELS, seeds=SEEDS, policies=["reference"], out=str(out),
                           settings=SETTINGS, progress=False)
    assert (report.trained, report.resumed, report.skipped) == (0, 0, 4)
    assert stamps == {m: os.stat(os.path.join(cell_folder(str(out), m, "reference", s), "last.pt")).st_mtime_ns
                      for m in MODELS for s in SEEDS}


def test_the_table_holds_the_numbers_of_evaluate_run_by_hand(killed_and_rerun, bench_store):
    out, _, _ = killed_and_rerun
    table = json.loads((out / TABLE_JSON).read_text())
    rows = {r["model"]: r for r in table["rows"]}
    for model in MODELS:
        by_hand = []
        for seed in SEEDS:
            res = _fmmodel("evaluate", "--store", bench_store, "--checkpoint",
                           os.path.join(cell_folder(str(out), model, "reference", seed), "best.pt"),
                           "--model", model, "--workers", "0", "--device", "cpu", "--json", "--no-progress")
            assert res.returncode == 0, res.stderr
            by_hand.append(json.loads(res.stdout)["metrics"])
        cells = {c["seed"]: c for c in table["cells"] if c["model"] == model}
        for seed, metrics in zip(SEEDS, by_hand):
            for key in CLASS_KEYS:
                assert cells[seed]["test"][key] == pytest.approx(metrics["overall"]["class"][key], abs=1e-9), key
            assert cells[seed]["test"]["n"] == metrics["overall"]["class"]["n"]
        row = rows[model]
        assert row["test_samples"] == by_hand[0]["overall"]["class"]["n"]
        for key in CLASS_KEYS:
            values = [m["overall"]["class"][key] for m in by_hand]
            assert row["test"][key]["mean"] == pytest.approx(np.mean(values), abs=1e-9)
            assert row["test"][key]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-9)
        for rid, rec in row["recordings"].items():
            values = [m["recordings"][rid]["class"]["f1"] for m in by_hand]
            assert rec["f1"]["mean"] == pytest.approx(np.mean(values), abs=1e-9)


def test_the_alarm_columns_are_those_of_predict_and_alarms_run_by_hand(killed_and_rerun, bench_store, tmp_path):
    """Each cell's alarm figures (its test windows decided every 0.5 s under watch's default policy)
    equal `fmmodel alarms` on `fmmodel predict --split test` of its best.pt; the row is their mean."""
    out, _, _ = killed_and_rerun
    table = json.loads((out / TABLE_JSON).read_text())
    model = MODELS[0]
    by_hand = {}
    for seed in SEEDS:
        pred = tmp_path / f"pred-{seed}.zarr"
        res = _fmmodel("predict", "--store", bench_store, "--checkpoint",
                       os.path.join(cell_folder(str(out), model, "reference", seed), "best.pt"), "--split", "test",
                       "--out", str(pred), "--workers", "0", "--device", "cpu", "--no-progress")
        assert res.returncode == 0, res.stderr
        res = _fmmodel("alarms", "--store", bench_store, "--predictions", str(pred), "--json")
        assert res.returncode == 0, res.stderr
        by_hand[seed] = json.loads(res.stdout)["overall"]
    cells = {c["seed"]: c["alarms"] for c in table["cells"] if c["model"] == model}
    for seed, overall in by_hand.items():
        assert overall["events"] > 0
        for key in ("events", "recall", "delay_median", "delay_p90", "false_alarms_per_hour",
                    "false_alarms_per_hour_upper95", "chatter"):
            assert cells[seed][key] == pytest.approx(overall[key], abs=1e-9), (seed, key)
        assert cells[seed]["nab_standard"] == pytest.approx(overall["nab"]["standard"], abs=1e-9)
    row = next(r for r in table["rows"] if r["model"] == model)
    for key in ("recall", "false_alarms_per_hour_upper95"):
        assert row["alarms"][key]["mean"] == pytest.approx(np.mean([by_hand[s][key] for s in SEEDS]), abs=1e-9)
    assert "## Test, alarms as events" in (out / TABLE_MD).read_text()


def test_both_policies_sit_side_by_side(bench_store, tmp_path):
    report = run_benchmark(bench_store, models=["vicu_cls"], seeds=[0], policies=["reference", "strict"],
                           out=str(tmp_path / "b"), settings=BenchmarkSettings(train={**TRAIN, "epochs": 1}, window=WINDOW),
                           progress=False)
    assert [(r["model"], r["policy"]) for r in report.table.rows] == [("vicu_cls", "reference"),
                                                                       ("vicu_cls", "strict")]
    n = {r["policy"]: r["test_samples"] for r in report.table.rows}
    assert n["strict"] < n["reference"]  # strict drops the test windows that reach into the guard
    assert report.table.rows[0]["validation"]["val_f1"]["n"] == 1
    assert "| vicu_cls | strict |" in report.table.markdown
    # the header states epochs, model size and parameters, windows per model and the data path (issue 18)
    cell = json.loads((Path(cell_folder(str(tmp_path / "b"), "vicu_cls", "strict", 0)) / "eval" / "report.json")
                      .read_text())
    config = json.loads((Path(cell_folder(str(tmp_path / "b"), "vicu_cls", "strict", 0)) / "config.json").read_text())
    header = report.table.markdown.split("## Test, overall")[0]
    assert ("- Training: 1 epoch(s) per run; model size tiny with width=32, heads=2, head_dim=16, mlp_dim=64, depth=1; "
            f"parameters per model: vicu_cls: {cell['parameters']:,}.") in header and cell["parameters"] > 0
    assert "- Windows per model: vicu_cls: 10 frames step 6, 40 current rows over 6.0 s." in header
    assert (f"- Data path (`--data auto`): training {config['runtime']['data']['path']}, scoring "
            f"{cell['data']['path']}.") in header


def test_more_epochs_resume_every_cell_and_score_it_again(bench_store, tmp_path):
    out = str(tmp_path / "b")
    one = BenchmarkSettings(train={**TRAIN, "epochs": 1}, window=WINDOW)
    run_benchmark(bench_store, models=["vicu_cls"], seeds=[0], policies=["reference"], out=out, settings=one,
                  progress=False)
    folder = cell_folder(out, "vicu_cls", "reference", 0)
    report = Path(folder) / "eval" / "report.json"
    first = report.stat().st_mtime_ns
    two = BenchmarkSettings(train={**TRAIN, "epochs": 2}, window=WINDOW)
    res = run_benchmark(bench_store, models=["vicu_cls"], seeds=[0], policies=["reference"], out=out, settings=two,
                        progress=False)
    assert (res.trained, res.resumed, res.skipped) == (0, 1, 0)
    assert report.stat().st_mtime_ns > first  # the score of the old best.pt is not kept
    by_hand = evaluate(bench_store, os.path.join(folder, "best.pt"), out=None, workers=0, device="cpu",
                       progress=False, trusted=["vicu_cls"])["metrics"]["overall"]["class"]
    cell = json.loads(Path(res.table.json_path).read_text())["cells"][0]
    for key in CLASS_KEYS:
        assert cell["test"][key] == pytest.approx(by_hand[key], abs=1e-9), key
    # fewer epochs than a cell ran: its best checkpoint may be of an epoch the table would not say
    with pytest.raises(FmModelError, match="got one trained for 2 epochs"):
        run_benchmark(bench_store, models=["vicu_cls"], seeds=[0], policies=["reference"], out=out, settings=one,
                      progress=False)


def test_a_folder_of_other_settings_is_refused(killed_and_rerun, bench_store):
    out, _, _ = killed_and_rerun
    with pytest.raises(FmModelError, match="trained with other settings"):
        run_benchmark(bench_store, models=["vicu_cls"], seeds=[0], policies=["reference"], out=str(out),
                      settings=BenchmarkSettings(train={**TRAIN, "lr": 5e-4}, window=WINDOW), progress=False)


def test_bad_lists_are_usage_errors(bench_store, tmp_path):
    res = _fmmodel("benchmark", "--store", bench_store, "--seeds", "0,x", "--out", str(tmp_path / "b"))
    assert res.returncode == 2 and "integer seeds" in res.stderr and "Traceback" not in res.stderr
    res = _fmmodel("benchmark", "--store", bench_store, "--seeds", "0,-1", "--out", str(tmp_path / "b"))
    assert res.returncode == 2 and "--seeds" in res.stderr and "seeds >= 0" in res.stderr
    res = _fmmodel("benchmark", "--store", bench_store, "--seeds", "0,0", "--out", str(tmp_path / "b"))
    assert res.returncode == 2 and "--seeds" in res.stderr and "got 0 more than once" in res.stderr
    res = _fmmodel("benchmark", "--store", bench_store, "--variants", "vicu_cls,vicu_cls", "--out", str(tmp_path / "b"))
    assert res.returncode == 2 and "--variants" in res.stderr and "vicu_cls more than once" in res.stderr
    res = _fmmodel("benchmark", "--store", bench_store, "--variants", "vicu_cls,nosuch", "--out",
                   str(tmp_path / "b"))
    assert res.returncode == 2 and "nosuch" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b").exists()


def test_labels_shorten_factory_files_only():
    assert label(CLIP_CNN) == "tiny_models.py:clip_cnn"
    assert label("vicu_cls") == "vicu_cls" and label("pkg.mod:f") == "pkg.mod:f"


def test_settings_name_only_what_cells_share():
    with pytest.raises(FmModelError, match="expected training settings"):
        BenchmarkSettings(train={"seed": 3})  # each cell's own
    with pytest.raises(FmModelError, match="expected window settings"):
        BenchmarkSettings(window={"policy": "strict"})
    cfg = SETTINGS.cell_config(store="s.zarr", out="o", variant=resolve_variant("vicu_cls"), seed=3, policy="strict")
    assert cfg.lr == 1e-3 and cfg.hflip is True  # TrainConfig's default
    assert (cfg.seed, cfg.window.policy, cfg.window.frames) == (3, "strict", WINDOW["frames"])
