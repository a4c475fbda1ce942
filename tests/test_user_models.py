"""Users' models: factories named on the command line or installed as entry points are trained,
evaluated and predicted like the built-ins; their checkpoints say where the code came from, and
a checkpoint's code is imported only when the user names it or installed it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import load_checkpoint
from fmmodel.model.registry import build_model, installed_models, resolve_variant
from fmmodel.model.user_models import DataDescription, ModelFactory
from fmmodel.runs.train import train
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.predict import read_predictions

from builders import cached_store
from runs import quick_config

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "custom_model" / "tiny_models.py")
QUICK = ["--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--workers", "0", "--threads", "1",
         "--device", "cpu", "--frames", "10", "--frame-step", "6", "--current-seconds", "30", "--current-rows", "60",
         "--stride", "8", "--preprocessing", "normalized", "--no-progress"]

def _fmmodel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "fmmodel")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env)


def test_a_factory_file_trains_evaluates_and_predicts_from_the_command_line(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    spec = f"{EXAMPLE}:clip_cnn"
    res = _fmmodel("train", "--store", store, "--model", spec, "--out", str(tmp_path / "run"), *QUICK)
    assert res.returncode == 0, res.stderr
    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ck.meta.config is None and ck.meta.source is not None and ck.meta.source.spec == spec
    assert ck.meta.description.frame_size == (32, 32) and ck.meta.description.clip_frames == 10
    assert ck.meta.description.current_rows == 60 and ck.meta.description.modality == "both"
    # the checkpoint is plain data: torch's weights-only loader reads it, and it names no class
    torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["variant"] == spec and cfg["runtime"]["model_config"]["source"]["spec"] == spec

    refused = _fmmodel("evaluate", "--store", store, "--checkpoint", str(tmp_path / "run" / "best.pt"),
                       "--workers", "0", "--device", "cpu", "--no-progress")
    assert refused.returncode == 2, refused.stderr
    assert "--model" in refused.stderr and "refused" in refused.stderr and "Traceback" not in refused.stderr

    # named by another path to the same file (relative to another working directory): accepted
    rel = os.path.relpath(EXAMPLE, tmp_path)
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "fmmodel"), "evaluate", "--store", store,
                          "--checkpoint", "run/best.pt", "--model", f"{rel}:clip_cnn", "--workers", "0",
                          "--device", "cpu", "--json", "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    by_cli = json.loads(res.stdout)
    by_api = evaluate(store, str(tmp_path / "run" / "best.pt"), trusted=[spec], workers=0, device="cpu",
                      progress=False)
    assert by_cli["metrics"]["overall"]["class"]["f1"] == by_api["metrics"]["overall"]["class"]["f1"]
    assert by_api["variant"] == spec

    res = _fmmodel("predict", "--store", store, "--checkpoint", str(tmp_path / "run" / "best.pt"), "--model", spec,
                   "--out", str(tmp_path / "pred.zarr"), "--split", "test", "--workers", "0", "--device", "cpu",
                   "--no-progress")
    assert res.returncode == 0, res.stderr
    pred = read_predictions(str(tmp_path / "pred.zarr"))
    assert pred["prob"].shape[1] == 2 and pred["prob"].shape[0] == by_api["metrics"]["overall"]["class"]["n"]


def test_an_installed_model_needs_no_naming(tmp_path_factory, tmp_path, plugin_env):
    store = cached_store(tmp_path_factory)
    res = _fmmodel("train", "--store", store, "--model", "pooled_current", "--out", str(tmp_path / "run"), *QUICK,
                   env=plugin_env)
    assert res.returncode == 0, res.stderr
    res = _fmmodel("evaluate", "--store", store, "--checkpoint", str(tmp_path / "run" / "last.pt"), "--workers", "0",
                   "--device", "cpu", "--json", "--no-progress", env=plugin_env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["metrics"]["overall"]["class"]["n"] > 0
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck.meta.source is not None and ck.meta.source.entry_point
    assert (ck.meta.source.name, ck.meta.source.spec, ck.meta.source.version) == (
        "pooled_current", "fmf_plugin_demo:pooled_current", "1.2.3")
    assert ck.meta.description.modality == "current"
    # the run resumes without naming its model: the installed distribution declares it
    res = _fmmodel("train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--no-progress",
                   env=plugin_env)
    assert res.returncode == 0, res.stderr
    # without the distribution the code is gone: one line that says what is missing
    res = _fmmodel("evaluate", "--store", store, "--checkpoint", str(tmp_path / "run" / "last.pt"), "--workers", "0",
                   "--device", "cpu", "--no-progress")
    assert res.returncode != 0 and "fmf_plugin_demo" in res.stderr and "Traceback" not in res.stderr
    assert "pooled_current" not in installed_models()  # this process never saw the plugin


def test_the_factory_receives_the_runs_data_description(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    seen: list[DataDescription] = []

    def build(data: DataDescription) -> torch.nn.Module:
        seen.append(data)
        module = sys.modules["fmf_test_models"]
        return module.Head(data)

    module = type(sys)("fmf_test_models")
    module.factory = ModelFactory(build=build, modality="video", task="cls")

    class Head(torch.nn.Module):
        def __init__(self, data: DataDescription) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, data.num_classes)

        def forward(self, video=None, current=None):
            return self.lin(video.mean(dim=(2, 3, 4)))

    module.Head = Head
    sys.modules["fmf_test_models"] = module
    try:
        cfg = quick_config(store, str(tmp_path / "run"), variant="fmf_test_models:factory", modality="video",
                           model={"size": "reference", "width": 7}, frames=6)
        result = train(cfg, progress=False)
    finally:
        del sys.modules["fmf_test_models"]
    assert result.history
    (data,) = seen
    assert (data.task, data.modality, data.frame_size, data.clip_frames) == ("cls", "video", (32, 32), 6)
    assert data.current_rows == 60 and data.options == {"width": 7}


def test_a_model_with_the_wrong_output_is_stopped_with_one_line(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    bad = tmp_path / "bad.py"
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
    res = _fmmodel("train", "--store", store, "--model", f"{bad}:one_logit", "--modality", "current",
                   "--out", str(tmp_path / "run"), *QUICK)
    assert res.returncode == 2, res.stderr
    assert "expected model" in res.stderr and "(8, 2)" in res.stderr and "got (8, 1)" in res.stderr
    assert "Traceback" not in res.stderr
    # the run failed before its first epoch: it removed what it wrote and the folder it made
    assert not (tmp_path / "run").exists()
    res = _fmmodel("train", "--store", store, "--model", f"{EXAMPLE}:current_gru", "--out", str(tmp_path / "run"),
                   *QUICK)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["variant"] == f"{EXAMPLE}:current_gru"
    res = _fmmodel("train", "--store", store, "--model", f"{bad}:missing", "--out", str(tmp_path / "r2"), *QUICK)
    assert res.returncode == 2 and "missing" in res.stderr and "Traceback" not in res.stderr


def test_a_run_of_a_factory_file_named_relatively_resumes_from_anywhere_when_named_again(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    project = tmp_path / "project"
    project.mkdir()
    (project / "models.py").write_text(Path(EXAMPLE).read_text())
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "fmmodel"), "train", "--store", store,
                          "--model", "models.py:current_gru", "--out", str(tmp_path / "run"), *QUICK],
                         capture_output=True, text=True, cwd=project)
    assert res.returncode == 0, res.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["variant"] == f"{project / 'models.py'}:current_gru"  # absolute, as the store
    # a run folder is data: its factory file is imported only when the user names it again
    res = _fmmodel("train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--no-progress")
    assert res.returncode == 2 and "--model" in res.stderr and "refused" in res.stderr, res.stderr
    # ... by any path to it, from any working directory
    res = _fmmodel("train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--no-progress",
                   "--model", os.path.relpath(project / "models.py") + ":current_gru")
    assert res.returncode == 0, res.stderr
    assert len(load_checkpoint(str(tmp_path / "run" / "last.pt")).extra["history"]) == 2


def test_declared_inputs_and_task_must_agree_with_the_run():
    spec = f"{EXAMPLE}:current_gru"
    v = resolve_variant(spec)
    assert (v.modality, v.task, v.inputs) == ("current", "cls", ("current",))
    with pytest.raises(FmModelError, match="expected modality 'current'"):
        resolve_variant(spec, modality="both")
    with pytest.raises(FmModelError, match="expected a data description"):
        build_model(v)
    model = build_model(v, description=DataDescription(task="cls", modality="current", frame_size=(32, 32),
                                                       clip_frames=10, current_rows=60))
    out = model(current=torch.randn(4, 60, 3))
    assert out.shape == (4, 2)
