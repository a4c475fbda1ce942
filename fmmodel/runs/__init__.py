"""Training runs and the benchmark: a run's settings (:mod:`~fmmodel.runs.config`:
:class:`TrainConfig`), what it was trained on and the checks of ``--resume``
(:mod:`~fmmodel.runs.identity`), training itself (:mod:`~fmmodel.runs.train`), and the benchmark
of models and seeds (:mod:`~fmmodel.runs.benchmark`, its table :mod:`~fmmodel.runs.benchmark_table`)."""
from fmmodel.runs.benchmark import BenchmarkReport, run_benchmark
from fmmodel.runs.config import TrainConfig
from fmmodel.runs.train import TrainResult, resume_run, train

__all__ = ["TrainConfig", "TrainResult", "train", "resume_run", "BenchmarkReport", "run_benchmark"]
