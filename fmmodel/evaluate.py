"""``fmmodel evaluate``: score a checkpoint on a store's test split (class and pixel level).

Loads a toolkit checkpoint (or the authors' state_dict with ``format="reference"``), builds the
windows its metadata names (or reads a stored table), runs the model over the chosen split and
reports, overall and per recording, the metrics of :mod:`fmmodel.metrics` plus throughput (FPS =
windows / wall time of the whole loop, data loading included, as the reference test script
measures it; ``model_fps`` counts model time only). Under ``torchrun`` every rank scores its own
unpadded share of the windows (:class:`fmmodel.distributed.ShardSampler`) and rank 0 writes the
report. The inference loop here is also the trainer's validation loop.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fmdata import schema
from fmdata.errors import FmDataError
from fmdata.store import open_store, read_meta, read_recordings
from fmdata.window_table import WindowTable, read_window_table
from fmmodel import distributed as dd
from fmmodel.errors import FmModelError
from fmmodel.metrics import MetricSet, class_curves, probabilities, summary_line, window_probability_from_mask

SPLITS = ("test", "train", "all")
# The reference's clip shapes by number of frames (fmf-benchmark.md §3): 10 frames step 18, 8 step 19.
REFERENCE_STEP = {10: 18, 8: 19}


# ---- small shared pieces (the trainer imports these) ----------------------------------------


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """Return "bf16" or "fp32": the default is bf16 on CUDA and fp32 on the CPU."""
    if precision is None:
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("bf16", "fp32"):
        raise FmModelError(f"expected --precision bf16 or fp32, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Return the autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def windows_for(store: str, root: Any, name: str | None, params: dict[str, Any],
                ctx: dd.DistContext | None = None) -> WindowTable:
    """Return the stored table ``name``, or (name None) a table built now from ``params``.

    Building needs frame labels; when the store lacks them, rank 0 computes them first (as
    ``fmdata labels`` would, writing the derived arrays into the store).
    """
    from fmdata import labels as fm_labels
    from fmdata import windows as fm_windows

    try:
        if name:
            return read_window_table(root, name)
        ctx = ctx or dd.DistContext()
        if not fm_labels.labels_up_to_date(root):
            if ctx.is_main:
                dd.log(ctx, f"{store}: computing frame labels first (fmdata labels)")
                fm_labels.ensure_labels(store)
            dd.barrier(ctx)
            root = open_store(store)
        keys = ("frames", "frame_step", "current_seconds", "current_rows", "stride", "policy")
        wp = fm_windows.WindowParams(**{k: params[k] for k in keys if k in params})
        return fm_windows.build_window_table(fm_windows.load_index(root), wp)
    except FmDataError as exc:
        raise FmModelError(str(exc), store) from None


def make_dataset(store: str, table: WindowTable, preprocessing: str, *, augment: bool, seed: int,
                 modality: str, task: str, video_dtype: str = "float32") -> Any:
    """Return the lazy dataset (fmmodel.dataset.FmfWindowDataset) over ``table``'s windows."""
    from fmmodel.dataset import FmfWindowDataset

    target = "seg" if task in ("seg", "both") else "cls"
    return FmfWindowDataset(store, table, preprocessing=preprocessing, augment=augment, seed=seed,
                            modality=modality, target=target, video_dtype=video_dtype)


def make_eval_loader(ds: Any, batch_size: int, workers: int, ctx: dd.DistContext) -> DataLoader:
    """Return an evaluation loader: in order, this rank's unpadded share of ``ds``."""
    from fmmodel.sampling import make_loader

    sampler = dd.ShardSampler(len(ds), ctx.rank, ctx.world_size)
    return make_loader(ds, batch_size, workers, sampler=sampler, pin_memory=ctx.device.type == "cuda",
                       persistent_workers=False)


def model_inputs(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Return the forward() keyword arguments the model reads, moved to ``device``."""
    inputs = dd.unwrap(model).inputs
    out = {}
    if "video" in inputs:
        clip = batch["clip"].to(device, non_blocking=True)
        out["video"] = clip.float() if clip.dtype == torch.uint8 else clip
    if "current" in inputs:
        out["current"] = batch["current"].to(device, non_blocking=True)
    return out


def _outputs(logits: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (window probability (B,), pixel probabilities (B, H, W) or None)."""
    p = probabilities(logits)
    if task == "seg":
        return window_probability_from_mask(p), p
    return p, None


@torch.no_grad()
def run_inference(model: nn.Module, loader: DataLoader, ctx: dd.DistContext, *, task: str, precision: str,
                  recordings: int, loss_fn: Callable | None = None, progress: bool = False,
                  keep: Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None], None] | None = None,
                  desc: str = "evaluate") -> dict[str, Any]:
    """Run ``model`` over ``loader`` and return the scores, identical on every rank.

    Returns {"metrics": MetricSet.compute(), "loss": mean loss or None, "windows": n, "seconds",
    "model_seconds", "fps", "model_fps", "records": per-window arrays, "class_curves",
    "pixel_curves"}. ``keep(batch, window_prob, pixel_prob)`` sees every batch (prediction writer).
    """
    was_training = model.training
    model.eval()
    device = ctx.device
    ms = MetricSet(recordings=recordings, pixel=task == "seg", device=device)
    loss_sum, n_local, model_s = 0.0, 0, 0.0
    bar = tqdm(total=len(loader), desc=desc, unit="batch", disable=not (progress and ctx.is_main), leave=False,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    for batch in loader:
        inputs = model_inputs(model, batch, device)
        tm = time.perf_counter()
        with autocast(device, precision):
            logits = model(**inputs)
        logits = logits.float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        model_s += time.perf_counter() - tm
        n = int(batch["label"].shape[0])
        if loss_fn is not None:
            target = batch["mask"] if task == "seg" else batch["label"]
            loss_sum += float(loss_fn(logits, target.to(device).long())) * n
        prob, pixel_prob = _outputs(logits, task)
        mask = batch["mask"].to(device) if task == "seg" else None
        ms.update(batch["frame"], batch["recording"], batch["label"], prob, mask, pixel_prob)
        if keep is not None:
            keep(batch, prob, pixel_prob)
        n_local += n
        bar.update(1)
        bar.set_postfix(windows_s=f"{n_local * ctx.world_size / max(time.perf_counter() - t0, 1e-9):,.0f}")
    bar.close()
    wall = time.perf_counter() - t0
    gather = (lambda a: dd.all_gather_array(ctx, a)) if ctx.distributed else None
    metrics = ms.compute(gather=gather, sync_pixels=ctx.distributed)
    loss_sum, n_total, wall_max_sum, model_s_sum = dd.all_reduce_sum(ctx, [loss_sum, n_local, wall, model_s])
    records = ms.records(gather)
    pix_curves = ms.pixel_curves()
    if was_training:
        model.train()
    wall_avg = wall_max_sum / ctx.world_size
    return {
        "metrics": metrics,
        "loss": loss_sum / n_total if loss_fn is not None and n_total else None,
        "windows": int(n_total),
        "seconds": wall_avg,
        "model_seconds": model_s_sum / ctx.world_size,
        "fps": n_total / wall_avg if wall_avg > 0 else None,
        "model_fps": n_total / (model_s_sum / ctx.world_size) if model_s_sum > 0 else None,
        "records": records,
        "class_curves": class_curves(torch.from_numpy(records["prob"]), torch.from_numpy(records["target"])),
        "pixel_curves": pix_curves,
    }


# ---- the command ----------------------------------------------------------------------------


def default_window_params(meta: Any) -> dict[str, Any]:
    """Return the window parameters a checkpoint's model expects (from its info, else the reference's)."""
    w = dict(meta.info.get("window", {})) if isinstance(meta.info, dict) else {}
    cfg = meta.config
    w.setdefault("frames", cfg.frames)
    w.setdefault("frame_step", REFERENCE_STEP.get(cfg.frames, 18))
    w.setdefault("current_rows", cfg.current_rows)
    w.setdefault("current_seconds", 120.0)
    w.setdefault("policy", "reference")
    w["stride"] = 1
    return w


def check_windows_fit(table: WindowTable, model_cfg: Any, where: str) -> None:
    """Raise FmModelError when a window table's clip length or current rows differ from the model's."""
    frames = int(table.clip.shape[1])
    rows = int(table.params.get("current_rows", model_cfg.current_rows))
    if frames != model_cfg.frames or rows != model_cfg.current_rows:
        raise FmModelError(f"expected windows of {model_cfg.frames} frames and {model_cfg.current_rows} current rows "
                           f"(the model's), got {frames} frames and {rows} rows", where)


def select_split(table: WindowTable, split: str) -> np.ndarray:
    """Return the table rows of ``split`` ("test", "train" or "all": both splits)."""
    s = table.column("split")
    if split == "test":
        return np.flatnonzero(s == schema.SPLIT_TEST)
    if split == "train":
        return np.flatnonzero(s == schema.SPLIT_TRAIN)
    if split == "all":
        return np.flatnonzero(s != schema.SPLIT_NONE)
    raise FmModelError(f"expected --split in {SPLITS}, got {split!r}")


def load_for_inference(checkpoint: str, fmt: str, variant: str | None, device: torch.device) -> tuple[nn.Module, Any]:
    """Return (model on ``device`` in eval mode, ModelMeta) from a toolkit or reference checkpoint."""
    from fmmodel.checkpoint import load_model

    if fmt not in ("auto", "toolkit", "reference"):
        raise FmModelError(f"expected --format toolkit or reference, got {fmt!r}")
    if not os.path.exists(checkpoint):
        raise FmModelError("expected a checkpoint file, got nothing there", checkpoint)
    model, meta = load_model(checkpoint, format=fmt, variant=variant, device="cpu")
    return model.to(device).eval(), meta


def prepare(store: str, checkpoint: str, *, fmt: str, variant: str | None, split: str, windows: str | None,
            ctx: dd.DistContext, batch_size: int, workers: int) -> dict[str, Any]:
    """Load the model, windows and loader an evaluation or prediction needs; return them in a dict."""
    model, meta = load_for_inference(checkpoint, fmt, variant, ctx.device)
    try:
        root = open_store(store)
        smeta = read_meta(root, store)
    except FmDataError as exc:
        raise FmModelError(str(exc)) from None
    task = dd.unwrap(model).task
    modality = {"vicu_cls": "both", "vicu_seg": "both", "video_cls": "video", "current_cls": "current"}[meta.variant]
    params = default_window_params(meta)
    table = windows_for(store, root, windows, params, ctx)
    check_windows_fit(table, meta.config, f"{store} (windows {windows or 'built from the checkpoint'})")
    rows = select_split(table, split)
    if not len(rows):
        raise FmModelError(f"expected windows in split {split!r}, got none", store)
    sub = WindowTable(table.table[rows], table.columns, dict(table.params))
    prep = meta.preprocessing.get("name", "reference")
    video_dtype = "uint8" if prep == "reference" and ctx.device.type == "cuda" else "float32"
    ds = make_dataset(store, sub, prep, augment=False, seed=0, modality=modality, task=task, video_dtype=video_dtype)
    if ds.orientation != meta.orientation:
        raise FmModelError(f"expected inputs in the checkpoint's orientation {meta.orientation!r}, but "
                           f"preprocessing {prep!r} delivers {ds.orientation!r}", checkpoint)
    loader = make_eval_loader(ds, batch_size, workers, ctx)
    names = [r.name for r in read_recordings(root)]
    return {"model": model, "meta": meta, "task": task, "modality": modality, "table": sub, "dataset": ds,
            "loader": loader, "params": dict(table.params) if windows else params, "store_meta": smeta,
            "recording_names": names, "root": root}


def _examples(p: dict[str, Any], records: dict[str, np.ndarray], k: int, device: torch.device,
              precision: str) -> list:
    """Pick up to ``k`` telling windows (confident hits, misses, false alarms) and render them."""
    from fmmodel.report import Example

    if k <= 0 or not len(records["key"]):
        return []
    prob, target, keys = records["prob"], records["target"], records["key"]
    pred = prob >= 0.5
    groups = [np.flatnonzero(pred & (target == 1)), np.flatnonzero(~pred & (target == 1)),
              np.flatnonzero(pred & (target == 0)), np.flatnonzero(~pred & (target == 0))]
    chosen: list[int] = []
    for g in groups:  # round-robin over the groups, most confident first within each
        g = g[np.argsort(-np.abs(prob[g] - 0.5))]
        chosen.extend(g[: max(1, k // 4)].tolist())
    chosen = chosen[:k]
    frames = keys[chosen]
    ds = p["dataset"]
    pos = {int(f): i for i, f in enumerate(ds._frame.tolist())} if hasattr(ds, "_frame") else {}
    idx = [pos[int(f)] for f in frames if int(f) in pos]
    pred_masks: list[np.ndarray | None] = [None] * len(idx)
    if p["task"] == "seg" and idx:
        batch = ds.__getitems__(idx).tensors
        model = p["model"]
        with torch.no_grad(), autocast(device, precision):
            logits = model(**model_inputs(model, batch, device)).float()
        masks = (probabilities(logits) >= 0.5).to(torch.uint8).cpu().numpy()
        if ds.orientation == "reference":
            masks = np.swapaxes(masks, 1, 2)  # back to the store's (H, W)
        pred_masks = list(masks)
    root = p["root"]
    out = []
    for j, i in enumerate(idx):
        f = int(ds._frame[i])
        out.append(Example(image=np.asarray(root[schema.VIDEO][f]), true_mask=np.asarray(root[schema.MASK][f]),
                           pred_mask=pred_masks[j], prob=float(prob[chosen[j]]), label=int(target[chosen[j]]),
                           recording=int(ds._recording[i]), frame=f))
    return out


def evaluate(store: str, checkpoint: str, *, fmt: str = "auto", variant: str | None = None, split: str = "test",
             windows: str | None = None, out: str | None = None, batch_size: int = 64, workers: int = 2,
             device: str = "auto", precision: str | None = None, examples: int = 8,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``store``; return the report dict (and write it under ``out``).

    ``fmt``: "auto", "toolkit" or "reference" (the authors' state_dict; ``variant`` names it when
    its keys are ambiguous). The report holds metrics overall and per recording, FPS, what was
    evaluated, and (with ``out``) the paths of report.json and the pictures.
    """
    ctx = dd.setup(device)
    try:
        p = prepare(store, checkpoint, fmt=fmt, variant=variant, split=split, windows=windows, ctx=ctx,
                    batch_size=batch_size, workers=workers)
        prec = resolve_precision(precision, ctx.device)
        res = run_inference(p["model"], p["loader"], ctx, task=p["task"], precision=prec,
                            recordings=p["store_meta"].n_recordings, progress=progress)
        names = p["recording_names"]
        metrics = res["metrics"]
        for rid, entry in metrics["recordings"].items():
            entry["name"] = names[int(rid)] if int(rid) < len(names) else str(rid)
        meta = p["meta"]
        report = {
            "store": store, "checkpoint": os.fspath(checkpoint), "format": meta.info.get("format", "toolkit"),
            "variant": meta.variant, "task": p["task"], "modality": p["modality"], "split": split,
            "orientation": meta.orientation, "preprocessing": meta.preprocessing.get("name"),
            "windows": {"name": windows, "count": res["windows"],
                        "params": {k: v for k, v in p["params"].items() if isinstance(v, (int, float, str))}},
            "device": str(ctx.device), "world_size": ctx.world_size, "precision": prec,
            "fps": res["fps"], "model_fps": res["model_fps"], "seconds": res["seconds"],
            "metrics": metrics,
            "conventions": {
                "probabilities": "softmax of the two logits; threshold 0.5",
                "class_score_of_seg_models": "max pixel probability of the labelled frame",
                "auroc": "micro-averaged over all windows (class) / all pixels (pixel, binned)",
                "miou": "dataset-wide 2x2 confusion matrix, mean over both classes (nan-mean)",
                "fdr": "FP/(FP+TN)", "mdr": "FN/(TP+FN)",
                "fps": "windows / wall time of the whole loop incl. data loading",
            },
        }
        if out and ctx.is_main:
            from fmmodel.report import write_report

            ex = _examples(p, res["records"], examples, ctx.device, prec)
            report["files"] = write_report(out, report, res["class_curves"], res["pixel_curves"], ex)
        report["summary"] = summary_line(metrics["overall"])
        dd.barrier(ctx)
        return report
    finally:
        dd.teardown(ctx)
