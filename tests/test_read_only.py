"""Read-only stores and quiet progress (issue 11, item 10).

A read-only store is made real: a read-only bind mount in a private mount namespace (``unshare``)
when these tests run as root, whom file modes do not stop (``os.access`` says "writable" to root
on a mode-0555 folder, and writes succeed); ``chmod -R a-w`` otherwise. Where neither is possible
the tests are skipped with the reason. The commands must then read without writing when labels,
tables and statistics are up to date, and say in one line what to run when they are missing.
"""
import os
import shutil
import stat
import subprocess

import pytest

from fmdata import synth
from fmdata.convert import convert
from fmdata.derive import compute_labels, compute_stats
from fmdata.store import open_store

from builders import SHORT_WINDOWS, converted_store
from processes import FMDATA, FMMODEL, one_line_error, run, script


def _can_bind_read_only(path) -> bool:
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{path}' '{path}' && ! touch '{path}/x'"],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def read_only(tmp_path):
    """Return a function (store, program, *args) that runs the command where ``store`` is read-only."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if os.geteuid() == 0:
        if not shutil.which("unshare") or not _can_bind_read_only(probe):
            pytest.skip("running as root without mount namespaces: no way to make a store read-only here")

        def run_bind(store, program, *args):
            line = " ".join(f"'{a}'" for a in (script(program), *map(str, args)))
            return subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{store}' '{store}' && exec {line}"],
                                  capture_output=True, text=True, timeout=300)
        return run_bind

    def run_chmod(store, program, *args):
        modes = {}
        for dirpath, _, files in os.walk(store):
            for p in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                modes[p] = os.stat(p).st_mode
                os.chmod(p, modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            assert not os.access(store, os.W_OK)
            return run([script(program), *args])
        finally:
            for p, m in modes.items():
                os.chmod(p, m)
    return run_chmod


def _listing(store):
    return sorted((os.path.relpath(os.path.join(d, f), store), os.stat(os.path.join(d, f)).st_mtime_ns)
                  for d, _, files in os.walk(store) for f in files)


def test_up_to_date_store_is_read_without_writing(read_only, tmp_path_factory, tmp_path):
    store = str(tmp_path / "s.zarr")
    shutil.copytree(converted_store(tmp_path_factory), store)
    compute_stats(store)
    before = _listing(store)
    r = read_only(store, "fmdata", "stats", store, "--windows", "w")
    assert r.returncode == 0 and "normalisation (up to date" in r.stdout, r.stderr
    r = read_only(store, "fmdata", "labels", store)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stderr
    w = SHORT_WINDOWS
    r = read_only(store, "fmdata", "windows", store, "--name", "w", "--frames", w.frames, "--frame-step", w.frame_step,
                  "--current-seconds", w.current_seconds, "--current-rows", w.current_rows)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stderr
    one_line_error(read_only(store, "fmdata", "windows", store, "--name", "new"), 1, "read-only", "fmdata windows")
    r = read_only(store, "fmmodel", "train", "--store", store, "--windows", "w", "--out", tmp_path / "run",
                  "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--model-size", "tiny", "--workers", "0",
                  "--device", "cpu", "--no-progress")
    assert r.returncode == 0 and (tmp_path / "run" / "last.pt").exists(), r.stderr
    assert _listing(store) == before  # not one file written or touched


def test_labels_force_on_a_read_only_store_says_so_and_writes_nothing(read_only, tmp_path_factory, tmp_path):
    store = str(tmp_path / "s.zarr")
    shutil.copytree(converted_store(tmp_path_factory), store)
    compute_labels(store)
    before = _listing(store)
    line = one_line_error(read_only(store, "fmdata", "labels", store, "--force"), 1, "read-only",
                          "nothing was written", "recompute frame_label and abnormal_pixels")
    assert "the stored ones are up to date" in line and "expected up-to-date" not in line, line
    assert _listing(store) == before


def test_missing_results_on_a_read_only_store_say_what_to_run(read_only, tmp_path):
    src = synth.write_v1(tmp_path / "rec.mat", frames=600, size=16, seed=4, events="dense")
    store = str(tmp_path / "s.zarr")
    convert([str(src)], store, workers=1, progress=False)  # no labels, no statistics
    one_line_error(read_only(store, "fmdata", "stats", store), 1, "read-only", f"fmdata labels {store}")
    r = read_only(store, "fmmodel", "train", "--store", store, "--out", tmp_path / "run", "--device", "cpu",
                  "--no-progress")
    one_line_error(r, 1, "read-only", f"fmdata labels {store}")
    # labels present, statistics missing: computed and shown, not stored
    compute_labels(store)
    r = read_only(store, "fmdata", "stats", store)
    assert r.returncode == 0 and "computed, not stored (read-only store)" in r.stdout, r.stderr
    assert "fmf_stats" not in open_store(store).attrs


def test_dask_commands_draw_no_bars_on_a_non_terminal(tmp_path):
    """stderr is a pipe here: no bar by default, none with --no-progress, with threads or processes;
    nor from the labels that training computes first."""
    src = synth.write_v1(tmp_path / "rec.mat", frames=600, size=16, seed=4, events="dense")
    store = str(tmp_path / "s.zarr")
    convert([str(src)], store, workers=1, progress=False)
    for args in (("labels", store), ("windows", store, "--name", "w", "--frames", "4", "--no-progress"),
                 ("stats", store, "--force", "--no-progress"), ("labels", store, "--force", "--workers", "2")):
        r = run([FMDATA, *args])
        assert r.returncode == 0 and r.stderr == "", (args, r.stderr)
    fresh = str(tmp_path / "fresh.zarr")
    convert([str(src)], fresh, workers=1, progress=False)
    r = run([FMMODEL, "train", "--store", fresh, "--out", tmp_path / "run", "--frames", "4", "--frame-step", "2",
             "--current-seconds", "10", "--current-rows", "20", "--epochs", "1", "--max-steps", "1",
             "--batch-size", "8", "--model-size", "tiny", "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert "%|" not in r.stderr and "frame/s" not in r.stderr, r.stderr
