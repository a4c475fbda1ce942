"""A checkpoint or a run folder is data: nothing in it chooses code to import (issue 16, severe 1).

Each crafted file records a model whose "code" is a payload that, imported or called, creates a
marker file; the tests check that the marker never appears. Only what the user names
(``--model``) or what an installed distribution declares as an entry point under the recorded
name is imported, and a record that disagrees with either is refused in one line.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import load_model, save_checkpoint
from fmmodel.model.registry import build_model, resolve_variant
from fmmodel.model.user_models import DataDescription
from fmmodel.runs.train import resume_run

from builders import cached_store
from processes import FMMODEL, one_line_error, run

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "custom_model" / "tiny_models.py")
NO_GPU = ["--workers", "0", "--device", "cpu", "--no-progress"]


@pytest.fixture
def payload(tmp_path):
    """(folder, marker): ``folder/evil.py`` creates ``marker`` when imported and when ``f`` is called."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    marker = tmp_path / "marker"
    (folder / "evil.py").write_text(textwrap.dedent(f'''
        import pathlib
        pathlib.Path({str(marker)!r}).touch()
        def f(data):
            pathlib.Path({str(marker)!r}).touch()
    '''))
    return folder, marker


@pytest.fixture(scope="module")
def user_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of a user's model (the example's current_gru, named by its file)."""
    path = tmp_path_factory.mktemp("trust") / "gru.pt"
    data = DataDescription(task="cls", modality="current", frame_size=(32, 32), clip_frames=10, current_rows=60)
    model = build_model(resolve_variant(f"{EXAMPLE}:current_gru"), description=data)
    save_checkpoint(path, model, orientation="true", preprocessing="normalized",
                    info={"window": {"frames": 10, "frame_step": 6, "current_seconds": 30.0, "current_rows": 60}})
    return path


def _crafted(original: Path, out: Path, source: dict) -> Path:
    """``original`` with its recorded model source replaced by ``source`` (plain strings: still weights-only)."""
    payload = torch.load(original, weights_only=True)
    payload["meta"]["source"] = source
    payload["meta"]["variant"] = source["name"]
    torch.save(payload, out)
    torch.load(out, weights_only=True)  # still a plain-data checkpoint
    return out


def test_a_checkpoint_cannot_choose_the_code_evaluate_and_predict_import(tmp_path_factory, tmp_path, payload,
                                                                          user_checkpoint):
    store = cached_store(tmp_path_factory)
    folder, marker = payload
    evil = f"{folder / 'evil.py'}:f"
    mine = f"{EXAMPLE}:current_gru"

    # an entry point that no installed distribution provides, recorded with the payload's spec
    ck = _crafted(user_checkpoint, tmp_path / "helper.pt", {"name": "helper", "spec": evil, "entry_point": True})
    r = run([FMMODEL, "evaluate", "--store", store, "--checkpoint", ck, *NO_GPU])
    one_line_error(r, 1, str(ck), "'helper'", "no installed distribution")
    assert not marker.exists()

    # a factory file by its absolute path, and by a path relative to the working folder
    for spec, name in ((evil, "abs.pt"), ("evil.py:f", "rel.pt")):
        ck = _crafted(user_checkpoint, tmp_path / name, {"name": spec, "spec": spec, "entry_point": False})
        r = run([FMMODEL, "evaluate", "--store", store, "--checkpoint", ck, *NO_GPU], cwd=str(folder))
        one_line_error(r, 2, "--model", "refused", "cannot choose code")
        assert not marker.exists()

    # the recorded name is the user's own --model, the recorded spec the payload: the user's name
    # does not vouch for other code
    ck = _crafted(user_checkpoint, tmp_path / "same-name.pt", {"name": mine, "spec": evil, "entry_point": False})
    for command in (["evaluate"], ["predict", "--out", tmp_path / "p.zarr"]):
        r = run([FMMODEL, *command, "--store", store, "--checkpoint", ck, "--model", mine, *NO_GPU])
        one_line_error(r, 2, "--model", "refused", repr(evil), repr(mine))
    assert not marker.exists() and not (tmp_path / "p.zarr").exists()

    # any importable callable: builtins.print would be called with the data description
    ck = _crafted(user_checkpoint, tmp_path / "print.pt", {"name": "print", "spec": "builtins:print",
                                                           "entry_point": True})
    r = run([FMMODEL, "evaluate", "--store", store, "--checkpoint", ck, *NO_GPU])
    one_line_error(r, 1, "'print'", "no installed distribution")
    assert "DataDescription" not in r.stdout
    ck = _crafted(user_checkpoint, tmp_path / "print2.pt", {"name": "builtins:print", "spec": "builtins:print"})
    with pytest.raises(FmModelError, match="refused.*builtins:print"):
        load_model(ck)
    with pytest.raises(FmModelError, match="refused.*got 'helper' \\(no installed model or factory\\)"):
        load_model(tmp_path / "helper.pt", trusted=["helper"])
    assert not marker.exists()

    # the real checkpoint still loads when its file is named (by another path to it), not otherwise
    with pytest.raises(FmModelError, match="refused"):
        load_model(user_checkpoint)
    model, meta = load_model(user_checkpoint, trusted=[os.path.relpath(EXAMPLE) + ":current_gru"])
    assert meta.source is not None and meta.source.spec == mine
    save_checkpoint(tmp_path / "b.pt", build_model("current_cls", size="tiny"), orientation="true",
                    preprocessing="normalized")
    with pytest.raises(FmModelError, match="refused: expected --model naming the checkpoint's model 'current_cls'"):
        load_model(tmp_path / "b.pt", trusted=[mine])


def test_an_installed_name_imports_the_installed_code_only(tmp_path_factory, tmp_path, payload, user_checkpoint,
                                                           plugin_env):
    store = cached_store(tmp_path_factory)
    folder, marker = payload
    # the name of the installed model, recorded with the payload's spec: the installed distribution
    # declares other code, so the record is refused (the payload is never imported)
    ck = _crafted(user_checkpoint, tmp_path / "ep.pt", {"name": "pooled_current", "spec": f"{folder / 'evil.py'}:f",
                                                        "entry_point": True})
    r = run([FMMODEL, "evaluate", "--store", store, "--checkpoint", ck, *NO_GPU], env=plugin_env)
    one_line_error(r, 1, str(ck), "refused", "'fmf_plugin_demo:pooled_current'")
    r = run([FMMODEL, "predict", "--store", store, "--checkpoint", ck, "--out", tmp_path / "p.zarr", *NO_GPU],
            env=plugin_env)
    one_line_error(r, 1, "refused")
    assert not marker.exists()


def _crafted_run(folder: Path, store: str, variant: str, **runtime) -> Path:
    """A run folder (config.json, a last.pt) whose config names ``variant``."""
    folder.mkdir(parents=True)
    config = {"store": store, "out": str(folder), "variant": variant, "modality": "current",
              "runtime": {"model_config": {"source": {"name": variant, "spec": variant, **runtime}}}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "last.pt").write_bytes(b"not read before the model is allowed")
    return folder


def test_a_run_folder_cannot_choose_the_code_resume_and_benchmark_import(tmp_path_factory, tmp_path, payload,
                                                                           monkeypatch):
    store = cached_store(tmp_path_factory)
    folder, marker = payload
    evil = f"{folder / 'evil.py'}:f"
    run_dir = _crafted_run(tmp_path / "abs", store, evil)
    r = run([FMMODEL, "train", "--out", run_dir, "--resume", "--no-progress"])
    one_line_error(r, 2, "--model", "refused", "cannot choose code")
    assert not marker.exists()
    # the user's --model, when it is not the run's model
    with pytest.raises(FmModelError, match="refused: expected --model naming the recorded model"):
        resume_run(str(run_dir), model=f"{EXAMPLE}:current_gru", progress=False)
    # a factory file relative to the working folder; an installed-model name that nothing installed provides
    monkeypatch.chdir(folder)
    with pytest.raises(FmModelError, match="refused.*cannot choose code"):
        resume_run(str(_crafted_run(tmp_path / "rel", store, "evil.py:f")), progress=False)
    with pytest.raises(FmModelError, match="installed.*got 'helper'"):
        resume_run(str(_crafted_run(tmp_path / "ep", store, "helper", entry_point=True)), progress=False)
    assert not marker.exists()
    # a benchmark cell's folder (config.json is read to compare its settings): read, never imported
    cell = _crafted_run(tmp_path / "bench" / "current_cls" / "reference" / "seed-0", store, evil)
    r = run([FMMODEL, "benchmark", "--store", store, "--out", tmp_path / "bench", "--variants", "current_cls",
             "--seeds", "0", "--epochs", "1", *NO_GPU])
    one_line_error(r, 1, str(cell), "other settings")
    assert not marker.exists()
