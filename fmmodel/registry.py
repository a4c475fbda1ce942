"""Build FmFormer models by variant name: the one place that knows which class and default sizes a variant has."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from fmmodel.errors import FmModelError
from fmmodel.fmformer import CurrentFmFormer, FmFormer, FmFormerConfig, VideoFmFormer, named_config


@dataclass(frozen=True)
class Variant:
    """A model variant: its inputs, its task, and the config fields it changes from the named size."""

    name: str
    modality: str  # "both" | "video" | "current"
    task: str  # "cls" | "seg"
    inputs: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...] = ()
    description: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vicu_cls", "both", "cls", ("video", "current"), (),
                "cross-modal classifier (video + current), logits (B, classes)"),
        Variant("vicu_seg", "both", "seg", ("video", "current"), (),
                "cross-modal segmenter (video + current), mask logits (B, classes, H, W)"),
        Variant("video_cls", "video", "cls", ("video",), (("frames", 8),),
                "video-only classifier (reference: 8 frames), logits (B, classes)"),
        Variant("current_cls", "current", "cls", ("current",), (),
                "current-only classifier, logits (B, classes)"),
    )
}


def variant_for(modality: str, task: str) -> str:
    """The variant name for a trainer's --modality both|video|current and --task cls|seg."""
    for v in VARIANTS.values():
        if v.modality == modality and v.task == task:
            return v.name
    pairs = sorted((v.modality, v.task) for v in VARIANTS.values())
    raise FmModelError(f"model: expected (modality, task) from {pairs}, got ({modality!r}, {task!r})")


def get_variant(name: str) -> Variant:
    """The Variant record for a name; FmModelError naming the known ones otherwise."""
    if name not in VARIANTS:
        raise FmModelError(f"model: expected a variant from {sorted(VARIANTS)}, got {name!r}")
    return VARIANTS[name]


def variant_config(variant: str, size: str = "reference", **overrides: Any) -> FmFormerConfig:
    """The config of a variant: named size, then the variant's defaults (video_cls: 8 frames), then overrides."""
    return named_config(size, **{**dict(get_variant(variant).defaults), **overrides})


def build_model(variant: str, config: FmFormerConfig | None = None, *, size: str = "reference",
                **overrides: Any) -> nn.Module:
    """A freshly initialised model of a variant ("vicu_cls", "vicu_seg", "video_cls", "current_cls").

    Takes either a full ``config`` (overrides then apply on top of it) or a named ``size`` plus overrides.
    Every model is called as ``model(video=..., current=...)``; it has ``.config``, ``.variant``, ``.task``
    and ``.inputs`` (the tensors it reads).
    """
    v = get_variant(variant)
    cfg = replace(config, **overrides) if config is not None else variant_config(variant, size, **overrides)
    if v.modality == "both":
        return FmFormer(cfg, task=v.task)
    if v.modality == "video":
        return VideoFmFormer(cfg)
    return CurrentFmFormer(cfg)


__all__ = ["Variant", "VARIANTS", "variant_for", "get_variant", "variant_config", "build_model"]
