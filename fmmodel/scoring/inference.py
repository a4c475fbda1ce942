"""Running a model over windows: its inputs, the scoring loop, and loading for it.

:func:`run_inference` is the one loop that scores windows: ``evaluate``, ``predict`` and the
trainer's validation all call it. :func:`prepare` loads what ``evaluate`` and ``predict`` need
(model, windows, dataset, loader) into an :class:`Inference`. Under ``torchrun`` every rank
scores its own unpadded share of the windows (:class:`fmmodel.runtime.distributed.ShardSampler`) and
the scores are gathered.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler
from tqdm import tqdm

from fmdata.errors import FmDataError
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.window_table import WindowParams, WindowTable
from fmmodel.data.dataset import FmfWindowDataset
from fmmodel.data.paths import BatchRequest, BatchSource, open_batches
from fmmodel.data.preprocessing import PREPROCESSING_REFERENCE, input_format
from fmmodel.data.windows import (
    check_frames_fit,
    check_windows_fit,
    checkpoint_window_params,
    make_dataset,
    read_per_second_samples,
    select_split,
    window_table_for,
)
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import ModelMeta, load_model
from fmmodel.model.export import ExportedModel, export_kind, load_export
from fmmodel.model.registry import model_info
from fmmodel.model.user_models import user_code
from fmmodel.protocol import EVAL_PROTOCOLS
from fmmodel.runtime import distributed as dd
from fmmodel.runtime.precision import autocast, resolve_precision
from fmmodel.scoring.metrics import MetricSet, class_curves, probabilities, window_probability_from_mask


def model_inputs(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Return the forward() keyword arguments the model reads, moved to ``device``."""
    inputs = model_info(model).inputs
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
def run_inference(model: nn.Module, loader: BatchSource, ctx: dd.DistContext, *, task: str, precision: str,
                  recordings: int, loss_fn: Callable | None = None, progress: bool = False,
                  keep: Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None], None] | None = None,
                  desc: str = "evaluate", pixel_rule: str = "toolkit") -> dict[str, Any]:
    """Run ``model`` over ``loader`` and return the scores, identical on every rank.

    Returns {"metrics": MetricSet.compute(), "loss": mean loss or None, "windows": n, "seconds",
    "model_seconds", "fps", "model_fps", "records": per-window arrays, "class_curves",
    "pixel_curves"}. ``keep(batch, window_prob, pixel_prob)`` sees every batch (prediction writer).
    ``pixel_rule`` is the mIoU rule of :func:`fmmodel.scoring.metrics.pixel_scores_from_confusion`.
    """
    was_training = model.training
    model.eval()
    device = ctx.device
    ms = MetricSet(recordings=recordings, pixel=task == "seg", device=device, pixel_rule=pixel_rule)
    loss_sum, n_local, model_s = 0.0, 0, 0.0
    bar = tqdm(total=len(loader), desc=desc, unit="batch", disable=not (progress and ctx.is_main), leave=False,
               dynamic_ncols=True)
    info = model_info(model)  # a user's model runs its own code: a failure names it and the batch
    t0 = time.perf_counter()
    for i, batch in enumerate(loader):
        inputs = model_inputs(model, batch, device)
        tm = time.perf_counter()
        with autocast(device, precision):
            with user_code(info.variant, f"{desc} batch {i + 1}") if info.source else contextlib.nullcontext():
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


def load_for_inference(checkpoint: str, fmt: str, variant: str | None, device: torch.device,
                       trusted: Sequence[str] = (), precision: str | None = None) -> tuple[nn.Module, ModelMeta]:
    """Return (model on ``device`` in eval mode, ModelMeta) from a toolkit or reference checkpoint
    (:func:`fmmodel.model.checkpoint.load_model`, which checks ``fmt``) or an exported model (told
    apart by content: :func:`fmmodel.model.export.load_export`; it records its model, so ``fmt``
    must be "auto" and ``variant`` None); ``trusted`` names users' models whose factory may be
    imported (``--model``), or an AOTInductor export that may be loaded. An export computes in fp32:
    another ``precision`` asked for is refused before it is loaded."""
    if not os.path.exists(checkpoint):  # one message for a missing file, .npz fixtures included
        raise FmModelError("expected a checkpoint file, got nothing there", checkpoint)
    kind = export_kind(checkpoint)
    if kind is not None:
        if fmt != "auto" or variant is not None:
            what = f"--format {fmt}" if fmt != "auto" else f"--variant {variant}"
            raise FmModelError(f"expected neither --format nor --variant with an exported model ({kind}: it records "
                               f"its model), got {what}", checkpoint, field="fmt" if fmt != "auto" else "variant")
        if precision not in (None, "fp32"):
            raise FmModelError(f"expected --precision fp32 for an exported model (it computes as it was exported), "
                               f"got {precision}", checkpoint, field="precision")
        return load_export(checkpoint, device=device, trusted=trusted)
    return load_model(checkpoint, format=fmt, variant=variant, device=device, trusted=trusted)


def inference_precision(model: nn.Module, precision: str | None, device: torch.device) -> str:
    """The precision ``model`` computes in: fp32 for an exported model, else ``precision`` resolved
    for ``device`` (:func:`fmmodel.runtime.precision.resolve_precision`)."""
    return "fp32" if isinstance(model, ExportedModel) else resolve_precision(precision, device)


@dataclass
class Inference:
    """What scoring a checkpoint on a store needs, loaded by :func:`prepare`.

    ``store`` is the open store (its metadata, recordings, arrays). ``params`` describes the
    windows (the stored table's parameters, or those built from the checkpoint); ``table`` holds
    only the chosen split's windows, in table order. ``loader`` gives this rank's windows in order,
    on the data path ``data`` describes (:mod:`fmmodel.data.paths`).
    """

    model: nn.Module
    meta: ModelMeta
    task: str
    modality: str
    table: WindowTable
    dataset: FmfWindowDataset
    loader: BatchSource
    params: dict[str, Any]
    store: StoreHandle
    data: dict[str, Any]
    protocol: str = "toolkit"


def prepare(store: StoreLike, checkpoint: str, *, fmt: str, variant: str | None, split: str, windows: str | None,
            ctx: dd.DistContext, batch_size: int, workers: int, data: str = "auto",
            resident_budget: int | None = None, progress: bool = False, protocol: str | None = "toolkit",
            sampler: Callable[[int, dd.DistContext], Sampler] | None = None,
            trusted: Sequence[str] = (), precision: str | None = None) -> Inference:
    """Load the model, windows, dataset and batch source that an evaluation or prediction of
    ``store`` (an open store, or its location: opened here, after the model) needs (``progress``:
    bars while frame labels are computed first, when the store lacks them, and while a resident
    load runs).

    ``protocol`` (``fmmodel.protocol.EVAL_PROTOCOLS``) decides the samples: "toolkit" one per
    window of the split; "reference" the authors' for current-only models, one per distinct test
    second (:func:`fmmodel.data.windows.per_second_samples`); None: "reference" for a checkpoint read in
    the authors' format, else "toolkit". The resolved name is ``Inference.protocol``.
    ``sampler(n, ctx)`` gives this rank's share of the ``n`` windows (default: every
    ``world_size``-th window, :class:`fmmodel.runtime.distributed.ShardSampler`). ``data``,
    ``resident_budget`` and ``workers`` choose the data path (:func:`fmmodel.data.paths.open_batches`).
    ``trusted`` names users' models whose factory the checkpoint may import; ``precision`` is
    checked against the model (:func:`load_for_inference`).
    """
    if protocol is not None and protocol not in EVAL_PROTOCOLS:
        raise FmModelError(f"expected a protocol in {EVAL_PROTOCOLS}, got {protocol!r}", field="protocol")
    model, meta = load_for_inference(checkpoint, fmt, variant, ctx.device, trusted, precision)
    try:
        store = open_store(store)
    except FmDataError as exc:
        raise FmModelError(str(exc)) from None
    task, modality = meta.description.task, meta.description.modality
    check_frames_fit(meta, store.meta.height, store.meta.width, checkpoint, str(store))
    params: WindowParams = checkpoint_window_params(meta)
    table, store = window_table_for(store, windows, params, ctx, progress=progress)
    check_windows_fit(table, meta.description, f"{store} (windows {windows or 'built from the checkpoint'})")
    rows = select_split(table, split)
    if not len(rows):
        raise FmModelError(f"expected windows in split {split!r}, got none", str(store))
    sub = table.subset(rows)
    if protocol is None:
        protocol = "reference" if meta.info.get("format") == "reference" else "toolkit"
    if protocol == "reference" and modality == "current":  # the authors' samples, whatever the table's stride or policy
        sub = read_per_second_samples(store, WindowParams.from_dict(table.params), split)
    fmt_in = input_format(meta.preprocessing.get("name", PREPROCESSING_REFERENCE), ctx.device)
    if fmt_in.orientation != meta.orientation:
        raise FmModelError(f"expected inputs in the checkpoint's orientation {meta.orientation!r}, but "
                           f"preprocessing {fmt_in.preprocessing!r} delivers {fmt_in.orientation!r}", checkpoint)
    ds = make_dataset(store, sub, fmt_in, augment=False, seed=0, modality=modality, task=task)
    share = (sampler or (lambda n, c: dd.ShardSampler(n, c.rank, c.world_size)))(len(ds), ctx)
    (loader,), choice = open_batches([BatchRequest(ds, batch_size, share, evaluation=True)], data=data,
                                     budget=resident_budget, workers=workers, ctx=ctx, progress=progress)
    return Inference(model=model, meta=meta, task=task, modality=modality, table=sub, dataset=ds, loader=loader,
                     params=dict(table.params) if windows else params.to_dict(), store=store,
                     data=choice.to_dict(), protocol=protocol)
