"""A run's training curves as one picture, ``curves.png`` in the run folder, redrawn every epoch.

Four panels over the epochs of ``metrics.csv`` (the run's history): the training and validation
losses, the validation scores (class F1 and AUROC; mIoU for segmentation), the learning rate
(log scale) and the training speed (samples/s); the best epoch (the one ``best.pt`` holds) is
marked in every panel. The title names the run folder, the model and the store. The picture is
written atomically and marked as ``fmmodel train``'s (:func:`fmdata.store.atomic.save_figure`);
matplotlib's object API is used (no pyplot: no global state in a training process).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fmdata.store.atomic import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CURVES_PNG = "curves.png"
MADE_BY = "fmmodel train"
_SCORES = (("val_f1", "F1"), ("val_auroc", "AUROC"), ("val_miou", "mIoU"))


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of ``key`` over the epochs that have a finite value of it."""
    points = [(int(r["epoch"]), float(r[key])) for r in history
              if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
    return [e for e, _ in points], [v for _, v in points]


def draw_curves(history: Sequence[Mapping[str, Any]], *, title: str) -> Figure:
    """Return the figure of ``history`` (rows of metrics.csv as dicts) under ``title``."""
    fig = new_figure(figsize=(10.0, 6.4), dpi=100)
    axes = fig.subplots(2, 2, sharex=True)
    best = [int(r["epoch"]) for r in history if r.get("best")]
    epochs = [int(r["epoch"]) for r in history]

    def mark_best(ax: Any) -> None:
        if best:
            ax.axvline(best[-1], color="tab:green", alpha=0.35, lw=3, label=f"best.pt (epoch {best[-1]})")

    ax = axes[0][0]
    for key, name, style in (("train_loss", "training", "o-"), ("val_loss", "validation", "s-")):
        x, y = _series(history, key)
        if x:
            ax.plot(x, y, style, ms=4, label=name)
    mark_best(ax)
    ax.set_title("loss (cross-entropy)", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[0][1]
    drawn = False
    for key, name in _SCORES:
        x, y = _series(history, key)
        if x:
            ax.plot(x, y, "o-", ms=4, label=f"validation {name}")
            drawn = True
    if drawn:
        ax.set_ylim(-0.02, 1.02)
        mark_best(ax)
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no validation\n(--val-fraction 0, or the recordings\nare too short for the hold-out)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_title("validation scores", fontsize=10)

    ax = axes[1][0]
    x, y = _series(history, "lr")
    if x:
        ax.plot(x, y, "o-", ms=4, color="tab:purple")
        if min(y) > 0:
            ax.set_yscale("log")
    ax.set_title("learning rate", fontsize=10)
    ax.set_xlabel("epoch")

    ax = axes[1][1]
    x, y = _series(history, "samples_per_s")
    if x:
        ax.plot(x, y, "o-", ms=4, color="tab:brown")
        ax.set_ylim(0, max(y) * 1.15)
    ax.set_title("training speed (samples/s)", fontsize=10)
    ax.set_xlabel("epoch")

    for row in axes:
        for a in row:
            a.grid(alpha=0.3)
            if epochs:
                a.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
                a.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def write_curves(run_dir: str, history: Sequence[Mapping[str, Any]], *, title: str) -> str:
    """Draw ``history`` into ``run_dir``/curves.png (atomically, marked); return its path."""
    path = os.path.join(run_dir, CURVES_PNG)
    save_figure(draw_curves(history, title=title), path, made_by=MADE_BY)
    return path
