"""``fmmodel``: train, evaluate and run FmFormer models on FMF stores."""
from __future__ import annotations

import click

import fmmodel

from .lazy import lazy_group

COMMANDS = {
    "train": ".model_commands:train_cmd",
    "evaluate": ".model_commands:evaluate_cmd",
    "predict": ".model_commands:predict_cmd",
    "benchmark": ".model_benchmark:benchmark_cmd",
    "bench-data": ".model_bench_data:bench_data_cmd",
    "watch": ".model_watch:watch_cmd",
    "export": ".model_export:export_cmd",
    "alarms": ".model_alarms:alarms_cmd",
}


@lazy_group(COMMANDS)
@click.version_option(fmmodel.__version__, prog_name="fmmodel")
def main() -> None:
    """Train, evaluate, predict, benchmark, watch, export and judge alarms with FmFormer (or your own
    models) on an FMF store. Every command that reads a store takes it as its first argument, STORE,
    as fmdata does (--store STORE is the same); only train --resume needs none."""
