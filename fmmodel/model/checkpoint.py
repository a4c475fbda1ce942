"""Checkpoints: reading the authors' state_dicts, and the toolkit's own checkpoint format.

Two formats are read:
- ``reference``: a flat state_dict with the authors' key names, as their released ``state_dict_vicu_cls.pth``
  (a plain ``torch.save`` of a state_dict), or the ``state/<name>`` arrays of the fixture ``.npz`` files.
- ``toolkit``: what ``save_checkpoint`` writes: ``{"format", "format_version", "meta", "state_dict", "extra"}``
  holding plain tensors and plain types only, written atomically (temp file + ``os.replace``).
Everything is loaded with ``torch.load(weights_only=True)``; a file that needs a pickled object is refused.
Renaming between the authors' keys and ours is :mod:`fmmodel.model.reference_keys`.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from fmdata.errors import first_line
from fmdata.store.atomic import atomic_file
from fmmodel.errors import FmModelError
from fmmodel.model.config import FmFormerConfig
from fmmodel.model.reference_keys import (
    detect_reference_variant,
    from_reference_state_dict,
    infer_reference_config,
    to_reference_state_dict,
)
from fmmodel.model.registry import ModelInfo, Variant, build_model, model_info, unwrap_model
from fmmodel.model.user_models import trusted_source
from fmmodel.protocol import ORIENTATION_REFERENCE, ORIENTATION_TRUE, ORIENTATIONS, PREPROCESSING_REFERENCE

FORMAT_NAME = "fmf-toolkit-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_FORMATS = ("auto", "toolkit", "reference")  # what load_model accepts: by content, or one of both

def _weights_only_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True; every failure becomes one FmModelError line naming the file.

    The line says what is wrong: "truncated" (a zip checkpoint without its end, or a legacy one
    cut short), "refused: contains executable Python objects (pickle)", or that the bytes are no
    checkpoint at all. torch's warnings about the file do not reach the user: the error says it.
    """
    truncated = _truncation(path)
    if truncated:
        raise FmModelError(f"expected a PyTorch checkpoint file, got a truncated one ({truncated})", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FmModelError("expected a checkpoint file, got nothing there", path) from None
    except IsADirectoryError:
        raise FmModelError("expected a checkpoint file, got a folder", path) from None
    except PermissionError as exc:
        raise FmModelError(f"expected a readable checkpoint file, got {exc.strerror or exc}", path) from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        needs = _needed_code(text) or _pickled_globals(path)
        if needs:
            raise FmModelError("expected a checkpoint of plain tensors and plain types, got a pickled Python object "
                               f"that needs {needs}: refused: contains executable Python objects (pickle), "
                               "which torch.load(weights_only=True) does not run", path) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = detail.group(1) if detail else first_line(text)
        raise FmModelError(f"expected a PyTorch checkpoint file, got unreadable data ({reason[:160]})",
                           path) from None
    except Exception as exc:  # a corrupt or foreign file fails in many ways inside torch.load
        first = first_line(exc)[:160]
        if isinstance(exc, EOFError) or "unexpected EOF" in first or "EOF" in type(exc).__name__:
            raise FmModelError(f"expected a PyTorch checkpoint file, got a truncated one (it ends early: "
                               f"{first or 'end of file'})", path) from None
        raise FmModelError(f"expected a PyTorch checkpoint file, got corrupt or foreign data "
                           f"({type(exc).__name__}{': ' + first if first else ''})", path) from None


_ZIP_LOCAL_HEADER = b"PK\x03\x04"
# torch's weights-only unpickler refusing code: a class or function it does not allow (GLOBAL,
# or a blocked module such as os/posix), a call (REDUCE) or an object (NEWOBJ, BUILD) of one
_CODE_REFUSALS = (r"Unsupported global: GLOBAL (\S+)", r"unsupported GLOBAL (\S+) whose module",
                  r"call reduce for unrecognized function (.+?)(?: which belongs|$)",
                  r"Can only create new object for .* but got (.+)$", r"Can only build .* but got (.+)$")


def _needed_code(text: str) -> str | None:
    """The Python object a refusal of torch's weights-only unpickler names, when it refused code."""
    for pattern in _CODE_REFUSALS:
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found.group(1).strip()[:120]
    return None


def _pickled_globals(path: str | os.PathLike[str]) -> str | None:
    """The first class or function a plain pickle file (protocol 4 and later, which torch's
    weights-only unpickler cannot even parse) would import, read with pickletools (which runs
    nothing); None when it names none or is no pickle."""
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if op.name in ("GLOBAL", "INST"):
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return f"{strings[-2]}.{strings[-1]}"
                if isinstance(arg, str):
                    strings.append(arg)
    except (ValueError, OSError, EOFError, UnicodeDecodeError):
        return None
    return None


def _truncation(path: str | os.PathLike[str]) -> str | None:
    """Say how the file at ``path`` is cut short (empty; a zip checkpoint without its central
    directory), or return None (complete as far as the container shows, or not readable here:
    torch.load then reports it)."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "an empty file (0 bytes)"
        with open(path, "rb") as fh:
            zipped = fh.read(4) == _ZIP_LOCAL_HEADER
        if zipped and not zipfile.is_zipfile(path):
            return f"{size:,} bytes of a zip checkpoint without its end (the central directory)"
    except OSError:
        return None
    return None


def read_reference_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The authors' state_dict from a ``.pth`` (weights_only) or a fixture ``.npz`` (its ``state/`` arrays)."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                sd = {k[len("state/"):]: torch.from_numpy(np.array(z[k])) for k in z.files if k.startswith("state/")}
        except (ValueError, OSError, EOFError) as exc:
            raise FmModelError(f"expected an .npz with state/<name> arrays, got {exc}", path) from None
    else:
        sd = _weights_only_load(path)
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, Tensor) for v in sd.values()):
        raise FmModelError("expected a flat state_dict {name: tensor} with the authors' key names, "
                           f"got {type(sd).__name__}", path)
    return _strip_wrappers(dict(sd))


def _strip_wrappers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop torch.compile's ``_orig_mod.`` and DistributedDataParallel's leading ``module.`` from key names."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace("_orig_mod.", "")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def _load_into(model: nn.Module, state_dict: Mapping[str, Tensor],
               where: str | os.PathLike[str] | None) -> nn.Module:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        info = model_info(model)
        sizes = info.config.to_dict() if info.config is not None else info.description.to_dict()
        raise FmModelError(f"expected a state_dict matching {info.variant} {sizes}, got: {detail}", where) from None
    return model


def load_reference_model(source: str | os.PathLike[str] | Mapping[str, Tensor], variant: str | None = None,
                         config: FmFormerConfig | None = None) -> nn.Module:
    """A model (eval mode, CPU) holding a reference state_dict, from a path (.pth/.npz) or a mapping.
    The variant is detected from the key names and the sizes from the shapes unless given."""
    path = source if isinstance(source, (str, os.PathLike)) else None
    sd = read_reference_state_dict(path) if path is not None else _strip_wrappers(dict(source))  # type: ignore[arg-type]
    with _naming(path):
        variant = variant or detect_reference_variant(sd)
        cfg = config or infer_reference_config(sd, variant)
        model = build_model(variant, cfg)
        return _load_into(model, from_reference_state_dict(sd, variant, cfg), None).eval()


@contextlib.contextmanager
def _naming(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Give FmModelErrors raised inside the file's name, so the user learns which file was wrong."""
    try:
        yield
    except FmModelError as exc:
        if path is None or exc.path is not None:
            raise
        raise FmModelError(str(exc), path) from None


# ---- the toolkit's own format ---------------------------------------------------------------------------


# the keys of a checkpoint's "meta", in the order version 1 writes them
META_KEYS = ("variant", "config", "orientation", "preprocessing", "info", "data", "source")


@dataclass(frozen=True, kw_only=True)
class ModelMeta(ModelInfo):
    """What a checkpoint says about its model: the model (a :class:`ModelInfo`: variant, sizes,
    data description, source), and what the checkpoint adds to feed it the right inputs.

    orientation: "reference" (frames transposed, (W, H), as the authors' loader feeds them) or "true" (H, W).
    preprocessing: plain dict, at least {"name": "reference" | "normalized"}, plus the statistics used
    (a bare name is taken as {"name": name}).
    info: free plain values (toolkit and torch versions, epoch, metrics...).
    """

    orientation: str = ORIENTATION_TRUE
    preprocessing: dict[str, Any] = field(default_factory=lambda: {"name": PREPROCESSING_REFERENCE})
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.orientation not in ORIENTATIONS:
            raise FmModelError(f"checkpoint meta: expected orientation in {ORIENTATIONS}, got {self.orientation!r}")
        if isinstance(self.preprocessing, str):
            object.__setattr__(self, "preprocessing", {"name": self.preprocessing})

    @classmethod
    def of(cls, model: ModelInfo, *, orientation: str, preprocessing: str | Mapping[str, Any],
           info: Mapping[str, Any] | None = None) -> ModelMeta:
        """The record of ``model`` (what :func:`model_info` says) fed in ``orientation`` with ``preprocessing``."""
        prep = dict(preprocessing) if isinstance(preprocessing, Mapping) else {"name": preprocessing}
        return cls(**{f.name: getattr(model, f.name) for f in fields(ModelInfo)}, orientation=orientation,
                   preprocessing=prep, info=dict(info or {}))

    @property
    def model_info(self) -> ModelInfo:
        """The model part alone, as :func:`model_info` gives it for the model rebuilt from this record."""
        return ModelInfo(**{f.name: getattr(self, f.name) for f in fields(ModelInfo)})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: the model's record (:meth:`ModelInfo.to_dict`) and the checkpoint's
        fields, under :data:`META_KEYS` in their order."""
        record = {**super().to_dict(), "orientation": self.orientation, "preprocessing": dict(self.preprocessing),
                  "info": dict(self.info)}
        return {key: record[key] for key in META_KEYS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMeta:
        """Inverse of :meth:`to_dict` (a record read from a file: see :meth:`ModelInfo.from_dict`)."""
        return cls.of(ModelInfo.from_dict(data), orientation=data["orientation"],
                      preprocessing=dict(data["preprocessing"]), info=dict(data.get("info", {})))


@dataclass
class Checkpoint:
    """A toolkit checkpoint in memory: model meta, our-named state_dict, and extra plain training state."""

    meta: ModelMeta
    state_dict: dict[str, Tensor]
    extra: dict[str, Any] = field(default_factory=dict)


_PLAIN = (str, int, float, bool, complex, type(None), bytes, torch.dtype, torch.device)


def _check_plain(obj: Any, where: str) -> None:
    """Only tensors, plain scalars, dtypes/devices and containers of them survive weights-only loading
    (numpy scalars and arrays do not: convert them with .item() / .tolist() / torch.from_numpy)."""
    if isinstance(obj, Tensor) or type(obj) in _PLAIN:  # exact types: str/float subclasses pickle as globals
        return
    if isinstance(obj, (list, tuple, set, frozenset)):  # torch.Size is a tuple
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            if not isinstance(key, (str, int)):
                raise FmModelError(f"checkpoint: expected str or int keys, got {type(key).__name__} at {where}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise FmModelError(f"checkpoint: expected plain tensors and plain types, got {type(obj).__name__} at {where}")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """torch.save into a temp file beside ``path``, fsync, then os.replace: readers never see half a file.

    A failed write (a full disk, a file size limit, a folder not writable) is one FmModelError
    naming ``path`` and the system's reason; the temp file is removed and a file already at
    ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            sink = _KeepWriteError(fh)
            try:
                torch.save(obj, cast(IO[bytes], sink))
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None
    except OSError as exc:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise FmModelError(f"expected to write the checkpoint, got {exc.strerror or exc} ({kept})", path) from None
    return path


class _KeepWriteError:
    """The file torch.save writes through, keeping the OSError of a failed write: torch's own
    writer reports one as a RuntimeError ("enforce fail at inline_container.cc") without its cause."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self.fh.write(data))
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def model_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The unwrapped model's state_dict, detached, with no compile/DDP prefixes."""
    return _strip_wrappers({k: v.detach() for k, v in unwrap_model(model).state_dict().items()})


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, orientation: str,
                    preprocessing: str | Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                    info: Mapping[str, Any] | None = None) -> Path:
    """Write a toolkit checkpoint atomically; returns its path.

    ``model`` may be compiled or DDP-wrapped. ``extra`` carries plain training state (optimizer/scheduler
    state_dicts, epoch, RNG tensors...); anything that would need pickling is an FmModelError before writing.
    """
    inner = unwrap_model(model)
    meta = ModelMeta.of(model_info(inner), orientation=orientation, preprocessing=preprocessing,
                        info={"torch": str(torch.__version__), **(info or {})})
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "meta": meta.to_dict(),
               "state_dict": model_state_dict(inner), "extra": dict(extra or {})}
    _check_plain(payload, "checkpoint")
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> Checkpoint:
    """Read a toolkit checkpoint (weights_only); FmModelError for other formats or pickled objects."""
    return _checkpoint_from_payload(_weights_only_load(path, map_location), path)


def _is_toolkit(payload: Any) -> bool:
    return isinstance(payload, Mapping) and payload.get("format") == FORMAT_NAME


def _checkpoint_from_payload(payload: Any, path: str | os.PathLike[str]) -> Checkpoint:
    if not _is_toolkit(payload):
        got = "a flat state_dict (try format reference)" if isinstance(payload, Mapping) else type(payload).__name__
        raise FmModelError(f"expected a toolkit checkpoint (format {FORMAT_NAME!r}), got {got}", path)
    if payload.get("format_version") != FORMAT_VERSION:
        raise FmModelError(f"expected checkpoint format_version {FORMAT_VERSION}, got "
                           f"{payload.get('format_version')!r}", path)
    try:
        meta = ModelMeta.from_dict(payload["meta"])
        state_dict = _strip_wrappers(dict(payload["state_dict"]))
    except (KeyError, TypeError) as exc:
        raise FmModelError(f"expected meta (variant, config, orientation, preprocessing) and state_dict, "
                           f"got missing {exc}", path) from None
    return Checkpoint(meta, state_dict, dict(payload.get("extra", {})))


def model_from_checkpoint(ckpt: Checkpoint, where: str | os.PathLike[str] = "checkpoint",
                          trusted: Sequence[str] = ()) -> nn.Module:
    """Build the checkpoint's model on the CPU and load its weights (train mode).

    A checkpoint is data: what it records never chooses code to import. A user's model is rebuilt
    by importing the factory that :func:`fmmodel.model.user_models.trusted_source` allows: one the user
    names in ``trusted`` (``--model``) that is the recorded code, or else the entry point that an
    installed distribution declares under the recorded name (its spec, never the recorded one).
    A name in ``trusted`` that is not the checkpoint's model is refused (FmModelError, field
    "trusted"), as is a user's model that neither allows.
    """
    meta = ckpt.meta
    if meta.source is None:
        if trusted and meta.variant not in trusted:
            raise FmModelError(f"refused: expected --model naming the checkpoint's model {meta.variant!r} (built in), "
                               f"got {', '.join(map(repr, trusted))}", where, field="trusted")
        return _load_into(build_model(meta.variant, meta.config), ckpt.state_dict, where)
    source = trusted_source(meta.source, trusted, where=where)
    variant = Variant(meta.variant, meta.description.modality, meta.description.task, source=source)
    return _load_into(build_model(variant, description=meta.description), ckpt.state_dict, where)


def load_model(path: str | os.PathLike[str], *, format: str = "auto", variant: str | None = None,
               config: FmFormerConfig | None = None, device: str | torch.device = "cpu",
               trusted: Sequence[str] = ()) -> tuple[nn.Module, ModelMeta]:
    """A ready model (eval mode, on ``device``) and its meta from a toolkit checkpoint or a reference state_dict.

    format: "toolkit", "reference" (the authors' key names, .pth or fixture .npz), or "auto" (by content).
    A reference model's meta says orientation "reference" and preprocessing "reference": the authors'
    loader fed frames transposed, as float 0..255, and raw amperes. ``trusted`` names users' models
    whose factory may be imported (see :func:`model_from_checkpoint`).
    """
    if format not in CHECKPOINT_FORMATS:
        raise FmModelError(f"expected a checkpoint format in {CHECKPOINT_FORMATS}, got {format!r}", path, field="fmt")
    if Path(path).suffix == ".npz":  # the fixtures: reference arrays under state/<name>
        payload: Any = read_reference_state_dict(path)
    else:
        payload = _weights_only_load(path, "cpu")
    if format == "toolkit" or (format == "auto" and _is_toolkit(payload)):
        ckpt = _checkpoint_from_payload(payload, path)
        return model_from_checkpoint(ckpt, path, trusted).to(device).eval(), ckpt.meta
    if _is_toolkit(payload):
        raise FmModelError("expected a reference state_dict (the authors' key names), got a toolkit checkpoint; "
                           "use format toolkit or auto", path)
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise FmModelError(f"expected a flat state_dict with the authors' key names, got {type(payload).__name__}",
                           path)
    with _naming(path):
        model = load_reference_model(payload, variant, config)
    meta = ModelMeta.of(model_info(model), orientation=ORIENTATION_REFERENCE, preprocessing=PREPROCESSING_REFERENCE,
                        info={"source": os.fspath(path), "format": "reference"})
    return model.to(device), meta


def export_reference(path: str | os.PathLike[str], model: nn.Module) -> Path:
    """Write the model as the authors would: a plain state_dict with their key names (atomic)."""
    about = model_info(model)
    if about.config is None:
        raise FmModelError(f"expected a built-in FmFormer to export with the authors' key names, got {about.variant!r}",
                           path)
    return atomic_torch_save(to_reference_state_dict(model_state_dict(model), about.variant, about.config), path)


__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "CHECKPOINT_FORMATS", "read_reference_state_dict", "load_reference_model",
    "META_KEYS", "ModelMeta", "Checkpoint", "atomic_torch_save", "model_state_dict", "save_checkpoint", "load_checkpoint",
    "model_from_checkpoint", "load_model", "export_reference",
]
