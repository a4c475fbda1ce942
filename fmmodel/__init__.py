"""fmmodel: the FmFormer model family, the torch data path over FMF stores, training and evaluation.

Modules by role (docs/architecture.md draws their layers): the reference protocol's constants
(:mod:`~fmmodel.protocol`) and errors (:mod:`~fmmodel.errors`); the model
(:mod:`~fmmodel.model_config`, :mod:`~fmmodel.layers`, :mod:`~fmmodel.fmformer`), users' models
(:mod:`~fmmodel.user_models`) and the one variant table (:mod:`~fmmodel.registry`); checkpoints
(:mod:`~fmmodel.checkpoint`, :mod:`~fmmodel.reference_keys`); processes and devices
(:mod:`~fmmodel.distributed`); the data path (:mod:`~fmmodel.preprocessing`,
:mod:`~fmmodel.dataset`, :mod:`~fmmodel.batches`, :mod:`~fmmodel.sampling`,
:mod:`~fmmodel.resident`, :mod:`~fmmodel.data_path`, :mod:`~fmmodel.data`); a run's data and
settings (:mod:`~fmmodel.holdout`, :mod:`~fmmodel.config`, :mod:`~fmmodel.run_data`); scoring
(:mod:`~fmmodel.metrics`, :mod:`~fmmodel.inference`, :mod:`~fmmodel.report`); the commands
(:mod:`~fmmodel.train`, :mod:`~fmmodel.evaluate`, :mod:`~fmmodel.predict`,
:mod:`~fmmodel.throughput`) and the benchmark (:mod:`~fmmodel.benchmark`,
:mod:`~fmmodel.benchmark_table`).
"""
from fmdata import __version__
from fmmodel.errors import FmModelError

__all__ = ["FmModelError", "__version__"]
