"""The authors' parameter names <-> ours: mapping reference state_dicts onto the toolkit's models.

The authors' released checkpoint (``state_dict_vicu_cls.pth``) is a plain state_dict with their
module names. :func:`key_rules` lists, per variant and size, (our name, their name) pairs for
every parameter group (a trailing "." marks a prefix); :func:`to_reference_state_dict` and
:func:`from_reference_state_dict` rename whole state_dicts; :func:`detect_reference_variant`
and :func:`infer_reference_config` read the variant and sizes off their key names and shapes.
The authors' names appear only in this module. docs/model.md has the table in prose.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from fmmodel.errors import FmModelError
from fmmodel.model.config import FmFormerConfig
from fmmodel.model.registry import get_variant, variant_config


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
