"""Training that fits the machine and the data (issue 18): the hold-out of short recordings, presets,
settings files, the time a run will take, its curves and its model card."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fmdata.derive import build_window_table, ensure_labels, load_index, make_windows
from fmdata.store import WindowParams, open_store, schema
from fmdata.store.outputs import made_by
from fmdata.store.window_table import write_window_table
from fmmodel.data.holdout import MIN_TRAIN_SHARE, SMALLER_HOLDOUTS, holdout_split
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import load_checkpoint
from fmmodel.model.registry import VARIANTS
from fmmodel.runs.config import TrainConfig
from fmmodel.runs.curves import draw_curves
from fmmodel.runs.eta import RunClock
from fmmodel.runs.presets import PRESETS
from fmmodel.runs.settings import resolve_benchmark_settings, resolve_train_config
from fmmodel.runs.train import resume_run, train
from fmmodel.scoring.card import CARD, read_card, record_evaluation, render
from fmmodel.scoring.evaluate import evaluate

from builders import cached_store
from processes import FMMODEL, one_line_error, run
from runs import SMALL_WINDOWS, quick_config


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = cached_store(tmp_path_factory)
    ensure_labels(path)
    return path


def _split(store: str, params: WindowParams, fraction: float, table: str | None = None):
    handle = open_store(store)
    wt = build_window_table(load_index(handle), params)
    offsets, fce = handle.frame_offsets, np.asarray(handle.frame_current_end)
    return wt, fce, offsets, holdout_split(wt, fce, offsets, fraction, table=table)


def _per_recording(info):
    return {e["recording"]: e for e in info["recordings"]}


# ---- 1. short recordings train -------------------------------------------------------------------


def test_a_hold_out_that_would_take_every_training_window_is_switched_off_and_says_what_works(store):
    # the reference windows read 120 s (3,000 frames) back: more than a recording's training block
    wt, fce, offsets, (tr, va, info) = _split(store, WindowParams(stride=4), 0.1)
    train_split = np.flatnonzero(wt.column("split") == schema.SPLIT_TRAIN)
    assert len(va) == 0 and set(tr) == set(train_split)  # every training window trains
    line = info["adjusted"]
    assert "would leave no training window in 6 of 6" in line and "validation is off" in line
    assert all(e["fraction"] == 0 and e["val"] == 0 for e in info["recordings"])
    # the hint names one option that works: those windows give every recording validation
    assert "--windows" not in line
    seconds = float(line.split("--current-seconds ")[1].split()[0])
    _, _, _, (tr2, va2, info2) = _split(store, WindowParams(stride=4, current_seconds=seconds), 0.1)
    assert info2["adjusted"] is None and all(e["val"] > 0 and e["train"] > 0 for e in info2["recordings"])
    # with a stored table, the hint gives options that go together (never --current-seconds beside --windows)
    *_, (_, _, with_table) = _split(store, WindowParams(stride=4), 0.1, table="ref10")
    assert (f"leave out --windows and pass --current-seconds {seconds:g}" in with_table["adjusted"]
            and f"fmdata windows STORE --name NAME --current-seconds {seconds:g}) and pass --windows NAME"
            in with_table["adjusted"])


def test_a_smaller_hold_out_is_taken_where_one_keeps_half_the_training_windows(store):
    params = WindowParams(**{**SMALL_WINDOWS, "current_seconds": 5.0})
    wt, fce, offsets, (tr, va, info) = _split(store, params, 0.95)
    assert info["adjusted"] and "instead" in info["adjusted"] and info["fraction"] == 0.95
    rec = wt.column("recording")
    for r, entry in _per_recording(info).items():
        n = entry["train"] + entry["val"] + entry["dropped"]
        # the first smaller share whose own split keeps half the recording's windows for training
        expected = 0.0
        for d in SMALLER_HOLDOUTS:
            *_, (_, _, alone) = _split(store, params, 0.95 / d)
            kept = _per_recording(alone)[r]
            if kept["val"] and kept["train"] >= MIN_TRAIN_SHARE * n:
                expected = 0.95 / d
                break
        assert entry["fraction"] == expected > 0
        assert entry["train"] >= MIN_TRAIN_SHARE * n and entry["val"] == int(np.ceil(expected * n))
        # still no shared input between the recording's training and validation windows
        t_r, v_r = tr[rec[tr] == r], va[rec[va] == r]
        cur_first = np.searchsorted(fce, wt.column("current_start")[v_r], side="right")
        assert wt.clip[t_r].max() < min(wt.clip[v_r].min(), cur_first.min())


def test_short_recordings_train_and_the_run_records_the_hold_out_it_took(store, tmp_path, capsys):
    cfg = quick_config(store, str(tmp_path / "run"), current_seconds=120.0, max_steps_per_epoch=2)
    train(cfg, progress=False)
    err = capsys.readouterr().err
    assert err.count("validation hold-out: holding out 0.1") == 1 and "validation is off" in err
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert saved["validation"]["val_windows"] == 0 and "validation is off" in saved["validation"]["adjusted"]
    assert saved["val_fraction"] == 0.1  # what was asked stays; what was done is under validation


def test_a_table_without_training_windows_names_options_that_go_together(store, tmp_path):
    wt = build_window_table(load_index(open_store(store)), WindowParams(**SMALL_WINDOWS, stride=20))
    test_only = wt.subset(np.flatnonzero(wt.column("split") == schema.SPLIT_TEST))
    write_window_table(open_store(store, "r+").root, "test-only", test_only)
    with pytest.raises(FmModelError) as exc:
        train(quick_config(store, str(tmp_path / "run"), windows="test-only"), progress=False)
    message = str(exc.value)
    assert "none in the training split" in message and "fmdata windows STORE --name NAME" in message
    assert "leave out --windows and pass those options" in message and not os.path.exists(tmp_path / "run")


# ---- 2. presets; 3. settings files -----------------------------------------------------------------


def test_settings_are_layered_defaults_preset_file_options(store, tmp_path):
    plain = resolve_train_config(store=store, out="r")
    assert plain.identity() == TrainConfig(store=store, out="r", model={"size": "reference"}).identity()
    assert resolve_train_config(store=store, out="r", preset="reference").identity() == plain.identity()
    cpu = PRESETS["cpu"]
    (tmp_path / "s.yaml").write_text("lr: 0.002\nepochs: 4\nmodel:\n  depth: 2\nwindow:\n  stride: 3\n")
    cfg = resolve_train_config(store=store, out="r", preset="cpu", config=str(tmp_path / "s.yaml"),
                               settings={"lr": 0.003}, window={"frames": 6})
    assert cfg.preset == "cpu" and cfg.lr == 0.003 and cfg.epochs == 4  # options > file > preset
    assert cfg.batch_size == cpu.train["batch_size"] and cfg.val_fraction == cpu.train["val_fraction"]
    assert cfg.model == {**cpu.train["model"], "depth": 2}  # model options laid over the preset's sizes
    assert (cfg.window.frames, cfg.window.stride, cfg.window.frame_step) == (6, 3, cpu.window["frame_step"])
    # a file's preset is the base of its settings; one typed replaces it
    (tmp_path / "p.json").write_text(json.dumps({"preset": "smoke", "lr": 0.01}))
    from_file = resolve_train_config(store=store, out="r", config=str(tmp_path / "p.json"))
    assert from_file.preset == "smoke" and from_file.lr == 0.01 and from_file.epochs == PRESETS["smoke"].train["epochs"]
    assert resolve_train_config(store=store, out="r", preset="cpu", config=str(tmp_path / "p.json")).epochs == 6


def test_every_preset_is_a_valid_run_and_a_benchmark_setting(store):
    for name, preset in PRESETS.items():
        cfg = resolve_train_config(store=store, out="r", preset=name)
        assert cfg.preset == name and all(getattr(cfg, k) == v for k, v in preset.train.items() if k != "model")
        assert all(getattr(cfg.window, k) == v for k, v in preset.window.items())
        settings, _ = resolve_benchmark_settings(preset=name)
        cell = settings.cell_config(store=store, out="r", variant=VARIANTS["vicu_cls"], seed=0, policy="reference")
        assert cell.identity() == cfg.identity()


def test_a_bad_settings_file_is_one_line_naming_the_key(store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    r = run([FMMODEL, "train", "--store", store, "--config", bad, "--out", tmp_path / "r"])
    one_line_error(r, 2, "--config", "unknown key 'learning_rate'", "bad.yaml")
    (tmp_path / "factory.yaml").write_text(f"variant: {tmp_path / 'evil.py'}:model\n")
    (tmp_path / "evil.py").write_text("raise SystemExit('imported')\n")
    with pytest.raises(FmModelError, match="a file cannot choose code to import") as exc:
        resolve_train_config(store=store, out="r", config=str(tmp_path / "factory.yaml"))
    assert exc.value.field == "model"
    with pytest.raises(FmModelError, match="window.frame"):
        (tmp_path / "w.yaml").write_text("window: {frame: 4}\n")
        resolve_train_config(store=store, out="r", config=str(tmp_path / "w.yaml"))
    assert not (tmp_path / "r").exists()


def test_a_preset_and_a_stored_table_must_agree(store, tmp_path):
    make_windows(store, "ref-s20", WindowParams(stride=20))
    r = run([FMMODEL, "train", "--store", store, "--windows", "ref-s20", "--preset", "cpu", "--out", tmp_path / "r"])
    line = one_line_error(r, 2, "--windows", "window table 'ref-s20'", "preset 'cpu'", "frame_step 6",
                          "frame_step 18", "leave out --windows")
    assert "fmdata windows" in line and not (tmp_path / "r").exists()
    cpu = PRESETS["cpu"]
    make_windows(store, "cpu", WindowParams(**cpu.window))
    cfg = resolve_train_config(store=store, out="r", preset="cpu", windows="cpu")
    assert cfg.windows == "cpu" and cfg.window.stride == cpu.window["stride"]


def test_a_settings_file_and_options_reach_the_run_and_its_config_json_trains_the_same_again(store, tmp_path):
    (tmp_path / "s.yaml").write_text("batch_size: 4\nmodel: {width: 8, head_dim: 4}\nval_fraction: 0.2\n")
    x, y = tmp_path / "x", tmp_path / "y"
    r = run([FMMODEL, "train", "--store", store, "--preset", "smoke", "--config", tmp_path / "s.yaml", "--epochs", "1",
             "--threads", "1", "--out", x, "--no-progress"])
    assert r.returncode == 0, r.stderr
    cfg = json.load(open(x / "config.json"))
    smoke = PRESETS["smoke"]
    assert (cfg["preset"], cfg["epochs"], cfg["batch_size"], cfg["val_fraction"]) == ("smoke", 1, 4, 0.2)
    assert cfg["model"] == {"size": "tiny", "width": 8, "head_dim": 4}
    assert cfg["max_steps_per_epoch"] == smoke.train["max_steps_per_epoch"] and cfg["window"]["stride"] == 10
    r = run([FMMODEL, "train", "--config", x / "config.json", "--out", y, "--no-progress"])
    assert r.returncode == 0, r.stderr
    again = TrainConfig.load(y / "config.json")
    assert again.identity() == TrainConfig.load(x / "config.json").identity() and again.threads == 1
    a, b = load_checkpoint(x / "last.pt"), load_checkpoint(y / "last.pt")
    for k in a.state_dict:
        torch.testing.assert_close(a.state_dict[k], b.state_dict[k], rtol=0, atol=0, msg=k)
    # a run folder is never reused: the file's own out is that of run x
    r = run([FMMODEL, "train", "--config", x / "config.json", "--no-progress"])
    one_line_error(r, 1, "expected a new or empty run folder")


def test_benchmark_takes_a_preset_and_a_settings_file(store, tmp_path):
    (tmp_path / "b.yaml").write_text("variants: [current_cls]\nseeds: [3]\nepochs: 1\nstore: " + store + "\n")
    r = run([FMMODEL, "benchmark", "--preset", "smoke", "--config", tmp_path / "b.yaml", "--out", tmp_path / "b",
             "--no-progress", "--lr", "0.002"])
    assert r.returncode == 0, r.stderr
    cell = tmp_path / "b" / "current_cls" / "reference" / "seed-3"
    cfg = json.load(open(cell / "config.json"))
    assert (cfg["preset"], cfg["epochs"], cfg["lr"], cfg["seed"]) == ("smoke", 1, 0.002, 3)
    assert cfg["window"]["stride"] == PRESETS["smoke"].window["stride"]
    assert (tmp_path / "b" / "table.md").exists() and read_card(cell / CARD)["tests"]  # evaluate filled the card
    (tmp_path / "f.yaml").write_text(f"variants: ['{tmp_path / 'evil.py'}:model']\n")
    with pytest.raises(FmModelError, match="a file cannot choose code to import"):
        resolve_benchmark_settings(config=str(tmp_path / "f.yaml"))


# ---- the smoke chain, the time a run takes, curves and the card ------------------------------------


@pytest.fixture(scope="module")
def smoke_run(store, tmp_path_factory):
    """`fmmodel train --preset smoke` then `fmmodel evaluate` of its best.pt, as a user runs them."""
    folder = tmp_path_factory.mktemp("smoke") / "run"
    t0 = time.perf_counter()
    trained = run([FMMODEL, "train", "--store", store, "--preset", "smoke", "--out", folder, "--no-progress"])
    assert trained.returncode == 0, trained.stderr
    after_training = read_card(folder / CARD)
    scored = run([FMMODEL, "evaluate", "--store", store, "--checkpoint", folder / "best.pt", "--out", folder / "eval",
                  "--no-progress"])
    assert scored.returncode == 0, scored.stderr
    print(f"smoke chain (train + evaluate, two processes): {time.perf_counter() - t0:.1f} s")
    return folder, trained, after_training, scored


def test_the_smoke_preset_runs_training_validation_checkpoints_and_evaluate(smoke_run):
    folder, trained, _, scored = smoke_run
    rows = list(csv.DictReader(open(folder / "metrics.csv")))
    smoke = PRESETS["smoke"]
    assert len(rows) == smoke.train["epochs"] and all(int(r["val_windows"]) > 0 for r in rows)
    steps = smoke.train["max_steps_per_epoch"] * smoke.train["batch_size"]
    assert all(int(r["train_windows"]) == steps for r in rows)
    assert load_checkpoint(folder / "best.pt").meta.info["epoch"] in (1, 2)
    assert json.load(open(folder / "eval" / "report.json"))["metrics"]["overall"]["class"]["n"] > 0
    # it says how long the run takes after its first batches, once; a tiny model gets no CPU advice
    assert trained.stderr.count("timing: ") == 1 and "--preset cpu" not in trained.stderr
    epochs = [line for line in trained.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs[0].endswith(" left") and not epochs[-1].endswith(" left")


def test_curves_are_drawn_every_epoch_and_marked(smoke_run):
    folder, *_ = smoke_run
    assert made_by(folder / "curves.png") == "fmmodel train"
    with open(folder / "curves.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # what the picture draws: every series present, validation absent, and segmentation scores
    rows = [{"epoch": 1, "lr": 1e-3, "train_loss": 0.7, "samples_per_s": 50.0, "best": 1, "val_loss": None},
            {"epoch": 2, "lr": 1e-4, "train_loss": 0.5, "samples_per_s": 55.0, "best": 1, "val_loss": None}]
    fig = draw_curves(rows, title="run r: vicu_cls")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("no validation" in t for t in texts) and fig.get_suptitle() == "run r: vicu_cls"
    seg = [{**r, "val_loss": 0.6, "val_f1": 0.5, "val_auroc": 0.7, "val_miou": 0.4} for r in rows]
    labels = [line.get_label() for ax in draw_curves(seg, title="t").axes for line in ax.lines]
    assert {"training", "validation", "validation F1", "validation AUROC", "validation mIoU"} <= set(labels)


def test_the_model_card_says_what_the_model_is_and_gains_the_test_figures(smoke_run, store):
    folder, _, after_training, scored = smoke_run
    text = (folder / CARD).read_text()
    assert text.startswith("<!-- fmf-made-by:fmmodel train -->") and made_by(folder / CARD) == "fmmodel train"
    cfg = json.load(open(folder / "config.json"))
    for needle in (cfg["trained_on"]["store_fingerprint"][:16], cfg["trained_on"]["windows_fingerprint"][:16],
                   "every 10th window", "validation hold-out", "the last 0.1", "preset `smoke`",
                   f"fmmodel evaluate --store {cfg['store']} --checkpoint {folder / 'best.pt'}",
                   f"fmmodel predict --store {cfg['store']} --checkpoint {folder / 'best.pt'}", "curves.png"):
        assert needle in text, needle
    assert after_training["tests"] == [] and "Not evaluated yet" in render(after_training)
    report = json.load(open(folder / "eval" / "report.json"))
    test = read_card(folder / CARD)["tests"]
    assert len(test) == 1 and test[0]["checkpoint"] == "best.pt" and test[0]["split"] == "test"
    assert test[0]["class"]["f1"] == report["metrics"]["overall"]["class"]["f1"]
    assert f"{report['metrics']['overall']['class']['f1']:.3f}" in text.split("## Test")[1]
    assert "model card:" in scored.stderr


def test_a_card_is_never_written_over_a_users_readme(smoke_run, store, tmp_path, capsys):
    folder, *_ = smoke_run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "best.pt").write_bytes((folder / "best.pt").read_bytes())
    (mine / "README.md").write_text("# my notes\n")
    evaluate(store, str(mine / "best.pt"), workers=0, device="cpu", progress=False)
    assert (mine / "README.md").read_text() == "# my notes\n"
    assert "not a model card" in capsys.readouterr().err
    # nor by the trainer, when a resumed run finds one
    run_dir = tmp_path / "run"
    train(quick_config(store, str(run_dir), max_steps_per_epoch=2), progress=False)
    (run_dir / "README.md").write_text("# my notes\n")
    capsys.readouterr()
    resume_run(str(run_dir), epochs=2, progress=False)
    assert (run_dir / "README.md").read_text() == "# my notes\n"
    assert capsys.readouterr().err.count("not a model card") == 1


def test_evaluate_leaves_the_card_of_a_run_still_training(smoke_run, tmp_path):
    folder, *_ = smoke_run
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fmdata.store.lock import writer_lock\n"
        "with writer_lock(sys.argv[1], 'fmmodel train', what='run folder'):\n"
        "    print('locked', flush=True); time.sleep(120)"), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (folder / CARD).read_bytes()
        report = json.load(open(folder / "eval" / "report.json"))
        said = record_evaluation(str(folder / "best.pt"), report, epoch=read_card(folder / CARD)["tests"][0]["epoch"])
        assert "still being written" in said and (folder / CARD).read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


def test_a_reference_model_on_the_cpu_says_how_long_and_which_preset_is_faster(store, tmp_path, capsys):
    cfg = quick_config(store, str(tmp_path / "run"), model={"size": "reference"}, batch_size=2, frames=4,
                       current_seconds=10.0, current_rows=20, max_steps_per_epoch=7, val_fraction=0.0)
    train(cfg, progress=False)
    err = capsys.readouterr().err
    assert err.count("timing: ") == 1 and err.count("training a reference-size FmFormer on the CPU") == 1
    assert "--preset cpu trains a small model on this store in about" in err


def test_the_clock_says_what_is_left_at_the_pace_of_whole_epochs():
    said: list[str] = []
    clock = RunClock(steps_per_epoch=10, epochs=3, log=said.append)
    for step in range(10):
        clock.batch_done(0, step)
    assert len(said) == 1 and "remaining" in said[0]
    assert clock.epoch_done(0, 60.0) == "about 2 min left" and clock.epoch_done(1, 100.0) == "about 80 s left"
    assert clock.epoch_done(2, 60.0) == ""
