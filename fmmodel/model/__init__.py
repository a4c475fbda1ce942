"""The models: FmFormer and its sizes, the variant table, users' models, and checkpoints.

Sizes (:mod:`~fmmodel.model.config`: :class:`FmFormerConfig`, the named sizes), the blocks and
the three FmFormer modules (:mod:`~fmmodel.model.layers`, :mod:`~fmmodel.model.fmformer`), users'
model factories and where they come from (:mod:`~fmmodel.model.user_models`), the one table of
built-in and users' variants and how to build either (:mod:`~fmmodel.model.registry`), and
checkpoints: the toolkit's format and the authors' state_dicts
(:mod:`~fmmodel.model.checkpoint`; their key names in :mod:`~fmmodel.model.reference_keys`).
Nothing here reads a store.
"""
from fmmodel.model.checkpoint import Checkpoint, ModelMeta, load_checkpoint, load_model, save_checkpoint
from fmmodel.model.config import FmFormerConfig, named_config
from fmmodel.model.fmformer import CurrentFmFormer, FmFormer, VideoFmFormer
from fmmodel.model.registry import VARIANTS, ModelInfo, Variant, build_model, model_info, resolve_variant
from fmmodel.model.user_models import DataDescription, ModelFactory

__all__ = ["FmFormerConfig", "named_config", "FmFormer", "VideoFmFormer", "CurrentFmFormer", "VARIANTS", "Variant",
           "ModelInfo", "build_model", "model_info", "resolve_variant", "DataDescription", "ModelFactory",
           "ModelMeta", "Checkpoint", "load_model", "load_checkpoint", "save_checkpoint"]
