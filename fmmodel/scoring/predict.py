"""``fmmodel predict``: per-window predictions of a checkpoint, written as a Zarr v3 store.

The output is one Zarr v3 group with one row per window, in window-table order (labelled frame
ascending), aligned to the source store by the ``frame`` column (the global index of the
window's labelled frame):

    frame      (window,)            int64    labelled frame, global index into the source store
    recording  (window,)            int32    recording id
    split      (window,)            int8     split code of the labelled frame (fmdata.store.schema)
    label      (window,)            uint8    true class label (1: any mask pixel abnormal)
    prob       (window, class)      float32  softmax probabilities [normal, abnormal]
    pred       (window,)            uint8    predicted class (prob[:, 1] > 0.5, fmmodel.scoring.metrics.predicted_abnormal)
    mask_pred  (window, y, x)       uint8    segmentation models only: predicted mask, in the
                                             source store's (true) orientation

Every array carries Zarr ``dimension_names`` (xarray reads them); the root attribute
``fmf_predictions`` records the checkpoint, model, windows and split. The store is written into
a hidden sibling and renamed into place when complete, so a crash never leaves an output that
looks finished; an existing output is refused unless ``overwrite``, and then replaced only when
it is a predictions store (and ``--video`` only a video that predict wrote). Under ``torchrun``
each rank writes its own contiguous, chunk-aligned block of windows. ``write_overlay_video`` renders the
predictions over the frames as an MP4 (OpenCV).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import cv2
import numpy as np
import torch
import zarr
from torch.utils.data import Sampler

from fmdata.store import schema
from fmdata.store.atomic import atomic_file, place, remove_tree
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.location import Location
from fmdata.store.lock import writer_lock
from fmdata.store.outputs import (
    check_apart,
    check_replaceable,
    folders_made_for,
    mark_mp4,
    output_exists,
    refusal,
)
from fmmodel.errors import FmModelError
from fmmodel.protocol import ORIENTATION_REFERENCE
from fmmodel.runtime import distributed as dd
from fmmodel.scoring.config import PredictConfig
from fmmodel.scoring.inference import inference_precision, prepare, run_inference
from fmmodel.scoring.metrics import THRESHOLD, predicted_abnormal
from fmmodel.scoring.report import plain_params

COMMAND = "fmmodel predict"  # its --overwrite replaces only its own predictions stores and videos
ATTR_PREDICTIONS = "fmf_predictions"
WINDOW_CHUNK = 4096  # rows per chunk of the 1-D arrays; rank blocks align to it
MASK_CHUNK = 64  # windows per mask chunk (divides WINDOW_CHUNK)
FORMAT_NAME = "fmf-predictions"
FORMAT_VERSION = 1


class BlockSampler(Sampler[int]):
    """Indices ``[start, stop)`` in order: one rank's contiguous block."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = int(start), int(stop)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def indices(self) -> torch.Tensor:
        """Return what iterating yields, as one int64 tensor."""
        return torch.arange(self.start, max(self.start, self.stop), dtype=torch.int64)


def block_of(n: int, rank: int, world: int, align: int = WINDOW_CHUNK) -> tuple[int, int]:
    """Return rank ``rank``'s block [start, stop) of ``n`` rows; every boundary is a multiple of ``align``."""
    chunks = -(-n // align)
    per = -(-chunks // world)
    start = min(n, rank * per * align)
    return start, min(n, (rank + 1) * per * align)


def _temp_path(out: str) -> str:
    # a fixed name (not a fresh temp name): every rank must find the folder rank 0 created
    head, tail = os.path.split(os.path.abspath(out))
    return os.path.join(head, f".{tail}.partial")


def _create(path: str, n: int, mask_shape: tuple[int, int] | None, attrs: dict[str, Any]) -> None:
    root = zarr.open_group(path, mode="w", zarr_format=3)
    chunk = min(WINDOW_CHUNK, max(n, 1))
    for name, dtype in (("frame", "int64"), ("recording", "int32"), ("split", "int8"), ("label", "uint8"),
                        ("pred", "uint8")):
        root.create_array(name, shape=(n,), chunks=(chunk,), dtype=dtype, dimension_names=("window",), fill_value=0)
    root.create_array("prob", shape=(n, 2), chunks=(chunk, 2), dtype="float32", dimension_names=("window", "class"),
                      fill_value=0.0)
    if mask_shape is not None:
        root.create_array("mask_pred", shape=(n, *mask_shape), chunks=(min(MASK_CHUNK, max(n, 1)), *mask_shape),
                          dtype="uint8", dimension_names=("window", "y", "x"), fill_value=0)
    root.attrs[ATTR_PREDICTIONS] = {**attrs, "complete": False}


class _Writer:
    """Buffers one rank's rows and writes them to the output arrays in whole chunks."""

    def __init__(self, path: str, start: int, seg: bool, orientation: str) -> None:
        self.root = zarr.open_group(path, mode="r+", zarr_format=3)
        self.pos = self.flushed = start
        self.seg, self.orientation = seg, orientation
        self.buf: dict[str, list[np.ndarray]] = {}

    def add(self, batch: dict[str, torch.Tensor], prob: torch.Tensor, pixel_prob: torch.Tensor | None) -> None:
        p = prob.detach().float().cpu().numpy()
        # copies: loader batches may live in reused shared buffers, and rows wait here until a flush
        fields = {k: batch[k].cpu().numpy() for k in ("frame", "recording", "label")}  # resident batches: on the device
        rows = {"frame": fields["frame"].copy(), "recording": fields["recording"].astype(np.int32),
                "label": fields["label"].astype(np.uint8), "prob": np.stack([1 - p, p], axis=1),
                "pred": predicted_abnormal(p).astype(np.uint8)}
        if self.seg and pixel_prob is not None:
            m = predicted_abnormal(pixel_prob.detach()).to(torch.uint8).cpu().numpy()
            rows["mask_pred"] = np.swapaxes(m, 1, 2) if self.orientation == ORIENTATION_REFERENCE else m
        for k, v in rows.items():
            self.buf.setdefault(k, []).append(v)
        self.pos += len(p)
        if self.pos - self.flushed >= WINDOW_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pos == self.flushed:
            return
        for k, parts in self.buf.items():
            self.root[k][self.flushed:self.pos] = np.concatenate(parts)
        self.buf.clear()
        self.flushed = self.pos


def predict(store: StoreLike, checkpoint: str, out: str, config: PredictConfig | None = None, *,
            progress: bool = True, **options: Any) -> dict[str, Any]:
    """Write the predictions of ``checkpoint`` for the windows of a split of ``store`` (an open store
    or its location, opened once) into ``out``; return a summary.

    The settings are ``config`` (:class:`fmmodel.scoring.config.PredictConfig`; its defaults when
    None) with ``options`` (its fields by name) changed; an unknown name is an FmModelError naming
    it. ``split``: "all" (train and test windows), "test" or "train". ``video``: also write an MP4
    with the predictions drawn over (at most ``video_max_frames``) labelled frames. ``data`` and
    ``resident_budget`` choose the data path (:mod:`fmmodel.data.paths`); each rank holds the
    windows of its own block. ``progress`` shows bars.
    """
    cfg = (config or PredictConfig()).replace(**options)
    if Location.parse(out).is_url:  # the staging folder + rename below is local-only; refuse rather than write "s3:/..."
        raise FmModelError("expected a local path for the predictions store, got a URL "
                           "(write locally, then copy)", out)
    store = store if isinstance(store, StoreHandle) else Location.parse(store)  # parsed once, opened in prepare
    location = store.location if isinstance(store, StoreHandle) else store
    _check_output(out, location, cfg.overwrite)
    if cfg.video:
        check_apart(cfg.video, [location], field="video")
    ctx = dd.setup(cfg.device)
    try:
        lock = writer_lock(out, "fmmodel predict", what="predictions store", parents=True)
        # a failed predict leaves no empty folder it made for --out or --video
        made = folders_made_for(out, *([cfg.video] if cfg.video else []))
        with made if ctx.is_main else nullcontext(), lock if ctx.is_main else nullcontext():
            if cfg.video:  # before the scoring, not after it
                check_replaceable(cfg.video, overwrite=cfg.overwrite, command=COMMAND)
            return _predict(store, checkpoint, ctx, cfg, out=out, progress=progress)
    finally:
        dd.teardown(ctx)


def _check_output(out: str, store: Location, overwrite: bool) -> None:
    """Refuse an output that would destroy data: the store read (or a folder holding it or inside
    it), an existing path without ``overwrite``, and anything but a predictions store with it."""
    check_apart(out, [store], field="out")
    if not (os.path.exists(out) or os.path.islink(out)):
        return
    if not overwrite:
        raise output_exists(out, error=FmModelError)
    try:
        ours = ATTR_PREDICTIONS in zarr.open_group(out, mode="r").attrs
    except Exception:  # not a Zarr group at all (zarr raises several types for that)
        ours = False
    if not ours:
        raise refusal(out, COMMAND, "something that is not a predictions store")


def _predict(store: StoreLike, checkpoint: str, ctx: dd.DistContext, cfg: PredictConfig, *, out: str,
             progress: bool) -> dict[str, Any]:
    """The body of :func:`predict`, run while rank 0 holds the output's writer lock."""
    p = prepare(store, checkpoint, fmt=cfg.fmt, variant=cfg.variant, split=cfg.split, windows=cfg.windows, ctx=ctx,
                batch_size=cfg.batch_size, workers=cfg.workers, data=cfg.data, resident_budget=cfg.resident_budget,
                progress=progress, sampler=lambda n, c: BlockSampler(*block_of(n, c.rank, c.world_size)),
                trusted=cfg.trusted, precision=cfg.precision)
    ds, meta, task = p.dataset, p.meta, p.task
    n = len(ds)
    seg = task == "seg"
    tmp = _temp_path(out)
    attrs = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "store": str(p.store),
             "checkpoint": os.fspath(checkpoint), "variant": meta.variant, "task": task,
             "split": cfg.split, "windows": cfg.windows, "orientation_of_masks": "true",
             "window_params": plain_params(p.params),
             "threshold": THRESHOLD, "decision": "abnormal when prob[:, 1] > threshold (the argmax)"}
    if ctx.is_main:
        remove_tree(tmp)  # our own leftover from an interrupted run
        _create(tmp, n, (p.store.meta.height, p.store.meta.width) if seg else None, attrs)
        # split column straight from the table (windows are in table order)
        zarr.open_group(tmp, mode="r+")["split"][:] = p.table.column("split").astype(np.int8)
    dd.barrier(ctx)
    start, stop = block_of(n, ctx.rank, ctx.world_size)
    writer = _Writer(tmp, start, seg, meta.orientation)
    prec = inference_precision(p.model, cfg.precision, ctx.device)
    res = run_inference(p.model, p.loader, ctx, task=task, precision=prec,
                        recordings=p.store.meta.n_recordings, progress=progress, keep=writer.add,
                        desc="predict")
    writer.flush()
    if writer.flushed != stop:
        raise FmModelError(f"expected {stop - start} predictions from rank {ctx.rank}, wrote "
                           f"{writer.flushed - start}", out)
    dd.barrier(ctx)
    if ctx.is_main:
        root = zarr.open_group(tmp, mode="r+")
        root.attrs[ATTR_PREDICTIONS] = {**attrs, "complete": True, "windows_count": n,
                                        "summary": res["metrics"]["overall"]["class"]}
        place(tmp, out)
    dd.barrier(ctx)
    summary = {"out": out, "windows": n, "task": task, "variant": meta.variant, "fps": res["fps"],
               "metrics": res["metrics"]["overall"], "data": p.data}
    if cfg.video and ctx.is_main:
        summary["video"] = write_overlay_video(p.store, out, cfg.video, max_frames=cfg.video_max_frames)
    return summary


def read_predictions(path: str) -> zarr.Group:
    """Open a predictions store written by :func:`predict`; FmModelError if it is not a complete one."""
    try:
        root = zarr.open_group(path, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError) as exc:
        raise FmModelError(f"expected a predictions store, got none ({exc.__class__.__name__})", path) from None
    a = root.attrs.get(ATTR_PREDICTIONS)
    if not isinstance(a, dict) or a.get("format") != FORMAT_NAME or not a.get("complete"):
        raise FmModelError("expected a complete predictions store (fmmodel predict), got something else", path)
    return root


def write_overlay_video(store: StoreLike, predictions: str, video: str, *, max_frames: int = 1500, scale: int = 4,
                        fps: float | None = None) -> str:
    """Write an MP4 of the labelled frames of ``store`` (an open store or its location) with the true
    mask (green outline), the predicted mask (red, segmentation models) and the abnormal
    probability; return the path.

    At most ``max_frames`` windows are drawn, evenly spread over the predictions.
    """
    pred = read_predictions(predictions)
    store = open_store(store)
    root, meta = store.root, store.meta
    frames = np.asarray(pred["frame"][:])
    if not len(frames):
        raise FmModelError("expected predictions to draw, got none", predictions)
    pick = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(np.int64))
    prob = np.asarray(pred["prob"][:, 1])
    labels = np.asarray(pred["label"][:])
    recs = np.asarray(pred["recording"][:])
    has_mask = "mask_pred" in pred
    h, w = meta.height * scale, meta.width * scale
    bar = 22
    with atomic_file(video, suffix=".mp4") as tmp:  # OpenCV picks the container by the extension
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps or min(meta.fps, 25.0)),
                                 (w, h + bar))
        if not writer.isOpened():
            raise FmModelError("expected OpenCV to open an MP4 writer, got none", video)
        try:
            for i in pick.tolist():
                f = int(frames[i])
                img = cv2.resize(np.asarray(root[schema.VIDEO][f]), (w, h), interpolation=cv2.INTER_NEAREST)
                img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                true = cv2.resize(np.asarray(root[schema.MASK][f]), (w, h), interpolation=cv2.INTER_NEAREST)
                if has_mask:
                    pm = cv2.resize(np.asarray(pred["mask_pred"][i]), (w, h), interpolation=cv2.INTER_NEAREST)
                    tint = img.copy()
                    tint[pm.astype(bool)] = (0, 0, 255)
                    img = cv2.addWeighted(img, 0.6, tint, 0.4, 0)
                contours, _ = cv2.findContours(true.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(img, contours, -1, (0, 255, 0), 1)
                canvas = np.zeros((h + bar, w, 3), np.uint8)
                canvas[bar:] = img
                colour = (0, 0, 255) if predicted_abnormal(prob[i]) else (200, 200, 200)
                text = f"rec {recs[i]} frame {f}  p={prob[i]:.2f}  true={labels[i]}"
                cv2.putText(canvas, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
                writer.write(canvas)
        finally:
            writer.release()
        mark_mp4(tmp, COMMAND)  # what lets a later --overwrite recognise its own video
    return video
