"""Evaluation report: one JSON file plus pictures (ROC and PR curves, confusion matrices, examples).

Everything is written into one folder by :func:`write_report`; the function returns the paths so
the CLI can print where to look. Pictures are PNGs drawn with matplotlib's Agg backend (no screen
needed). The JSON holds plain types only.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np

from fmdata.store.atomic import replace_text, save_figure
from fmmodel.scoring.metrics import THRESHOLD, predicted_abnormal

matplotlib.use("Agg")  # files only, never a window; before pyplot is imported
import matplotlib.pyplot as plt

REPORT_JSON = "report.json"
ROC_PNG = "roc.png"
PR_PNG = "pr.png"
CONFUSION_PNG = "confusion.png"
EXAMPLES_PNG = "examples.png"


@dataclass
class Example:
    """One labelled frame for the example picture: image (H, W, 3) uint8 in true orientation,
    true and predicted masks (H, W) (predicted may be None for classifiers), its probability."""

    image: np.ndarray
    true_mask: np.ndarray
    pred_mask: np.ndarray | None
    prob: float
    label: int
    recording: int
    frame: int


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if math.isnan(v) or math.isinf(v) else v
    return x


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers and words of a window table's parameters, as a report records them."""
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str))}


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON atomically (NaN/inf become null, other objects their text)."""
    replace_text(path, json.dumps(_jsonable(data), indent=2, default=str) + "\n")


def plot_curves(path: str, curves: dict[str, dict[str, np.ndarray] | None], kind: str,
                scores: dict[str, float | None]) -> None:
    """Draw ROC (``kind="roc"``) or precision-recall (``"pr"``) curves, one line per level.

    ``curves`` maps a level name ("class", "pixel") to {"fpr","tpr","precision","recall"} or None;
    ``scores`` maps the same names to AUROC / AP for the legend.
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    drawn = 0
    for name, c in curves.items():
        if c is None:
            continue
        s = scores.get(name)
        label = f"{name} ({'AUROC' if kind == 'roc' else 'AP'} {s:.3f})" if s is not None else name
        if kind == "roc":
            ax.plot(c["fpr"], c["tpr"], label=label, lw=1.6)
        else:
            ax.step(c["recall"], c["precision"], where="post", label=label, lw=1.6)
        drawn += 1
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC")
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("precision-recall")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if drawn:
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "undefined: only one class among the targets", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_confusions(path: str, matrices: dict[str, list[list[int]] | None]) -> None:
    """Draw each 2x2 confusion matrix [[TN, FP], [FN, TP]] (rows true, columns predicted)."""
    items = [(k, np.asarray(v)) for k, v in matrices.items() if v is not None]
    fig, axes = plt.subplots(1, max(len(items), 1), figsize=(3.6 * max(len(items), 1), 3.4), dpi=110)
    axes = np.atleast_1d(axes)
    for ax, (name, cm) in zip(axes, items):
        rows = cm.sum(axis=1, keepdims=True).clip(min=1)
        ax.imshow(cm / rows, vmin=0, vmax=1, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j]):,}\n{cm[i, j] / rows[i, 0]:.1%}", ha="center", va="center",
                        fontsize=8, color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black")
        ax.set_xticks([0, 1], ["normal", "abnormal"])
        ax.set_yticks([0, 1], ["normal", "abnormal"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} level")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    m = mask.astype(bool)
    if not m.any():
        return image
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    out = image.copy()
    out[m & ~inner] = color
    return out


CLASS_NAMES = ("normal", "abnormal")


def example_captions(examples: Sequence[Example]) -> tuple[str, list[str]]:
    """Return the example picture's heading and one title per example: what the model said
    (class, probability) beside the truth, and what the outlines are (a predicted mask only for
    models that predict one)."""
    has_pred = any(e.pred_mask is not None for e in examples)
    heading = ("outlines: green = true mask, red = predicted mask\np = predicted probability of abnormal"
               if has_pred else
               "outline: green = true mask; this model predicts a class only\n(p = its probability of abnormal; "
               f"abnormal when p > {THRESHOLD})")
    titles = [f"rec {e.recording} frame {e.frame}\ntrue {CLASS_NAMES[int(e.label)]}, predicted "
              f"{CLASS_NAMES[int(predicted_abnormal(e.prob))]} (p {e.prob:.2f})" for e in examples]
    return heading, titles


def plot_examples(path: str, examples: Sequence[Example]) -> None:
    """Draw example frames with :func:`example_captions`: the frame (true mask outlined in green,
    a predicted mask in red), the true mask, and the predicted mask of a segmenter."""
    n = max(len(examples), 1)
    has_pred = any(e.pred_mask is not None for e in examples)
    cols = 3 if has_pred else 2
    heading, titles = example_captions(examples)
    fig, axes = plt.subplots(n, cols, figsize=(2.3 * cols, 2.3 * n + 0.4), dpi=110, squeeze=False)
    for row, e, title in zip(axes, examples, titles):
        img = _outline(e.image, e.true_mask, (0, 255, 0))
        if e.pred_mask is not None:
            img = _outline(img, e.pred_mask, (255, 0, 0))
        row[0].imshow(img, interpolation="nearest")
        row[0].set_title(title, fontsize=7)
        row[1].imshow(e.true_mask, vmin=0, vmax=1, cmap="gray", interpolation="nearest")
        row[1].set_title("true mask", fontsize=7)
        if e.pred_mask is not None:
            row[2].imshow(e.pred_mask, vmin=0, vmax=1, cmap="gray", interpolation="nearest")
            row[2].set_title("predicted mask", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(heading, fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.3 * n + 0.4)))  # room for the two-line heading
    save_figure(fig, path)
    plt.close(fig)


def write_report(out_dir: str | os.PathLike[str], report: dict[str, Any],
                 class_curves: dict[str, np.ndarray] | None = None,
                 pixel_curves: dict[str, np.ndarray] | None = None,
                 examples: Sequence[Example] = ()) -> dict[str, str]:
    """Write ``report.json`` and the pictures into ``out_dir`` (created); return {what: path}.

    ``report`` is the evaluator's dict (it must hold ``metrics.overall``); curves are those of
    :func:`fmmodel.scoring.metrics.class_curves` and :meth:`fmmodel.scoring.metrics.MetricSet.pixel_curves`.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"report": os.path.join(out_dir, REPORT_JSON), "roc": os.path.join(out_dir, ROC_PNG),
             "pr": os.path.join(out_dir, PR_PNG), "confusion": os.path.join(out_dir, CONFUSION_PNG)}
    overall = report["metrics"]["overall"]
    cls, pix = overall.get("class", {}), overall.get("pixel")
    curves = {"class": class_curves, "pixel": pixel_curves}
    plot_curves(paths["roc"], curves, "roc", {"class": cls.get("auroc"), "pixel": (pix or {}).get("auroc")})
    plot_curves(paths["pr"], curves, "pr", {"class": cls.get("ap"), "pixel": (pix or {}).get("ap")})
    plot_confusions(paths["confusion"], {"class": cls.get("confusion"),
                                         "pixel": (pix or {}).get("confusion") if pix and pix.get("pixels") else None})
    if examples:
        paths["examples"] = os.path.join(out_dir, EXAMPLES_PNG)
        plot_examples(paths["examples"], examples)
    report = dict(report)
    report["files"] = {k: os.path.basename(v) for k, v in paths.items()}
    write_json(paths["report"], report)
    return paths


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2%}" if pct else f"{v:.4f}"


def format_report(report: dict[str, Any]) -> str:
    """Return the evaluation report as a few readable lines (overall, per recording, files)."""
    m = report["metrics"]
    lines = [f"{report['variant']} on {report['store']} split={report['split']} windows={report['windows']['count']:,} "
             f"({report['device']}, {report['precision']}, {report['world_size']} process(es))"]
    fps = report.get("fps")
    lines.append(f"FPS {fps:,.1f} (whole loop), {report.get('model_fps') or 0:,.1f} (model only)" if fps else "FPS n/a")
    head = f"{'':<14}{'n':>7}{'acc':>8}{'F1':>8}{'prec':>8}{'recall':>8}{'FDR':>8}{'MDR':>8}{'AUROC':>8}{'AP':>8}"
    rows = [("overall", m["overall"])] + [(e.get("name", r), e) for r, e in m["recordings"].items()]
    lines += ["class level:", head]
    for name, e in rows:
        c = e.get("class", {})
        lines.append(f"{str(name)[:13]:<14}{c.get('n', 0):>7}" + "".join(
            f"{_f(c.get(k)):>8}" for k in ("accuracy", "f1", "precision", "recall", "fdr", "mdr", "auroc", "ap")))
    if m["overall"].get("pixel") is not None:
        lines += ["pixel level (dataset-wide confusion matrix, mIoU over both classes):",
                  f"{'':<14}{'pixels':>11}{'PA':>8}{'mPA':>8}{'mIoU':>8}{'AUROC':>8}{'AP':>8}"]
        for name, e in rows:
            p = e.get("pixel") or {}
            lines.append(f"{str(name)[:13]:<14}{p.get('pixels', 0):>11,}" + "".join(
                f"{_f(p.get(k)):>8}" for k in ("pixel_accuracy", "mean_pixel_accuracy", "miou", "auroc", "ap")))
    files = report.get("files")
    if files:
        lines.append("report: " + files["report"])
        lines.append("pictures: " + ", ".join(v for k, v in files.items() if k != "report"))
    return "\n".join(lines)
