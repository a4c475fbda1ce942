"""The models: FmFormer and its sizes, the variant table, users' models, and checkpoints.

Sizes (:mod:`~fmmodel.model.config`: :class:`FmFormerConfig`, the named sizes), the blocks and
the three FmFormer modules (:mod:`~fmmodel.model.layers`, :mod:`~fmmodel.model.fmformer`), users'
model factories and where they come from (:mod:`~fmmodel.model.user_models`), the one table of
built-in and users' variants and how to build either (:mod:`~fmmodel.model.registry`), and
checkpoints: the toolkit's format and the authors' state_dicts
(:mod:`~fmmodel.model.checkpoint`; their key names in :mod:`~fmmodel.model.reference_keys`).
Nothing here reads a store.

The names are imported on first use (PEP 562), as the package faces do: the command line's option
parsing reads the sizes table (``fmmodel.model.config``), which needs no torch, and importing this
package first must not cost every ``fmdata`` command the second torch takes to import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Checkpoint": "checkpoint", "ModelMeta": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "save_checkpoint": "checkpoint", "FmFormerConfig": "config", "named_config": "config",
    "CurrentFmFormer": "fmformer", "FmFormer": "fmformer", "VideoFmFormer": "fmformer",
    "VARIANTS": "registry", "ModelInfo": "registry", "Variant": "registry", "build_model": "registry",
    "model_info": "registry", "resolve_variant": "registry", "DataDescription": "user_models",
    "ModelFactory": "user_models",
}

__all__ = ["FmFormerConfig", "named_config", "FmFormer", "VideoFmFormer", "CurrentFmFormer", "VARIANTS", "Variant",
           "ModelInfo", "build_model", "model_info", "resolve_variant", "DataDescription", "ModelFactory",
           "ModelMeta", "Checkpoint", "load_model", "load_checkpoint", "save_checkpoint"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from fmmodel.model.checkpoint import Checkpoint, ModelMeta, load_checkpoint, load_model, save_checkpoint
    from fmmodel.model.config import FmFormerConfig, named_config
    from fmmodel.model.fmformer import CurrentFmFormer, FmFormer, VideoFmFormer
    from fmmodel.model.registry import VARIANTS, ModelInfo, Variant, build_model, model_info, resolve_variant
    from fmmodel.model.user_models import DataDescription, ModelFactory


def __getattr__(name: str) -> Any:
    """Import a name of this package on first use and keep it."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
