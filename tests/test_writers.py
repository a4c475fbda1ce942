"""Writers never collide and never leave an unrecoverable store; readers never see a switch half done.

Every test drives real ``fmdata``/``fmmodel`` processes, stopped at named points
(``FMF_PAUSE_AT``, fmdata.store.failpoints), killed with SIGKILL or let go on with SIGCONT, against
real stores on disk (docs/reliability.md lists which guarantee each one proves).
"""
from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fmcli.fmdata_main import main as fmdata_main
from fmcli.fmmodel_main import main as fmmodel_main
from fmdata import store, synth
from fmdata.convert import convert, verify
from fmdata.derive import compute_labels, compute_stats
from fmdata.store import schema
from fmdata.store.lock import Holder
from fmmodel.runs.train import train

from builders import cached_store, leftovers, recording, write_store
from processes import FMDATA, FMMODEL, blocked_on_lock, kill, one_line, resume, run, start, stopped
from runs import quick_config


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[str, str]:
    """Two small V1 files: "a" (300 frames) and "b" (200 frames)."""
    d = tmp_path_factory.mktemp("sources")
    return (str(synth.write_v1(d / "a.mat", frames=300, size=16, seed=1)),
            str(synth.write_v1(d / "b.mat", frames=200, size=16, seed=2)))


def convert_args(src: str, out: Path, *extra: str) -> list[str]:
    return [FMDATA, "convert", src, str(out), "--workers", "1", "--shard-frames", "64", "--no-progress", *extra]


def frames_in(path: Path) -> int:
    return store.open_store(path).meta.n_frames


def refused_by(result_text: str, holder_pid: int, command: str) -> str:
    """The one line a second writer gets: it names the holder's command, pid, host and start time."""
    line = one_line(result_text)
    assert f"{command} (pid {holder_pid} on {socket.gethostname()}, since " in line, line
    assert "expected no other writer" in line, line
    return line


# ---- one writer at a time ------------------------------------------------------------------------
def test_a_second_convert_into_one_out_is_refused_naming_the_first(sources, tmp_path):
    out = tmp_path / "o.zarr"
    first = start(convert_args(sources[0], out), pause_at="writer-locked")
    stopped(first)  # it holds OUT's writer lock
    for extra in ((), ("--overwrite",), ("--resume",)):
        second = run(convert_args(sources[1], out, *extra))
        assert second.returncode == 1
        refused_by(second.stderr, first.pid, "fmdata convert")
    code, _, err = resume(first)
    assert code == 0, err
    assert frames_in(out) == 300 and verify(out, workers=1, progress=False).ok
    assert leftovers(out) == ["o.zarr"]  # the lock file goes with its holder


def test_a_lock_left_by_a_killed_writer_does_not_block_the_next(sources, tmp_path):
    out = tmp_path / "k.zarr"
    first = start(convert_args(sources[0], out), pause_at="writer-locked")
    stopped(first)
    kill(first)
    record = Holder.parse((tmp_path / ".k.zarr.lock").read_bytes())
    assert record is not None and record.pid == first.pid  # left behind, but the kernel released the lock
    report = convert([sources[1]], out, workers=1, shard_frames=64, progress=False)
    assert report.n_frames == 200 and verify(out, workers=1, progress=False).ok
    assert leftovers(out) == ["k.zarr"]


def test_derived_writers_wait_their_turn_and_readers_need_no_lock(sources, tmp_path):
    out = tmp_path / "d.zarr"
    convert([sources[0]], out, workers=1, shard_frames=64, progress=False)
    compute_stats(str(out))  # labels and statistics up to date
    first = start([FMDATA, "labels", out, "--force", "--no-progress"], pause_at="writer-locked")
    stopped(first)
    for args in (["labels", out, "--force"], ["windows", out, "--name", "w"], ["stats", out, "--force"],
                 ["convert", sources[1], out, "--overwrite", "--workers", "1"]):
        second = CliRunner().invoke(fmdata_main, [*map(str, args), "--no-progress"])
        assert second.exit_code == 1, second.output
        refused_by(second.output, first.pid, "fmdata labels")
    reader = run([FMDATA, "stats", out, "--json", "--no-progress"])  # up to date: writes nothing, takes no lock
    assert reader.returncode == 0 and '"normalization_status": "up to date"' in reader.stdout, reader.stderr
    code, _, err = resume(first)
    assert code == 0, err
    assert "w" not in store.open_store(out).window_tables and leftovers(out) == ["d.zarr"]


def test_a_second_train_into_one_run_folder_is_refused(tmp_path_factory, tmp_path):
    path = cached_store(tmp_path_factory)  # labels and statistics exist: train writes nothing into it
    run_dir = tmp_path / "run"
    args = ["train", "--store", path, "--out", str(run_dir), "--epochs", "1", "--max-steps", "1", "--workers", "0",
            "--device", "cpu", "--model-size", "tiny", "--frames", "10", "--frame-step", "6", "--current-seconds",
            "30", "--current-rows", "60", "--stride", "8", "--no-progress"]
    first = start([FMMODEL, *args], pause_at="writer-locked")
    stopped(first)  # it holds the run folder's lock
    second = CliRunner().invoke(fmmodel_main, args)
    assert second.exit_code == 1
    assert "run folder" in refused_by(second.output, first.pid, "fmmodel train")
    kill(first)  # a killed trainer does not block the next one
    result = train(quick_config(path, str(run_dir)), progress=False)
    assert os.path.exists(result.last) and not (tmp_path / ".run.lock").exists()


def test_a_resume_while_train_writes_the_folder_names_the_holder(tmp_path_factory, tmp_path):
    path = cached_store(tmp_path_factory)
    run_dir = tmp_path / "run"
    first = start([FMMODEL, "train", "--store", path, "--out", run_dir, "--epochs", "1", "--device", "cpu",
                   "--model-size", "tiny", "--no-progress"], pause_at="writer-locked")
    stopped(first)  # it holds the run folder's lock; no last.pt yet
    second = CliRunner().invoke(fmmodel_main, ["train", "--out", str(run_dir), "--resume", "--no-progress"])
    assert second.exit_code == 1
    assert "run folder" in refused_by(second.output, first.pid, "fmmodel train")
    kill(first)


# ---- --overwrite killed at any moment --------------------------------------------------------------
@pytest.mark.parametrize("moment,layout", [("place:old-aside", "plain"), ("place:new-in", "plain"),
                                           ("remove:partway", "plain"), ("place:old-aside", "source")])
def test_overwrite_killed_at_any_moment_leaves_a_complete_store_and_recovers(sources, tmp_path, moment, layout):
    out = tmp_path / "o.zarr"
    convert([sources[0]], out, workers=1, shard_frames=64, progress=False)  # the old store: 300 frames
    first = start(convert_args(sources[1], out, "--overwrite", "--layout", layout), pause_at=moment)
    stopped(first)
    kill(first)
    hidden = [p for p in tmp_path.iterdir() if p.name.startswith(".o.zarr.")]
    if moment == "place:old-aside":
        # between the two renames: the old store sits complete beside OUT, the new one complete too
        assert not out.exists()
        olds = [p for p in hidden if ".old-" in p.name]
        assert len(olds) == 1 and frames_in(olds[0]) == 300
    else:
        # the new store is in place; the old one is (partly) deleted under a hidden name
        assert frames_in(out) == 200 and any(".old-" in p.name for p in hidden)
    # the next run repairs it, without a manual rm -rf
    second = run(convert_args(sources[1], out, "--resume", "--layout", layout))
    assert second.returncode == 0, second.stderr
    assert frames_in(out) == 200 and verify(out, [sources[1]], workers=1, progress=False).ok
    assert store.open_store(out).meta.layout(schema.VIDEO) == layout
    assert leftovers(out) == ["o.zarr"]


def test_overwrite_killed_between_the_renames_is_repaired_by_overwrite_too(sources, tmp_path):
    out = tmp_path / "o.zarr"
    convert([sources[0]], out, workers=1, shard_frames=64, progress=False)
    first = start(convert_args(sources[1], out, "--overwrite"), pause_at="place:old-aside")
    stopped(first)
    kill(first)
    assert not out.exists()
    assert run(convert_args(sources[1], out)).returncode == 1  # the old store is back: "exists; --overwrite"
    assert frames_in(out) == 300
    assert run(convert_args(sources[1], out, "--overwrite")).returncode == 0
    assert frames_in(out) == 200 and leftovers(out) == ["o.zarr"]


# ---- symbolic links ---------------------------------------------------------------------------------
def test_out_that_is_a_symbolic_link_is_refused_and_its_store_left_complete(sources, tmp_path):
    real = tmp_path / "real.zarr"
    convert([sources[0]], real, workers=1, shard_frames=64, progress=False)
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    for extra in ((), ("--overwrite",), ("--resume",)):
        result = run(convert_args(sources[1], link, *extra))
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert "a symbolic link to" in line and f"give {real} itself" in line, line
    assert link.is_symlink() and store.open_store(real).meta.complete and frames_in(real) == 300
    # readers and derived writers reach the store through the link; its lock is the real store's
    labelled = CliRunner().invoke(fmdata_main, ["labels", str(link), "--no-progress"])
    assert labelled.exit_code == 0 and (real / schema.FRAME_LABEL).is_dir(), labelled.output
    dangling = tmp_path / "gone.zarr"
    dangling.symlink_to(tmp_path / "nowhere.zarr")
    result = run(convert_args(sources[0], dangling))
    assert result.returncode == 1 and "which does not exist" in one_line(result.stderr)
    assert not (tmp_path / "nowhere.zarr").exists() and leftovers(real) == ["real.zarr"]


# ---- readers during a rewrite ------------------------------------------------------------------------
def abnormal_frames(stats_json: str) -> list[int]:
    return [r["abnormal_frames"] for r in json.loads(stats_json)["recordings"]]


def test_a_reader_during_labels_force_sees_old_or_new_never_torn(tmp_path):
    recs = [recording("v1", 300, 1), recording("v1", 200, 2)]
    path = write_store(tmp_path / "s.zarr", recs, chunk=1, shard=32)
    compute_stats(path)
    truth = [int((r.mask == 1).any(axis=(1, 2)).sum()) for r in recs]
    writer = start([FMDATA, "labels", path, "--force", "--no-progress"],
                   pause_at="derived:staged,derived:switching")
    stopped(writer)  # the new labels are complete beside the store, nothing switched yet
    before = run([FMDATA, "stats", path, "--json", "--no-progress"])
    assert before.returncode == 0 and abnormal_frames(before.stdout) == truth, before.stderr
    resume(writer, until_stopped=True)  # half-way through the switch: frame_label moved aside, holding the lock
    reader = start([FMDATA, "stats", path, "--json", "--no-progress"])
    blocked_on_lock(reader)  # it waits for the switch instead of reading a missing or torn array
    code, _, err = resume(writer)
    assert code == 0, err
    out, err = reader.communicate(timeout=600)
    assert reader.returncode == 0 and abnormal_frames(out) == truth, err
    root = store.open_store(path)
    np.testing.assert_array_equal(root[schema.ABNORMAL_PIXELS][:],
                                  np.concatenate([(r.mask == 1).sum(axis=(1, 2)) for r in recs]))
    assert compute_labels(path).status == "up to date" and leftovers(path) == ["s.zarr"]


# ---- a derived switch stopped at any moment ------------------------------------------------------
def _windows_args(path: str, frames: int, *extra: str) -> list[str]:
    return [FMDATA, "windows", path, "--name", "w", "--frames", str(frames), "--frame-step", "2", "--no-progress",
            *extra]


def _table_frames(path: str) -> int:
    """The clip length of table ``w``: which version of the table the store holds (readable at all)."""
    return int(store.open_store(path).window_table("w").params["frames"])


@pytest.mark.parametrize("moment", ["derived:staged", "derived:switching"])
def test_windows_force_killed_at_any_moment_leaves_a_table_and_the_next_writer_cleans_up(tmp_path, moment):
    recs = [recording("v1", 300, 1), recording("v1", 200, 2)]
    path = write_store(tmp_path / "s.zarr", recs, chunk=1, shard=32)
    assert run(_windows_args(path, 3)).returncode == 0
    writer = start(_windows_args(path, 5, "--force"), pause_at=moment)
    stopped(writer)
    kill(writer)
    # the old table (killed before the switch) or the new one (killed in it); never none
    assert _table_frames(path) == (3 if moment == "derived:staged" else 5)
    assert [n for n in leftovers(path) if ".tmp-" in n]  # the killed writer's staging folder, beside the store
    # the next writer holding the lock (here one that finds its own table up to date) cleans up
    r = run([FMDATA, "labels", path, "--force", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert leftovers(path) == ["s.zarr"] and _table_frames(path) == (3 if moment == "derived:staged" else 5)
    assert run(_windows_args(path, 5, "--force")).returncode == 0 and _table_frames(path) == 5


def test_ctrl_c_during_the_switch_completes_it_then_exits_130(tmp_path):
    recs = [recording("v1", 300, 1), recording("v1", 200, 2)]
    path = write_store(tmp_path / "s.zarr", recs, chunk=1, shard=32)
    assert run(_windows_args(path, 3)).returncode == 0
    writer = start(_windows_args(path, 5, "--force"), pause_at="derived:switching")
    stopped(writer)  # half-way through the switch
    os.killpg(writer.pid, signal.SIGINT)  # Ctrl-C, delivered as it goes on
    code, _, err = resume(writer)
    assert code == 130, err
    assert _table_frames(path) == 5 and leftovers(path) == ["s.zarr"]  # the switch completed, nothing left


def test_a_switch_killed_between_two_renames_is_finished_by_the_next_writer(tmp_path):
    """Where the platform cannot swap two folders atomically the switch renames the old table aside,
    then the new one in; a writer killed between the two leaves no table until the next writer
    finishes the switch from its journal. The state is made from a real killed writer's."""
    recs = [recording("v1", 300, 1), recording("v1", 200, 2)]
    path = write_store(tmp_path / "s.zarr", recs, chunk=1, shard=32)
    assert run(_windows_args(path, 3)).returncode == 0
    writer = start(_windows_args(path, 5, "--force"), pause_at="derived:switching")
    stopped(writer)
    kill(writer)  # swapped: the new table in place, the old one in the staging folder
    staging = tmp_path / next(n for n in leftovers(path) if ".tmp-" in n)
    target = Path(path) / "windows" / "w"
    os.rename(staging / "0", staging / "0.old")  # the old table aside ...
    os.rename(target, staging / "0")  # ... the new one not yet in: the moment between the two renames
    assert (staging / "switch.json").is_file()
    r = run([FMDATA, "labels", path, "--force", "--no-progress"])  # the next writer holding the lock
    assert r.returncode == 0, r.stderr
    assert _table_frames(path) == 5 and leftovers(path) == ["s.zarr"]
