"""Checkpoints: the authors' key names <-> ours, reference state_dicts, and the toolkit's own checkpoint format.

Two formats are read:
- ``reference``: a flat state_dict with the authors' key names, as their released ``state_dict_vicu_cls.pth``
  (a plain ``torch.save`` of a state_dict), or the ``state/<name>`` arrays of the fixture ``.npz`` files.
- ``toolkit``: what ``save_checkpoint`` writes: ``{"format", "format_version", "meta", "state_dict", "extra"}``
  holding plain tensors and plain types only, written atomically (temp file + ``os.replace``).
Everything is loaded with ``torch.load(weights_only=True)``; a file that needs a pickled object is refused.
The authors' names appear only in the key tables below.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from fmmodel.errors import FmModelError
from fmmodel.fmformer import FmFormerConfig
from fmmodel.registry import build_model, get_variant, variant_config

FORMAT_NAME = "fmf-toolkit-checkpoint"
FORMAT_VERSION = 1
ORIENTATIONS = ("reference", "true")  # reference: frames transposed (W, H) as the authors' loader feeds them

# ----------------------------------------------------------------------------------------------------------
# key tables: (our prefix or full name, the authors' prefix or full name); a trailing "." marks a prefix


def _embed(ours: str, theirs: str, first: int) -> list[tuple[str, str]]:
    """A tokenizer's LayerNorm -> Linear -> LayerNorm sits at Sequential indices first, first+1, first+2."""
    return [(f"{ours}.{a}.", f"{theirs}.{first + i}.") for i, a in enumerate(("norm_in", "proj", "norm_out"))]


def _attn(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.norm.", f"{theirs}.norm."), (f"{ours}.qkv.", f"{theirs}.to_qkv."),
            (f"{ours}.proj.", f"{theirs}.to_out.0.")]


def _mlp(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.norm.", f"{theirs}.0."), (f"{ours}.fc1.", f"{theirs}.1."), (f"{ours}.fc2.", f"{theirs}.4.")]


def _video_tokens(cls_name: str, pos_name: str, embed_name: str) -> list[tuple[str, str]]:
    return [("video_embed.cls_token", cls_name), ("video_embed.pos_embed", pos_name),
            *_embed("video_embed.patch_embed", embed_name, 1),
            ("video_embed.dilated_pos_embed", "get_additional_tokens.pos_embedding"),
            *_embed("video_embed.dilated_embed", "get_additional_tokens.to_patch_embedding", 1)]


def _current_tokens(cls_name: str, pos_name: str, embed_name: str) -> list[tuple[str, str]]:
    return [("current_embed.cls_token", cls_name), ("current_embed.pos_embed", pos_name),
            *_embed("current_embed.embed", embed_name, 0)]


def _up_stage(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.up.", f"{theirs}.0."), (f"{ours}.refine.norm.", f"{theirs}.1.bn1."),
            (f"{ours}.refine.conv.", f"{theirs}.1.conv1.")]


def key_rules(variant: str, cfg: FmFormerConfig) -> list[tuple[str, str]]:
    """(ours, reference) name pairs for every parameter/buffer group of a variant with these sizes."""
    get_variant(variant)
    rules: list[tuple[str, str]] = []
    single = variant in ("video_cls", "current_cls")
    for i in range(cfg.depth):
        layer = f"transformer.layers.{i}"
        if single:
            rules += _attn(f"blocks.{i}.attn", f"{layer}.0") + _mlp(f"blocks.{i}.mlp", f"{layer}.1.net")
            continue
        rules += _attn(f"blocks.{i}.video_attn", f"{layer}.0.stream1")
        rules += _attn(f"blocks.{i}.current_attn", f"{layer}.0.stream2")
        cross = f"{layer}.0.cross_attn"
        rules += [(f"blocks.{i}.cross_attn.{ours}.", f"{cross}.{theirs}.") for ours, theirs in (
            ("video_norm", "norm1"), ("current_norm", "norm2"), ("video_qkv", "to_qkv1"),
            ("current_qkv", "to_qkv2"), ("video_proj", "to_out1.0"), ("current_proj", "to_out2.0"))]
        rules += _mlp(f"blocks.{i}.video_mlp", f"{layer}.1.ff1.net")
        rules += _mlp(f"blocks.{i}.current_mlp", f"{layer}.1.ff2.net")
    if variant == "video_cls":
        rules += _video_tokens("cls_token", "pos_embedding.pe", "to_patch_embedding")
        rules += [("head.norm.", "head.mlp_head1.0."), ("head.fc.", "head.mlp_head1.1."),
                  ("spare_head.norm.", "head.mlp_head2.0."), ("spare_head.fc.", "head.mlp_head2.1.")]
    elif variant == "current_cls":
        rules += _current_tokens("cls_token", "pos_embedding", "to_patch_embedding")
        rules += [("norm.", "transformer.norm."), ("head.", "mlp_head.")]
    else:
        rules += _video_tokens("cls_token1", "pos_embedding1", "to_patch_embedding1")
        rules += _current_tokens("cls_token2", "pos_embedding2", "to_patch_embedding2")
    if variant == "vicu_cls":
        rules += [("head.video.norm.", "head.mlp_head1.0."), ("head.video.fc.", "head.mlp_head1.1."),
                  ("head.current.norm.", "head.mlp_head2.0."), ("head.current.fc.", "head.mlp_head2.1.")]
    elif variant == "vicu_seg":
        rules += [("head.patch_proj.", "head.de_patch_embedding.1."),
                  ("head.dilated_proj.", "head.de_patch_embedding_dilated.1."),
                  ("head.classifier.", "head.decode_out."), *_up_stage("head.dilated_up", "head.decode_dilated")]
        for j in range(len(cfg.decoder_channels)):
            rules += _up_stage(f"head.stages.{j}", f"head.decode{j + 1}")
    return rules


def _rename(keys: list[str], pairs: list[tuple[str, str]], what: str) -> dict[str, str]:
    """Old name -> new name by the first matching (old, new) pair; FmModelError listing unmatched keys."""
    out, unmatched = {}, []
    for key in keys:
        for old, new in pairs:
            if key == old or (old.endswith(".") and key.startswith(old)):
                out[key] = new + key[len(old):]
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise FmModelError(f"{what}: expected known parameter names, got {len(unmatched)} unknown, "
                           f"e.g. {unmatched[:5]}")
    return out


def to_reference_state_dict(state_dict: Mapping[str, Tensor], variant: str,
                            cfg: FmFormerConfig) -> dict[str, Tensor]:
    """Our state_dict -> the authors' key names (same tensors)."""
    names = _rename(list(state_dict), key_rules(variant, cfg), f"{variant} state_dict")
    return {names[k]: v for k, v in state_dict.items()}


def from_reference_state_dict(state_dict: Mapping[str, Tensor], variant: str,
                              cfg: FmFormerConfig) -> dict[str, Tensor]:
    """The authors' state_dict -> our key names (same tensors)."""
    pairs = [(theirs, ours) for ours, theirs in key_rules(variant, cfg)]
    names = _rename(list(state_dict), pairs, f"reference {variant} state_dict")
    return {names[k]: v for k, v in state_dict.items()}


def detect_reference_variant(state_dict: Mapping[str, Any]) -> str:
    """Which variant a reference state_dict belongs to, from its key names."""
    keys = set(state_dict)
    if "cls_token1" in keys:
        return "vicu_seg" if any(k.startswith("head.decode") for k in keys) else "vicu_cls"
    if "pos_embedding.pe" in keys:
        return "video_cls"
    if "mlp_head.weight" in keys:
        return "current_cls"
    raise FmModelError(f"expected a reference FmFormer state_dict, got keys like {sorted(keys)[:5]}")


def infer_reference_config(state_dict: Mapping[str, Tensor], variant: str, *,
                           image_size: int | tuple[int, int] = 64, heads: int = 3) -> FmFormerConfig:
    """The sizes a reference state_dict was built with. Frames follow from the number of position
    embeddings at the given image size; the head split cannot be read from shapes, so it is given."""
    try:
        return _infer_config({k: tuple(v.shape) for k, v in state_dict.items()}, variant, image_size, heads)
    except (ValueError, StopIteration, KeyError, IndexError) as exc:
        raise FmModelError(f"expected a complete reference {variant} state_dict, got one without "
                           f"{exc or type(exc).__name__}") from None


def _infer_config(shapes: dict[str, tuple[int, ...]], variant: str, image_size: int | tuple[int, int],
                  heads: int) -> FmFormerConfig:
    depth = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"transformer\.layers\.(\d+)\.", k)))
    qkv = next(s for k, s in shapes.items() if k.endswith("to_qkv.weight") or k.endswith("to_qkv1.weight"))
    mlp = next(s for k, s in shapes.items() if re.search(r"\.1\.(ff1\.)?net\.1\.weight$", k))
    sizes: dict[str, Any] = {"width": qkv[1], "depth": depth, "heads": heads, "head_dim": qkv[0] // 3 // heads,
                              "mlp_dim": mlp[0], "image_size": image_size}
    cfg = variant_config(variant, **sizes)
    if variant != "current_cls":
        pos = shapes["pos_embedding1" if variant.startswith("vicu") else "pos_embedding.pe"]
        per_step = (cfg.image_size[0] // cfg.patch[1]) * (cfg.image_size[1] // cfg.patch[2])
        sizes["frames"] = (pos[1] - 1) // per_step * cfg.patch[0]
        sizes["dilated_tokens"] = "get_additional_tokens.pos_embedding" in shapes
    if variant != "video_cls":
        sizes["current_rows"] = shapes["pos_embedding2" if variant.startswith("vicu") else "pos_embedding"][1] - 1
    if variant == "vicu_seg":
        n = sum(1 for k in shapes if re.fullmatch(r"head\.decode\d+\.0\.weight", k))
        sizes["decoder_channels"] = tuple(shapes[f"head.decode{j + 1}.0.weight"][1] for j in range(n))
        sizes["num_classes"] = shapes["head.decode_out.weight"][0]
    else:
        out = {"current_cls": "mlp_head.weight"}.get(variant, "head.mlp_head1.1.weight")
        sizes["num_classes"] = shapes[out][0]
    return variant_config(variant, **sizes)


# ----------------------------------------------------------------------------------------------------------
# reading files


def _weights_only_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True; every failure becomes one FmModelError line naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # missing or unreadable file: the caller's OSError handling names it
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise FmModelError("expected a checkpoint of plain tensors and plain types (torch.load with "
                               f"weights_only=True), got a pickled Python object (it needs {found.group(1)}); "
                               "refusing to unpickle it because that can run arbitrary code", path) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = detail.group(1) if detail else text.splitlines()[0]
        raise FmModelError(f"expected a PyTorch checkpoint file, got unreadable data ({reason[:160]})",
                           path) from None
    except Exception as exc:  # a corrupt or foreign file fails in many ways inside torch.load
        first = (str(exc).splitlines() or [""])[0][:160] or "an empty or truncated file"
        raise FmModelError(f"expected a PyTorch checkpoint file, got {type(exc).__name__}: {first}",
                           path) from None


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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if inner is None:
            return model
        model = inner


def _load_into(model: nn.Module, state_dict: Mapping[str, Tensor],
               where: str | os.PathLike[str] | None) -> nn.Module:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise FmModelError(f"expected a state_dict matching {model.variant} "
                           f"{model.config.to_dict()}, got: {detail}", where) from None
    return model


def load_reference_model(source: str | os.PathLike[str] | Mapping[str, Tensor], variant: str | None = None,
                         config: FmFormerConfig | None = None) -> nn.Module:
    """A model (eval mode, CPU) holding a reference state_dict, from a path (.pth/.npz) or a mapping.
    The variant is detected from the key names and the sizes from the shapes unless given."""
    is_path = isinstance(source, (str, os.PathLike))
    sd = read_reference_state_dict(source) if is_path else _strip_wrappers(dict(source))
    with _naming(source if is_path else None):
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


# ----------------------------------------------------------------------------------------------------------
# the toolkit's own format


@dataclass
class ModelMeta:
    """What a checkpoint says about its model: enough to rebuild it and to feed it the right inputs.

    orientation: "reference" (frames transposed, (W, H), as the authors' loader feeds them) or "true" (H, W).
    preprocessing: plain dict, at least {"name": "reference" | "normalized"}, plus the statistics used.
    info: free plain values (toolkit and torch versions, epoch, metrics...).
    """

    variant: str
    config: FmFormerConfig
    orientation: str = "true"
    preprocessing: dict[str, Any] = field(default_factory=lambda: {"name": "reference"})
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_variant(self.variant)
        if self.orientation not in ORIENTATIONS:
            raise FmModelError(f"checkpoint meta: expected orientation in {ORIENTATIONS}, got {self.orientation!r}")
        if isinstance(self.preprocessing, str):
            self.preprocessing = {"name": self.preprocessing}

    def to_dict(self) -> dict[str, Any]:
        """Plain types only."""
        return {"variant": self.variant, "config": self.config.to_dict(), "orientation": self.orientation,
                "preprocessing": dict(self.preprocessing), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMeta:
        return cls(variant=data["variant"], config=FmFormerConfig.from_dict(dict(data["config"])),
                   orientation=data["orientation"], preprocessing=dict(data["preprocessing"]),
                   info=dict(data.get("info", {})))


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
    """torch.save into a temp file beside ``path``, fsync, then os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    meta = ModelMeta(inner.variant, inner.config, orientation, dict(preprocessing) if isinstance(
        preprocessing, Mapping) else preprocessing, {"torch": str(torch.__version__), **(info or {})})
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


def model_from_checkpoint(ckpt: Checkpoint, where: str | os.PathLike[str] = "checkpoint") -> nn.Module:
    """Build the checkpoint's model on the CPU and load its weights (train mode)."""
    return _load_into(build_model(ckpt.meta.variant, ckpt.meta.config), ckpt.state_dict, where)


def load_model(path: str | os.PathLike[str], *, format: str = "auto", variant: str | None = None,
               config: FmFormerConfig | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """A ready model (eval mode, on ``device``) and its meta from a toolkit checkpoint or a reference state_dict.

    format: "toolkit", "reference" (the authors' key names, .pth or fixture .npz), or "auto" (by content).
    A reference model's meta says orientation "reference" and preprocessing "reference": the authors'
    loader fed frames transposed, as float 0..255, and raw amperes.
    """
    if format not in ("auto", "toolkit", "reference"):
        raise FmModelError(f"expected format auto, toolkit or reference, got {format!r}", path)
    if Path(path).suffix == ".npz":  # the fixtures: reference arrays under state/<name>
        payload: Any = read_reference_state_dict(path)
    else:
        payload = _weights_only_load(path, "cpu")
    if format == "toolkit" or (format == "auto" and _is_toolkit(payload)):
        ckpt = _checkpoint_from_payload(payload, path)
        return model_from_checkpoint(ckpt, path).to(device).eval(), ckpt.meta
    if _is_toolkit(payload):
        raise FmModelError("expected a reference state_dict (the authors' key names), got a toolkit checkpoint; "
                           "use format toolkit or auto", path)
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise FmModelError(f"expected a flat state_dict with the authors' key names, got {type(payload).__name__}",
                           path)
    with _naming(path):
        model = load_reference_model(payload, variant, config)
    meta = ModelMeta(model.variant, model.config, "reference", {"name": "reference"},
                     {"source": os.fspath(path), "format": "reference"})
    return model.to(device), meta


def export_reference(path: str | os.PathLike[str], model: nn.Module) -> Path:
    """Write the model as the authors would: a plain state_dict with their key names (atomic)."""
    inner = unwrap_model(model)
    return atomic_torch_save(to_reference_state_dict(model_state_dict(inner), inner.variant, inner.config), path)


__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "ORIENTATIONS", "key_rules", "to_reference_state_dict",
    "from_reference_state_dict", "detect_reference_variant", "infer_reference_config", "read_reference_state_dict",
    "unwrap_model", "load_reference_model", "ModelMeta", "Checkpoint", "atomic_torch_save", "model_state_dict",
    "save_checkpoint", "load_checkpoint", "model_from_checkpoint", "load_model", "export_reference",
]
