"""The public API (issue 17, item 3): the faces' names, their light import, the settings
dataclasses of evaluate and predict, and docs/python-api.md's example, run as it stands."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fmdata
import fmmodel
from fmmodel.errors import FmModelError
from fmmodel.scoring.config import EvaluateConfig, PredictConfig
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.predict import predict

from builders import cached_store
from markdown_blocks import fenced_blocks, script

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def _python(code: str, cwd: str | os.PathLike[str] | None = None, timeout: float = 120) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("face", [fmdata, fmmodel])
def test_each_face_exports_the_names_the_page_lists(face):
    first_cells = re.findall(r"^\| (.+?) \|", PAGE.read_text(encoding="utf-8"), flags=re.M)  # the tables' names
    listed = {name for cell in first_cells for name in re.findall(rf"`{face.__name__}\.(\w+)", cell)}
    assert set(face.__all__) == listed
    assert sorted(dir(face)) == sorted(face.__all__)
    for name in face.__all__:
        assert getattr(face, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'private'"):
        face.private  # noqa: B018


def test_importing_the_faces_loads_none_of_the_heavy_packages():
    """The command line and DataLoader workers import fmmodel.protocol (and with it both faces)."""
    out = _python("import sys, fmdata, fmmodel, fmmodel.protocol\n"
                  "print(sorted(m for m in ('torch', 'zarr', 'dask', 'h5py', 'cv2', 'matplotlib', 'xarray', "
                  "'fmdata.store', 'fmmodel.data') if m in sys.modules))")
    assert out.strip() == "[]"


def test_fmdata_convert_is_the_function_whatever_was_imported_first():
    out = _python("import sys\n"
                  "from fmdata.convert.verify import verify   # the sub-package first\n"
                  "import fmdata.convert.driver\n"
                  "import fmdata\n"
                  "from fmdata import convert\n"
                  "run = sys.modules['fmdata.convert.run'].run_conversion\n"
                  "print(fmdata.convert is run, convert is run, callable(verify))")
    assert out.split() == ["True", "True", "True"]


def test_the_settings_check_their_values_naming_the_field():
    cases = [(EvaluateConfig, {"workers": -1}, "workers"), (EvaluateConfig, {"split": "val"}, "split"),
             (EvaluateConfig, {"batch_size": 0}, "batch_size"), (EvaluateConfig, {"protocol": "x"}, "protocol"),
             (EvaluateConfig, {"fmt": "onnx"}, "fmt"), (EvaluateConfig, {"examples": -2}, "examples"),
             (EvaluateConfig, {"device": "tpu"}, "device"), (EvaluateConfig, {"trusted": "m:f"}, "trusted"),
             (PredictConfig, {"video_max_frames": 0}, "video_max_frames"), (PredictConfig, {"data": "x"}, "data"),
             (PredictConfig, {"batch_size": "64"}, "batch_size")]
    for cls, values, field in cases:
        with pytest.raises(FmModelError) as err:
            cls(**values)
        assert err.value.field == field, (cls, values)
    assert PredictConfig().split == "all" and EvaluateConfig().split == "test"


def test_the_settings_round_trip_through_json_and_refuse_unknown_keys():
    cfg = PredictConfig(split="test", workers=0, trusted=("pkg.mod:factory",), video="v.mp4", overwrite=True)
    back = PredictConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.trusted == ("pkg.mod:factory",)
    assert EvaluateConfig.from_dict({"workers": 0}) == EvaluateConfig(workers=0)
    with pytest.raises(FmModelError, match="got unknown spilt, wokers") as err:
        EvaluateConfig.from_dict({"spilt": "test", "wokers": 0})
    assert err.value.field == "spilt"


def test_evaluate_and_predict_take_a_config_or_its_keywords(tmp_path):
    with pytest.raises(FmModelError, match="got unknown wokers") as err:  # before anything is opened
        evaluate(tmp_path / "nothing.zarr", "none.pt", wokers=0)
    assert err.value.field == "wokers"
    with pytest.raises(FmModelError) as err:
        predict(tmp_path / "nothing.zarr", "none.pt", str(tmp_path / "p.zarr"), PredictConfig(workers=0), workers=-1)
    assert err.value.field == "workers"


def test_markdown_blocks_are_found_by_language_and_marker(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python runnable\na = 1\n```\n\n```bash\nls\n```\n"
                    "  ````python\n  b = 2\n  ```\n  c = 3\n  ````\n~~~python runnable x\nd = 4\n~~~\n")
    assert [(b.language, b.markers, b.line) for b in fenced_blocks(page)] == [
        ("python", ("runnable",), 3), ("bash", (), 7), ("python", (), 10), ("python", ("runnable", "x"), 15)]
    assert fenced_blocks(page, "python")[1].code == "b = 2\n```\nc = 3\n"
    assert [b.code for b in fenced_blocks(page, "python", "runnable")] == ["a = 1\n", "d = 4\n"]
    assert script(page).endswith("# ---- page.md, line 15\nd = 4\n")


def test_the_python_api_page_example_runs_as_it_stands(tmp_path):
    """docs/python-api.md's example, run in a fresh folder: it prints a window, a model's output and
    an xarray view of one recording."""
    (tmp_path / "example.py").write_text(script(PAGE), encoding="utf-8")
    r = subprocess.run([sys.executable, "example.py"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "600 frames; ('batch_01', 'batch_02') ; tables: ('small',)" in out
    assert "window: {'clip': (3, 4, 16, 16), 'current': (20, 3), 'mask': (16, 16), 'label': ()" in out
    assert re.search(r"model output: tensor\(\[\[0\.\d+, 0\.\d+\]\]\)", out)
    assert re.search(r"evaluation: n=\d+ accuracy=", out)
    assert "<xarray.Dataset>" in out and "frame_time" in out and "batch_01" in out
    assert "frame 10 of batch_01: (16, 16, 3) at 0.4 s" in out


def test_a_preset_and_a_settings_file_reach_train_through_the_face(tmp_path_factory, tmp_path):
    """fmmodel.resolve_train_config makes what `fmmodel train --preset --config` trains; given the
    open store, it and train read that one handle; a run's config.json gives its settings again."""
    store = fmdata.open_store(cached_store(tmp_path_factory))
    x = tmp_path / "x"
    cfg = fmmodel.resolve_train_config(preset="smoke", store=store, out=str(x), settings={"epochs": 1})
    assert (cfg.preset, cfg.epochs, cfg.window.stride) == ("smoke", 1, 10)
    result = fmmodel.train(cfg, progress=False, store=store)
    assert len(result.history) == 1 and os.path.exists(result.best)
    recorded = fmmodel.TrainConfig.load(x / "config.json")
    again = fmmodel.resolve_train_config(config=x / "config.json", out=str(tmp_path / "y"))
    assert again.identity() == recorded.identity() and again.preset == "smoke"
    (tmp_path / "s.yaml").write_text("preset: cpu\nepochs: 10\nmodel: {depth: 2}\nwindow: {stride: 3}\n")
    layered = fmmodel.resolve_train_config(config=tmp_path / "s.yaml", store=store, out=str(tmp_path / "z"),
                                           settings={"lr": 0.002})
    assert (layered.preset, layered.epochs, layered.lr, layered.model["depth"], layered.model["width"],
            layered.window.stride) == ("cpu", 10, 0.002, 2, 32, 3)
