"""The toolkit's checkpoint format stays readable: files written by earlier code (tests/data, made by
tests/data/write_v1_checkpoints.py at commit 1f315f3) and the authors' fixtures load field by field
as they did, and what is saved again is the same record."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import ModelMeta, load_checkpoint, load_model, model_state_dict, save_checkpoint
from fmmodel.model.config import FmFormerConfig
from fmmodel.model.registry import ModelInfo, model_info
from fmmodel.model.user_models import DataDescription, ModelSource

from runs import FIXTURES, needs_fixtures

DATA = Path(__file__).resolve().parent / "data"
BUILTIN, USER = DATA / "checkpoint-v1-builtin.pt", DATA / "checkpoint-v1-user.pt"
V1_META_KEYS = ["variant", "config", "orientation", "preprocessing", "info", "data", "source"]
WINDOW = {"frames": 2, "frame_step": 3, "current_seconds": 1.0, "current_rows": 6, "stride": 4, "policy": "reference"}
NORMALIZATION = {"video_mean": [0.25, 0.5, 0.75], "video_std": [1.5, 2.0, 2.5], "current_mean": [0.0, 1.0, -1.0],
                 "current_std": [3.0, 4.0, 5.0]}


def _raw(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _same_tensors(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_version_1_checkpoint_of_a_builtin_loads_every_field_as_written():
    ckpt = load_checkpoint(BUILTIN)
    meta = ckpt.meta
    assert meta.variant == "vicu_cls" and meta.source is None
    assert meta.config == FmFormerConfig(width=8, depth=1, heads=2, head_dim=4, mlp_dim=16, patch=(1, 2, 2), frames=2,
                                         image_size=(4, 4), video_channels=3, current_rows=6, current_channels=3,
                                         dilated_tokens=True, dilation=2, num_classes=2, decoder_channels=(4,),
                                         norm_eps=1e-5, init="reference")
    assert meta.description == DataDescription(task="cls", modality="both", frame_size=(4, 4), clip_frames=2,
                                               current_rows=6, num_classes=2, options={})
    assert meta.orientation == "true"
    assert meta.preprocessing == {"name": "normalized", "normalization": NORMALIZATION}
    assert meta.info == {"torch": "2.13.0+cpu", "task": "cls", "modality": "both", "window": WINDOW,
                         "store": "store.zarr", "seed": 0, "epoch": 3, "score": 0.75}
    raw = _raw(BUILTIN)
    assert len(ckpt.state_dict) == 63 and _same_tensors(ckpt.state_dict, raw["state_dict"])
    assert list(ckpt.extra) == ["epoch", "best_score", "history", "rng"]
    assert (ckpt.extra["epoch"], ckpt.extra["best_score"], ckpt.extra["history"]) == (3, 0.75, [{"epoch": 1,
                                                                                                   "loss": 0.5}])
    assert torch.equal(ckpt.extra["rng"], torch.arange(4, dtype=torch.uint8))
    # the record reads back to the very dict it was read from, keys in the order they were written
    assert meta.to_dict() == raw["meta"] and list(meta.to_dict()) == list(raw["meta"]) == V1_META_KEYS

    model, loaded = load_model(BUILTIN)
    assert loaded == meta and not model.training and model.variant == "vicu_cls"
    assert _same_tensors(model_state_dict(model), raw["state_dict"])


def test_saving_a_loaded_checkpoint_again_writes_the_same_record(tmp_path):
    model, meta = load_model(BUILTIN)
    info = {k: v for k, v in meta.info.items() if k != "torch"}
    again = save_checkpoint(tmp_path / "again.pt", model, orientation=meta.orientation,
                            preprocessing=meta.preprocessing, info=info, extra=load_checkpoint(BUILTIN).extra)
    old, new = _raw(BUILTIN), _raw(again)
    assert list(new) == list(old) == ["format", "format_version", "meta", "state_dict", "extra"]
    assert (new["format"], new["format_version"]) == (old["format"], old["format_version"])
    assert new["meta"]["info"]["torch"] == str(torch.__version__)  # the saving torch, as before
    old["meta"]["info"].pop("torch")
    new["meta"]["info"].pop("torch")
    assert new["meta"] == old["meta"] and list(new["meta"]) == V1_META_KEYS
    assert _same_tensors(new["state_dict"], old["state_dict"])


@pytest.mark.skipif(str(torch.__version__) != "2.13.0+cpu", reason="the files record the torch that wrote them")
def test_the_code_that_wrote_the_version_1_files_writes_them_byte_for_byte_today(tmp_path):
    res = subprocess.run([sys.executable, str(DATA / "write_v1_checkpoints.py"), str(tmp_path)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    for old in (BUILTIN, USER):
        assert (tmp_path / old.name).read_bytes() == old.read_bytes(), old.name


def test_a_version_1_checkpoint_of_a_users_model_loads_every_field_as_written():
    ckpt = load_checkpoint(USER)  # reading the record imports nothing
    meta = ckpt.meta
    assert meta.variant == "pooled_current" and meta.config is None
    assert meta.source == ModelSource(name="pooled_current", spec="fmf_plugin_demo:pooled_current",
                                      entry_point=True, version="1.2.3")
    assert meta.description == DataDescription(task="cls", modality="current", frame_size=(4, 4), clip_frames=2,
                                               current_rows=6, num_classes=2, options={"hidden": 3})
    assert (meta.orientation, meta.preprocessing, meta.info) == ("reference", {"name": "reference"},
                                                                 {"torch": "2.13.0+cpu", "epoch": 1})
    raw = _raw(USER)
    assert _same_tensors(ckpt.state_dict, raw["state_dict"]) and list(ckpt.state_dict) == ["head.weight", "head.bias"]
    assert ckpt.extra == {}
    assert meta.to_dict() == raw["meta"] and list(meta.to_dict()) == V1_META_KEYS


def test_a_version_1_checkpoint_of_an_installed_model_builds_it_where_it_is_installed(plugin_env):
    code = ("import json, sys; from fmmodel.model.checkpoint import load_model; "
            "m, meta = load_model(sys.argv[1]); "
            "print(json.dumps({'meta': meta.to_dict(), 'weight': m.head.weight.tolist(), 'bias': m.head.bias.tolist(), "
            "'type': type(m).__name__}))")
    res = subprocess.run([sys.executable, "-c", code, str(USER)], capture_output=True, text=True, env=plugin_env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    raw = _raw(USER)
    assert out["type"] == "Pool" and out["meta"] == raw["meta"]
    assert out["weight"] == raw["state_dict"]["head.weight"].tolist()
    assert out["bias"] == raw["state_dict"]["head.bias"].tolist()


def test_a_checkpoint_record_is_the_models_description_plus_how_it_was_fed():
    model, meta = load_model(BUILTIN)
    # one description: the record is the model's ModelInfo and the three fields a checkpoint adds
    assert [f.name for f in fields(ModelMeta)] == [f.name for f in fields(ModelInfo)] + ["orientation",
                                                                                       "preprocessing", "info"]
    assert isinstance(meta, ModelInfo) and type(meta.model_info) is ModelInfo and meta.model_info == model_info(model)
    assert (meta.task, meta.inputs) == ("cls", ("video", "current"))
    built = ModelMeta.of(model_info(model), orientation="true", preprocessing="normalized", info={"epoch": 3})
    assert built.model_info == meta.model_info and built.preprocessing == {"name": "normalized"}
    assert built.info == {"epoch": 3}
    with pytest.raises(FmModelError, match="expected orientation in"):
        ModelMeta.of(meta, orientation="sideways", preprocessing="reference")
    with pytest.raises(FmModelError, match="expected the sizes of built-in model 'vicu_cls'"):
        ModelMeta.from_dict({**meta.to_dict(), "config": None})
    # a record without its data description (the built-ins' is derived from their sizes) reads as before
    assert ModelMeta.from_dict({k: v for k, v in meta.to_dict().items() if k != "data"}) == meta
    with pytest.raises(FmModelError, match="expected the data description of model 'pooled_current'"):
        ModelMeta.from_dict({k: v for k, v in load_checkpoint(USER).meta.to_dict().items() if k != "data"})


REFERENCE = {"vicu_cls": ("both", "cls", FmFormerConfig()), "vicu_seg": ("both", "seg", FmFormerConfig()),
             "video_cls": ("video", "cls", FmFormerConfig(frames=8)),
             "current_cls": ("current", "cls", FmFormerConfig())}


@needs_fixtures
@pytest.mark.parametrize("variant", sorted(REFERENCE))
def test_every_reference_fixture_loads_with_the_record_it_had(variant):
    modality, task, config = REFERENCE[variant]
    path = FIXTURES / f"{variant}.npz"
    model, meta = load_model(path)
    assert (meta.variant, meta.config, meta.source) == (variant, config, None)
    assert meta.description == DataDescription(task=task, modality=modality, frame_size=(64, 64),
                                               clip_frames=config.frames, current_rows=240, num_classes=2)
    assert (meta.orientation, meta.preprocessing) == ("reference", {"name": "reference"})
    assert meta.info == {"source": str(path), "format": "reference"}
    assert list(meta.to_dict()) == V1_META_KEYS
