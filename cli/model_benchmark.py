"""``fmmodel benchmark``: a thin click wrapper over :func:`fmmodel.benchmark.run_benchmark`."""
from __future__ import annotations

import json
from typing import Any

import click

from fmdata.store import Location
from fmdata.store.schema import WINDOW_POLICIES
from fmmodel import protocol
from fmmodel.benchmark import BenchmarkSettings, run_benchmark

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
                  batch_size: int, lr: float, lr_step_epoch: int, workers: int, data: str,
                  resident_budget: int | None, threads: int | None, device: str,
                  precision: str | None, preprocessing: str, val_fraction: float, model_size: str,
                  model_opt: dict[str, Any], frames: int | None, frame_step: int | None,
                  current_seconds: float | None, current_rows: int | None, stride: int | None,
                  max_steps_per_epoch: int | None, balanced: bool, no_hflip: bool, as_json: bool,
                  progress: bool | None) -> None:
    """Train and evaluate every (model, policy, seed) cell on STORE's test split and write the
    comparison table (mean ± std over seeds, overall and per recording). Cells already finished are
    skipped and an interrupted one is resumed, so the command can be re-run after a crash or with
    more seeds or models. Training options apply to every cell; a user's factory reads the
    --model-opt keys it knows."""
    settings = BenchmarkSettings(
        train=dict(epochs=epochs, batch_size=batch_size, lr=lr, lr_step_epoch=lr_step_epoch,
                   preprocessing=preprocessing, val_fraction=val_fraction, workers=workers, data=data,
                   resident_budget=resident_budget, threads=threads, device=device, precision=precision,
                   max_steps_per_epoch=max_steps_per_epoch, balanced=balanced, hflip=not no_hflip,
                   model={"size": model_size, **model_opt}),
        window=dict(frames=frames, frame_step=frame_step, current_seconds=current_seconds, current_rows=current_rows,
                    stride=stride))
    policies = list(WINDOW_POLICIES) if policy == "both" else [policy]
    report = run_benchmark(store, models=models, seeds=seeds, policies=policies, out=out, settings=settings,
                           progress=progress_flag(progress))
    click.echo(json.dumps(report.to_dict(), indent=2, default=str) if as_json else report.summary())
