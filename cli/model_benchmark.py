"""``fmmodel benchmark``: a thin click wrapper over :func:`fmmodel.runs.benchmark.run_benchmark`."""
from __future__ import annotations

import json
from typing import Any

import click

from fmdata.store import Location
from fmdata.store.schema import WINDOW_POLICIES
from fmmodel import protocol
from fmmodel.runs.benchmark import BenchmarkSettings, run_benchmark

from .errors import user_errors
from .options import STORE, CommaList, json_option, progress_flag, progress_option, training_options

BENCHMARK_VARIANTS = "vicu_cls,video_cls,current_cls,vicu_seg"


@click.command("benchmark")
@click.option("--store", type=STORE, required=True, help="FMF Zarr store (path or URL).")
@click.option("--variants", "models", type=CommaList(str, "models"), default=BENCHMARK_VARIANTS, show_default=True,
              help="Models to compare, comma-separated: FmFormer variants, installed models (entry points of "
                   "group fmmodel.models) or factories module:name / path/file.py:name (docs/custom-models.md).")
@click.option("--seeds", type=CommaList(int, "integer seeds"), default="0,1,2", show_default=True,
              help="Seeds, comma-separated: one run per model, policy and seed.")
@click.option("--policy", type=click.Choice((*WINDOW_POLICIES, "both")), default="reference", show_default=True,
              help="Window policy of training, validation and test: reference (the authors' sampler, windows may "
                   "reach across split blocks), strict (no leakage), or both side by side.")
@click.option("--out", type=click.Path(), default="runs/bench", show_default=True,
              help="Benchmark folder: one run folder per cell, and table.md, table.json, table.png.")
@click.option("--epochs", type=click.IntRange(min=1), default=protocol.EPOCHS, show_default=True,
              help="Epochs of every run.")
@training_options
@json_option
@progress_option
@user_errors
def benchmark_cmd(store: Location, models: list[str], seeds: list[int], policy: str, out: str, epochs: int,
                  training: dict[str, Any], window: dict[str, Any], as_json: bool, progress: bool | None) -> None:
    """Train and evaluate every (model, policy, seed) cell on STORE's test split and write the
    comparison table (mean ± std over seeds, overall and per recording). Cells already finished are
    skipped and an interrupted one is resumed, so the command can be re-run after a crash or with
    more seeds, models or epochs. Training options apply to every cell; a user's factory reads the
    --model-opt keys it knows."""
    settings = BenchmarkSettings(train={"epochs": epochs, **training}, window=window)
    policies = list(WINDOW_POLICIES) if policy == "both" else [policy]
    report = run_benchmark(store, models=models, seeds=seeds, policies=policies, out=out, settings=settings,
                           progress=progress_flag(progress))
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.summary())
