"""``fmmodel train``, ``fmmodel evaluate``, ``fmmodel predict``: thin click wrappers over fmmodel."""
from __future__ import annotations

import json
import os
from typing import Any

import click
from click.core import ParameterSource

from fmdata.store import Location
from fmdata.store.handle import open_store
from fmmodel import protocol
from fmmodel.runs.settings import resolve_train_config
from fmmodel.runs.train import resume_run, train
from fmmodel.scoring.config import EvaluateConfig, PredictConfig
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.predict import predict
from fmmodel.scoring.report import format_report

from .errors import user_errors
from .model_options import checkpoint_option, format_option, trusted_option, variant_option, windows_option
from .model_recipes import recipe_options
from .options import (
    MISSING_STORE,
    batch_size_option,
    data_options,
    device_options,
    json_option,
    loader_workers_option,
    overwrite_option,
    policy_option,
    progress_flag,
    progress_option,
    stack,
    store_argument,
    training_options,
    typed,
    typed_training,
)

checkpoint_options = stack(checkpoint_option, format_option, variant_option, windows_option, trusted_option)


def _rank0() -> bool:
    """Under torchrun every process runs the command; only rank 0 prints the summary."""
    return os.environ.get("RANK", "0") == "0"


@click.command("train")
@store_argument("FMF Zarr store (path or URL). With --resume: only when the run's store moved (same data).",
                required=False)
@click.option("--windows", default=None, metavar="NAME",
              help="Stored window table (fmdata windows); default: build windows now from the window options.")
@click.option("--model", "model", default=None, metavar="MODEL",
              help="The model: a variant (vicu_cls, vicu_seg, video_cls, current_cls), an installed model (entry "
                   "point of group fmmodel.models) or a factory module:name / path/file.py:name "
                   "(docs/custom-models.md). Default: the FmFormer variant of --task and --modality. With --resume: "
                   "a user's model named again (its code is imported only when named or installed).")
@click.option("--task", type=click.Choice(protocol.TASKS), default=None,
              help="cls: one label per window (default); seg: a mask of the labelled frame.")
@click.option("--modality", type=click.Choice(protocol.MODALITIES), default=None,
              help="Inputs: both (cross-modal, default), video or current.")
@click.option("--epochs", type=int, default=None,
              help=f"Epochs (default {protocol.EPOCHS}; with --resume: extend the run to this many).")
@training_options
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of weights, order and flips.")
@click.option("--out", "out", type=click.Path(), default=None,
              help="Run folder (default runs/<model>-<date>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@policy_option
@recipe_options
@progress_option
@user_errors
def train_cmd(store: Location | None, windows: str | None, model: str | None, task: str | None, modality: str | None,
              epochs: int | None, training: dict[str, Any], window: dict[str, Any], compile_: bool, seed: int,
              out: str | None, resume: bool, policy: str | None, preset: str | None, config: str | None,
              progress: bool | None) -> None:
    """Train an FmFormer on STORE (reference protocol by default: Adam, lr 5e-4, x0.1 at epoch 20,
    30 epochs, batch 64, horizontal flip; --preset cpu: a small model in minutes on two CPU cores).
    Settings: defaults < --preset < --config FILE < the options typed; config.json records them.
    Validation holds out the end of each recording's training block (less, or none, where recordings
    are too short: said in the log); the test split is never touched. Multi-GPU: torchrun
    --nproc-per-node N $(which fmmodel) train ..."""
    if resume:
        if not out:
            raise click.UsageError("--resume needs --out RUN_DIR")
        result = resume_run(out, epochs=epochs, progress=progress_flag(progress), store=store,
                            environment=_typed_with_resume(), model=model)
    else:
        if store is None and config is None:
            raise click.UsageError(f"{MISSING_STORE}; only --resume, or --config naming a file with a store, takes none")
        if windows and (policy is not None or any(v is not None for v in window.values())):
            raise click.UsageError("--windows trains on a stored table's own windows: give it or the window options "
                                   "(--frames, --frame-step, --current-seconds, --current-rows, --stride, --policy), "
                                   "not both")
        settings = typed_training(training)
        for name, value in (("task", task), ("modality", modality), ("epochs", epochs)):
            if value is not None:
                settings[name] = value
        for name, key, value in (("compile_", "compile", compile_), ("seed", "seed", seed)):
            if typed(name):
                settings[key] = value
        # the store is opened once: the handle reads a stored table's parameters and trains
        handle = None if store is None else open_store(store)
        cfg = resolve_train_config(preset=preset, config=config, store=handle, out=out, model=model, windows=windows,
                                   settings=settings, window={**window, "policy": policy})
        result = train(cfg, progress=progress_flag(progress), store=handle)
    if result.history and _rank0():
        click.echo(f"run folder: {result.run_dir}\n  checkpoints: {result.best} (best), {result.last} (last)\n"
                   f"  metrics: {os.path.join(result.run_dir, 'metrics.csv')}, curves: "
                   f"{os.path.join(result.run_dir, 'curves.png')}, TensorBoard: {os.path.join(result.run_dir, 'tb')}\n"
                   f"  model card: {os.path.join(result.run_dir, 'README.md')}")


def _typed_with_resume() -> dict[str, Any]:
    """The options typed beside ``--resume`` other than --out, --epochs, --store, --progress and
    --model, by parameter name: resume_run takes those of where the run runs and refuses the others."""
    ctx = click.get_current_context()
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {name: value for name, value in ctx.params.items()
            if name not in ("out", "resume", "epochs", "store", "store_option", "progress", "model")
            and ctx.get_parameter_source(name) in typed}


@click.command("evaluate")
@store_argument()
@checkpoint_options
@click.option("--split", type=click.Choice(protocol.SPLITS), default="test", show_default=True,
              help="Windows to score (all: train and test).")
@click.option("--out", type=click.Path(), default=None, help="Folder for report.json and the pictures.")
@batch_size_option
@loader_workers_option
@data_options
@device_options
@click.option("--examples", type=click.IntRange(min=0), default=8, show_default=True,
              help="Example frames in examples.png.")
@click.option("--protocol", type=click.Choice(protocol.EVAL_PROTOCOLS), default=None,
              help="How samples and pixel metrics are counted: toolkit (every test frame; mIoU over the classes "
                   "present) or reference (the authors': a current-only model scores one sample per test second; "
                   "mIoU keeps an absent class as 0). Default: reference for a checkpoint in the authors' format.")
@json_option
@progress_option
@user_errors
def evaluate_cmd(store: Location, checkpoint: str, fmt: str, variant: str | None, windows: str | None,
                 trusted: tuple[str, ...], split: str, out: str | None, batch_size: int, workers: int, data: str,
                 resident_budget: int | None, device: str, precision: str | None, examples: int,
                 protocol: str | None, as_json: bool, progress: bool | None) -> None:
    """Score CHECKPOINT on STORE's test split: class level (accuracy, F1, precision, recall, FDR, MDR,
    AUROC, AP, confusion matrix), pixel level for segmenters (pixel accuracy, mean pixel accuracy,
    mIoU, pixel AUROC/AP), FPS; overall and per recording."""
    cfg = EvaluateConfig(fmt=fmt, variant=variant, split=split, windows=windows, out=out, batch_size=batch_size,
                         workers=workers, device=device, precision=precision, examples=examples, data=data,
                         resident_budget=resident_budget, protocol=protocol, trusted=trusted)
    report = evaluate(store, checkpoint, cfg, progress=progress_flag(progress))
    if not _rank0():
        return
    click.echo(json.dumps(report, indent=2, default=str) if as_json else format_report(report))


@click.command("predict")
@store_argument()
@checkpoint_options
@click.option("--out", required=True, type=click.Path(), help="Output Zarr v3 store (OUT.zarr, a local path).")
@click.option("--split", type=click.Choice(protocol.SPLITS), default="all", show_default=True,
              help="Windows to predict (all: train and test).")
@click.option("--video", type=click.Path(), default=None, help="Also write an overlay video (MP4).")
@click.option("--video-max-frames", type=click.IntRange(min=1), default=1500, show_default=True,
              help="Labelled frames drawn in the video at most (evenly spread).")
@overwrite_option
@batch_size_option
@loader_workers_option
@data_options
@device_options
@progress_option
@user_errors
def predict_cmd(store: Location, checkpoint: str, fmt: str, variant: str | None, windows: str | None,
                trusted: tuple[str, ...], out: str,
                split: str, video: str | None, video_max_frames: int, overwrite: bool, batch_size: int, workers: int,
                data: str, resident_budget: int | None, device: str, precision: str | None,
                progress: bool | None) -> None:
    """Write per-window class probabilities (and predicted masks of segmentation models), aligned to
    each window's labelled frame, into a Zarr v3 store; optionally an overlay video."""
    cfg = PredictConfig(fmt=fmt, variant=variant, split=split, windows=windows, batch_size=batch_size,
                        workers=workers, device=device, precision=precision, data=data,
                        resident_budget=resident_budget, trusted=trusted, overwrite=overwrite, video=video,
                        video_max_frames=video_max_frames)
    s = predict(store, checkpoint, out, cfg, progress=progress_flag(progress))
    if _rank0():
        click.echo(f"wrote {s['windows']:,} window predictions ({s['variant']}) to {s['out']}"
                   + (f"; video: {s['video']}" if s.get("video") else ""))

