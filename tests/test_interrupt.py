"""Ctrl-C (a real SIGINT to a real process) exits 130 with one line saying how to resume, and the
resume continues from what was kept (issue 11, item 10): ``fmdata convert`` and ``fmmodel train``.

The signal is sent once the process has finished some of its work (a unit in the conversion's
ledger, a saved epoch) and while more remains; a process that ends before the signal fails the
test with a clear message instead of passing unnoticed."""
import glob
import signal
import time
from pathlib import Path

import torch

from fmdata import synth
from fmdata.convert import convert
from fmdata.store import open_store
from fmmodel.model.checkpoint import load_checkpoint
from fmmodel.runs.benchmark import cell_folder
from fmmodel.runs.train import resume_run

from builders import cached_store, converted_store
from processes import FMDATA, FMMODEL, start


def _wait_for(proc, ready, what, limit=300):
    """Poll until ``ready()`` holds; fail if the process ends first (the scenario did not happen)."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the process ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() - t0 < limit, f"no {what} after {limit} s"
        time.sleep(0.02)


def _interrupt(proc):
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    return proc.returncode, err, lines


def test_interrupted_convert_exits_130_and_resumes(tmp_path):
    src = synth.write_v1(tmp_path / "rec.mat", frames=6000, size=32, seed=1)
    out = tmp_path / "s.zarr"
    proc = start([FMDATA, "convert", src, out, "--workers", "1", "--shard-frames", "32", "--no-progress"])
    ledger = lambda: glob.glob(str(tmp_path / ".s.zarr.partial-*" / "fmf_convert_ledger" / "*.json"))
    _wait_for(proc, lambda: len(ledger()) >= 1, "a finished unit")
    code, err, lines = _interrupt(proc)
    assert code == 130, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert "interrupted" in lines[0] and "--resume" in lines[0], lines[0]
    assert not out.exists()  # nothing that looks complete
    kept = len(ledger())
    report = convert([str(src)], str(out), workers=1, shard_frames=32, resume=True, progress=False)
    assert report.units_resumed == kept >= 1
    assert open_store(str(out)).attrs["fmf_store"]["complete"]


def test_interrupted_train_exits_130_with_the_resume_command(tmp_path_factory, tmp_path):
    store = converted_store(tmp_path_factory)
    run_dir = tmp_path / "run"
    proc = start([FMMODEL, "train", "--store", store, "--windows", "w", "--out", run_dir, "--epochs", "200",
                  "--max-steps", "2", "--batch-size", "8", "--model-size", "tiny", "--workers", "0", "--device", "cpu",
                  "--val-fraction", "0", "--no-progress"])
    _wait_for(proc, lambda: (run_dir / "last.pt").exists(), "a saved epoch")
    code, err, lines = _interrupt(proc)
    assert code == 130, err
    assert "Traceback" not in err, err
    hint = [line for line in lines if line.startswith("Error: ")]
    assert len(hint) == 1 and f"fmmodel train --out {run_dir} --resume" in hint[0], err
    # the data path chosen, the time a batch takes, epoch log lines, then the hint
    assert all(line.startswith(("data: ", "timing: ", "epoch ", "Error: ")) for line in lines), err
    done = load_checkpoint(run_dir / "last.pt").extra["epoch"]
    torch.set_num_threads(1)
    resumed = resume_run(str(run_dir), epochs=done + 1, progress=False)
    assert [r["epoch"] for r in resumed.history] == list(range(1, done + 2))



def test_interrupted_benchmark_says_to_run_the_same_benchmark_again(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    out = tmp_path / "bench"
    proc = start([FMMODEL, "benchmark", "--store", store, "--out", out, "--variants", "current_cls", "--seeds", "0",
                  "--epochs", "200", "--max-steps", "2", "--batch-size", "8", "--model-size", "tiny", "--workers", "0",
                  "--device", "cpu", "--current-seconds", "6", "--current-rows", "40", "--val-fraction", "0",
                  "--no-progress"])
    last = Path(cell_folder(str(out), "current_cls", "reference", 0)) / "last.pt"
    _wait_for(proc, last.exists, "a saved epoch")
    code, err, lines = _interrupt(proc)
    assert code == 130 and "Traceback" not in err, err
    hint = [line for line in lines if line.startswith("Error: ")]
    assert len(hint) == 1 and "run the same `fmmodel benchmark` command again" in hint[0], err
    assert "fmmodel train" not in hint[0] and "cell 1/1 current_cls reference seed 0" in hint[0], hint[0]
