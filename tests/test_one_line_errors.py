"""One line for every failure, the right exit code: corrupt stores and tables, mismatched and bad
checkpoints, errors inside DataLoader workers, and usage errors of every command (issue 11, items 7,
9 and 10). The scenarios run the installed commands as a user does, on real converted stores with
real damage; the usage table goes through the same click entry points in this process."""
import glob
import os
import pickle
import shutil
import subprocess

import pytest
import torch
from click.testing import CliRunner

from fmcli.fmdata_main import main as fmdata_main
from fmcli.fmmodel_main import main as fmmodel_main
from fmdata.compute.memory import format_bytes
from fmdata.derive import make_windows
from fmdata.errors import FmDataError
from fmmodel.data.sampling import worker_error_line
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import load_model, save_checkpoint
from fmmodel.model.registry import build_model
from fmmodel.runs.train import train
from fmmodel.scoring.predict import predict

from builders import converted_store, corrupt_file, leftovers
from processes import FMDATA, FMMODEL, one_line_error, run
from runs import quick_config

TRAIN = ("--windows", "w", "--model-size", "tiny", "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
         "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def store16(tmp_path_factory):
    return converted_store(tmp_path_factory)


def _copy(store, tmp_path, name="s.zarr"):
    out = str(tmp_path / name)
    shutil.copytree(store, out)
    return out


def test_corrupt_video_is_one_line_in_stats_and_inside_dataloader_workers(store16, tmp_path):
    """blosc's RuntimeError in a Dask task (threads and a local cluster) and in a DataLoader worker
    process reach the user as the one line that names the array, never a traceback."""
    store = _copy(store16, tmp_path)
    corrupt_file(sorted(glob.glob(os.path.join(store, "video", "c", "*", "0", "0", "0")))[0])
    one_line_error(run([FMDATA, "stats", store, "--force", "--no-progress"]), 1, "video")
    one_line_error(run([FMDATA, "stats", store, "--force", "--workers", "2", "--no-progress"]), 1, "video")
    r = run([FMMODEL, "train", "--store", store, "--out", tmp_path / "run", "--workers", "1", *TRAIN])
    line = one_line_error(r, 1, "video")
    assert "DataLoader worker" not in line and "Caught" not in line


def test_corrupt_window_table_is_one_line(store16, tmp_path):
    store = _copy(store16, tmp_path)
    corrupt_file(os.path.join(store, "windows", "w", "c", "0", "0"), 0.2, 0.8)
    r = run([FMMODEL, "train", "--store", store, "--out", tmp_path / "run", "--workers", "0", *TRAIN])
    one_line_error(r, 1, "windows/w", "the store is damaged")


def test_worker_error_line_unwraps_torch_reraise():
    text = ("Caught FmDataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\nfmdata.errors.FmDataError: /s.zarr: video frame 3: expected decodable chunks, got X')
    assert worker_error_line(text) == "/s.zarr: video frame 3: expected decodable chunks, got X"
    assert worker_error_line("/s.zarr: expected a store, got none") is None


def test_checkpoint_for_other_frames_says_both_sizes(store16, tmp_path):
    ckpt = tmp_path / "ck32.pt"
    model = build_model("vicu_cls", size="tiny", image_size=(32, 32), frames=4, current_rows=20)
    save_checkpoint(ckpt, model, orientation="true", preprocessing="normalized")
    r = run([FMMODEL, "evaluate", "--store", store16, "--checkpoint", ckpt, "--device", "cpu", "--workers", "0"])
    one_line_error(r, 1, str(ckpt), "expects 32x32 frames", "16x16")
    with pytest.raises(FmModelError, match="expects 32x32 frames.*got 16x16 frames"):
        predict(store16, str(ckpt), str(tmp_path / "p.zarr"), device="cpu", workers=0, progress=False)


def test_checkpoint_errors_name_the_file_and_what_is_wrong(store16, tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model("current_cls", size="tiny"), orientation="true", preprocessing="reference")
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(1000)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:2000])
    for path in (cut, empty, legacy):
        with pytest.raises(FmModelError, match=rf"{path.name}: expected a PyTorch checkpoint file, got a truncated"):
            load_model(path)
    evil = tmp_path / "evil.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, evil)  # a pickled module: needs code to load
    refused = r"evil\.pt: expected a checkpoint of plain tensors.*refused: contains executable Python objects \(pickle\)"
    with pytest.raises(FmModelError, match=refused):
        load_model(evil)
    # the command: the same line on stderr and nothing else (no torch warning)
    r = run([FMMODEL, "evaluate", "--store", store16, "--checkpoint", cut, "--device", "cpu"])
    one_line_error(r, 1, str(cut), "truncated")


def test_a_checkpoint_whose_pickle_calls_code_is_refused_as_code(store16, tmp_path):
    marker = tmp_path / "marker"

    class Calls:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    saved = tmp_path / "saved.pt"
    torch.save({"state_dict": Calls()}, saved)  # as torch.save writes it (GLOBAL posix.system, then REDUCE)
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps(Calls(), protocol=pickle.HIGHEST_PROTOCOL))  # a plain pickle (STACK_GLOBAL)
    for path in (saved, pickled):
        with pytest.raises(FmModelError, match=rf"{path.name}: .*needs posix\.system: refused: contains executable "
                                               r"Python objects \(pickle\)"):
            load_model(path)
    r = run([FMMODEL, "evaluate", "--store", store16, "--checkpoint", saved, "--device", "cpu"])
    one_line_error(r, 1, str(saved), "posix.system", "refused: contains executable Python objects")
    assert not marker.exists()


def _can_mount_tmpfs(path) -> bool:
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{path}'"],
                       capture_output=True)
    return r.returncode == 0


def test_a_full_disk_during_a_checkpoint_save_names_the_file_and_keeps_the_previous(store16, tmp_path):
    """A real full file system: a tmpfs a few pages larger than a finished run, mounted in a mount
    namespace of the command's own (root only; skipped elsewhere). A file-size limit (RLIMIT_FSIZE)
    would give EFBIG, not the ENOSPC of a full disk."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("unshare") or not _can_mount_tmpfs(mnt):
        pytest.skip("mounting a small tmpfs needs root and mount namespaces")
    run_dir = tmp_path / "run"
    torch.set_num_threads(1)
    train(quick_config(store16, str(run_dir), windows="w", variant="current_cls", modality="current",
                       max_steps_per_epoch=2, preprocessing="reference"), progress=False)
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.pt")}
    pages = sum(-(-p.stat().st_size // 4096) for p in run_dir.rglob("*") if p.is_file())
    # room for what a resume writes before its checkpoints (config.json again, a TensorBoard file),
    # not for a checkpoint
    assert min(len(b) for b in before.values()) > 8 * 4096
    size = (pages + 8) * 4096
    after = tmp_path / "after"
    line = " ".join(f"'{a}'" for a in (FMMODEL, "train", "--out", mnt / "run", "--resume", "--epochs", "2",
                                        "--no-progress"))
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs '{mnt}' && "
                        f"cp -a '{run_dir}' '{mnt}/run' && {line}; rc=$?; cp -a '{mnt}/run' '{after}'; exit $rc"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert "Traceback" not in r.stderr and lines[-1].startswith("Error: "), r.stderr
    assert lines[-1].endswith(".pt: expected to write the checkpoint, got No space left on device (the previous "
                              "file is unchanged)"), lines[-1]
    assert {p.name: p.read_bytes() for p in after.glob("*.pt")} == before  # intact, and no temporary file left
    assert sorted(os.listdir(after)) == sorted(os.listdir(run_dir))


def _invoke(main, *args):
    return CliRunner().invoke(main, [str(a) for a in args])


USAGE = [
    (fmdata_main, ("convert", "{src}", "{tmp}/a.zarr", "--fps", "0"), "--fps"),
    (fmdata_main, ("convert", "{src}", "{tmp}/a.zarr", "--chunk-frames", "0"), "--chunk-frames"),
    (fmdata_main, ("convert", "{src}", "{tmp}/a.zarr", "--chunk-frames", "99999999999999999999"), "--chunk-frames"),
    (fmdata_main, ("convert", "{src}", "{tmp}/a.zarr", "--workers", "-3"), "--workers"),
    (fmdata_main, ("convert", "{src}", "memory://u11/a.zarr", "--workers", "2"), "--workers"),
    (fmdata_main, ("verify", "{store}", "--workers", "0"), "--workers"),
    (fmdata_main, ("synth", "{tmp}/syn", "--fps", "0"), "--fps"),
    (fmdata_main, ("synth", "{tmp}/syn", "--size", "2"), "--size"),
    (fmdata_main, ("labels", "{store}", "--workers", "0"), "--workers"),
    (fmdata_main, ("stats", "{store}", "--workers", "1", "--memory-limit", "lots"), "--memory-limit"),
    (fmdata_main, ("windows", "{store}", "--name", "a\\b"), "--name"),
    (fmdata_main, ("windows", "{store}", "--name", ".."), "--name"),
    (fmdata_main, ("windows", "{store}", "--name", "."), "--name"),
    (fmdata_main, ("windows", "{store}", "--name", "zarr.json"), "--name"),
    (fmdata_main, ("windows", "{store}", "--name", "w", "--frames", "0"), "--frames"),
    (fmdata_main, ("preview", "{store}", "--frame", "-1"), "--frame"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{tmp}/r", "--workers", "-3"), "--workers"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{tmp}/r", "--epochs", "0"), "--epochs"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{tmp}/r", "--seed", "-1"), "--seed"),
    (fmmodel_main, ("evaluate", "--store", "{store}", "--checkpoint", "x.pt", "--out", "{src}"), "--out"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{tmp}/r", "--windows", "w", "--model-opt", "depth=0",
                    "--device", "cpu", "--workers", "0"), "--model-opt"),
    (fmmodel_main, ("evaluate", "--store", "{store}", "--checkpoint", "x.pt", "--batch-size", "0"), "--batch-size"),
    (fmmodel_main, ("evaluate", "--store", "{store}", "--checkpoint", "x.pt", "--protocol", "other"), "--protocol"),
]


def test_usage_errors_exit_2_with_one_line_naming_the_option(store16, tmp_path):
    src = os.path.join(os.path.dirname(store16), "rec.mat")
    for main, args, option in USAGE:
        args = [a.format(src=src, tmp=tmp_path, store=store16) for a in args]
        r = _invoke(main, *args)
        errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)
        # one error line naming the option (click's own range checks add its usage line above it)
        assert len(errors) == 1 and option in errors[0], (args, r.output)
    # the library says which parameter: the command line maps it to the option
    with pytest.raises(FmDataError) as err:
        make_windows(store16, "..")
    assert err.value.field == "name"
    # and the real command agrees on the exit code
    one_line_error(run([FMDATA, "convert", src, tmp_path / "b.zarr", "--fps", "0"]), 2, "--fps")


# Absurd sizes (issue 16, moderate 7): each is refused before anything is allocated or written, exit 2,
# with one line that names the option and the bound. The memory bounds (a convert write unit, a model's
# training state) are checked against the memory available; the sizes below are far beyond any test
# machine's (from 165 GiB for depth=100000 up to TiB).
BOUNDS = [
    (fmdata_main, ("convert", "{src}", "{out}", "--chunk-frames", "100000000"), "--chunk-frames", "fit in memory",
     "100,000,000 frames per chunk"),
    (fmdata_main, ("convert", "{src}", "{out}", "--shard-frames", "1000000000"), "--shard-frames", "fit in memory"),
    (fmdata_main, ("convert", "{src}", "{out}", "--fps", "1e9"), "--fps", "0.1..1000"),
    (fmdata_main, ("convert", "{src}", "{out}", "--workers", "100000"), "--workers", "per CPU"),
    (fmdata_main, ("labels", "{store}", "--workers", "100000"), "--workers", "per CPU"),
    (fmdata_main, ("verify", "{store}", "--workers", "100000"), "--workers", "per CPU"),
    (fmdata_main, ("synth", "{out}", "--fps", "5000"), "--fps", "0.1..1000"),
    (fmdata_main, ("windows", "{store}", "--name", "big", "--frames", "100000000"), "--frames", "1..1024"),
    (fmdata_main, ("windows", "{store}", "--name", "big", "--frame-step", "4611686018427387904"), "--frame-step",
     "1..2147483647"),
    (fmdata_main, ("windows", "{store}", "--name", "big", "--frames", "10", "--frame-step", "300000000"),
     "--frame-step", "spanning at most 2147483647 frames"),
    (fmdata_main, ("windows", "{store}", "--name", "big", "--current-seconds", "1e300"), "--current-seconds",
     "at most 2147483647"),
    (fmdata_main, ("windows", "{store}", "--name", "big", "--current-rows", "100000000"), "--current-rows",
     "1..65536"),
    (fmdata_main, ("preview", "{store}", "--frame", "5", "--frames", "100000000", "--out", "{out}.png"), "--frames",
     "1..1024"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{out}", "--frames", "100000000"), "--frames", "1..1024"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{out}", "--current-rows", "100000000"), "--current-rows",
     "1..65536"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{out}", "--workers", "100000"), "--workers", "per CPU"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{out}", "--model-opt", "width=1e9"), "--model-opt",
     "expected an integer for width", "(of type float)"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{out}", "--model-opt", "width=1000000000"),
     "--model-opt", "fit in memory", "width 1000000000"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{out}", "--model-opt", "depth=100000"), "--model-opt",
     "fit in memory", "depth 100000"),
    (fmmodel_main, ("train", "--store", "{store}", "--out", "{out}", "--resident-budget", "1e30"), "--resident-budget",
     "the memory of this machine"),
    (fmmodel_main, ("evaluate", "--store", "{store}", "--checkpoint", "x.pt", "--out", "{out}", "--workers", "100000"),
     "--workers", "per CPU"),
    (fmmodel_main, ("evaluate", "--store", "{store}", "--checkpoint", "x.pt", "--resident-budget", "1e30"),
     "--resident-budget", "the memory of this machine"),
    (fmmodel_main, ("predict", "--store", "{store}", "--checkpoint", "x.pt", "--out", "{out}", "--workers", "100000"),
     "--workers", "per CPU"),
]


def test_absurd_sizes_exit_2_naming_the_option_and_the_bound_before_anything_is_written(store16, tmp_path):
    store = _copy(store16, tmp_path)
    before = sorted(os.listdir(store))
    src = os.path.join(os.path.dirname(store16), "rec.mat")
    for i, (main, args, option, *bound) in enumerate(BOUNDS):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        out = folder / "out"
        args = [a.format(src=src, store=store, out=out) for a in args]
        r = _invoke(main, *args)
        errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)
        assert len(errors) == 1 and option in errors[0] and all(b in errors[0] for b in bound), (args, r.output)
        assert os.listdir(folder) == [], (args, os.listdir(folder))  # no partial store, run folder or lock
    assert sorted(os.listdir(store)) == before  # nor a table, labels or lock in the store
    # the real command: the same line, and --resume has nothing to finish (nothing was started)
    out = tmp_path / "real.zarr"
    one_line_error(run([FMDATA, "convert", src, out, "--chunk-frames", "100000000", "--no-progress"]), 2,
                   "--chunk-frames", "fit in memory")
    assert leftovers(out) == []
    one_line_error(run([FMMODEL, "train", "--store", store, "--out", tmp_path / "run", "--model-opt", "width=1e9"]), 2,
                   "--model-opt", "float")
    assert not (tmp_path / "run").exists()


def test_sizes_read_in_the_largest_unit_that_keeps_a_number_from_one():
    assert [format_bytes(n) for n in (0, 1023, 1536, 3 * 2**20, 2.18 * 2**40, 5 * 2**50)] == [
        "0 B", "1023 B", "1.50 KiB", "3.00 MiB", "2.18 TiB", "5.00 PiB"]
    assert format_bytes(1e30) == "867361737988.40 EiB"  # (a budget of 1e30 bytes is refused before it is shown)
