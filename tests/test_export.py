"""``fmmodel export`` (issue 19): exported models compute the checkpoint's outputs on real windows,
``predict``, ``evaluate`` and ``watch`` take them by content, and loading one never runs code
that the file chooses (crafted torch.export archives, TorchScript and ONNX graphs of foreign
operators, an AOTInductor package not named as trusted).

Stores are small (16x16 frames, 12 s) and models tiny. The AOTInductor export compiles C++ for a
minute or more: its test runs when FMF_AOTI_TESTS=1 (benchmarks/bench_watch.py exercises it too).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fmcli.fmmodel_main import main as fmmodel_main
from fmdata.derive import compute_stats
from fmdata.store import WindowParams, open_store
from fmmodel.data.preprocessing import read_normalization
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import save_checkpoint
from fmmodel.model.export import RECORD_NAME, export_kind, export_model, load_export
from fmmodel.model.registry import build_model, user_variant
from fmmodel.model.user_models import DataDescription, find_source
from fmmodel.online import Sources, WatchSettings, watch
from fmmodel.scoring.predict import predict, read_predictions

from builders import recording, write_store
from processes import FMMODEL, one_line_error, run

HERE = Path(__file__).resolve().parent
CLIP_CNN = f"{HERE.parent / 'examples' / 'custom_model' / 'tiny_models.py'}:clip_cnn"
PARAMS = WindowParams(frames=4, frame_step=3, current_seconds=6.0, current_rows=12)
TOLERANCE = 1e-5


def make_checkpoint(path: Path, model: str, store: str, *, preprocessing: str = "normalized") -> str:
    """A checkpoint of ``model`` with fresh weights for 16x16 frames and the windows PARAMS."""
    torch.manual_seed(0)
    if ":" in model:
        data = DataDescription(task="cls", modality="both", frame_size=(16, 16), clip_frames=PARAMS.frames,
                               current_rows=PARAMS.current_rows)
        net = build_model(user_variant(model, find_source(model)), description=data)
    else:
        net = build_model(model, size="tiny", image_size=(16, 16), frames=PARAMS.frames,
                          current_rows=PARAMS.current_rows)
    prep: dict = {"name": preprocessing}
    if preprocessing == "normalized":
        norm = read_normalization(dict(open_store(store).attrs), store)
        prep["normalization"] = {k: v.tolist() for k, v in norm.items()}
    save_checkpoint(path, net, orientation="reference" if preprocessing == "reference" else "true",
                    preprocessing=prep, info={"window": PARAMS.to_dict(), "fps": 25.0})
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("export") / "s.zarr"
    write_store(path, [recording("v1", 300, 1, h=16, w=16), recording("v2", 300, 2, h=16, w=16, lead=5)])
    compute_stats(str(path))
    return str(path)


def predictions(store: str, checkpoint: str, out: Path, trusted: list[str]) -> tuple[np.ndarray, ...]:
    predict(store, checkpoint, str(out), workers=0, device="cpu", progress=False, trusted=trusted, data="lazy")
    p = read_predictions(str(out))
    return p["frame"][:], p["prob"][:], (p["mask_pred"][:] if "mask_pred" in p else None)


@pytest.mark.parametrize("model,fmt,preprocessing", [("vicu_cls", "torchscript", "reference"),
                                                     ("vicu_cls", "pt2", "normalized"),
                                                     ("vicu_cls", "onnx", "normalized"),
                                                     ("vicu_seg", "pt2", "normalized"),
                                                     ("current_cls", "onnx", "reference"),
                                                     (CLIP_CNN, "torchscript", "normalized")])
def test_an_export_predicts_what_its_checkpoint_predicts(store, tmp_path, model, fmt, preprocessing):
    """Every window of the store (both current layouts), fp32: probabilities within 1e-5, the same masks."""
    ckpt = make_checkpoint(tmp_path / "m.pt", model, store, preprocessing=preprocessing)
    trusted = [model] if ":" in model else []
    exported = str(tmp_path / f"m.{fmt}")
    report = export_model(ckpt, exported, format=fmt, trusted=trusted)
    assert export_kind(exported) == fmt and report.max_prob_diff <= TOLERANCE
    frames, want, masks = predictions(store, ckpt, tmp_path / "c.zarr", trusted)
    frames_x, got, masks_x = predictions(store, exported, tmp_path / "x.zarr", [])  # an export imports no code
    np.testing.assert_array_equal(frames, frames_x)
    assert len(frames) > 400
    assert np.abs(want - got).max() <= TOLERANCE, (model, fmt, np.abs(want - got).max())
    if masks is not None:
        assert np.mean(masks != masks_x) < 1e-4  # a pixel exactly at 0.5 may round either way


def test_watch_and_the_command_line_take_an_export_by_its_content(store, tmp_path):
    """`fmmodel export` on the command line; the file renamed to another format's suffix still loads
    as what it is; a replay watched with the export decides as with the checkpoint."""
    ckpt = make_checkpoint(tmp_path / "m.pt", "vicu_cls", store)
    res = run([FMMODEL, "export", "--checkpoint", ckpt, "--format", "onnx", "--json"])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["out"] == str(tmp_path / "m.onnx") and out["max_prob_diff"] <= TOLERANCE
    disguised = tmp_path / "looks-like.pt"
    shutil.copy(tmp_path / "m.onnx", disguised)
    scores = {}
    for name, model in (("checkpoint", ckpt), ("export", str(disguised))):
        report = watch(model, Sources(replay=store, recording="1", speed=None),
                       WatchSettings(every=0.2, threads=1, metrics_every=0.0), keep_decisions=True)
        scores[name] = {d.frame: d.score for d in report.decisions}
    assert scores["checkpoint"].keys() == scores["export"].keys() and len(scores["export"]) > 40
    assert max(abs(scores["checkpoint"][f] - scores["export"][f]) for f in scores["export"]) <= TOLERANCE
    # a checkpoint with an export's suffix is still a checkpoint
    shutil.copy(ckpt, tmp_path / "really-a-checkpoint.ts")
    assert export_kind(tmp_path / "really-a-checkpoint.ts") is None


# ---- loading never runs what the file chooses ------------------------------------------------------------


@pytest.fixture(scope="module")
def pt2_export(store, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("pt2")
    ckpt = make_checkpoint(folder / "m.pt", "vicu_cls", store)
    return export_model(ckpt, str(folder / "m.pt2"), format="pt2").out


def rewrite(src: str, dst: Path, change) -> str:
    """Copy the zip ``src`` to ``dst``, passing each member's (name, bytes) through ``change``
    (which returns the new bytes, or a list of extra (name, bytes) members to add after it)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            for name, data in change(info.filename, z.read(info.filename)):
                out.writestr(name, data)
    return str(dst)


class Payload:
    """Unpickling this touches the marker file: what loading must never do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(pt2: str, tmp_path: Path, marker: Path) -> dict[str, str]:
    """torch.export archives that would make torch.export.load and .module() run code."""
    def edit_program(fn):
        def change(name, data):
            if name.endswith("models/model.json"):
                program = json.loads(data)
                fn(program)
                data = json.dumps(program).encode()
            return [(name, data)]
        return change

    def guards(p):
        p["guards_code"] = [f"__import__('pathlib').Path({str(marker)!r}).touch() or True"]

    def target(p):
        p["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    def expression(p):
        sym = p["graph_module"]["graph"]["sym_int_values"]
        key = next(iter(sym))
        sym[key]["as_expr"]["expr_str"] = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    def pickled_weight(name, data):
        if name.endswith("data/weights/model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True  # weight_0: torch.load(weights_only=False) would unpickle it
            data = json.dumps(config).encode()
        if name.endswith("/data/weights/weight_0"):
            buf = io.BytesIO()
            torch.save(Payload(str(marker)), buf)
            return [(name, buf.getvalue())]
        return [(name, data)]

    def pickled_inputs(name, data):
        if name.endswith("data/sample_inputs/model.pt"):
            buf = io.BytesIO()
            torch.save(Payload(str(marker)), buf)
            data = buf.getvalue()
        return [(name, data)]

    return {"guards": rewrite(pt2, tmp_path / "guards.pt2", edit_program(guards)),
            "target": rewrite(pt2, tmp_path / "target.pt2", edit_program(target)),
            "expression": rewrite(pt2, tmp_path / "expression.pt2", edit_program(expression)),
            "pickled weight": rewrite(pt2, tmp_path / "weight.pt2", pickled_weight),
            "pickled inputs": rewrite(pt2, tmp_path / "inputs.pt2", pickled_inputs)}


def test_a_crafted_pt2_archive_never_runs_its_code(pt2_export, store, tmp_path):
    marker = tmp_path / "MARKER"
    files = crafted(pt2_export, tmp_path, marker)
    # the guards are Python source that ExportedProgram.module() exec-s: dropped, the model still loads
    model, meta = load_export(files["guards"])
    x = {"video": torch.zeros(2, 3, 4, 16, 16), "current": torch.zeros(2, 12, 3)}
    assert model(**x).shape == (2, 2) and meta.info["export"] == "pt2"
    for what in ("target", "expression", "pickled weight", "pickled inputs"):
        res = run([FMMODEL, "predict", "--store", store, "--checkpoint", files[what], "--out",
                   str(tmp_path / f"{what}.zarr"), "--device", "cpu", "--workers", "0", "--no-progress"])
        line = one_line_error(res, 1, "refused: torch.export.load would run code for it")
        assert os.path.basename(files[what]) in line, line
    assert not marker.exists()


def test_torchscript_and_onnx_graphs_of_foreign_operators_are_refused(tmp_path, pt2_export):
    """A TorchScript graph calling an operator outside ATen and TorchScript's primitives; ONNX
    graphs with a node of another domain or weights in an external file (which onnxruntime would
    read from a path the file names)."""
    torch.library.define("fmftest::shout", "(Tensor x) -> Tensor")
    torch.library.impl("fmftest::shout", "cpu", lambda x: x * 2)

    class Foreign(torch.nn.Module):
        def forward(self, video: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
            return torch.ops.fmftest.shout(current[:, 0, :2])

    with zipfile.ZipFile(pt2_export) as z:
        record = z.read(next(n for n in z.namelist() if n.endswith(f"/extra/{RECORD_NAME}")))
    scripted = torch.jit.script(Foreign())
    torch.jit.save(scripted, str(tmp_path / "foreign.ts"), _extra_files={RECORD_NAME: record})
    with pytest.raises(FmModelError, match="expected a TorchScript graph of ATen and primitive operators, got "
                                           "fmftest::shout"):
        load_export(tmp_path / "foreign.ts")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Evil", ["current"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("current", TensorProto.FLOAT, [None, 12, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
    proto = helper.make_model(graph)
    helper.set_model_props(proto, {RECORD_NAME: record.decode()})
    onnx.save_model(proto, str(tmp_path / "domain.onnx"))
    with pytest.raises(FmModelError, match="operators of other domains"):
        load_export(tmp_path / "domain.onnx")
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    weight.external_data.add(key="location", value="../../etc/passwd")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[weight])
    proto = helper.make_model(graph)
    helper.set_model_props(proto, {RECORD_NAME: record.decode()})
    onnx.save_model(proto, str(tmp_path / "external.onnx"))
    with pytest.raises(FmModelError, match="weights in external files"):
        load_export(tmp_path / "external.onnx")


def test_an_aoti_package_loads_only_when_named_as_trusted(pt2_export, store, tmp_path):
    """An AOTInductor package is a shared library: without --model naming it, predict refuses it
    before anything is loaded (here a package whose library is not even one)."""
    def add_library(name, data):
        extra = [(name.split("/", 1)[0] + "/data/aotinductor/model/x.wrapper.so", b"not a library")]
        return [(name, data), *(extra if name.endswith("archive_format") else [])]

    package = rewrite(pt2_export, tmp_path / "package.pt2", add_library)
    assert export_kind(package) == "aoti"
    res = run([FMMODEL, "predict", "--store", store, "--checkpoint", package, "--out", str(tmp_path / "p.zarr"),
               "--device", "cpu", "--workers", "0", "--no-progress"])
    line = one_line_error(res, 2, "compiled shared library", "name the file with --model")
    assert "--model" in line
    named = run([FMMODEL, "predict", "--store", store, "--checkpoint", package, "--model", package, "--out",
                 str(tmp_path / "p.zarr"), "--device", "cpu", "--workers", "0", "--no-progress"])
    one_line_error(named, 1, "expected an AOTInductor package this torch")


@pytest.mark.skipif(not os.environ.get("FMF_AOTI_TESTS"), reason="compiles C++ for a minute or more "
                    "(set FMF_AOTI_TESTS=1; benchmarks/bench_watch.py exercises it as well)")
def test_an_aoti_export_predicts_what_its_checkpoint_predicts(store, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", "vicu_cls", store)
    exported = export_model(ckpt, str(tmp_path / "m-aoti.pt2"), format="aoti").out
    _, want, _ = predictions(store, ckpt, tmp_path / "c.zarr", [])
    _, got, _ = predictions(store, exported, tmp_path / "x.zarr", [exported])
    assert np.abs(want - got).max() <= TOLERANCE


def test_bad_exports_and_their_options_are_one_line(store, tmp_path, pt2_export):
    ckpt = make_checkpoint(tmp_path / "m.pt", "vicu_cls", store)
    (tmp_path / "notes.txt").write_text("mine")
    cases = [
        (["export", "--checkpoint", ckpt, "--format", "pt2", "--out", str(tmp_path / "notes.txt")], 1, "exists"),
        (["export", "--checkpoint", ckpt, "--format", "pt2", "--out", str(tmp_path / "notes.txt"), "--overwrite"], 1,
         "not an exported model"),
        (["export", "--checkpoint", ckpt, "--format", "pt2", "--out", ckpt], 2, "--out"),
        (["export", "--checkpoint", pt2_export, "--format", "onnx", "--out", str(tmp_path / "x.onnx")], 1,
         "expected a checkpoint to export, got an exported model"),
        (["export", "--checkpoint", str(tmp_path / "notes.txt"), "--format", "pt2"], 1, "notes.txt"),
        (["predict", "--store", store, "--checkpoint", pt2_export, "--format", "toolkit", "--out",
          str(tmp_path / "p.zarr"), "--device", "cpu", "--no-progress"], 2, "--format"),
        (["predict", "--store", store, "--checkpoint", pt2_export, "--precision", "bf16", "--out",
          str(tmp_path / "p.zarr"), "--device", "cpu", "--workers", "0", "--no-progress"], 2, "--precision"),
    ]
    for args, code, needle in cases:  # in this process: the real scripts' one-line errors are the tests above
        r = CliRunner().invoke(fmmodel_main, args)
        errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert r.exit_code == code and len(errors) == 1 and needle in errors[0], (args, r.exit_code, r.output)
        assert "Traceback" not in r.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary file left


def test_an_export_without_its_record_or_of_another_format_is_refused(tmp_path, pt2_export):
    bare = rewrite(pt2_export, tmp_path / "bare.pt2",
                   lambda name, data: [] if name.endswith(RECORD_NAME) else [(name, data)])
    with pytest.raises(FmModelError, match=f"its {RECORD_NAME}"):
        load_export(bare)
    bad = rewrite(pt2_export, tmp_path / "bad.pt2",
                  lambda name, data: [(name, b'{"format_name": "x"}' if name.endswith(RECORD_NAME) else data)])
    with pytest.raises(FmModelError, match="expected an export's record"):
        load_export(bad)


def test_an_onnx_export_without_its_packages_is_one_line_before_any_work(store, tmp_path):
    """Where onnxscript (torch's ONNX exporter) is not installed: one line naming the extra to
    install, exit 1, nothing written; the other formats still export."""
    ckpt = make_checkpoint(tmp_path / "m.pt", "vicu_cls", store)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "onnxscript.py").write_text("raise ImportError('No module named onnxscript')\n")
    env = {"PYTHONPATH": str(blocked)}
    res = run([FMMODEL, "export", "--checkpoint", ckpt, "--format", "onnx"], env=env)
    one_line_error(res, 1, "pip install 'fmf-toolkit[export]'", "onnxscript")
    assert not (tmp_path / "m.onnx").exists()
    assert run([FMMODEL, "export", "--checkpoint", ckpt, "--format", "torchscript"], env=env).returncode == 0


class Restoring(torch.nn.Module):
    """A scripted module whose __setstate__ (run by torch.jit.load while it reads the archive)
    writes the file named by its state: what loading an export must never run."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, video: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return current[:, 0, :2]

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        torch.save(torch.zeros(1), state[0])
        self.marker, self.training = state


def test_a_torchscript_archive_that_runs_code_as_it_loads_is_refused_before_loading(tmp_path, pt2_export, store):
    marker = tmp_path / "MARKER"
    with zipfile.ZipFile(pt2_export) as z:
        record = z.read(next(n for n in z.namelist() if n.endswith(f"/extra/{RECORD_NAME}")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch calls TorchScript deprecated
        torch.jit.save(torch.jit.script(Restoring(str(marker))), str(tmp_path / "restoring.ts"),
                       _extra_files={RECORD_NAME: record})
    marker.unlink(missing_ok=True)  # scripting may have called it
    res = run([FMMODEL, "predict", "--store", store, "--checkpoint", tmp_path / "restoring.ts", "--out",
               tmp_path / "p.zarr", "--device", "cpu", "--workers", "0", "--no-progress"])
    one_line_error(res, 1, "__setstate__", "restoring.ts")
    assert not marker.exists()
