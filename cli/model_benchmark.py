"""``fmmodel benchmark``: a thin click wrapper over :func:`fmmodel.runs.benchmark.run_benchmark`."""
from __future__ import annotations

import json
from typing import Any

import click

from fmdata.store import Location
from fmdata.store.schema import WINDOW_POLICIES
from fmmodel import protocol
from fmmodel.runs.benchmark import run_benchmark
from fmmodel.runs.settings import resolve_benchmark_settings

from .errors import user_errors
from .model_recipes import recipe_options
from .options import (
    MISSING_STORE,
    CommaList,
    json_option,
    progress_flag,
    progress_option,
    store_argument,
    training_options,
    typed,
    typed_training,
)

BENCHMARK_VARIANTS = "vicu_cls,video_cls,current_cls,vicu_seg"


@click.command("benchmark")
@store_argument("FMF Zarr store (path or URL); default: the --config file's store.", required=False)
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
@recipe_options
@json_option
@progress_option
@user_errors
def benchmark_cmd(store: Location | None, models: list[str], seeds: list[int], policy: str, out: str, epochs: int,
                  training: dict[str, Any], window: dict[str, Any], preset: str | None, config: str | None,
                  as_json: bool, progress: bool | None) -> None:
    """Train and evaluate every (model, policy, seed) cell on STORE's test split and write the
    comparison table (mean ± std over seeds, overall and per recording). Cells already finished are
    skipped and an interrupted one is resumed, so the command can be re-run after a crash or with
    more seeds, models or epochs. Training options apply to every cell; a user's factory reads the
    --model-opt keys it knows. Settings: defaults < --preset < --config FILE (training settings, and
    variants, seeds, policy, store) < the options typed."""
    given = typed_training(training)
    if typed("epochs"):
        given["epochs"] = epochs
    settings, chosen = resolve_benchmark_settings(preset=preset, config=config, settings=given, window=window)
    models = models if typed("models") else chosen.get("variants", models)
    seeds = seeds if typed("seeds") else chosen.get("seeds", seeds)
    policy = policy if typed("policy") else chosen.get("policy", policy)
    if store is None and "store" not in chosen:
        raise click.UsageError(f"{MISSING_STORE}; only --config naming a file with a store takes none")
    policies = list(WINDOW_POLICIES) if policy == "both" else [policy]
    report = run_benchmark(store if store is not None else str(chosen["store"]), models=list(models),
                           seeds=[int(s) for s in seeds], policies=policies, out=out, settings=settings,
                           progress=progress_flag(progress))
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.summary())
