"""fmmodel: the FmFormer model family, the torch data path over FMF stores, training and evaluation.

The public API is what this face exports (``__all__``; docs/python-api.md): the lazy dataset
(:class:`FmfWindowDataset`), models from checkpoints (:func:`load_model`), and one call per command
with its settings (:func:`train` with :class:`TrainConfig`, made from a preset and a settings
file as ``fmmodel train --preset --config`` makes it by :func:`resolve_train_config`; :func:`evaluate` with
:class:`EvaluateConfig`, :func:`predict` with :class:`PredictConfig`). What it exports is what the
project promises to keep; the sub-packages are the toolkit's own and may change. Importing
``fmmodel`` (or :mod:`fmmodel.protocol`, which the command line and DataLoader workers import)
is light: the names are imported when first used (PEP 562).

Sub-packages by role, each with a short facade (docs/architecture.md draws their layers):
:mod:`~fmmodel.model` (FmFormer, the variant table, users' models, checkpoints),
:mod:`~fmmodel.runtime` (devices, processes, precision), :mod:`~fmmodel.data` (preprocessing,
the lazy dataset, samplers, the resident windows, the choice of data path, hold-out),
:mod:`~fmmodel.scoring` (metrics, the scoring loop, reports, ``evaluate``, ``predict``) and
:mod:`~fmmodel.runs` (training configuration, ``train``, the benchmark). Beside them only the
reference protocol's constants (:mod:`~fmmodel.protocol`) and the errors (:mod:`~fmmodel.errors`).
"""
from __future__ import annotations

import importlib

from fmdata import __version__
from fmmodel.errors import FmModelError

# name on the face: (module, attribute), imported when first used (torch, matplotlib, OpenCV ...)
_EXPORTS = {
    "FmfWindowDataset": ("fmmodel.data.dataset", "FmfWindowDataset"),
    "load_model": ("fmmodel.model.checkpoint", "load_model"),
    "train": ("fmmodel.runs.train", "train"),
    "TrainConfig": ("fmmodel.runs.config", "TrainConfig"),
    "resolve_train_config": ("fmmodel.runs.settings", "resolve_train_config"),
    "TrainResult": ("fmmodel.runs.train", "TrainResult"),
    "evaluate": ("fmmodel.scoring.evaluate", "evaluate"),
    "EvaluateConfig": ("fmmodel.scoring.config", "EvaluateConfig"),
    "predict": ("fmmodel.scoring.predict", "predict"),
    "PredictConfig": ("fmmodel.scoring.config", "PredictConfig"),
}

__all__ = ["FmModelError", "__version__", "FmfWindowDataset", "load_model", "train", "TrainConfig", "TrainResult",
           "resolve_train_config", "evaluate", "EvaluateConfig", "predict", "PredictConfig"]

# Type checkers and IDEs see the same names imported eagerly. (TYPE_CHECKING is this module's own
# False, which type checkers read as True: importing typing would cost this light module more
# than everything else it imports.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from fmmodel.data.dataset import FmfWindowDataset
    from fmmodel.model.checkpoint import load_model
    from fmmodel.runs.config import TrainConfig
    from fmmodel.runs.settings import resolve_train_config
    from fmmodel.runs.train import TrainResult, train
    from fmmodel.scoring.config import EvaluateConfig, PredictConfig
    from fmmodel.scoring.evaluate import evaluate
    from fmmodel.scoring.predict import predict


def __getattr__(name: str) -> Any:
    """Import a face name on first use (PEP 562) and keep it, so that later look-ups are plain."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
