"""fmmodel: the FmFormer model family, the torch data path over FMF stores, training and evaluation.

Sub-packages by role, each with a short facade (docs/architecture.md draws their layers):
:mod:`~fmmodel.model` (FmFormer, the variant table, users' models, checkpoints),
:mod:`~fmmodel.runtime` (devices, processes, precision), :mod:`~fmmodel.data` (preprocessing,
the lazy dataset, samplers, the resident windows, the choice of data path, hold-out),
:mod:`~fmmodel.scoring` (metrics, the scoring loop, reports, ``evaluate``, ``predict``) and
:mod:`~fmmodel.runs` (training configuration, ``train``, the benchmark). Beside them only the
reference protocol's constants (:mod:`~fmmodel.protocol`) and the errors (:mod:`~fmmodel.errors`).
"""
from fmdata import __version__
from fmmodel.errors import FmModelError

__all__ = ["FmModelError", "__version__"]
