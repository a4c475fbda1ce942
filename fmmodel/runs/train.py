"""``fmmodel train``: train an FmFormer on an FMF store, single process or DDP (torchrun).

Protocol (docs/reference-protocol.md, defaults of :class:`fmmodel.runs.config.TrainConfig`): Adam, lr
5e-4, x0.1 at epoch 20, 30 epochs, batch 64, cross-entropy, horizontal flip of clip and mask.
Validation holds out the tail of each recording's training block, one window span apart
(:mod:`fmmodel.data.holdout`); the test split is never touched.

A run has three steps: :func:`build` (windows, datasets, loaders, model, optimizer; a resumed
run's state), :func:`fit_epoch` (one epoch of training, then validation) and :func:`save_epoch`
(checkpoints, metrics). The run folder holds ``config.json`` (the resolved
:class:`TrainConfig`), ``last.pt`` and ``best.pt`` (toolkit checkpoints, atomic, plain tensors;
``last.pt`` also holds optimizer, scheduler, epoch and RNG state for ``--resume``),
``metrics.csv`` (one row per epoch), ``curves.png`` (:mod:`fmmodel.runs.curves`), ``README.md``
(the model card, :mod:`fmmodel.scoring.card`) and ``tb/`` (TensorBoard). Only rank 0 writes. A
run says once, after its first batches, how long it will take (:mod:`fmmodel.runs.eta`).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fmdata.errors import Interrupted
from fmdata.store import schema
from fmdata.store.atomic import is_temporary, remove_tree
from fmdata.store.handle import StoreHandle, StoreLike, location_of, open_store
from fmdata.store.location import Location
from fmdata.store.lock import writer_lock
from fmdata.store.outputs import check_apart, folders_made_for
from fmdata.store.window_table import WindowParams
from fmmodel.data.holdout import holdout_split
from fmmodel.data.paths import BatchRequest, BatchSource, open_batches
from fmmodel.data.preprocessing import input_format
from fmmodel.data.sampling import make_sampler, set_loader_epoch
from fmmodel.data.windows import make_dataset, window_table_for
from fmmodel.errors import FmModelError
from fmmodel.model import checkpoint as ckpt_io
from fmmodel.model.registry import (
    VARIANTS,
    build_model,
    model_info,
    model_source,
    resolve_variant,
    unwrap_model,
    user_variant,
)
from fmmodel.model.user_models import DataDescription, ModelSource, check_output, trusted_source, user_code
from fmmodel.runs.config import RUN_ENVIRONMENT, TrainConfig
from fmmodel.runs.curves import write_curves
from fmmodel.runs.eta import RunClock, cpu_advice
from fmmodel.runs.identity import absolute_store, check_same_store, check_same_windows, store_identity, windows_identity
from fmmodel.runtime import distributed as dd
from fmmodel.runtime.precision import autocast, resolve_precision
from fmmodel.scoring.card import card_tests, run_card, write_card
from fmmodel.scoring.inference import model_inputs, run_inference
from fmmodel.scoring.report import plain_params

CONFIG_JSON = "config.json"
LAST = "last.pt"
BEST = "best.pt"
METRICS_CSV = "metrics.csv"
TB_DIR = "tb"
TB_EVENTS = "events.out.tfevents."  # the names of the files TensorBoard's writer makes in TB_DIR
_CONFIG_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
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


@dataclass
class Run:
    """A training run built and ready to fit: what every epoch uses, and where it stands.

    ``model`` is the plain module (checkpoints, validation), ``net`` what the steps call (compiled
    and/or DDP-wrapped). ``writer`` is the TensorBoard writer (rank 0 only).
    """

    ctx: dd.DistContext
    cfg: TrainConfig
    precision: str
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    loader: BatchSource
    val_loader: BatchSource | None
    n_recordings: int
    orientation: str
    preprocessing: dict[str, Any]
    steps_per_epoch: int
    num_classes: int = 2
    start_epoch: int = 0
    best_score: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    writer: Any = None
    clock: RunClock | None = None
    card_refused: bool = False

    @property
    def last_path(self) -> str:
        return os.path.join(self.cfg.out, LAST)

    @property
    def best_path(self) -> str:
        return os.path.join(self.cfg.out, BEST)


# ---- entry points ------------------------------------------------------------------------------


def train(cfg: TrainConfig, progress: bool = True, *, store: StoreHandle | None = None) -> TrainResult:
    """Run training as ``cfg`` says into the new run folder ``cfg.out``; return the :class:`TrainResult`.

    ``store``: the open store ``cfg.store`` names, when the caller has it (None: opened here, once).
    Under ``torchrun`` every process calls this; rank 0 writes the run folder. Raises
    FmModelError for unusable options, stores or run folders (an existing, non-empty one included;
    one inside the store, FmDataError), and for a ``store`` that is not the one ``cfg.store``
    names. A run that fails before its first epoch is saved removes what it wrote and the folders
    it made.
    """
    cfg.store = absolute_store(cfg.store)
    _check_handle(store, cfg.store)
    check_apart(cfg.out, [cfg.store], field="out")
    ctx = dd.setup(cfg.device)
    try:
        # a run that fails before its first epoch leaves neither its files nor the folders it made
        with folders_made_for(cfg.out) if ctx.is_main else contextlib.nullcontext(), run_lock(cfg.out, ctx.is_main):
            _prepare_run_dir(cfg, ctx)
            dd.barrier(ctx)
            try:
                return _train(ctx, cfg, False, progress, store=store)
            except BaseException:
                if ctx.is_main:
                    _remove_unfinished_run(cfg.out)
                raise
    finally:
        dd.teardown(ctx)


def resume_run(run_dir: str, epochs: int | None = None, progress: bool = True,
               store: StoreLike | None = None, environment: Mapping[str, Any] | None = None,
               model: str | None = None) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last.pt`` (model, optimizer, scheduler, epoch, RNG).

    ``epochs`` extends (or shortens) the planned number of epochs; ``environment`` changes where
    and how fast the run runs (keys of :data:`fmmodel.runs.config.RUN_ENVIRONMENT`: device, precision,
    workers, data, resident_budget, threads); everything else comes from the run's
    ``config.json``. ``store`` gives the store's new location when it moved (its data must be the
    same), or the open store when the caller has it. ``model`` names the run's model again
    (``--model``): a run folder is data, so a user's model is imported only when named here or
    installed (:func:`resumed_source`). The run folder's writer lock is taken first, so a run still
    writing it is named as its holder.
    Raises FmModelError when the store or the window table differ from what the run recorded
    (:mod:`fmmodel.runs.identity`), for an ``environment`` key that would change what the run learns
    (field: that key), or for a model neither named nor installed (field "model"). A run that
    already finished its epochs returns at once.
    """
    for key in environment or {}:
        if key not in RUN_ENVIRONMENT:
            raise FmModelError(f"expected only settings of where the run runs with a resume "
                               f"({', '.join(RUN_ENVIRONMENT)}; the rest is the run's), got {key}", field=key)
    if not os.path.isdir(os.path.dirname(os.path.abspath(run_dir))):  # nobody can hold a lock there
        raise FmModelError(f"expected a run folder with {LAST} to resume, got none", run_dir)
    # the lock first: a run still being written (its last.pt not yet there) is named as the holder
    with run_lock(run_dir, dd.env_world()[0] == 0):
        if not os.path.exists(os.path.join(run_dir, LAST)):
            raise FmModelError(f"expected a run folder with {LAST} to resume, got none", run_dir)
        cfg = TrainConfig.load(os.path.join(run_dir, CONFIG_JSON))
        cfg.out = run_dir
        source = resumed_source(cfg, model)
        if store is not None:
            cfg.store = absolute_store(str(location_of(store)))
        where = Location.parse(cfg.store)
        if store is None and not where.is_url and not os.path.exists(where.local_path or cfg.store):
            raise FmModelError(f"expected the run's store at {cfg.store}, got nothing there; if it moved, give its "
                               "new location with --store (with --resume)", run_dir)
        if epochs is not None:
            if epochs < 1:
                raise FmModelError(f"expected epochs >= 1, got {epochs}", field="epochs")
            cfg.epochs = epochs
        if environment:
            cfg = dataclasses.replace(cfg, **environment)  # checked again, as a new config
        ctx = dd.setup(cfg.device)
        try:
            return _train(ctx, cfg, True, progress, source,
                          store=store if isinstance(store, StoreHandle) else None)
        finally:
            dd.teardown(ctx)


def resumed_source(cfg: TrainConfig, model: str | None) -> ModelSource | None:
    """The code a resumed run may import for its model: None for a built-in, else what
    :func:`fmmodel.model.user_models.trusted_source` allows for the source the run recorded
    (``config.json``: ``runtime.model_config.source``): ``model`` when the user names it again
    (the same code), or the installed entry point of the recorded name. FmModelError otherwise;
    also when ``model`` is not the run's model."""
    where = os.path.join(cfg.out, CONFIG_JSON)
    if model_source(cfg.variant) is None:  # a built-in: nothing to import
        if model is not None and model != cfg.variant:
            raise FmModelError(f"refused: expected --model naming the run's model {cfg.variant!r}, got {model!r}",
                               where, field="model")
        return None
    recorded = cfg.runtime.get("model_config", {}).get("source") if isinstance(cfg.runtime, dict) else None
    try:
        source = ModelSource.from_dict(recorded) if isinstance(recorded, dict) else None
    except (KeyError, TypeError, ValueError):
        source = None
    if source is None:
        raise FmModelError(f"expected the run to record where model {cfg.variant!r} comes from "
                           "(runtime.model_config.source), got none", where)
    return trusted_source(source, [model] if model else [], where=where, field="model")


@contextlib.contextmanager
def run_lock(run_dir: str, main: bool) -> Iterator[None]:
    """The main process (rank 0: ``main``) holds the run folder's writer lock while the run
    writes: a second ``train`` or ``--resume`` into the same folder fails at once, naming the first."""
    if not main:
        yield
        return
    with writer_lock(run_dir, "fmmodel train", what="run folder", parents=True):
        yield


def path_safe(name: str) -> str:
    """``name`` (a model name, maybe ``path/file.py:factory``) as one folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def default_run_folder(model: str) -> str:
    """The run folder of ``fmmodel train`` without ``--out``: ``runs/<model>-<date>-<time>``."""
    return os.path.join("runs", f"{path_safe(model)}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def _check_handle(store: StoreHandle | None, named: str) -> None:
    """Raise FmModelError when the open ``store`` given beside a config is not the store it names."""
    if store is not None and absolute_store(str(store.location)) != named:
        raise FmModelError(f"expected the open store of the run's store {named}, got the store at {store}",
                           field="store")


def _train(ctx: dd.DistContext, cfg: TrainConfig, resume: bool, progress: bool,
           source: ModelSource | None = None, store: StoreHandle | None = None) -> TrainResult:
    try:
        run = build(ctx, cfg, resume, progress, source, store)
        try:
            for epoch in range(run.start_epoch, cfg.epochs):
                row = fit_epoch(run, epoch, progress)
                save_epoch(run, epoch, row)
        finally:
            if run.writer is not None:
                run.writer.close()
    except KeyboardInterrupt:
        raise Interrupted(_resume_hint(cfg.out)) from None
    return TrainResult(run_dir=cfg.out, last=run.last_path, best=run.best_path, history=run.history,
                       model=run.model, config=cfg)


def _resume_hint(out: str) -> str:
    """What an interrupted run left, and the command that continues it."""
    if os.path.exists(os.path.join(out, LAST)):
        return (f"{out}: interrupted; the last finished epoch is in {LAST}: `fmmodel train --out {out} --resume` "
                "continues from it")
    return (f"{out}: interrupted before the first epoch finished; nothing to resume (the same command starts it "
            "again)")


def _prepare_run_dir(cfg: TrainConfig, ctx: dd.DistContext) -> None:
    """Check that ``cfg.out`` can take a new run: nothing there, an empty folder, or what a run
    that stopped before its first epoch left (:func:`_stopped_before_first_epoch`: replaced)."""
    out = cfg.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise FmModelError("expected a folder for the run, got a file", out)
    names = os.listdir(out) if os.path.isdir(out) else []
    if names and not _stopped_before_first_epoch(out, names):
        raise FmModelError("expected a new or empty run folder, got one with files (pass --resume to continue "
                           "it, or choose another --out)", out)
    if ctx.is_main:
        for name in names:
            remove_tree(os.path.join(out, name))
        os.makedirs(out, exist_ok=True)


def _remove_unfinished_run(out: str) -> None:
    """Remove what a run that failed before its first epoch wrote into ``out`` (the same leftovers
    that :func:`_prepare_run_dir` replaces after a kill); nothing when an epoch was saved."""
    names = os.listdir(out) if os.path.isdir(out) else []
    if _stopped_before_first_epoch(out, names):
        for name in names:
            remove_tree(os.path.join(out, name))


def _stopped_before_first_epoch(out: str, names: list[str]) -> bool:
    """True when a run folder holds only what a run writes before its first epoch is saved: the
    toolkit's config.json, the TensorBoard folder (event files only), a best.pt written just
    before the first last.pt, and temporary files of a save that was cut short."""
    if CONFIG_JSON not in names or not all(n in (CONFIG_JSON, TB_DIR, BEST) or is_temporary(n) for n in names):
        return False
    if TB_DIR in names and not _tensorboard_only(os.path.join(out, TB_DIR)):
        return False
    try:
        with open(os.path.join(out, CONFIG_JSON), encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"store", "out", "trained_on"} <= set(saved) <= _CONFIG_KEYS


def _tensorboard_only(folder: str) -> bool:
    """True for a folder holding only TensorBoard event files (what the run's writer makes)."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    return all(n.startswith(TB_EVENTS) and os.path.isfile(os.path.join(folder, n)) and
               not os.path.islink(os.path.join(folder, n)) for n in os.listdir(folder))


# ---- build -------------------------------------------------------------------------------------


def build(ctx: dd.DistContext, cfg: TrainConfig, resume: bool, progress: bool = False,
          source: ModelSource | None = None, store: StoreHandle | None = None) -> Run:
    """Build a run: windows and hold-out, datasets and their batch sources (lazy or resident,
    :mod:`fmmodel.data.paths`), model and optimizer; with ``resume`` the state of ``last.pt``.
    Rank 0 writes the resolved ``config.json``; ``progress`` shows the resident load's bar.
    ``source`` is the code of a user's model to import (a resumed run's, :func:`resumed_source`);
    None resolves ``cfg.variant``, a name the caller chose. ``store`` is the open store of
    ``cfg.store`` (None: opened here, once)."""
    device = ctx.device
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    store = open_store(store or cfg.store)
    meta = store.meta
    if resume:
        check_same_store(cfg.trained_on, store, cfg.out)
    wt, store = window_table_for(store, cfg.windows, cfg.window, ctx)
    if resume:
        check_same_windows(cfg.trained_on, cfg.runtime, wt, cfg.out)
    cfg.trained_on = {**store_identity(store), **windows_identity(cfg.windows, wt)}
    fce = np.asarray(store.frame_current_end, np.int64)
    tr_rows, va_rows, vinfo = holdout_split(wt, fce, store.frame_offsets, cfg.val_fraction, table=cfg.windows)
    if len(tr_rows) == 0:
        raise FmModelError(_no_training_windows(cfg, wt), cfg.store)
    if vinfo["adjusted"] and not resume:
        dd.log(ctx, f"validation hold-out: {vinfo['adjusted']}")
    # a stored table's own parameters are what the model learns from: record them (evaluate
    # and predict rebuild the same windows from the checkpoint)
    cfg.window = WindowParams.from_dict({**cfg.window.to_dict(), **wt.params, "frames": int(wt.clip.shape[1])})
    fmt = input_format(cfg.preprocessing, device)
    train_ds = make_dataset(store, wt.subset(tr_rows), fmt, augment=cfg.hflip, seed=cfg.seed,
                            modality=cfg.modality, task=cfg.task)
    val_ds = (make_dataset(store, wt.subset(va_rows), fmt, augment=False, seed=cfg.seed, modality=cfg.modality,
                           task=cfg.task) if len(va_rows) else None)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts them)
    model = build_run_model(cfg, train_ds.item_frame_shape, source)
    cfg.validation = vinfo
    cfg.runtime = {"world_size": ctx.world_size, "device": str(device.type), "precision": precision,
                   "store_frames": meta.n_frames, "store_fps": meta.fps, "windows_total": len(wt),
                   "window_params_used": plain_params(wt.params),
                   "orientation": fmt.orientation, "model_config": _sizes(model)}
    sampler = make_sampler(train_ds, shuffle=not cfg.balanced, balanced=cfg.balanced, seed=cfg.seed,
                           num_replicas=ctx.world_size, rank=ctx.rank)
    requests = [BatchRequest(train_ds, cfg.batch_size, sampler)]
    if val_ds is not None:
        requests.append(BatchRequest(val_ds, cfg.eval_batch_size or cfg.batch_size,
                                     dd.ShardSampler(len(val_ds), ctx.rank, ctx.world_size), evaluation=True))
    sources, choice = open_batches(requests, data=cfg.data, budget=cfg.resident_budget, workers=cfg.workers,
                                   ctx=ctx, progress=progress)
    cfg.runtime["data"] = choice.to_dict()
    if ctx.is_main:
        cfg.save(os.path.join(cfg.out, CONFIG_JSON))
    loader, val_loader = sources[0], (sources[1] if val_ds is not None else None)
    model.to(device)
    opt, sched = build_optimizer(model, cfg)
    run = Run(ctx=ctx, cfg=cfg, precision=precision, model=model, net=model, optimizer=opt, scheduler=sched,
              loss_fn=nn.CrossEntropyLoss(), loader=loader, val_loader=val_loader, n_recordings=meta.n_recordings,
              orientation=fmt.orientation,
              preprocessing={"name": cfg.preprocessing, "normalization": train_ds.describe().get("normalization")},
              steps_per_epoch=(len(loader) if cfg.max_steps_per_epoch is None
                               else min(len(loader), cfg.max_steps_per_epoch)),
              num_classes=model_info(model).description.num_classes)
    if resume:
        _restore(run)
    if cfg.compile:
        run.net = cast(nn.Module, torch.compile(run.net))
    if ctx.distributed:
        run.net = nn.parallel.DistributedDataParallel(
            run.net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
    run.writer = _summary_writer(os.path.join(cfg.out, TB_DIR)) if ctx.is_main else None
    run.clock = RunClock(steps_per_epoch=run.steps_per_epoch, epochs=cfg.epochs, log=lambda line: _log(ctx, line),
                         advice=_cpu_advice(cfg, device, int(np.sum(wt.column("split") == schema.SPLIT_TRAIN)),
                                            train_ds.item_frame_shape))
    return run


def _no_training_windows(cfg: TrainConfig, wt: Any) -> str:
    """Why a run has no training window (its table has none in the training split), and options
    that work together to give it some."""
    what = (f"the window table {cfg.windows!r} has {len(wt):,} windows, none in the training split" if cfg.windows
            else f"the windows built from the run's parameters ({len(wt):,}) include none in the training split")
    how = ("build a table with shorter windows (fmdata windows STORE --name NAME with smaller --frames, --frame-step "
           "or --current-seconds, or --policy reference) and pass --windows NAME, or leave out --windows and pass "
           "those options" if cfg.windows else
           "use shorter windows (smaller --frames, --frame-step or --current-seconds) or --policy reference")
    return f"expected training windows, got none: {what}; {how}"


def _cpu_advice(cfg: TrainConfig, device: torch.device, train_windows: int,
                frame_shape: tuple[int, int]) -> Any:
    """The advice a reference-size FmFormer reading video gets on the CPU (:func:`fmmodel.runs.eta.cpu_advice`)."""
    if (device.type != "cpu" or cfg.variant not in VARIANTS or cfg.modality == "current"
            or cfg.model.get("size", "reference") != "reference"):
        return None
    return cpu_advice(train_windows=train_windows, stride=cfg.window.stride,
                      frame_pixels=int(frame_shape[0]) * int(frame_shape[1]))


def _log(ctx: dd.DistContext, line: str) -> None:
    """Print ``line`` on rank 0, above a progress bar if one is drawn."""
    if ctx.is_main:
        tqdm.write(line, file=sys.stderr)


def build_run_model(cfg: TrainConfig, frame_size: tuple[int, int], source: ModelSource | None = None) -> nn.Module:
    """Build the run's model (built-in FmFormer or a user's model) for frames of ``frame_size`` as
    delivered (rows, cols) and the run's windows; ``cfg.model`` holds the size (built-ins) or the
    options passed to a user's factory; ``source`` (when given) is the user's model's code."""
    variant = (resolve_variant(cfg.variant, modality=cfg.modality, task=cfg.task) if source is None
               else user_variant(cfg.variant, source, modality=cfg.modality, task=cfg.task))
    options = {k: v for k, v in cfg.model.items() if k != "size"}
    if variant.builtin:
        try:
            return build_model(variant, size=cfg.model.get("size", "reference"), frames=cfg.window.frames,
                               image_size=frame_size, current_rows=cfg.window.current_rows, **options)
        except FmModelError as exc:  # a size override out of range is a usage error of that option
            raise FmModelError(exc.message, exc.path, field="model_opt" if options else exc.field) from None
    data = DataDescription(task=cfg.task, modality=cfg.modality, frame_size=frame_size, clip_frames=cfg.window.frames,
                           current_rows=cfg.window.current_rows, options=options)
    return build_model(variant, description=data)


def _sizes(model: nn.Module) -> dict[str, Any]:
    """What config.json records of the model: FmFormer sizes, or the data a user's model was built for."""
    info = model_info(model)
    return info.config.to_dict() if info.config is not None else {"data": info.description.to_dict(),
                                                                    "source": info.source and info.source.to_dict()}


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


def _restore(run: Run) -> None:
    """Load model, optimizer, scheduler, progress and RNG state from the run's ``last.pt``."""
    state = ckpt_io.load_checkpoint(run.last_path, map_location="cpu")
    unwrap_model(run.model).load_state_dict(state.state_dict)
    run.optimizer.load_state_dict(state.extra["optimizer"])
    run.scheduler.load_state_dict(state.extra["scheduler"])
    run.start_epoch = int(state.extra["epoch"])
    run.best_score = state.extra.get("best_score")
    run.history = list(state.extra.get("history", []))
    _set_rng_state(state.extra["rng"], run.ctx.device)
    dd.log(run.ctx, f"resuming {run.cfg.out} after epoch {run.start_epoch}")


def _summary_writer(path: str) -> Any:
    # slow import (tensorboard pulls in protobuf); only rank 0 writes logs, and only while training
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=path)


# ---- fit ---------------------------------------------------------------------------------------


def timed_batches(loader: BatchSource) -> Iterator[tuple[Any, float]]:
    """Yield (batch, seconds spent blocked waiting for it) from ``loader``."""
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def _target(batch: dict[str, torch.Tensor], task: str, device: torch.device) -> torch.Tensor:
    t = batch["mask"] if task == "seg" else batch["label"]
    return t.to(device, non_blocking=True).long()


def fit_epoch(run: Run, epoch: int, progress: bool) -> dict[str, Any]:
    """Train one epoch, step the schedule, validate; return the epoch's row of ``metrics.csv``."""
    ctx, cfg, device = run.ctx, run.cfg, run.ctx.device
    t_epoch = time.perf_counter()
    set_loader_epoch(run.loader, epoch)
    run.net.train()
    loss_sum, seen, wait = 0.0, 0, 0.0
    global_step = epoch * run.steps_per_epoch
    bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
               disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
    # a user's model's forward and backward run its code: a failure there names the model and the step
    users = model_info(run.model).source is not None
    t0 = time.perf_counter()
    for step, (batch, waited) in enumerate(timed_batches(run.loader)):
        if step >= run.steps_per_epoch:
            break
        wait += waited
        inputs = model_inputs(run.net, batch, device)
        target = _target(batch, cfg.task, device)
        stage = f"training step {step + 1} of epoch {epoch + 1}"
        with autocast(device, run.precision):
            with user_code(cfg.variant, stage) if users else contextlib.nullcontext():
                logits = run.net(**inputs)
            if step == 0:  # a user's model may break the contract; say so before the loss does
                check_output(logits, target, run.num_classes, cfg.variant)
            loss = run.loss_fn(logits.float(), target)
        run.optimizer.zero_grad(set_to_none=True)
        with user_code(cfg.variant, stage) if users else contextlib.nullcontext():
            loss.backward()
        run.optimizer.step()
        n = int(target.shape[0])
        value = float(loss.detach())  # the step's one wait for the device, as before this check
        if not math.isfinite(value):  # this step's update is lost with the process: nothing is saved
            raise _not_finite(run, epoch, f"a training loss of {value} at step {step + 1} of epoch {epoch + 1}")
        loss_sum += value * n
        seen += n
        global_step += 1
        rate = seen * ctx.world_size / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", samples_s=f"{rate:,.0f}")
        bar.update(1)
        if run.clock is not None:
            run.clock.batch_done(epoch, step)
        if run.writer is not None and global_step % 10 == 0:
            run.writer.add_scalar("train/loss_step", value, global_step)
    bar.close()
    weights = _non_finite_weights(run.model)
    if weights:  # finite losses, but an update broke the weights: they are not saved
        raise _not_finite(run, epoch, f"non-finite weights in {weights} after epoch {epoch + 1}")
    elapsed = time.perf_counter() - t0
    tot_loss, tot_seen, tot_wait, tot_time = dd.all_reduce_sum(ctx, [loss_sum, seen, wait, elapsed])
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    val = None
    if run.val_loader is not None:
        # the plain module: DDP's forward is for training steps; every rank holds the same weights
        val = run_inference(run.model, run.val_loader, ctx, task=cfg.task, precision=run.precision,
                            recordings=run.n_recordings, loss_fn=run.loss_fn, progress=False)
    score = _score(cfg.task, val)
    improved = val is None or run.best_score is None or (score is not None and score > run.best_score)
    if improved:
        run.best_score = score
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": tot_loss / max(tot_seen, 1),
           "train_windows": int(tot_seen), "samples_per_s": tot_seen / max(tot_time / ctx.world_size, 1e-9),
           "loader_wait_share": tot_wait / max(tot_time, 1e-9), "score": score, "best": int(improved),
           "seconds": time.perf_counter() - t_epoch}
    if val is not None:
        c = val["metrics"]["overall"]["class"]
        row.update({"val_loss": val["loss"], "val_windows": c.get("n"), "val_accuracy": c.get("accuracy"),
                    "val_f1": c.get("f1"), "val_auroc": c.get("auroc"),
                    "val_miou": val["metrics"]["overall"].get("pixel", {}).get("miou")})
    run.history.append(row)
    return row


def _not_finite(run: Run, epoch: int, what: str) -> FmModelError:
    """The error that stops a run at a non-finite loss or weight in (0-based) ``epoch``: what was
    found, and what the run folder keeps (the epochs before it: each was saved only after its
    losses and weights were found finite)."""
    kept = (f"{LAST} holds epoch {epoch}, the last finished with finite losses and weights, and {BEST} the best "
            "of the epochs up to it" if epoch else "no epoch had finished, so no checkpoint was written")
    return FmModelError(f"expected finite losses and weights training model {run.cfg.variant!r}, got {what}; the run "
                        f"stopped: {kept} (a lower --lr, or a fix to the model, may help)", run.cfg.out)


def _non_finite_weights(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer of ``model`` holding NaN or infinity, or None
    (one wait for the device, however many tensors)."""
    floats = [(name, t) for name, t in unwrap_model(model).state_dict().items() if t.is_floating_point()]
    if not floats:
        return None
    ok = torch.stack([torch.isfinite(t).all() for _, t in floats]).cpu()
    bad = [name for (name, _), good in zip(floats, ok.tolist()) if not good]
    return bad[0] if bad else None


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


# ---- save --------------------------------------------------------------------------------------


def save_epoch(run: Run, epoch: int, row: dict[str, Any]) -> None:
    """Rank 0: write ``best.pt`` (when the epoch improved), ``last.pt``, the CSV row and TensorBoard
    scalars, and log the epoch's line; every rank then waits for it."""
    ctx, cfg = run.ctx, run.cfg
    if ctx.is_main:
        info = {"task": cfg.task, "modality": cfg.modality, "window": cfg.window.to_dict(), "store": cfg.store,
                "seed": cfg.seed, "epoch": epoch + 1, "score": row["score"],
                "fps": cfg.runtime.get("store_fps")}  # the frame rate the windows' frame steps were counted at
        extra = {"epoch": epoch + 1, "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "rng": _rng_state(ctx.device), "best_score": run.best_score, "history": run.history,
                 "config": cfg.to_dict()}
        if row["best"]:
            ckpt_io.save_checkpoint(run.best_path, run.model, orientation=run.orientation,
                                    preprocessing=run.preprocessing, info=info)
        ckpt_io.save_checkpoint(run.last_path, run.model, orientation=run.orientation,
                                preprocessing=run.preprocessing, extra=extra, info=info)
        _csv_append(os.path.join(cfg.out, METRICS_CSV), row)
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                run.writer.add_scalar(f"epoch/{k}", v, epoch + 1)
        run.writer.flush()
        _write_card_and_curves(run)
        left = run.clock.epoch_done(epoch, row["seconds"]) if run.clock is not None else ""
        dd.log(ctx, _epoch_line(row) + (f" | {left}" if left else ""))
    dd.barrier(ctx)


def _write_card_and_curves(run: Run) -> None:
    """Rank 0, after an epoch is saved: redraw curves.png and rewrite the model card (README.md),
    keeping the test figures of checkpoints that still hold the epoch they scored."""
    cfg = run.cfg
    info = model_info(run.model)
    size = (f"size {cfg.model.get('size', 'reference')}" if info.config is not None else "user's model")
    write_curves(cfg.out, run.history, title=f"run {os.path.basename(os.path.abspath(cfg.out))}: {cfg.variant} "
                                              f"({size}) on {os.path.basename(cfg.store.rstrip('/'))}")
    parameters = sum(p.numel() for p in unwrap_model(run.model).parameters())
    data = run_card(cfg.to_dict(), run.history, parameters=parameters, tests=card_tests(cfg.out))
    if write_card(cfg.out, data) is None and not run.card_refused:
        run.card_refused = True
        dd.log(run.ctx, f"{os.path.join(cfg.out, 'README.md')}: not a model card (a file of yours?): left as it is; "
                        "the run's card is not written")


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _csv_append(path: str, row: dict[str, Any]) -> None:
    new = not os.path.exists(path)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})


def _epoch_line(row: dict[str, Any]) -> str:
    def f(k: str, fmt: str = ".4f") -> str:
        v = row.get(k)
        return "n/a" if v is None else format(v, fmt)

    return (f"epoch {row['epoch']}: loss {f('train_loss')} | {f('samples_per_s', ',.0f')} samples/s | "
            f"loader wait {f('loader_wait_share', '.0%')} | val loss {f('val_loss')} f1 {f('val_f1')} "
            f"auroc {f('val_auroc')} miou {f('val_miou')}{' *' if row.get('best') else ''}")
