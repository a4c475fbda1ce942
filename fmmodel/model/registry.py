"""The models: the one table of built-in variants, users' models, and how to build either.

A model name is a built-in variant ("vicu_cls", "vicu_seg", "video_cls", "current_cls"), an
installed model (an entry point of group ``fmmodel.models``) or a factory spec
(``package.module:name``, ``path/file.py:name``); see :mod:`fmmodel.model.user_models`. Every other
module asks here: the trainer (:func:`resolve_variant`, :func:`build_model`), checkpoints
(:func:`build_model`, :func:`model_info`), evaluation (``Variant.modality``).
:func:`unwrap_model` gives the plain module under ``torch.compile`` and DDP wrappers.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from torch import nn

from fmdata.compute.memory import require_memory
from fmdata.errors import FmDataError
from fmmodel.errors import FmModelError
from fmmodel.model.config import FmFormerConfig, check_field_types, named_config
from fmmodel.model.fmformer import CurrentFmFormer, FmFormer, VideoFmFormer
from fmmodel.model.user_models import (
    INPUTS,
    DataDescription,
    ModelSource,
    find_source,
    installed_models,
    load_factory,
    user_code,
)
from fmmodel.protocol import MODALITIES, TASKS


@dataclass(frozen=True)
class Variant:
    """A model: its inputs, its task, the config fields a built-in changes from the named size,
    and (users' models) where its factory comes from."""

    name: str
    modality: str  # "both" | "video" | "current"
    task: str  # "cls" | "seg"
    defaults: tuple[tuple[str, Any], ...] = ()
    description: str = ""
    source: ModelSource | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """The forward() arguments the model reads (those of its modality)."""
        return INPUTS[self.modality]

    @property
    def builtin(self) -> bool:
        """True for the FmFormer variants of the benchmark."""
        return self.source is None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vicu_cls", "both", "cls", (),
                "cross-modal classifier (video + current), logits (B, classes)"),
        Variant("vicu_seg", "both", "seg", (),
                "cross-modal segmenter (video + current), mask logits (B, classes, H, W)"),
        Variant("video_cls", "video", "cls", (("frames", 8),),
                "video-only classifier (reference: 8 frames), logits (B, classes)"),
        Variant("current_cls", "current", "cls", (),
                "current-only classifier, logits (B, classes)"),
    )
}


def variant_for(modality: str, task: str) -> str:
    """The built-in variant for a modality ("both", "video", "current") and a task ("cls", "seg")."""
    for v in VARIANTS.values():
        if v.modality == modality and v.task == task:
            return v.name
    pairs = ", ".join(f"{v.modality}/{v.task}" for v in VARIANTS.values())
    raise FmModelError(f"expected a modality/task pair from {pairs}, got {modality}/{task}", field="task")


def get_variant(name: str) -> Variant:
    """The built-in Variant of a name; FmModelError naming the known ones otherwise."""
    if name not in VARIANTS:
        raise FmModelError(f"expected a model variant from {sorted(VARIANTS)}, got {name!r}", field="variant")
    return VARIANTS[name]


def resolve_variant(name: str, *, modality: str | None = None, task: str | None = None) -> Variant:
    """Return the Variant of any model name: built-in, installed (entry point) or a factory spec.

    ``modality`` and ``task`` complete a user's factory that does not declare them (a plain
    callable; default both / cls); a built-in or a declared one must agree with them when they are
    given. Raises FmModelError (field "model") for names that are none of these.
    """
    if name in VARIANTS:
        v = VARIANTS[name]
        for what, have, given in (("modality", v.modality, modality), ("task", v.task, task)):
            if given and given != have:
                raise FmModelError(f"expected {what} {have!r} for model {name!r}, got {given!r}", field=what)
        return v
    source = model_source(name)
    assert source is not None  # not a built-in
    return user_variant(name, source, modality=modality, task=task)


def user_variant(name: str, source: ModelSource, *, modality: str | None = None, task: str | None = None) -> Variant:
    """The Variant of a user's model ``name`` whose code is ``source`` (imported here: its factory
    declares inputs and task); ``modality`` and ``task`` as for :func:`resolve_variant`."""
    factory = load_factory(source)
    mod = factory.modality or modality or "both"
    tsk = factory.task or task or "cls"
    for what, declared, given in (("modality", factory.modality, modality), ("task", factory.task, task)):
        if declared and given and declared != given:
            raise FmModelError(f"expected {what} {declared!r} for model {name!r} (its declaration), got {given!r}",
                               field=what)
    if mod not in MODALITIES or tsk not in TASKS:
        raise FmModelError(f"expected a modality in {MODALITIES} and a task in {TASKS}, got {mod!r}, {tsk!r}")
    return Variant(name, mod, tsk, (), factory.summary, source)


def model_source(name: str) -> ModelSource | None:
    """Where the code of model ``name`` comes from, importing nothing: None for a built-in, else
    the source of an installed model (entry point) or of a factory spec (:func:`find_source`).
    Raises FmModelError (field "model") for a name that is none of these."""
    if name in VARIANTS:
        return None
    source = find_source(name)
    if source is None:
        known = sorted(VARIANTS) + installed_models()
        raise FmModelError(f"expected a model from {known} (built-in, or installed: entry points of group "
                           f"fmmodel.models) or a factory module:name / file.py:name, got {name!r}", field="model")
    return source


def choose_variant(model: str | None, *, task: str | None = None, modality: str | None = None) -> Variant:
    """The variant a training run asks for: ``model`` (any model name), or else the built-in of
    ``modality`` (default both) and ``task`` (default cls)."""
    if model is None:
        return VARIANTS[variant_for(modality or "both", task or "cls")]
    return resolve_variant(model, modality=modality, task=task)


def variant_config(variant: str, size: str = "reference", **overrides: Any) -> FmFormerConfig:
    """The config of a built-in: named size, then the variant's defaults (video_cls: 8 frames), then overrides."""
    return named_config(size, **{**dict(get_variant(variant).defaults), **overrides})


# what a float32 parameter takes: its weight (built), and what training adds (fmmodel.runs.config)
BYTES_PER_PARAMETER = 4


def require_model_memory(cfg: FmFormerConfig, *, bytes_per_parameter: int = BYTES_PER_PARAMETER,
                         what: str = "weights") -> None:
    """Raise FmModelError when ``bytes_per_parameter`` bytes for each of at least
    :meth:`FmFormerConfig.min_parameters` parameters do not fit in the memory available (``what``
    says what they hold); before anything is allocated, so that an absurd size (width 10^9, depth
    10^5) is one line, not a MemoryError or a machine that swaps until memory ends."""
    n = cfg.min_parameters()
    try:
        require_memory(bytes_per_parameter * n, f"an FmFormer of width {cfg.width}, depth {cfg.depth}, "
                       f"{cfg.heads} heads of {cfg.head_dim}, MLP {cfg.mlp_dim}: at least {n:,} parameters "
                       f"({what})", field=None)
    except FmDataError as exc:
        raise FmModelError(exc.message, field=exc.field) from None


def check_model_options(variant: str, size: str, options: Mapping[str, Any], *, bytes_per_parameter: int,
                        what: str) -> None:
    """Check a built-in ``variant``'s named ``size`` and size ``options`` before a run builds it from its
    data: unknown fields and values of the wrong kind or range (FmModelError naming the field), and
    whether at least its layers fit in memory at ``bytes_per_parameter`` (:func:`require_model_memory`;
    ``what`` says what they hold). The clip frames, frame size and current rows come from the data:
    the check takes the smallest that the sizes allow, so that it never refuses what the data may fit."""
    given = {k: v for k, v in options.items() if k not in ("frames", "image_size", "current_rows")}
    check_field_types(given)
    sizes = {**variant_config(variant, size).to_dict(), **given}
    t, h, w = sizes["patch"] if len(sizes["patch"]) == 3 else (1, 1, 1)  # a wrong length: the config says so
    d = sizes["dilation"] if sizes["dilated_tokens"] else 1
    cfg = variant_config(variant, size, **{**given, "frames": t, "image_size": (h * d, w * d), "current_rows": 1})
    require_model_memory(cfg, bytes_per_parameter=bytes_per_parameter, what=what)


def build_model(variant: str | Variant, config: FmFormerConfig | None = None, *, size: str = "reference",
                description: DataDescription | None = None, **overrides: Any) -> nn.Module:
    """A freshly initialised model.

    Built-in variants take either a full ``config`` (overrides then apply on top of it) or a
    named ``size`` plus overrides. Users' models take the run's ``description`` (required) and
    call their factory with it. Every model is called as ``model(video=..., current=...)``;
    :func:`model_info` tells its variant, task, inputs and sizes.
    """
    v = variant if isinstance(variant, Variant) else resolve_variant(variant)
    if not v.builtin:
        return _build_user_model(v, description)
    cfg = replace(config, **overrides) if config is not None else variant_config(v.name, size, **overrides)
    require_model_memory(cfg)
    if v.modality == "both":
        return FmFormer(cfg, task=v.task)
    if v.modality == "video":
        return VideoFmFormer(cfg)
    return CurrentFmFormer(cfg)


def _build_user_model(v: Variant, description: DataDescription | None) -> nn.Module:
    if description is None:
        raise FmModelError(f"expected a data description to build model {v.name!r}, got none")
    if (description.modality, description.task) != (v.modality, v.task):
        raise FmModelError(f"expected data for {v.modality}/{v.task} to build {v.name!r}, got "
                           f"{description.modality}/{description.task}")
    assert v.source is not None
    factory = load_factory(v.source)
    with user_code(v.name, f"build (factory {v.source.spec})"):
        module = factory.build(description)
    if not isinstance(module, nn.Module):
        raise FmModelError(f"expected model factory {v.source.spec} to return an nn.Module, got "
                           f"{type(module).__name__}", field="model")
    module.fmf_info = ModelInfo(variant=v.name, config=None, description=description,  # type: ignore[assignment]
                                source=v.source)
    return module


@dataclass(frozen=True)
class ModelInfo:
    """What a model is: its name, the data it is built for, and its FmFormer sizes (built-ins) or
    where its factory comes from (users'). The one description of a model: what a model the
    registry builds says about itself (:func:`model_info`), and the part of a checkpoint's record
    that rebuilds it (:class:`fmmodel.model.checkpoint.ModelMeta` adds how it was fed).

    variant: a built-in variant name, or a user's model name (then ``source`` says where its
    factory comes from and ``config`` is None).
    description: what the model is fed (built-ins: derived from ``config``, :func:`builtin_description`).
    """

    variant: str
    config: FmFormerConfig | None
    description: DataDescription
    source: ModelSource | None = None

    @property
    def task(self) -> str:
        """"cls" or "seg" (the description's)."""
        return self.description.task

    @property
    def inputs(self) -> tuple[str, ...]:
        """The forward() arguments the model reads (the description's)."""
        return self.description.inputs

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: {"variant", "config", "data", "source"} (the keys checkpoints record)."""
        return {"variant": self.variant, "config": None if self.config is None else self.config.to_dict(),
                "data": self.description.to_dict(), "source": None if self.source is None else self.source.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Inverse of :meth:`to_dict`, for a record read from a checkpoint (data, not trusted): a
        built-in must be a known variant with its sizes (its description, when absent, is derived
        from them); a user's model must record its data description. FmModelError otherwise."""
        variant = data["variant"]
        config = None if data.get("config") is None else FmFormerConfig.from_dict(dict(data["config"]))
        source = ModelSource.from_dict(data["source"]) if data.get("source") else None
        if source is None:
            get_variant(variant)
            if config is None:
                raise FmModelError(f"checkpoint meta: expected the sizes of built-in model {variant!r}, got none")
        if data.get("data"):
            description = DataDescription.from_dict(data["data"])
        elif config is not None and source is None:
            description = builtin_description(variant, config)
        else:
            raise FmModelError(f"checkpoint meta: expected the data description of model {variant!r}, got none")
        return cls(variant=variant, config=config, description=description, source=source)


def builtin_description(variant: str, cfg: FmFormerConfig) -> DataDescription:
    """The data a built-in variant with sizes ``cfg`` is built for."""
    v = get_variant(variant)
    return DataDescription(task=v.task, modality=v.modality, frame_size=cfg.image_size, clip_frames=cfg.frames,
                           current_rows=cfg.current_rows, num_classes=cfg.num_classes)


def model_info(model: nn.Module) -> ModelInfo:
    """Return what ``model`` (wrappers looked through) says about itself."""
    inner = unwrap_model(model)
    info = getattr(inner, "fmf_info", None)
    if isinstance(info, ModelInfo):
        return info
    variant, cfg = str(inner.variant), cast(FmFormerConfig, inner.config)
    return ModelInfo(variant=variant, config=cfg, description=builtin_description(variant, cfg))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if inner is None:
            return model
        model = inner


__all__ = ["Variant", "VARIANTS", "variant_for", "get_variant", "resolve_variant", "model_source", "user_variant",
           "choose_variant", "variant_config", "BYTES_PER_PARAMETER", "require_model_memory", "check_model_options",
           "build_model", "ModelInfo", "builtin_description", "model_info", "unwrap_model"]
