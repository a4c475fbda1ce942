"""``fmmodel train``, ``fmmodel evaluate``, ``fmmodel predict``: thin click wrappers over fmmodel."""
from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any

import click

from fmcli.errors import user_errors

DEVICE = click.Choice(["auto", "cpu", "cuda"])
PRECISION = click.Choice(["bf16", "fp32"])
FORMAT = click.Choice(["auto", "toolkit", "reference"])
SPLIT = click.Choice(["test", "train", "all"])


def _parse_model_opts(opts: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in opts:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--model-opt")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _rank0() -> bool:
    """Under torchrun every process runs the command; only rank 0 prints the summary."""
    return os.environ.get("RANK", "0") == "0"


@click.command("train")
@click.option("--store", help="FMF Zarr store (path or URL). Not needed with --resume.")
@click.option("--windows", help="Stored window table name (fmdata windows); default: build windows now.")
@click.option("--task", type=click.Choice(["cls", "seg"]), default="cls", show_default=True)
@click.option("--modality", type=click.Choice(["both", "video", "current"]), default="both", show_default=True)
@click.option("--epochs", type=int, default=None, help="Epochs (default 30; with --resume: extend the run to this many).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--lr-step", "lr_step_epoch", type=int, default=20, show_default=True,
              help="Multiply the learning rate by 0.1 every this many epochs.")
@click.option("--workers", type=int, default=2, show_default=True, help="Data-loader worker processes.")
@click.option("--threads", type=int, default=None, help="CPU threads of the training process (torch).")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--precision", type=PRECISION, default=None, help="Default: bf16 on CUDA, fp32 on the CPU.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", type=click.Path(), default=None,
              help="Run folder (default runs/<task>-<modality>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--preprocessing", type=click.Choice(["reference", "normalized"]), default="reference",
              show_default=True, help="reference: raw 0..255 video and amperes, transposed frames as the "
                                      "authors' loader; normalized: training-split statistics (fmdata stats).")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Share of each recording's training block (its end) held out for validation.")
@click.option("--model-size", type=click.Choice(["reference", "small", "tiny"]), default="reference",
              show_default=True)
@click.option("--model-opt", multiple=True, metavar="KEY=VALUE", help="Override an FmFormer size, e.g. depth=2.")
@click.option("--frames", type=int, default=None, help="Clip frames (default 10; video-only 8).")
@click.option("--frame-step", type=int, default=None, help="Clip frame step (default 18; video-only 19).")
@click.option("--current-seconds", type=float, default=None, help="Current history in seconds (default 120).")
@click.option("--current-rows", type=int, default=None, help="Current rows per window (default 240).")
@click.option("--policy", type=click.Choice(["reference", "strict"]), default=None, help="Window policy.")
@click.option("--stride", type=int, default=None, help="Keep every n-th window (default 1).")
@click.option("--max-steps", "max_steps_per_epoch", type=int, default=None, help="Cap on batches per epoch.")
@click.option("--balanced", is_flag=True, help="Class-balanced sampling.")
@click.option("--no-hflip", is_flag=True, help="Switch off the horizontal-flip augmentation.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def train_cmd(store: str | None, out: str | None, resume: bool, model_size: str, model_opt: tuple[str, ...],
              no_hflip: bool, quiet: bool, task: str, modality: str, compile_: bool, **options: Any) -> None:
    """Train an FmFormer on STORE (reference protocol by default: Adam, lr 5e-4, x0.1 at epoch 20,
    30 epochs, batch 64, horizontal flip). Validation holds out the end of each recording's training
    block; the test split is never touched. Multi-GPU: torchrun --nproc-per-node N $(which fmmodel) train ..."""
    from fmmodel.config import TrainConfig
    from fmmodel.train import resume_run, train

    if resume:
        if not out:
            raise click.UsageError("--resume needs --out RUN_DIR")
        result = resume_run(out, epochs=options["epochs"], progress=not quiet)
    else:
        if not store:
            raise click.UsageError("--store is required (unless --resume)")
        out = out or os.path.join("runs", f"{task}-{modality}-{_dt.datetime.now():%Y%m%d-%H%M%S}")
        model = {"size": model_size, **_parse_model_opts(model_opt)}
        cfg = TrainConfig.with_defaults(store, out, task=task, modality=modality, model=model, hflip=not no_hflip,
                                        compile=compile_, **options)
        result = train(cfg, progress=not quiet)
    if result.history and _rank0():
        click.echo(f"run folder: {result.run_dir}\n  checkpoints: {result.best} (best), {result.last} (last)\n"
                   f"  metrics: {os.path.join(result.run_dir, 'metrics.csv')}, TensorBoard: "
                   f"{os.path.join(result.run_dir, 'tb')}")


@click.command("evaluate")
@click.option("--store", required=True, help="FMF Zarr store (path or URL).")
@click.option("--checkpoint", required=True, type=click.Path(), help="Toolkit checkpoint or the authors' state_dict.")
@click.option("--format", "fmt", type=FORMAT, default="auto", show_default=True)
@click.option("--variant", default=None, help="Reference checkpoints: vicu_cls, vicu_seg, video_cls, current_cls "
                                              "(default: from the key names).")
@click.option("--split", type=SPLIT, default="test", show_default=True)
@click.option("--windows", default=None, help="Stored window table (default: built as the checkpoint says).")
@click.option("--out", type=click.Path(), default=None, help="Folder for report.json and the pictures.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--precision", type=PRECISION, default=None)
@click.option("--examples", type=int, default=8, show_default=True, help="Example frames in examples.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--quiet", is_flag=True)
@user_errors
def evaluate_cmd(store: str, checkpoint: str, fmt: str, variant: str | None, split: str, windows: str | None,
                 out: str | None, batch_size: int, workers: int, device: str, precision: str | None,
                 examples: int, as_json: bool, quiet: bool) -> None:
    """Score CHECKPOINT on STORE's test split: class level (accuracy, F1, precision, recall, FDR, MDR,
    AUROC, AP, confusion matrix), pixel level for segmenters (pixel accuracy, mean pixel accuracy,
    mIoU, pixel AUROC/AP), FPS; overall and per recording."""
    from fmmodel.evaluate import evaluate
    from fmmodel.report import format_report

    report = evaluate(store, checkpoint, fmt=fmt, variant=variant, split=split, windows=windows, out=out,
                      batch_size=batch_size, workers=workers, device=device, precision=precision,
                      examples=examples, progress=not quiet)
    if not _rank0():
        return
    if as_json:
        _echo_json(report)
    else:
        click.echo(format_report(report))


@click.command("predict")
@click.option("--store", required=True, help="FMF Zarr store (path or URL).")
@click.option("--checkpoint", required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output Zarr v3 store (OUT.zarr).")
@click.option("--format", "fmt", type=FORMAT, default="auto", show_default=True)
@click.option("--variant", default=None)
@click.option("--split", type=SPLIT, default="all", show_default=True)
@click.option("--windows", default=None)
@click.option("--video", type=click.Path(), default=None, help="Also write an overlay video (MP4).")
@click.option("--video-max-frames", type=int, default=1500, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--precision", type=PRECISION, default=None)
@click.option("--quiet", is_flag=True)
@user_errors
def predict_cmd(quiet: bool, **kw: Any) -> None:
    """Write per-window class probabilities (and predicted masks of segmentation models), aligned to
    each window's labelled frame, into a Zarr v3 store; optionally an overlay video."""
    from fmmodel.predict import predict

    s = predict(kw.pop("store"), kw.pop("checkpoint"), kw.pop("out"), progress=not quiet, **kw)
    if _rank0():
        click.echo(f"wrote {s['windows']:,} window predictions ({s['variant']}) to {s['out']}"
                   + (f"; video: {s['video']}" if s.get("video") else ""))


COMMANDS: list = [train_cmd, evaluate_cmd, predict_cmd]
