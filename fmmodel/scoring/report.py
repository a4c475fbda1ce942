"""Evaluation report: one JSON file plus pictures (ROC and PR curves, confusion matrices, examples).

Everything is written into one folder by :func:`write_report`; the function returns the paths so
the CLI can print where to look. Pictures are PNGs drawn with matplotlib's Figure (no pyplot, no screen
needed). The JSON holds plain types only.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmdata.store.atomic import new_figure, replace_text, save_figure
from fmdata.store.outputs import atomic_output, folders_made_for
from fmmodel.scoring.metrics import THRESHOLD, predicted_abnormal

REPORT_JSON = "report.json"
ROC_PNG = "roc.png"
PR_PNG = "pr.png"
CONFUSION_PNG = "confusion.png"
EXAMPLES_PNG = "examples.png"


# the outcomes of a labelled frame, in the order the example picture shows them: (name, what it means)
OUTCOMES = (("hit", "true positive\nabnormal, said abnormal"), ("miss", "false negative\nabnormal, said normal"),
            ("false alarm", "false positive\nnormal, said abnormal"), ("correct normal", "true negative\nnormal, said normal"))


def outcome(label: int, prob: float) -> str:
    """The outcome (a name of :data:`OUTCOMES`) of a frame whose truth is ``label`` (1 abnormal)
    and whose probability of abnormal is ``prob`` (the one decision rule of fmmodel.scoring.metrics)."""
    said = bool(predicted_abnormal(prob))
    return ("hit" if said else "miss") if int(label) == 1 else ("false alarm" if said else "correct normal")


@dataclass
class Example:
    """One labelled frame for the example picture: image (H, W, 3) uint8 in true orientation,
    true and predicted masks (H, W) (predicted may be None for classifiers), its probability of
    abnormal and true label; where it lies: the recording's name (as the store and the tables
    name it), the frame within that recording and its time from the recording's first frame."""

    image: np.ndarray
    true_mask: np.ndarray
    pred_mask: np.ndarray | None
    prob: float
    label: int
    recording: str
    frame: int
    seconds: float

    @property
    def outcome(self) -> str:
        """Hit, miss, false alarm or correct normal (:func:`outcome`)."""
        return outcome(self.label, self.prob)

    def describe(self) -> dict[str, Any]:
        """What the picture shows of this example, as report.json lists it (plain types)."""
        return {"outcome": self.outcome, "recording": self.recording, "frame": int(self.frame),
                "seconds": float(self.seconds), "label": int(self.label), "prob": float(self.prob)}


def choose_examples(prob: np.ndarray, target: np.ndarray, recording: np.ndarray, frame: np.ndarray, *, k: int,
                    min_gap: int) -> list[int]:
    """Return the indices of up to ``k`` telling frames for the example picture.

    Takes the outcomes of :data:`OUTCOMES` in turn (one example each, round after round, while
    any has candidates left), each its most confident frame first (a miss: the lowest
    probability), but only frames at least ``min_gap`` frames (a window's span) from every
    frame already chosen in the same recording, so that no two examples show the same stretch;
    a recording that outcome has not shown yet is preferred. ``recording`` and ``frame`` (the
    frame within its recording) place each frame; all arrays are aligned.
    """
    prob, target = np.asarray(prob, dtype=np.float64), np.asarray(target)
    recording, frame = np.asarray(recording), np.asarray(frame, dtype=np.int64)
    said = predicted_abnormal(prob)
    members = {"hit": said & (target == 1), "miss": ~said & (target == 1), "false alarm": said & (target == 0),
               "correct normal": ~said & (target == 0)}
    candidates = {}
    for name, _ in OUTCOMES:
        idx = np.flatnonzero(members[name])
        candidates[name] = idx[np.argsort(-np.abs(prob[idx] - THRESHOLD), kind="stable")]
    chosen: list[int] = []
    shown: dict[str, set[Any]] = {name: set() for name, _ in OUTCOMES}
    while len(chosen) < k:
        added = False
        for name, _ in OUTCOMES:
            if len(chosen) == k:
                break
            c = candidates[name]
            if not len(c):
                continue
            far = np.ones(len(c), dtype=bool)
            for i in chosen:
                far &= (recording[c] != recording[i]) | (np.abs(frame[c] - frame[i]) >= min_gap)
            fresh = far & ~np.isin(recording[c], list(shown[name]))
            pick = np.flatnonzero(fresh if fresh.any() else far)
            if not len(pick):
                candidates[name] = c[:0]
                continue
            i = int(c[pick[0]])
            chosen.append(i)
            shown[name].add(recording[i].item())
            candidates[name] = np.delete(c, pick[0])
            added = True
        if not added:
            break
    return chosen


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


def _shortened(path: str, keep: int = 48) -> str:
    """A path for a picture's title: as given when short, else its last components after "..."."""
    if len(path) <= keep:
        return path
    parts = path.replace(os.sep, "/").split("/")
    tail = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(tail) + 1 > keep - 4:
            break
        tail = f"{part}/{tail}"
    return f".../{tail}"


def curve_titles(report: Mapping[str, Any]) -> dict[str, str]:
    """What each level of a report's curves was computed from, for the pictures' titles: the
    model, the checkpoint and the split ("what"), the windows with their abnormal and normal counts
    ("class") and the pixels ("pixel", segmenters only)."""
    overall = report["metrics"]["overall"]
    titles = {"what": f"{report.get('variant', 'model')} ({_shortened(str(report.get('checkpoint', '?')))}), "
                      f"{report.get('split', '?')} split"}
    confusion = (overall.get("class") or {}).get("confusion")
    if confusion is not None:
        (tn, fp), (fn, tp) = confusion
        titles["class"] = f"{tn + fp + fn + tp:,} windows ({fn + tp:,} abnormal, {tn + fp:,} normal)"
    pixel = overall.get("pixel") or {}
    if pixel.get("confusion") is not None and pixel.get("pixels"):
        (tn, fp), (fn, tp) = pixel["confusion"]
        titles["pixel"] = f"{pixel['pixels']:,} pixels ({(fn + tp) / pixel['pixels']:.2%} abnormal)"
    return titles


def plot_curves(path: str, curves: dict[str, dict[str, np.ndarray] | None], kind: str,
                scores: dict[str, float | None], titles: Mapping[str, str] | None = None) -> None:
    """Draw ROC (``kind="roc"``) or precision-recall (``"pr"``) curves, one line per level.

    ``curves`` maps a level name ("class", "pixel") to {"fpr","tpr","precision","recall"} or None;
    ``scores`` maps the same names to AUROC / AP for the legend; ``titles`` (:func:`curve_titles`)
    says what was scored ("what") and the samples of each level, in the title.
    """
    titles = titles or {}
    fig = new_figure(figsize=(5.2, 5.0), dpi=110, layout="constrained")
    ax = fig.add_subplot()
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
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
    heading = "ROC" if kind == "roc" else "precision-recall"
    lines = [f"{heading}: {titles['what']}" if "what" in titles else heading]
    lines += [f"{name}: {titles[name]}" for name, c in curves.items() if c is not None and name in titles]
    ax.set_title("\n".join(lines), fontsize=8)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if drawn:
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "undefined: only one class among the targets", ha="center", va="center", fontsize=8)
    save_figure(fig, path)


def plot_confusions(path: str, matrices: dict[str, list[list[int]] | None], title: str = "") -> None:
    """Draw each 2x2 confusion matrix [[TN, FP], [FN, TP]] (rows true, columns predicted) under
    ``title`` (what was scored)."""
    items = [(k, np.asarray(v)) for k, v in matrices.items() if v is not None]
    fig = new_figure(figsize=(3.6 * max(len(items), 1), 3.4), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, max(len(items), 1)))
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
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


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
    """Return the example picture's key (what the outlines and numbers are) and one caption per
    example: the recording's name, the frame in it and its time, and the probability of abnormal."""
    has_pred = any(e.pred_mask is not None for e in examples)
    key = ("outlines: green = true mask, red = predicted mask; p = predicted probability of abnormal "
           f"(abnormal when p > {THRESHOLD})" if has_pred else
           "outline: green = true mask (this model predicts a class only); p = its probability of abnormal "
           f"(abnormal when p > {THRESHOLD})")
    captions = [f"{e.recording}, frame {e.frame:,} ({e.seconds:,.1f} s)\np {e.prob:.2f}" for e in examples]
    return key, captions


def plot_examples(path: str, examples: Sequence[Example], title: str = "") -> None:
    """Draw the example frames in one column per outcome (:data:`OUTCOMES`, headed by its name and
    meaning; "none" where the split has no such frame), each frame enlarged with the true mask
    outlined in green and a segmenter's predicted mask in red, captioned by
    :func:`example_captions`; ``title`` (what was scored) and the key above."""
    key, captions = example_captions(examples)
    columns: dict[str, list[tuple[Example, str]]] = {name: [] for name, _ in OUTCOMES}
    for e, caption in zip(examples, captions):
        columns[e.outcome].append((e, caption))
    rows = max(1, max(len(v) for v in columns.values()))
    size = 2.3
    fig = new_figure(figsize=(size * len(OUTCOMES), size * rows + 1.1), dpi=110, layout="constrained")
    axes = fig.subplots(rows, len(OUTCOMES), squeeze=False)
    for col, (name, meaning) in enumerate(OUTCOMES):
        for row in range(rows):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if row < len(columns[name]):
                e, caption = columns[name][row]
                ax.imshow(_enlarged(e), interpolation="nearest")
                ax.set_xlabel(caption, fontsize=7)
            else:
                ax.axis("off")
                if row == 0:
                    ax.text(0.5, 0.5, "none chosen\n(no such frame in\nthis split)", ha="center", va="center",
                            fontsize=8, color="0.4", transform=ax.transAxes)
            if row == 0:
                ax.set_title(name, fontsize=9, fontweight="bold", pad=22)
                ax.text(0.5, 1.02, meaning, fontsize=7, ha="center", va="bottom", transform=ax.transAxes)
    fig.suptitle(f"{title}\n{key}" if title else key, fontsize=8)
    save_figure(fig, path, bbox_inches="tight", pad_inches=0.1)  # the captions below the last row included


def _enlarged(e: Example, pixels: int = 160) -> np.ndarray:
    """The example's frame enlarged (nearest) to about ``pixels`` on its longer side, with the true
    mask outlined in green and a predicted mask in red (outlines stay one pixel wide)."""
    scale = max(1, pixels // max(e.image.shape[:2]))
    grow = lambda a: np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)
    img = _outline(grow(e.image), grow(e.true_mask), (0, 255, 0))
    if e.pred_mask is not None:
        img = _outline(img, grow(e.pred_mask), (255, 0, 0))
    return img


def write_report(out_dir: str | os.PathLike[str], report: dict[str, Any],
                 class_curves: dict[str, np.ndarray] | None = None,
                 pixel_curves: dict[str, np.ndarray] | None = None,
                 examples: Sequence[Example] = ()) -> dict[str, str]:
    """Write ``report.json`` and the pictures into ``out_dir``; return {what: path}.

    ``report`` is the evaluator's dict (it must hold ``metrics.overall``); curves are those of
    :func:`fmmodel.scoring.metrics.class_curves` and :meth:`fmmodel.scoring.metrics.MetricSet.pixel_curves`.
    A new ``out_dir`` appears complete or not at all (written aside and renamed into place; a
    failure leaves no folder it made); an existing one has its report files rewritten, each whole.
    """
    out_dir = os.fspath(out_dir)
    names = {"report": REPORT_JSON, "roc": ROC_PNG, "pr": PR_PNG, "confusion": CONFUSION_PNG}
    if examples:
        names["examples"] = EXAMPLES_PNG
    with folders_made_for(out_dir):
        if os.path.isdir(out_dir):
            _write_report_files(out_dir, names, report, class_curves, pixel_curves, examples)
        else:
            with atomic_output(out_dir, folder=True) as tmp:
                _write_report_files(os.fspath(tmp), names, report, class_curves, pixel_curves, examples)
    return {k: os.path.join(out_dir, v) for k, v in names.items()}


def _write_report_files(folder: str, names: Mapping[str, str], report: dict[str, Any],
                        class_curves: dict[str, np.ndarray] | None, pixel_curves: dict[str, np.ndarray] | None,
                        examples: Sequence[Example]) -> None:
    """Write the files of :func:`write_report` (``names``: what -> file name) into ``folder``."""
    paths = {k: os.path.join(folder, v) for k, v in names.items()}
    overall = report["metrics"]["overall"]
    cls, pix = overall.get("class", {}), overall.get("pixel")
    curves = {"class": class_curves, "pixel": pixel_curves}
    titles = curve_titles(report)
    plot_curves(paths["roc"], curves, "roc", {"class": cls.get("auroc"), "pixel": (pix or {}).get("auroc")}, titles)
    plot_curves(paths["pr"], curves, "pr", {"class": cls.get("ap"), "pixel": (pix or {}).get("ap")}, titles)
    plot_confusions(paths["confusion"], {"class": cls.get("confusion"),
                                         "pixel": (pix or {}).get("confusion") if pix and pix.get("pixels") else None},
                    title=f"confusion: {titles['what']}")
    if examples:
        plot_examples(paths["examples"], examples, title=f"examples: {titles['what']}")
    shown = {"examples": [e.describe() for e in examples]} if examples else {}
    write_json(paths["report"], {**report, "files": dict(names), **shown})


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
