"""A user's model that fails is named with the stage it failed in, and a run whose loss stops being
finite stops with one line, keeping the last good epoch (issue 16, moderate 8).

Each model here is a small file written as a user would; the commands run as real processes.
"""
from __future__ import annotations

import textwrap

import torch

from fmmodel.model.checkpoint import load_checkpoint

from builders import cached_store
from processes import FMMODEL, one_line_error, run

QUICK = ["--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--workers", "0", "--threads", "1",
         "--device", "cpu", "--frames", "10", "--frame-step", "6", "--current-seconds", "30", "--current-rows", "60",
         "--stride", "8", "--preprocessing", "normalized", "--no-progress"]

MODELS = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    from fmmodel.model.user_models import ModelFactory

    class Linear(nn.Module):
        """Current-only linear classifier; ``broken(calls)`` says what goes wrong at a training call."""
        def __init__(self, data, broken=None):
            super().__init__()
            self.head = nn.Linear(3, data.num_classes)
            self.register_buffer("scale", torch.ones(1))
            self.broken, self.calls = broken, 0
        def forward(self, video=None, current=None):
            out = self.head(current.mean(dim=1))
            if self.training:
                self.calls += 1
                trouble = self.broken and self.broken(self.calls)
                if trouble == "nan":
                    out = out * float("nan")
                elif trouble == "weights":  # the output stays finite, the weights do not
                    self.scale.fill_(float("inf"))
                elif trouble == "exit":
                    sys.exit(3)
                elif trouble == "raise":
                    raise RuntimeError("shapes do not fit")
            return out

    def factory(broken=None):
        return ModelFactory(build=lambda data: Linear(data, broken), modality="current", task="cls")

    nan_always = factory(lambda calls: "nan")
    nan_from_call_3 = factory(lambda calls: "nan" if calls >= 3 else None)
    inf_weights = factory(lambda calls: "weights" if calls == 2 else None)
    exit_in_forward = factory(lambda calls: "exit")
    raise_at_call_2 = factory(lambda calls: "raise" if calls == 2 else None)

    def raising_factory(data):
        raise ValueError("width must be even")
''')


def train_error(result, code: int, *needles: str) -> str:
    """Assert a train command failed with exit ``code`` and one error line holding every needle, after
    nothing but its data-path, timing and epoch lines; return the error line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and lines and lines[-1].startswith("Error: "), result.stderr
    assert all(line.startswith(("data: ", "timing: ", "epoch ")) for line in lines[:-1]), result.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def _models(tmp_path, extra: str = "") -> str:
    path = tmp_path / "models.py"
    path.write_text(MODELS + extra)
    return str(path)


def test_a_failing_users_model_is_named_with_its_stage(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    r = run([FMMODEL, "train", "--store", store, "--model", f"{exits}:f", "--out", tmp_path / "r0", *QUICK])
    one_line_error(r, 1, f"{exits}:f", "SystemExit: 3", f"import of {exits}")  # before any data is read
    # FMF_TRACEBACK=1 shows where in the user's file it failed
    r = run([FMMODEL, "train", "--store", store, "--model", f"{exits}:f", "--out", tmp_path / "r0", *QUICK],
            env={"FMF_TRACEBACK": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr and f'File "{exits}"' in r.stderr, r.stderr

    models = _models(tmp_path)
    r = run([FMMODEL, "train", "--store", store, "--model", f"{models}:raising_factory", "--out", tmp_path / "r1",
             *QUICK])
    train_error(r, 1, f"{models}:raising_factory", "ValueError: width must be even", "in its build")

    r = run([FMMODEL, "train", "--store", store, "--model", f"{models}:exit_in_forward", "--out", tmp_path / "r2",
             *QUICK])
    train_error(r, 1, f"{models}:exit_in_forward", "SystemExit: 3", "training step 1 of epoch 1")

    r = run([FMMODEL, "train", "--store", store, "--model", f"{models}:raise_at_call_2", "--out", tmp_path / "r3",
             *QUICK])
    line = train_error(r, 1, f"{models}:raise_at_call_2", "RuntimeError: shapes do not fit",
                       "training step 2 of epoch 1")
    assert "unexpected" not in line


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_epoch(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    models = _models(tmp_path)
    # NaN from the first step: nothing is written but what a run writes before its first epoch
    run_dir = tmp_path / "nan"
    r = run([FMMODEL, "train", "--store", store, "--model", f"{models}:nan_always", "--out", run_dir, *QUICK])
    train_error(r, 1, str(run_dir), "a training loss of nan at step 1 of epoch 1", "no checkpoint was written")
    assert not (run_dir / "best.pt").exists() and not (run_dir / "last.pt").exists()

    # two good steps (epoch 1), then NaN at epoch 2's first step: the checkpoints stay epoch 1's (no
    # validation, whose metrics would refuse NaN probabilities: the training loss alone must stop it)
    run_dir = tmp_path / "nan-later"
    r = run([FMMODEL, "train", "--store", store, "--model", f"{models}:nan_from_call_3", "--out", run_dir, *QUICK,
             "--epochs", "3", "--val-fraction", "0"])
    train_error(r, 1, "a training loss of nan at step 1 of epoch 2", "last.pt holds epoch 1")
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(run_dir / name)
        assert ck.meta.info["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in ck.state_dict.values())
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 2  # header and epoch 1

    # finite losses, but the weights broke in the epoch's last step: that epoch is not saved
    run_dir = tmp_path / "inf"
    r = run([FMMODEL, "train", "--store", store, "--model", f"{models}:inf_weights", "--out", run_dir, *QUICK,
             "--val-fraction", "0"])
    train_error(r, 1, "non-finite weights in scale after epoch 1", "no checkpoint was written")
    assert not (run_dir / "last.pt").exists()
