"""The model variants: the one table of which class, task, inputs and default sizes each has.

Every other module asks here: the trainer (``variant_for(modality, task)``), checkpoints
(``build_model``), evaluation (``get_variant(name).modality``). :func:`unwrap_model` gives the
plain module under ``torch.compile`` and DDP wrappers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

from torch import nn

from fmmodel.errors import FmModelError
from fmmodel.fmformer import CurrentFmFormer, FmFormer, VideoFmFormer
from fmmodel.model_config import FmFormerConfig, named_config


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
    """The variant name for a modality ("both", "video", "current") and a task ("cls", "seg")."""
    for v in VARIANTS.values():
        if v.modality == modality and v.task == task:
            return v.name
    pairs = ", ".join(f"{v.modality}/{v.task}" for v in VARIANTS.values())
    raise FmModelError(f"expected a modality/task pair from {pairs}, got {modality}/{task}", field="task")


def get_variant(name: str) -> Variant:
    """The Variant record for a name; FmModelError naming the known ones otherwise."""
    if name not in VARIANTS:
        raise FmModelError(f"expected a model variant from {sorted(VARIANTS)}, got {name!r}", field="variant")
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


@dataclass(frozen=True)
class ModelInfo:
    """What every model the registry builds says about itself (typed; modules carry them untyped)."""

    variant: str
    task: str
    inputs: tuple[str, ...]
    config: FmFormerConfig


def model_info(model: nn.Module) -> ModelInfo:
    """Return the variant, task, inputs and config of ``model`` (wrappers looked through)."""
    inner = unwrap_model(model)
    return ModelInfo(variant=str(inner.variant), task=str(inner.task),
                     inputs=tuple(cast(tuple[str, ...], inner.inputs)),
                     config=cast(FmFormerConfig, inner.config))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if inner is None:
            return model
        model = inner


__all__ = ["Variant", "VARIANTS", "variant_for", "get_variant", "variant_config", "build_model", "ModelInfo",
           "model_info", "unwrap_model"]
