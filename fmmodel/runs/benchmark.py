"""``fmmodel benchmark``: the benchmark's comparison table in one command, resumable.

Every (model, window policy, seed) is a cell with its own run folder under ``out``
(``<model>/<policy>/seed-<k>``): trained as ``fmmodel train`` trains (the same
:class:`~fmmodel.runs.config.TrainConfig`, the settings given once for all cells), then scored on the
test split by :func:`fmmodel.scoring.evaluate.evaluate`, whose report is kept as ``eval/report.json``,
with the alarms an operator would see: the windows' scores decided every half second, alarmed
under ``fmmodel watch``'s default policy and scored as events (recall, delay, false alarms per hour).
A cell whose run finished its epochs and holds its report is skipped; a cell whose run stopped
part-way (or is asked for more epochs) is resumed from its ``last.pt`` and scored again; so the
command can be re-run after a crash, with more seeds or models or with more epochs, and does no
training that is already done. :mod:`fmmodel.runs.benchmark_table` then writes ``table.md``,
``table.json`` and ``table.png`` from the cells' reports.

Models are any model names (:func:`fmmodel.model.registry.resolve_variant`): FmFormer variants, installed
models, or factories named ``module:name`` / ``file.py:name``; each reads the reference windows of
its modality unless the window settings say otherwise.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from fmdata.errors import Interrupted
from fmdata.store.handle import StoreHandle, StoreLike, location_of, open_store
from fmdata.store.lock import writer_lock
from fmdata.store.outputs import check_apart, folders_made_for
from fmdata.store.schema import WINDOW_POLICIES
from fmdata.store.window_table import WindowParams
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import load_checkpoint
from fmmodel.model.registry import Variant, resolve_variant
from fmmodel.runs.benchmark_table import BenchmarkTable, Cell, check_tables, label, write_table
from fmmodel.runs.config import RUN_ENVIRONMENT, TrainConfig
from fmmodel.runs.train import BEST, CONFIG_JSON, LAST, path_safe, resume_run, train
from fmmodel.scoring.alarms import WATCH_EVERY, WATCH_POLICY
from fmmodel.scoring.evaluate import evaluate

REPORT = os.path.join("eval", "report.json")
# what a benchmark may set of every cell's windows (the policy is each cell's own)
WINDOW_SHAPE = tuple(f.name for f in dataclasses.fields(WindowParams) if f.name != "policy")


@dataclass(frozen=True)
class BenchmarkSettings:
    """The training and scoring settings every cell shares, in the terms of ``fmmodel train``.

    ``train`` holds keyword arguments of :class:`~fmmodel.runs.config.TrainConfig` (epochs, batch_size,
    lr, preprocessing, val_fraction, workers, data, device, model...; its defaults for the rest);
    a cell adds its store, folder, model, seed and windows. ``window`` holds keyword arguments of
    :meth:`WindowParams.reference <fmdata.store.window_table.WindowParams.reference>` (frames,
    frame_step, current_seconds, current_rows, stride); unset ones take the reference windows of
    each model's modality. ``train["model"]`` holds the FmFormer size (``{"size": "tiny"}``) and
    options a user's factory reads.
    """

    train: Mapping[str, Any] = field(default_factory=dict)
    window: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cell_keys = {"store", "out", "variant", "task", "modality", "seed", "window", "windows"}
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        for key in self.train:
            if key in cell_keys or key not in fields:
                raise FmModelError(f"expected training settings from {sorted(fields - cell_keys)}, got {key!r}")
        for key in self.window:
            if key not in WINDOW_SHAPE:
                raise FmModelError(f"expected window settings from {WINDOW_SHAPE}, got {key!r}")

    def cell_config(self, *, store: str, out: str, variant: Variant, seed: int, policy: str) -> TrainConfig:
        """The TrainConfig of one cell: these settings, the model's reference windows under ``policy``."""
        window = WindowParams.reference(variant.modality, policy=policy, **dict(self.window))
        return TrainConfig(store=store, out=out, variant=variant.name, task=variant.task, modality=variant.modality,
                           seed=seed, window=window, **{k: copy.deepcopy(v) for k, v in self.train.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only."""
        return {"train": dict(self.train), "window": dict(self.window)}


@dataclass(frozen=True)
class BenchmarkReport:
    """What :func:`run_benchmark` did: cells trained, resumed and skipped, and the table files."""

    out: str
    cells: int
    trained: int
    resumed: int
    skipped: int
    table: BenchmarkTable

    def summary(self) -> str:
        """Return the human summary: what ran, where the table is, and the table itself."""
        return (f"{self.cells} cell(s): {self.trained} trained, {self.resumed} resumed, {self.skipped} already done\n"
                f"table: {self.table.markdown_path}, {self.table.json_path}, {self.table.picture_path}\n\n"
                f"{self.table.markdown}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only."""
        return {"out": self.out, "cells": self.cells, "trained": self.trained, "resumed": self.resumed,
                "skipped": self.skipped, "table": self.table.to_dict()}


def cell_folder(out: str, model: str, policy: str, seed: int) -> str:
    """The run folder of one cell: ``<out>/<model>/<policy>/seed-<seed>`` (model names made path-safe)."""
    return os.path.join(out, path_safe(model), policy, f"seed-{seed}")


def run_benchmark(store: StoreLike, *, models: Sequence[str], seeds: Sequence[int], policies: Sequence[str],
                  out: str, settings: BenchmarkSettings | None = None, progress: bool = True) -> BenchmarkReport:
    """Train and score every (model, policy, seed) cell not done yet on ``store`` (an open store or its
    location: opened once, for every cell), then write the table.

    ``policies`` are window policies ("reference", "strict"). The benchmark folder ``out`` is held
    by one process at a time (its writer lock). Raises FmModelError for unknown models or policies,
    a folder another benchmark holds, or a run folder that is not a cell of this benchmark.
    """
    settings = settings or BenchmarkSettings()
    location = location_of(store).absolute()  # the same store whatever the working directory of a re-run
    check_apart(out, [location], field="out")
    if not models or not seeds or not policies:
        raise FmModelError("expected at least one model, one seed and one policy, got none", field="models")
    if min(seeds) < 0:
        raise FmModelError(f"expected seeds >= 0, got {min(seeds)}", field="seeds")
    given: dict[str, list[Any]] = {"models": list(models), "seeds": [int(x) for x in seeds], "policy": list(policies)}
    for what, values in given.items():
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:  # one cell counted twice would fake a spread over seeds
            raise FmModelError(f"expected each of the {what} once, got {', '.join(repeated)} more than once",
                               field=what)
    for p in policies:
        if p not in WINDOW_POLICIES:
            raise FmModelError(f"expected window policies from {WINDOW_POLICIES}, got {p!r}", field="policy")
    try:
        variants = {m: resolve_variant(m) for m in models}
    except FmModelError as exc:  # a bad name in the list: the error is about ``models``
        raise FmModelError(exc.message, exc.path, field="models") from None
    cells = [Cell(model=m, policy=p, seed=int(s)) for m in models for p in policies for s in seeds]
    # one benchmark at a time in a folder: two would train the same cells and mix their tables
    # a failed benchmark leaves no empty folder it made (each cell's run removes its own)
    with folders_made_for(out), writer_lock(out, "fmmodel benchmark", what="benchmark folder", parents=True):
        check_tables(out)
        return _run_cells(open_store(store if isinstance(store, StoreHandle) else location), cells, variants, out,
                          settings, progress)


def _run_cells(store: StoreHandle, cells: list[Cell], variants: dict[str, Variant], out: str,
               settings: BenchmarkSettings, progress: bool) -> BenchmarkReport:
    counts = {"trained": 0, "resumed": 0, "skipped": 0}
    reports: dict[Cell, dict[str, Any]] = {}
    for i, cell in enumerate(tqdm(cells, desc="benchmark", unit="cell", disable=not progress, leave=False)):
        folder = cell_folder(out, cell.model, cell.policy, cell.seed)
        cfg = settings.cell_config(store=str(store.location.absolute()), out=folder, variant=variants[cell.model], seed=cell.seed,
                                   policy=cell.policy)
        name = f"cell {i + 1}/{len(cells)} {label(cell.model)} {cell.policy} seed {cell.seed}"
        try:
            outcome, history = _train_cell(cfg, progress, name=name, store=store)
            counts[outcome] += 1
            if outcome != "skipped" or not _scored(folder):
                evaluate(store, os.path.join(folder, BEST), split="test", out=os.path.join(folder, "eval"),
                         batch_size=cfg.batch_size, workers=cfg.workers, data=cfg.data,
                         resident_budget=cfg.resident_budget, device=cfg.device, precision=cfg.precision,
                         examples=0, progress=False, trusted=[cell.model], alarms=WATCH_POLICY,
                         alarm_every=WATCH_EVERY)
        except KeyboardInterrupt:  # the trainer's hint names `fmmodel train`: the benchmark resumes its own cells
            raise Interrupted(f"{out}: interrupted in {name}; run the same `fmmodel benchmark` command again: finished "
                              "cells are kept and this one continues from its last finished epoch") from None
        reports[cell] = _read(folder, history)
    # the settings every cell shares, as TrainConfig resolved them (cells is never empty)
    table = write_table(out, cells, reports=reports, settings=settings.to_dict(),
                        preprocessing=cfg.preprocessing, val_fraction=cfg.val_fraction, model=cfg.model, data=cfg.data)
    return BenchmarkReport(out=out, cells=len(cells), table=table, **counts)


def _train_cell(cfg: TrainConfig, progress: bool, name: str, store: StoreHandle) -> tuple[str, list[dict[str, Any]]]:
    """Bring one cell's run on the open ``store`` to its last epoch; return "trained", "resumed" or
    "skipped" and the run's per-epoch history; say which on stderr under ``name`` (the epoch lines
    of training follow)."""
    folder = cfg.out
    last = os.path.join(folder, LAST)
    if os.path.exists(last):
        saved = TrainConfig.load(os.path.join(folder, CONFIG_JSON))
        if saved.identity() != cfg.identity():
            raise FmModelError("expected the run folder of this benchmark cell, got one trained with other settings "
                               "(use another --out, or remove it)", folder)
        history = list(load_checkpoint(last).extra.get("history", []))
        if len(history) > cfg.epochs:  # its best checkpoint may come from an epoch this table does not run
            raise FmModelError(f"expected the run folder of a {cfg.epochs}-epoch cell, got one trained for "
                               f"{len(history)} epochs (use --epochs {len(history)}, another --out, or remove it)",
                               folder)
        if len(history) == cfg.epochs:
            return "skipped", history
        print(f"{name}: resuming at epoch {len(history) + 1} of {cfg.epochs} ({folder})", file=sys.stderr,
              flush=True)
        # the old score is of the old best.pt: gone before training, so that a run killed between
        # training and scoring is scored when the benchmark runs again
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, REPORT))
        # where it runs is this invocation's (device, workers...), as for the cells it trains
        environment = {key: getattr(cfg, key) for key in RUN_ENVIRONMENT}
        # the model is this command's (--variants), never a name read from the cell's folder
        return "resumed", resume_run(folder, epochs=cfg.epochs, progress=progress, environment=environment,
                                     model=cfg.variant, store=store).history
    print(f"{name}: training ({folder})", file=sys.stderr, flush=True)
    return "trained", train(cfg, progress=progress, store=store).history


def _scored(folder: str) -> bool:
    """Whether a cell holds its evaluation report with the alarm figures (a report of an earlier
    version, without them, is scored again: same model, same numbers, and the alarms beside them)."""
    try:
        with open(os.path.join(folder, REPORT), encoding="utf-8") as fh:
            return "alarms" in json.load(fh)
    except (OSError, ValueError):
        return False


def _read(folder: str, history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A cell's evaluation report with the validation scores of its best epoch (from ``history``)
    and how the run was trained (``training``: its epochs and the data path training took)."""
    with open(os.path.join(folder, REPORT), encoding="utf-8") as fh:
        report: dict[str, Any] = json.load(fh)
    best = [r for r in history if r.get("best")]
    report["validation"] = best[-1] if best else None
    runtime = TrainConfig.load(os.path.join(folder, CONFIG_JSON)).runtime
    report["training"] = {"epochs": len(history), "data": (runtime.get("data") or {}).get("path")}
    return report
