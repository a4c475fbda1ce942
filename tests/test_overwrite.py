"""Outputs: ``--overwrite`` (and ``--force``) replace only what the command made, an output never lies
inside what the command reads, and a failed command leaves no folder it created.

Every test runs the installed ``fmdata``/``fmmodel`` scripts on real files and stores
(docs/reliability.md, "--overwrite replaces only what this command made" and the sections after it).
"""
from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import zarr

from fmdata import synth
from fmdata.derive import compute_stats
from fmdata.store import open_store, schema

from builders import cached_store, converted_store, recording, v1_arrays, write_store
from builders import write_v1 as write_user_v1
from processes import FMDATA, FMMODEL, one_line_error, run
from runs import quick_config

QUICK_TRAIN = ["--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--model-size", "tiny", "--workers", "0",
               "--device", "cpu", "--frames", "4", "--frame-step", "2", "--current-seconds", "10",
               "--current-rows", "20", "--no-progress"]
REFUSED = "replaces only what this command made"


def _tree(path) -> list[tuple[str, int]]:
    """Every file below ``path`` with its size and modification time: what must stay as it was."""
    path = Path(path)
    if path.is_file():
        return [(path.name, path.stat().st_mtime_ns)]
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*"))


# ---- --overwrite replaces only what this command made ----------------------------------------------
def test_synth_overwrite_replaces_only_what_synth_wrote(tmp_path):
    out = tmp_path / "raw"
    assert run([FMDATA, "synth", out, "--recordings", "2", "--frames", "20", "--size", "8"]).returncode == 0
    (out / "precious.txt").write_text("notes")  # the audit's case: two MAT files of synth and the user's file
    before = _tree(out)
    one_line_error(run([FMDATA, "synth", out, "--recordings", "2", "--frames", "30", "--size", "8", "--overwrite"]),
                   1, REFUSED, "precious.txt")
    assert _tree(out) == before
    (out / "precious.txt").unlink()
    # the user's own MAT files (written the way MATLAB writes them) are not synth's either
    users = tmp_path / "users"
    users.mkdir()
    write_user_v1(users / "batch_01.mat", v1_arrays(10))
    one_line_error(run([FMDATA, "synth", users, "--recordings", "2", "--frames", "20", "--size", "8",
                        "--overwrite"]), 1, REFUSED, "batch_01.mat")
    one_line_error(run([FMDATA, "synth", users / "batch_01.mat", "--frames", "20", "--size", "8", "--overwrite"]),
                   1, REFUSED)
    assert (users / "batch_01.mat").exists() and [p.name for p in users.iterdir()] == ["batch_01.mat"]
    # a converted store
    store = tmp_path / "s.zarr"
    assert run([FMDATA, "convert", out / "batch_01.mat", store, "--workers", "1", "--no-progress"]).returncode == 0
    before = _tree(store)
    one_line_error(run([FMDATA, "synth", store, "--frames", "20", "--size", "8", "--overwrite"]), 1, REFUSED,
                   "a Zarr store")
    assert _tree(store) == before and open_store(store) is not None
    # what synth wrote is replaced: a V1 folder by a V2 folder, and that by another
    for layout in ("v2", "v2"):
        r = run([FMDATA, "synth", out, "--layout", layout, "--frames", "20", "--size", "8", "--overwrite"])
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["currents", "test.json", "timestamps", "train.json", "videos"]
    (out / "videos" / "extra.mat").write_bytes((out / "videos" / "batch_01.mat").read_bytes()[:200])
    one_line_error(run([FMDATA, "synth", out, "--frames", "20", "--size", "8", "--overwrite"]), 1, REFUSED,
                   "extra.mat")


def test_synth_preview_overwrite_replaces_only_its_picture(tmp_path):
    picture = tmp_path / "p.png"
    shutil.copy(Path(__file__).resolve().parents[1] / "docs" / "derivations-preview.png", picture)  # a user's PNG
    one_line_error(run([FMDATA, "synth", tmp_path / "a.mat", "--frames", "20", "--size", "8", "--preview", picture,
                        "--overwrite"]), 1, REFUSED)
    assert not (tmp_path / "a.mat").exists()
    picture.unlink()
    for _ in range(2):  # written, then its own picture replaced
        r = run([FMDATA, "synth", tmp_path / "a.mat", "--frames", "20", "--size", "8", "--preview", picture,
                 "--overwrite"])
        assert r.returncode == 0, r.stderr


def test_convert_overwrite_replaces_only_an_fmf_store(tmp_path):
    src = synth.write_v1(tmp_path / "a.mat", frames=40, size=8, seed=1)
    other = tmp_path / "other.zarr"  # a Zarr store, but not one that fmdata convert makes
    root = zarr.open_group(other, mode="w", zarr_format=3)
    root.attrs["experiment"] = "mine"
    root.create_array("x", shape=(4,), dtype="int32")[:] = np.arange(4)
    before = _tree(other)
    one_line_error(run([FMDATA, "convert", src, other, "--overwrite", "--workers", "1", "--no-progress"]), 1,
                   REFUSED, "not an FMF store")
    assert _tree(other) == before
    store = tmp_path / "s.zarr"
    for extra in ((), ("--overwrite",)):
        r = run([FMDATA, "convert", src, store, *extra, "--workers", "1", "--no-progress"])
        assert r.returncode == 0, r.stderr


def test_predict_overwrite_replaces_only_its_own_video(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 a user's video")
    r = run([FMMODEL, "predict", "--store", store, "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "p.zarr",
             "--video", video, "--overwrite", "--device", "cpu"])
    one_line_error(r, 1, REFUSED, "v.mp4")  # refused before the checkpoint is even read
    assert video.read_bytes().endswith(b"a user's video") and not (tmp_path / "p.zarr").exists()


def test_windows_force_replaces_only_a_window_table(tmp_path):
    path = write_store(tmp_path / "s.zarr", [recording("v1", 300, 1)], chunk=1, shard=32)
    root = zarr.open_group(path, mode="r+", zarr_format=3)
    mine = root.require_group(schema.WINDOWS_GROUP).create_group("mine")  # a user's group where a table would go
    mine.create_array("data", shape=(3,), dtype="int32")[:] = [1, 2, 3]
    notes = Path(path) / schema.WINDOWS_GROUP / "notes"  # and a plain folder
    notes.mkdir()
    (notes / "todo.txt").write_text("keep")
    before = _tree(path)
    args = ["--frames", "3", "--frame-step", "2", "--no-progress"]
    for name, what in (("mine", "a Zarr group"), ("notes", "not a Zarr array")):
        for force in ((), ("--force",)):
            one_line_error(run([FMDATA, "windows", path, "--name", name, *args, *force]), 1, "--force " + REFUSED,
                           what)
    assert _tree(path) == before
    np.testing.assert_array_equal(open_store(path)["windows/mine/data"][:], [1, 2, 3])
    for force in ((), ("--force",)):  # a table of its own is replaced
        assert run([FMDATA, "windows", path, "--name", "w", *args, *force]).returncode == 0
    assert "w" in open_store(path).window_tables


def test_stats_force_replaces_only_its_statistics(tmp_path_factory, tmp_path):
    store = str(tmp_path / "s.zarr")
    shutil.copytree(converted_store(tmp_path_factory), store)
    compute_stats(store)
    zarr.open_group(store, mode="r+", zarr_format=3).attrs["lab_notes"] = "calibrated 2024-03"
    old = dict(open_store(store).attrs[schema.ATTR_STATS])
    assert run([FMDATA, "stats", store, "--force", "--no-progress"]).returncode == 0
    attrs = open_store(store).attrs  # the statistics rewritten, the user's attribute beside them kept
    assert attrs["lab_notes"] == "calibrated 2024-03" and set(attrs[schema.ATTR_STATS]) == set(old)


def test_train_replaces_only_what_a_run_stopped_before_its_first_epoch_left(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    quick_config(store, str(run_dir)).save(str(run_dir / "config.json"))  # the toolkit's own config ...
    (run_dir / "tb").mkdir()
    (run_dir / "tb" / "events.out.tfevents.1.host").write_bytes(b"")  # ... its event file ...
    (run_dir / "tb" / "analysis.ipynb").write_text("{}")  # ... and a user's file inside tb/
    before = _tree(run_dir)
    one_line_error(run([FMMODEL, "train", "--store", store, "--out", run_dir, *QUICK_TRAIN]), 1,
                   "expected a new or empty run folder")
    assert _tree(run_dir) == before
    (run_dir / "tb" / "analysis.ipynb").unlink()  # only the run's own leftovers: replaced
    r = run([FMMODEL, "train", "--store", store, "--out", run_dir, *QUICK_TRAIN])
    assert r.returncode == 0 and (run_dir / "last.pt").exists(), r.stderr


def test_benchmark_refuses_table_files_it_did_not_write(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    out = tmp_path / "bench"
    out.mkdir()
    (out / "table.md").write_text("# my table\n")
    r = run([FMMODEL, "benchmark", "--store", store, "--variants", "current_cls", "--seeds", "0", "--out", out,
             "--no-progress", *QUICK_TRAIN])
    one_line_error(r, 1, "expected a benchmark folder", "table.md", "nothing was written")
    assert sorted(p.name for p in out.iterdir()) == ["table.md"] and (out / "table.md").read_text() == "# my table\n"


# ---- an output apart from what the command reads ---------------------------------------------------
def test_convert_refuses_an_out_inside_equal_to_or_holding_a_source(tmp_path):
    v2 = tmp_path / "v2"
    assert run([FMDATA, "synth", v2, "--layout", "v2", "--frames", "40", "--size", "8"]).returncode == 0
    before = _tree(v2)
    for out, extra in ((v2 / "videos" / "out.zarr", ()), (v2 / "out.zarr", ()), (v2, ("--overwrite",)),
                       (tmp_path, ("--overwrite",))):
        line = one_line_error(run([FMDATA, "convert", v2, out, *extra, "--workers", "1", "--no-progress"]), 2, "'OUT'",
                              "expected an output apart from the sources it reads")
        assert str(v2) in line
    assert _tree(v2) == before
    assert run([FMDATA, "inspect", v2, "--check"]).returncode == 0  # the source is still a valid V2 folder
    assert run([FMDATA, "convert", v2, tmp_path / "s.zarr", "--workers", "1", "--no-progress"]).returncode == 0


def test_outputs_inside_the_store_they_read_are_refused(tmp_path_factory, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(cached_store(tmp_path_factory), store)
    before = _tree(store)
    inside = store / "out"
    commands = [
        [FMDATA, "preview", store, "--frame", "100", "--out", store / "p.png"],
        [FMMODEL, "evaluate", "--store", store, "--checkpoint", tmp_path / "none.pt", "--out", inside],
        [FMMODEL, "predict", "--store", store, "--checkpoint", tmp_path / "none.pt", "--out", inside],
        [FMMODEL, "train", "--store", store, "--out", inside, *QUICK_TRAIN],
        [FMMODEL, "benchmark", "--store", store, "--variants", "current_cls", "--seeds", "0", "--out", inside,
         *QUICK_TRAIN],
        [FMMODEL, "benchmark", "--store", store, "--variants", "current_cls", "--seeds", "0", "--out", tmp_path,
         *QUICK_TRAIN],
    ]
    for args in commands:
        one_line_error(run(args), 2, "'--out'", "expected an output apart from the store it reads")
    assert _tree(store) == before


# ---- a failed command leaves no folder it created ---------------------------------------------------
def test_a_train_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    r = run([FMMODEL, "train", "--store", store, "--windows", "nosuch", "--out", tmp_path / "new" / "run",
             "--epochs", "1", "--device", "cpu", "--workers", "0", "--no-progress"])
    one_line_error(r, 1, "nosuch")
    assert sorted(os.listdir(tmp_path)) == []  # neither the run folder nor the folder above it
    existing = tmp_path / "mine"
    existing.mkdir()
    r = run([FMMODEL, "train", "--store", store, "--windows", "nosuch", "--out", existing, "--epochs", "1",
             "--device", "cpu", "--workers", "0", "--no-progress"])
    assert r.returncode == 1 and existing.is_dir() and os.listdir(existing) == []  # not made by it: kept


def test_a_failed_benchmark_leaves_no_empty_cell_folders(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    bad = tmp_path / "bad.py"  # a model whose output has the wrong shape: the first batch stops the run
    bad.write_text(textwrap.dedent('''
        from torch import nn
        class One(nn.Module):
            def __init__(self, data):
                super().__init__()
                self.lin = nn.Linear(3, 1)
            def forward(self, video=None, current=None):
                return self.lin(current.mean(dim=1))
        one_logit = lambda data: One(data)
    '''))
    out = tmp_path / "runs" / "bench"
    r = run([FMMODEL, "benchmark", "--store", store, "--variants", f"{bad}:one_logit", "--seeds", "0", "--out", out,
             *QUICK_TRAIN])
    assert r.returncode == 1 and "expected model" in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.py"]  # no runs/bench/<model>/reference/seed-0/, no runs/
