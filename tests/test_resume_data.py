"""``fmmodel train --resume`` continues on the data the run started with, or refuses (issue 11, item 8).

A run records its store's absolute location and the fingerprints of the store and of the window
table; resuming works from any working directory, follows a moved store given with ``--store``,
and refuses a changed store, a rebuilt table and a different store with one line."""
import json
import os
import shutil

import pytest

from fmdata import synth
from fmdata.convert import convert
from fmdata.derive import make_windows
from fmdata.store import WindowParams
from fmmodel.errors import FmModelError
from fmmodel.runs.train import resume_run, train

from builders import SHORT_WINDOWS, converted_store
from processes import FMMODEL, one_line_error, run
from runs import quick_config


@pytest.fixture
def trained_run(tmp_path_factory, tmp_path, monkeypatch):
    """A one-epoch run started from ``tmp_path`` with a RELATIVE store path; returns (run, store)."""
    shutil.copytree(converted_store(tmp_path_factory), tmp_path / "s.zarr")
    monkeypatch.chdir(tmp_path)
    train(quick_config("s.zarr", "run", windows="w", val_fraction=0.0, preprocessing="reference",
                       **SHORT_WINDOWS.to_dict()), progress=False)
    return str(tmp_path / "run"), str(tmp_path / "s.zarr")


def test_run_records_absolute_store_and_fingerprints_and_resumes_from_anywhere(trained_run, tmp_path, monkeypatch):
    run_dir, store = trained_run
    data = json.loads(open(os.path.join(run_dir, "config.json")).read())["trained_on"]
    assert data["store"] == store and os.path.isabs(data["store"])
    assert len(data["store_fingerprint"]) == 64 and len(data["windows_fingerprint"]) == 64
    assert data["windows"] == "w" and data["windows_count"] > 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = resume_run(run_dir, epochs=2, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_resume_refuses_a_rebuilt_table(trained_run):
    run_dir, store = trained_run
    before = json.loads(open(os.path.join(run_dir, "config.json")).read())["trained_on"]["windows_count"]
    make_windows(store, "w", WindowParams(**{**SHORT_WINDOWS.to_dict(), "policy": "strict"}), force=True)
    with pytest.raises(FmModelError, match=rf"window table 'w' this run was trained on \({before:,} windows"):
        resume_run(run_dir, epochs=2, progress=False)


def test_resume_refuses_a_changed_store_with_one_line(trained_run, tmp_path):
    run_dir, store = trained_run
    other = synth.write_v1(tmp_path / "other.mat", frames=1200, size=16, seed=9, events="dense")
    convert([str(other)], store, workers=1, overwrite=True, progress=False)
    make_windows(store, "w", SHORT_WINDOWS)
    r = run([FMMODEL, "train", "--out", run_dir, "--resume", "--epochs", "2", "--no-progress"])
    one_line_error(r, 1, run_dir, "data changed since the run started", "start a new run")


def test_moved_store_is_used_with_store_and_a_different_one_refused(trained_run, tmp_path):
    run_dir, store = trained_run
    moved = str(tmp_path / "moved.zarr")
    os.rename(store, moved)
    with pytest.raises(FmModelError, match="got nothing there; if it moved, give its new location with --store"):
        resume_run(run_dir, epochs=2, progress=False)
    other = str(tmp_path / "other.zarr")
    convert([str(synth.write_v1(tmp_path / "o.mat", frames=1200, size=16, seed=8))], other, workers=1,
            progress=False)
    make_windows(other, "w", SHORT_WINDOWS)
    with pytest.raises(FmModelError, match="got a different store"):
        resume_run(run_dir, epochs=2, progress=False, store=other)
    resumed = resume_run(run_dir, epochs=2, progress=False, store=moved)
    assert len(resumed.history) == 2
    assert json.loads(open(os.path.join(run_dir, "config.json")).read())["trained_on"]["store"] == moved


def test_resume_takes_where_it_runs_and_refuses_what_it_learns(trained_run):
    run_dir, _ = trained_run
    r = run([FMMODEL, "train", "--out", run_dir, "--resume", "--epochs", "2", "--lr", "0.1", "--no-progress"])
    one_line_error(r, 2, "--lr", "expected only settings of where the run runs with a resume")
    assert json.loads(open(os.path.join(run_dir, "config.json")).read())["epochs"] == 1  # refused before it ran
    r = run([FMMODEL, "train", "--out", run_dir, "--resume", "--epochs", "2", "--workers", "1", "--data", "lazy",
             "--no-progress"])
    assert r.returncode == 0, r.stderr
    saved = json.loads(open(os.path.join(run_dir, "config.json")).read())
    assert (saved["workers"], saved["data"], saved["lr"], saved["epochs"]) == (1, "lazy", 1e-3, 2)
    assert saved["runtime"]["data"]["path"] == "lazy"
    with pytest.raises(FmModelError, match="expected only settings of where the run runs") as err:
        resume_run(run_dir, epochs=3, progress=False, environment={"seed": 4})
    assert err.value.field == "seed"
