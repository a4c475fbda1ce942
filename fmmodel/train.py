"""``fmmodel train``: train an FmFormer on an FMF store, single process or DDP (torchrun).

Protocol (fmf-benchmark.md §5, defaults of :class:`fmmodel.config.TrainConfig`): Adam, lr 5e-4,
x0.1 at epoch 20, 30 epochs, batch 64, cross-entropy, horizontal flip of clip and mask.

Validation never touches the test split. For every recording, the training windows whose
labelled frames come last (``val_fraction`` of them) are held out as one contiguous block; the
training windows that end within one window span before that block's earliest input (clip frame
or current row) are dropped, so no frame or current sample feeds both a training and a
validation window. :func:`holdout_split` computes this and the run's ``config.json`` records it.

The run folder holds ``config.json`` (the resolved :class:`TrainConfig`), ``last.pt`` and
``best.pt`` (toolkit checkpoints, atomic, plain tensors; ``last.pt`` also holds optimizer,
scheduler, epoch and RNG state for ``--resume``), ``metrics.csv`` (one row per epoch) and
``tb/`` (TensorBoard). Only rank 0 writes.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fmdata import schema
from fmdata.store import open_store, read_meta, read_offsets
from fmdata.window_table import WindowTable
from fmmodel import checkpoint as ckpt_io
from fmmodel import distributed as dd
from fmmodel.config import TrainConfig
from fmmodel.errors import FmModelError
from fmmodel.evaluate import autocast, make_dataset, make_eval_loader, model_inputs, resolve_precision, \
    run_inference, windows_for
from fmmodel.registry import build_model
from fmmodel.sampling import make_loader, set_loader_epoch

CONFIG_JSON = "config.json"
LAST = "last.pt"
BEST = "best.pt"
METRICS_CSV = "metrics.csv"
TB_DIR = "tb"
CSV_FIELDS = ("epoch", "lr", "train_loss", "train_windows", "samples_per_s", "loader_wait_share", "val_loss",
              "val_windows", "val_accuracy", "val_f1", "val_auroc", "val_miou", "score", "best", "seconds")


@dataclass
class TrainResult:
    """What a finished run left: its folder, checkpoint paths, per-epoch rows and the model."""

    run_dir: str
    last: str
    best: str
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None
    config: TrainConfig | None = None


# ---- validation hold-out --------------------------------------------------------------------


def first_input_frame(wt: WindowTable, frame_current_end: np.ndarray, frame_offsets: np.ndarray) -> np.ndarray:
    """Return, per window, the earliest frame whose data it reads (its oldest clip frame, or the
    first frame of its recording that has seen the window's first current row)."""
    rec = wt.column("recording")
    lo, hi = frame_offsets[rec], frame_offsets[rec + 1]
    cur_start = wt.column("current_start")
    # frame_current_end is non-decreasing over the whole store (recordings are concatenated)
    seen = np.searchsorted(frame_current_end, cur_start, side="right")
    seen = np.clip(seen, lo, hi - 1)
    return np.minimum(wt.clip.min(axis=1), seen)


def holdout_split(wt: WindowTable, frame_current_end: np.ndarray, frame_offsets: np.ndarray,
                  fraction: float) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Split the TRAINING-split windows of ``wt`` into (train rows, validation rows, description).

    Per recording: the last ``ceil(fraction * n)`` training windows (by labelled frame) are
    validation; training keeps the windows whose labelled frame lies before the earliest frame any
    validation window reads (:func:`first_input_frame`), i.e. at least one window span (clip or
    current history, whichever reaches further) away. Test-split windows are never used.
    """
    split, rec, frame = wt.column("split"), wt.column("recording"), wt.column("frame")
    train_rows = np.flatnonzero(split == schema.SPLIT_TRAIN)
    first_in = first_input_frame(wt, frame_current_end, frame_offsets)
    keep_train, keep_val, per = [], [], []
    for r in np.unique(rec[train_rows]).tolist():
        rows = train_rows[rec[train_rows] == r]
        rows = rows[np.argsort(frame[rows], kind="stable")]
        n_val = int(math.ceil(fraction * len(rows))) if fraction > 0 else 0
        if n_val == 0:
            keep_train.append(rows)
            per.append({"recording": r, "train": len(rows), "val": 0, "dropped": 0})
            continue
        val = rows[len(rows) - n_val:]
        boundary = int(first_in[val].min())
        train = rows[: len(rows) - n_val]
        train = train[frame[train] < boundary]
        keep_train.append(train)
        keep_val.append(val)
        per.append({"recording": r, "train": len(train), "val": len(val), "dropped": len(rows) - n_val - len(train),
                    "val_first_frame": int(frame[val].min()), "val_first_input_frame": boundary,
                    "train_last_frame": int(frame[train].max()) if len(train) else None})
    tr = np.sort(np.concatenate(keep_train)) if keep_train else np.zeros(0, np.int64)
    va = np.sort(np.concatenate(keep_val)) if keep_val else np.zeros(0, np.int64)
    info = {
        "method": "tail-holdout per recording",
        "fraction": fraction,
        "note": ("validation = the last labelled frames of each recording's TRAINING block (never the test "
                 "split); training windows within one window span (clip frames or current history) before "
                 "the first frame a validation window reads are dropped, so no input is shared"),
        "train_windows": int(len(tr)), "val_windows": int(len(va)), "recordings": per,
    }
    return tr, va, info


def subset(wt: WindowTable, rows: np.ndarray) -> WindowTable:
    """Return the window table restricted to ``rows``."""
    return WindowTable(table=wt.table[rows], columns=wt.columns, params=dict(wt.params))


# ---- the loop -------------------------------------------------------------------------------


def _prepare_run_dir(cfg: TrainConfig, ctx: dd.DistContext) -> None:
    out = cfg.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise FmModelError("expected a folder for the run, got a file", out)
    if os.path.isdir(out) and os.listdir(out):
        raise FmModelError("expected a new or empty run folder, got one with files (pass --resume to continue "
                           "it, or choose another --out)", out)
    if ctx.is_main:
        os.makedirs(out, exist_ok=True)


def _target(batch: dict[str, torch.Tensor], task: str, device: torch.device) -> torch.Tensor:
    t = batch["mask"] if task == "seg" else batch["label"]
    return t.to(device, non_blocking=True).long()


def timed_batches(loader: DataLoader) -> Iterator[tuple[Any, float]]:
    """Yield (batch, seconds spent blocked waiting for it) from ``loader``."""
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _score(task: str, val: dict[str, Any] | None) -> float | None:
    if val is None:
        return None
    if task == "seg":
        p = val["metrics"]["overall"].get("pixel", {})
        if p.get("miou") is not None:
            return float(p["miou"])
    c = val["metrics"]["overall"]["class"]
    if c.get("positives") and c.get("f1") is not None:
        return float(c["f1"])
    return -float(val["loss"])


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """Return (optimizer, step scheduler) of the protocol: Adam, lr x gamma every ``lr_step_epoch``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epoch, gamma=cfg.lr_gamma)


def _csv_append(path: str, row: dict[str, Any]) -> None:
    new = not os.path.exists(path)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})


def _summary_writer(path: str) -> Any:
    from torch.utils.tensorboard import SummaryWriter  # slow import; rank 0 only

    return SummaryWriter(log_dir=path)


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Run training as ``cfg`` says into the new run folder ``cfg.out``; return the :class:`TrainResult`.

    Under ``torchrun`` every process calls this; rank 0 writes the run folder. Raises
    FmModelError for unusable options, stores or run folders (an existing, non-empty one included).
    """
    ctx = dd.setup(cfg.device)
    try:
        _prepare_run_dir(cfg, ctx)
        dd.barrier(ctx)
        return _train(ctx, cfg, False, progress)
    finally:
        dd.teardown(ctx)


def resume_run(run_dir: str, epochs: int | None = None, progress: bool = True) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last.pt`` (model, optimizer, scheduler, epoch, RNG).

    ``epochs`` extends (or shortens) the planned number of epochs; everything else comes from the
    run's ``config.json``. A run that already finished its epochs returns at once.
    """
    if not os.path.exists(os.path.join(run_dir, LAST)):
        raise FmModelError(f"expected a run folder with {LAST} to resume, got none", run_dir)
    cfg = TrainConfig.load(os.path.join(run_dir, CONFIG_JSON))
    cfg.out = run_dir
    if epochs is not None:
        if epochs < 1:
            raise FmModelError(f"expected --epochs >= 1, got {epochs}")
        cfg.epochs = epochs
    ctx = dd.setup(cfg.device)
    try:
        return _train(ctx, cfg, True, progress)
    finally:
        dd.teardown(ctx)


def _train(ctx: dd.DistContext, cfg: TrainConfig, resume: bool, progress: bool) -> TrainResult:
    device = ctx.device
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = open_store(cfg.store)
    meta = read_meta(root, cfg.store)
    wt = windows_for(cfg.store, root, cfg.windows, cfg.window_params(), ctx)
    frame_offsets, _ = read_offsets(root)
    fce = np.asarray(root[schema.FRAME_CURRENT_END][:], np.int64)
    tr_rows, va_rows, vinfo = holdout_split(wt, fce, frame_offsets, cfg.val_fraction)
    if len(tr_rows) == 0:
        raise FmModelError(f"expected training windows after holding out validation, got none ({vinfo['recordings']});"
                           " lower --val-fraction or --current-seconds, or use a longer training split", cfg.store)
    frames = int(wt.clip.shape[1])
    rows = int(wt.params.get("current_rows", cfg.window.current_rows))
    # a stored table's own parameters are what the model learns from: record them (evaluate
    # and predict rebuild the same windows from the checkpoint)
    for key in ("frame_step", "current_seconds", "policy", "stride"):
        if key in wt.params:
            setattr(cfg.window, key, type(getattr(cfg.window, key))(wt.params[key]))
    cfg.window.frames, cfg.window.current_rows = frames, rows
    orientation = "reference" if cfg.preprocessing == "reference" else "true"

    video_dtype = "uint8" if cfg.preprocessing == "reference" and device.type == "cuda" else "float32"
    train_ds = make_dataset(cfg.store, subset(wt, tr_rows), cfg.preprocessing, augment=cfg.hflip, seed=cfg.seed,
                            modality=cfg.modality, task=cfg.task, video_dtype=video_dtype)
    val_ds = (make_dataset(cfg.store, subset(wt, va_rows), cfg.preprocessing, augment=False, seed=cfg.seed,
                           modality=cfg.modality, task=cfg.task, video_dtype=video_dtype) if len(va_rows) else None)
    h, w = train_ds.item_frame_shape  # (W, H) under the reference orientation
    model_overrides = {k: v for k, v in cfg.model.items() if k != "size"}
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts them)
    model = build_model(cfg.variant, size=cfg.model.get("size", "reference"), frames=frames, image_size=(h, w),
                        current_rows=rows, **model_overrides)
    cfg.validation = vinfo
    cfg.runtime = {"world_size": ctx.world_size, "device": str(device.type), "precision": precision,
                   "store_frames": meta.n_frames, "windows_total": len(wt),
                   "window_params_used": {k: v for k, v in wt.params.items() if isinstance(v, (int, float, str))},
                   "orientation": orientation, "model_config": dd.unwrap(model).config.to_dict()}
    if ctx.is_main:
        cfg.save(os.path.join(cfg.out, CONFIG_JSON))
    loader = make_loader(train_ds, cfg.batch_size, cfg.workers, shuffle=not cfg.balanced, balanced=cfg.balanced,
                         seed=cfg.seed, num_replicas=ctx.world_size, rank=ctx.rank,
                         pin_memory=device.type == "cuda")
    val_loader = (make_eval_loader(val_ds, cfg.eval_batch_size or cfg.batch_size, cfg.workers, ctx)
                  if val_ds is not None else None)

    model.to(device)
    opt, sched = build_optimizer(model, cfg)
    start_epoch, best_score, history = 0, None, []
    last_path, best_path = os.path.join(cfg.out, LAST), os.path.join(cfg.out, BEST)
    if resume:
        state = ckpt_io.load_checkpoint(last_path, map_location="cpu")
        dd.unwrap(model).load_state_dict(state.state_dict)
        opt.load_state_dict(state.extra["optimizer"])
        sched.load_state_dict(state.extra["scheduler"])
        start_epoch = int(state.extra["epoch"])
        best_score = state.extra.get("best_score")
        history = list(state.extra.get("history", []))
        _set_rng_state(state.extra["rng"], device)
        dd.log(ctx, f"resuming {cfg.out} after epoch {start_epoch}")
    net: nn.Module = model
    if cfg.compile:
        net = torch.compile(net)
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False)
    loss_fn = nn.CrossEntropyLoss()
    writer = _summary_writer(os.path.join(cfg.out, TB_DIR)) if ctx.is_main else None
    described = train_ds.describe()
    if described["orientation"] != orientation:
        raise FmModelError(f"expected the dataset to deliver {orientation!r} orientation, got {described['orientation']!r}")
    preprocessing = {"name": cfg.preprocessing, "normalization": described.get("normalization")}
    info_base = {"task": cfg.task, "modality": cfg.modality, "window": cfg.window_params(),
                 "store": cfg.store, "seed": cfg.seed}
    steps_per_epoch = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
    global_step = start_epoch * steps_per_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t_epoch = time.perf_counter()
            set_loader_epoch(loader, epoch)
            net.train()
            loss_sum, seen, wait = 0.0, 0, 0.0
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
            t0 = time.perf_counter()
            for step, (batch, waited) in enumerate(timed_batches(loader)):
                if step >= steps_per_epoch:
                    break
                wait += waited
                inputs = model_inputs(net, batch, device)
                target = _target(batch, cfg.task, device)
                with autocast(device, precision):
                    logits = net(**inputs)
                    loss = loss_fn(logits.float(), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n = int(target.shape[0])
                loss_sum += float(loss.detach()) * n
                seen += n
                global_step += 1
                rate = seen * ctx.world_size / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", samples_s=f"{rate:,.0f}")
                bar.update(1)
                if writer is not None and global_step % 10 == 0:
                    writer.add_scalar("train/loss_step", float(loss.detach()), global_step)
            bar.close()
            elapsed = time.perf_counter() - t0
            tot_loss, tot_seen, tot_wait, tot_time = dd.all_reduce_sum(ctx, [loss_sum, seen, wait, elapsed])
            lr = opt.param_groups[0]["lr"]
            sched.step()
            val = None
            if val_loader is not None:
                # the plain module: DDP's forward is for training steps; every rank holds the same weights
                val = run_inference(model, val_loader, ctx, task=cfg.task, precision=precision,
                                    recordings=meta.n_recordings, loss_fn=loss_fn, progress=False)
            score = _score(cfg.task, val)
            improved = val is None or best_score is None or (score is not None and score > best_score)
            if improved:
                best_score = score
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": tot_loss / max(tot_seen, 1),
                   "train_windows": int(tot_seen), "samples_per_s": tot_seen / max(tot_time / ctx.world_size, 1e-9),
                   "loader_wait_share": tot_wait / max(tot_time, 1e-9), "score": score, "best": int(improved),
                   "seconds": time.perf_counter() - t_epoch}
            if val is not None:
                c = val["metrics"]["overall"]["class"]
                row.update({"val_loss": val["loss"], "val_windows": c.get("n"), "val_accuracy": c.get("accuracy"),
                            "val_f1": c.get("f1"), "val_auroc": c.get("auroc"),
                            "val_miou": val["metrics"]["overall"].get("pixel", {}).get("miou")})
            history.append(row)
            if ctx.is_main:
                info = {**info_base, "epoch": epoch + 1, "score": score}
                extra = {"epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "rng": _rng_state(device), "best_score": best_score, "history": history,
                         "config": cfg.to_dict()}
                if improved:
                    ckpt_io.save_checkpoint(best_path, model, orientation=orientation, preprocessing=preprocessing,
                                            info=info)
                ckpt_io.save_checkpoint(last_path, model, orientation=orientation, preprocessing=preprocessing,
                                        extra=extra, info=info)
                _csv_append(os.path.join(cfg.out, METRICS_CSV), row)
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "epoch":
                        writer.add_scalar(f"epoch/{k}", v, epoch + 1)
                writer.flush()
                dd.log(ctx, _epoch_line(row))
            dd.barrier(ctx)
    finally:
        if writer is not None:
            writer.close()
    return TrainResult(run_dir=cfg.out, last=last_path, best=best_path, history=history, model=model, config=cfg)


def _epoch_line(row: dict[str, Any]) -> str:
    def f(k: str, fmt: str = ".4f") -> str:
        v = row.get(k)
        return "n/a" if v is None else format(v, fmt)

    return (f"epoch {row['epoch']}: loss {f('train_loss')} | {f('samples_per_s', ',.0f')} samples/s | "
            f"loader wait {f('loader_wait_share', '.0%')} | val loss {f('val_loss')} f1 {f('val_f1')} "
            f"auroc {f('val_auroc')} miou {f('val_miou')}{' *' if row.get('best') else ''}")
