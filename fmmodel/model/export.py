"""Exported models: a checkpoint's model as a self-contained program, written and read back as data.

:func:`export_model` writes a checkpoint's model (a built-in or a user's) in one of four forms,
each for windows of the checkpoint's fixed shapes (clip frames, frame size, current rows) and a
batch of any size from 1 to :data:`MAX_BATCH`:

- ``torchscript``: ``torch.jit.trace`` and ``torch.jit.save``; run by ``torch.jit.load``, whose C++
  reader runs no Python pickle; an archive whose code defines ``__setstate__`` (which the reader
  would run) is refused before it is read, and every node of the graph must be an ATen or
  TorchScript primitive.
- ``onnx``: ``torch.onnx.export`` (dynamo); run by onnxruntime on the CPU, from the model's bytes;
  standard ONNX operators only, no weights in external files.
- ``pt2``: ``torch.export.export`` and ``torch.export.save``; run by ``torch.export.load(...).module()``
  on the archive checked and cleaned first (:mod:`fmmodel.model.pt2_archive`).
- ``aoti``: the exported program compiled by AOTInductor for this CPU
  (``torch._inductor.aoti_compile_and_package``; needs a C++ compiler) and run by
  ``aoti_load_package``: a shared library, native code, loaded only when the user names the file
  as trusted (``--model FILE``).

Every export carries its record (:class:`ExportRecord`, the JSON :data:`RECORD_NAME`): the
checkpoint's :class:`~fmmodel.model.checkpoint.ModelMeta` (windows, orientation, preprocessing),
the input shapes, the format, torch's version and the checkpoint's name and SHA-256; inside the
file (an extra file of the zip archives, a metadata property of the ONNX model), so that
``predict``, ``evaluate`` and ``watch`` need nothing else. :func:`export_kind` tells the format
by content (zip layout, protobuf), never by the file's name; :func:`load_export` returns an
:class:`ExportedModel`, called as every model is (``model(video=..., current=...)``), and its meta.
An export computes in fp32, on the CPU (``torchscript`` and ``pt2`` also on a GPU). Before an
export is put in place it is loaded back and its probabilities compared with the checkpoint's
model on random windows (at most :data:`TOLERANCE` apart).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fmdata.store.atomic import atomic_file
from fmdata.store.outputs import check_apart, output_exists, refusal
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import ModelMeta, load_model
from fmmodel.model.pt2_archive import checked_pt2, is_aoti, is_pt2
from fmmodel.protocol import PREPROCESSING_REFERENCE

EXPORT_FORMATS = ("torchscript", "onnx", "pt2", "aoti")
SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx", "pt2": ".pt2", "aoti": ".pt2"}
FORMAT_NAME = "fmf-toolkit-export"
FORMAT_VERSION = 1
RECORD_NAME = "fmf_export.json"
MAX_BATCH = 4096
TOLERANCE = 1e-5  # largest difference of a probability from the checkpoint's model's (fp32)
COMMAND = "fmmodel export"
_ZIP = b"PK\x03\x04"
_ONNX_FIRST_BYTE = b"\x08"  # a ModelProto starts with its ir_version: field 1, a varint
_TORCHSCRIPT_KINDS = ("aten::", "prim::")
_SETSTATE = re.compile(r"\bdef\s+__setstate__\b")


@dataclass(frozen=True)
class ExportRecord:
    """What an export says about itself: its ``format``, the checkpoint's ``meta``, the ``inputs``
    it takes ({name: shape}, the batch axis None), the ``torch`` version that wrote it and the
    ``checkpoint`` it came from ({"name", "sha256"})."""

    format: str
    meta: ModelMeta
    inputs: dict[str, list[int | None]]
    torch: str
    checkpoint: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (JSON)."""
        return {"format_name": FORMAT_NAME, "format_version": FORMAT_VERSION, "format": self.format,
                "meta": self.meta.to_dict(), "inputs": {k: list(v) for k, v in self.inputs.items()},
                "torch": self.torch, "checkpoint": dict(self.checkpoint)}

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> ExportRecord:
        """Read a record (data, checked); FmModelError naming ``where`` when it is not one."""
        try:
            d = json.loads(text)
            if d.get("format_name") != FORMAT_NAME or d.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {d.get('format_name')!r} version {d.get('format_version')!r}")
            inputs = {str(k): [None if s is None else int(s) for s in v] for k, v in d["inputs"].items()}
            return cls(format=str(d["format"]), meta=ModelMeta.from_dict(d["meta"]), inputs=inputs,
                       torch=str(d.get("torch", "")), checkpoint={str(k): str(v) for k, v in d["checkpoint"].items()})
        except FmModelError as exc:
            raise FmModelError(f"expected an export's record, got {exc.message}", where) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FmModelError(f"expected an export's record ({FORMAT_NAME} version {FORMAT_VERSION}), got "
                               f"{type(exc).__name__}: {str(exc)[:120]}", where) from None


def export_kind(path: str | os.PathLike[str]) -> str | None:
    """The export format of the file at ``path`` by its content ("torchscript", "onnx", "pt2",
    "aoti"), or None (a checkpoint, or no file)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == _ZIP:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        else:
            names = []
    except (OSError, zipfile.BadZipFile):
        return None
    if names:
        if is_pt2(names):
            return "aoti" if is_aoti(names) else "pt2"
        code = any(n.split("/")[1:2] == ["code"] for n in names)
        return "torchscript" if code and any(n.endswith("/constants.pkl") for n in names) else None
    return "onnx" if head[:1] == _ONNX_FIRST_BYTE else None


def _zip_record(path: str) -> ExportRecord:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.count("/") == 2 and n.endswith(f"/extra/{RECORD_NAME}")]
            if not names:
                raise FmModelError(f"expected an export of {COMMAND} (its {RECORD_NAME}), got an archive without it",
                                   path)
            return ExportRecord.from_json(z.read(names[0]), path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FmModelError(f"expected a readable export archive, got {exc}", path) from None


def _import_onnx(*, writing: bool = False) -> tuple[Any, Any]:
    """onnx and onnxruntime (the optional extra ``export``; ``writing``: onnxscript too, which
    torch's ONNX exporter needs), or one line saying how to install them."""
    try:
        import onnx  # optional: only ONNX exports need it
        import onnxruntime
        if writing:
            import onnxscript  # noqa: F401  # torch.onnx.export(dynamo=True) imports it
    except ImportError as exc:
        raise FmModelError(f"expected onnx, onnxscript and onnxruntime installed for ONNX exports (pip install "
                           f"'fmf-toolkit[export]'), got {exc}") from None
    return onnx, onnxruntime


def _onnx_model(path: str) -> Any:
    onnx, _ = _import_onnx()
    try:
        proto = onnx.load_model(path, load_external_data=False)
    except Exception as exc:  # protobuf's errors have no common type
        raise FmModelError(f"expected an ONNX model, got unreadable data ({type(exc).__name__})", path) from None
    bad = [n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")]
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if bad or proto.functions or external:
        got = (f"operators of other domains ({bad[0]})" if bad else "local functions" if proto.functions
               else f"weights in external files ({external[0]})")
        raise FmModelError(f"expected an ONNX graph of standard operators with its weights inside, got {got}", path)
    return proto


def read_record(path: str | os.PathLike[str]) -> tuple[str, ExportRecord]:
    """Return (format, record) of the export at ``path``; FmModelError when it is none."""
    path = os.fspath(path)
    kind = export_kind(path)
    if kind is None:
        raise FmModelError("expected an exported model (TorchScript, ONNX, torch.export or AOTInductor), got "
                           "another file", path)
    if kind != "onnx":
        return kind, _zip_record(path)
    props = {p.key: p.value for p in _onnx_model(path).metadata_props}
    if RECORD_NAME not in props:
        raise FmModelError(f"expected an ONNX export of {COMMAND} (its {RECORD_NAME} property), got a model without "
                           "it", path)
    return kind, ExportRecord.from_json(props[RECORD_NAME], path)


class ExportedModel(nn.Module):
    """An exported program as a model: ``model(video=..., current=...)`` returns its logits, as the
    checkpoint's model would. ``fmf_info`` says what model it is (:func:`~fmmodel.model.registry.model_info`).
    Inputs must have the shapes of the export's record (any batch); the program runs in fp32."""

    def __init__(self, program: Callable[..., Tensor], record: ExportRecord, path: str) -> None:
        super().__init__()
        # kept out of the module tree: torch.export's modules refuse train()/eval(), and the program
        # is placed on its device by load_export
        self.__dict__["program"] = program
        self.record, self.path, self.kind = record, path, record.format
        self.fmf_info = record.meta.model_info

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        given = {"video": video, "current": current}
        device = next((x.device for x in given.values() if x is not None), torch.device("cpu"))
        if torch.is_autocast_enabled(device.type):
            raise FmModelError("expected --precision fp32 for an exported model (it computes as it was exported), "
                               "got autocast", self.path, field="precision")
        inputs = {}
        for name, shape in self.record.inputs.items():
            x = given[name]
            want = tuple(shape[1:])
            if x is None or tuple(x.shape[1:]) != want or x.dim() != len(shape):
                got = "none" if x is None else tuple(x.shape)
                raise FmModelError(f"expected {name} of shape (batch, {', '.join(map(str, want))}), got {got}",
                                   self.path)
            inputs[name] = x.float()
        batches = {int(x.shape[0]) for x in inputs.values()}
        if len(batches) != 1 or not 1 <= min(batches) <= MAX_BATCH:
            raise FmModelError(f"expected inputs of one batch size from 1 to {MAX_BATCH}, got {sorted(batches)}",
                               self.path)
        with torch.autocast(device.type, enabled=False):
            return self.program(**inputs)  # type: ignore[operator]  # a callable kept in __dict__


def _onnx_program(path: str) -> Callable[..., Tensor]:
    _, ort = _import_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch: --threads holds for both
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:  # from bytes: a model cannot name files to read beside it
        session = ort.InferenceSession(_onnx_model(path).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except FmModelError:
        raise
    except Exception as exc:  # onnxruntime's errors have no common type
        raise FmModelError(f"expected an ONNX model onnxruntime can run, got {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160] if str(exc) else ''}", path) from None

    def run(**inputs: Tensor) -> Tensor:
        device = next(iter(inputs.values())).device
        out = session.run(None, {k: v.detach().cpu().contiguous().numpy() for k, v in inputs.items()})[0]
        return torch.from_numpy(out).to(device)

    return run


def _check_torchscript_source(path: str) -> None:
    """Refuse a TorchScript archive whose code defines ``__setstate__``: torch.jit.load runs it while
    it reads the archive, before any graph can be checked (what ``torch.jit.trace`` writes has none)."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.split("/")[1:2] == ["code"] and name.endswith(".py") and \
                        _SETSTATE.search(z.read(name).decode("utf-8", "replace")):
                    raise FmModelError(f"expected a TorchScript archive whose loading runs nothing, got code defining "
                                       f"__setstate__ ({name}), which torch.jit.load would run; refused", path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FmModelError(f"expected a TorchScript archive, got {exc}", path) from None


def _torchscript_program(path: str) -> nn.Module:
    _check_torchscript_source(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.13 calls TorchScript deprecated; it still reads it
            program = torch.jit.load(path, map_location="cpu")
        graph = program.inlined_graph
    except Exception as exc:  # TorchScript's reader raises RuntimeError and more for a foreign file
        raise FmModelError(f"expected a TorchScript archive, got {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160] if str(exc) else ''}", path) from None

    def kinds(block: Any) -> Iterator[str]:
        for node in block.nodes():
            yield node.kind()
            for inner in node.blocks():
                yield from kinds(inner)

    foreign = sorted({k for k in kinds(graph) if not k.startswith(_TORCHSCRIPT_KINDS)})
    if foreign:
        raise FmModelError(f"expected a TorchScript graph of ATen and primitive operators, got {foreign[0]}", path)
    return program


def _pt2_program(path: str) -> nn.Module:
    archive = checked_pt2(path)
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            return torch.export.load(archive).module()
    except Exception as exc:  # torch.export's reader raises many types for a foreign archive
        raise FmModelError(f"expected a torch.export archive this torch ({torch.__version__}) reads, got "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}",
                           path) from None


def _aoti_program(path: str, trusted: Sequence[str]) -> Callable[..., Tensor]:
    named = any(os.path.exists(t) and os.path.samefile(t, path) for t in trusted)
    if not named:
        raise FmModelError("refused: expected a model whose loading runs no code, got an AOTInductor package (a "
                           "compiled shared library, native code that runs as it loads); name the file with --model "
                           "if you built it or trust it", path, field="trusted")
    try:
        with _quiet():
            return torch._inductor.aoti_load_package(path)
    except Exception as exc:  # the loader's C++ errors
        raise FmModelError(f"expected an AOTInductor package this torch ({torch.__version__}) loads, got "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}",
                           path) from None


def load_export(path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                trusted: Sequence[str] = ()) -> tuple[ExportedModel, ModelMeta]:
    """Load the export at ``path`` (format by content) as an :class:`ExportedModel` in eval mode on
    ``device``, with the meta of the checkpoint it came from (``info["export"]`` names the format).

    Nothing in the file chooses code: see the module docstring for what each format's loading
    reads. An AOTInductor package is native code: it loads only when ``trusted`` (``--model``)
    names the file. ONNX and AOTInductor exports run on the CPU only.
    """
    path = os.fspath(path)
    kind, record = read_record(path)
    device = torch.device(device)
    if kind in ("onnx", "aoti") and device.type != "cpu":
        raise FmModelError(f"expected --device cpu for an {kind} export (it runs on the CPU), got {device}", path,
                           field="device")
    program: Callable[..., Tensor]
    if kind == "torchscript":
        program = _torchscript_program(path)
    elif kind == "pt2":
        program = _pt2_program(path)
    elif kind == "onnx":
        program = _onnx_program(path)
    else:
        program = _aoti_program(path, trusted)
    if isinstance(program, nn.Module):
        program = program.to(device)
    model = ExportedModel(program, record, path).eval()
    meta = record.meta
    meta = ModelMeta.of(meta.model_info, orientation=meta.orientation, preprocessing=meta.preprocessing,
                        info={**meta.info, "export": kind})
    return model, meta


# ---- writing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote: the file, its format and size, the model, the inputs, the
    largest differences from the checkpoint's model (probabilities, logits) and the seconds taken."""

    out: str
    format: str
    variant: str
    inputs: dict[str, list[int | None]]
    bytes: int
    max_prob_diff: float
    max_logit_diff: float
    seconds: float

    def summary(self) -> str:
        """One line for people."""
        shapes = ", ".join(f"{k} {tuple('B' if s is None else s for s in v)}" for k, v in self.inputs.items())
        return (f"wrote {self.out} ({self.format}, {self.bytes / 2**20:.1f} MiB) of {self.variant} for {shapes} in "
                f"{self.seconds:.1f} s; checked against the checkpoint: probabilities within {self.max_prob_diff:.1e} "
                f"(logits {self.max_logit_diff:.1e})")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only."""
        return dict(self.__dict__)


def example_inputs(meta: ModelMeta, *, batch: int, seed: int) -> dict[str, Tensor]:
    """Random windows of the shapes ``meta``'s model reads: video 0..255 (reference preprocessing)
    or standardised values, currents likewise in amperes or standardised."""
    d = meta.description
    g = torch.Generator().manual_seed(seed)
    raw = meta.preprocessing.get("name", PREPROCESSING_REFERENCE) == PREPROCESSING_REFERENCE
    out = {}
    if "video" in d.inputs:
        shape = (batch, 3, d.clip_frames, *d.frame_size)
        out["video"] = torch.randint(0, 256, shape, generator=g).float() if raw else torch.randn(shape, generator=g)
    if "current" in d.inputs:
        x = torch.randn((batch, d.current_rows, 3), generator=g)
        out["current"] = x * 1000.0 if raw else x
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress prints and log lines (about optional packages) off the terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch._inductor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write(model: nn.Module, kind: str, inputs: Mapping[str, Tensor], record: str, tmp: str) -> None:
    """Write ``model`` as ``kind`` to ``tmp`` with ``record`` inside."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = {name: {0: batch} for name in inputs}
    if kind == "torchscript":
        traced = torch.jit.trace(model, example_kwarg_inputs=dict(inputs), check_trace=False)
        torch.jit.save(traced, tmp, _extra_files={RECORD_NAME: record})
        return
    program = torch.export.export(model, (), dict(inputs), dynamic_shapes=dynamic)
    if kind == "pt2":
        torch.export.save(program, tmp, extra_files={RECORD_NAME: record})
    elif kind == "aoti":
        torch._inductor.aoti_compile_and_package(program, package_path=tmp)
        with zipfile.ZipFile(tmp, "a") as z:  # the package has no extra files of its own: ours beside torch's
            root = z.namelist()[0].split("/", 1)[0]
            z.writestr(f"{root}/extra/{RECORD_NAME}", record)
    else:
        onnx, _ = _import_onnx()
        exported = torch.onnx.export(program, (), kwargs=dict(inputs), dynamo=True, optimize=True, verbose=False)
        assert exported is not None
        proto = exported.model_proto
        prop = proto.metadata_props.add()
        prop.key, prop.value = RECORD_NAME, record
        onnx.save_model(proto, tmp)


def _probabilities(logits: Tensor) -> Tensor:
    return torch.softmax(logits.float(), dim=1)


def export_model(checkpoint: str, out: str, *, format: str, fmt: str = "auto", variant: str | None = None,
                 trusted: Sequence[str] = (), overwrite: bool = False) -> ExportReport:
    """Export the model of ``checkpoint`` (a toolkit checkpoint or the authors' state_dict; ``fmt``,
    ``variant`` and ``trusted`` as for :func:`~fmmodel.model.checkpoint.load_model`) to ``out`` as
    ``format`` (:data:`EXPORT_FORMATS`); return an :class:`ExportReport`.

    The file appears complete or not at all, and only after it was loaded back and matched the
    checkpoint's model on random windows (probabilities within :data:`TOLERANCE`). An existing
    ``out`` is replaced only with ``overwrite``, and only when it is an export.
    """
    if format not in EXPORT_FORMATS:
        raise FmModelError(f"expected an export format in {EXPORT_FORMATS}, got {format!r}", field="format")
    check_apart(out, [checkpoint], field="out", what="the checkpoint it reads")
    if os.path.lexists(out):
        if not overwrite:
            raise output_exists(out, error=FmModelError)
        if os.path.islink(out) or export_kind(out) is None:
            raise refusal(out, COMMAND, "something that is not an exported model")
    if export_kind(checkpoint) is not None:
        raise FmModelError("expected a checkpoint to export, got an exported model", checkpoint)
    if format == "onnx":  # before the minutes of capturing the model
        _import_onnx(writing=True)
    started = time.perf_counter()
    model, meta = load_model(checkpoint, format=fmt, variant=variant, device="cpu", trusted=trusted)
    model.eval()
    inputs = example_inputs(meta, batch=2, seed=0)
    shapes: dict[str, list[int | None]] = {k: [None, *v.shape[1:]] for k, v in inputs.items()}
    with open(checkpoint, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    record = ExportRecord(format=format, meta=meta, inputs=shapes, torch=str(torch.__version__),
                          checkpoint={"name": os.path.basename(checkpoint), "sha256": digest})
    text = json.dumps(record.to_dict(), separators=(",", ":"))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_file(out, suffix=SUFFIXES[format]) as tmp:
        try:
            with torch.no_grad(), _quiet():
                _write(model, format, inputs, text, str(tmp))
        except FmModelError:
            raise
        except Exception as exc:  # the exporters fail in many ways on a model they cannot capture
            raise FmModelError(f"expected {format} to capture model {meta.variant!r}, got {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200] if str(exc) else ''}", checkpoint) from None
        exported, _ = load_export(tmp, trusted=[str(tmp)])
        prob_diff = logit_diff = 0.0
        with torch.no_grad():
            for batch, seed in ((1, 1), (3, 2)):
                x = example_inputs(meta, batch=batch, seed=seed)
                want, got = model(**x).float(), exported(**x).float()
                logit_diff = max(logit_diff, float((want - got).abs().max()))
                prob_diff = max(prob_diff, float((_probabilities(want) - _probabilities(got)).abs().max()))
        if not prob_diff <= TOLERANCE:
            raise FmModelError(f"expected the {format} export to compute the checkpoint's probabilities (within "
                               f"{TOLERANCE:g}), got differences up to {prob_diff:.2e}; nothing was written", out)
        size = os.path.getsize(tmp)
    return ExportReport(out=out, format=format, variant=meta.variant, inputs=shapes, bytes=size,
                        max_prob_diff=prob_diff, max_logit_diff=logit_diff, seconds=time.perf_counter() - started)


__all__ = ["EXPORT_FORMATS", "SUFFIXES", "RECORD_NAME", "MAX_BATCH", "TOLERANCE", "ExportRecord", "ExportReport",
           "ExportedModel", "export_kind", "read_record", "load_export", "example_inputs", "export_model"]
