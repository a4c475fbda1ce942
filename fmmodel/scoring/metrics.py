"""Class- and pixel-level anomaly metrics (torchmetrics), overall and per recording.

Conventions (they follow the benchmark's reference test script, docs/reference-protocol.md, "Metrics"):
- Everything is fed PROBABILITIES of the abnormal class (softmax of the model's two logits),
  never logits: torchmetrics' binary metrics would silently apply a sigmoid to a batch with any
  value outside [0, 1]. Targets are integer tensors.
- One decision rule (:func:`predicted_abnormal`, used by evaluate, predict and the pictures): a
  window or pixel is abnormal when its probability exceeds :data:`THRESHOLD` (0.5). That is the
  authors' argmax of the two logits, ties included: equal logits give p == 0.5 exactly, and
  ``torch.argmax`` returns the first maximal index, class 0 (normal).
- Class level: accuracy, F1, precision, recall, FDR = FP / (FP + TN), MDR = FN / (TP + FN), AUROC
  and AP (exact, micro-averaged over all windows), and the confusion matrix [[TN, FP], [FN, TP]].
  Per-window outputs are kept (four numbers a window), so memory grows with the number of
  windows only, never with pixels.
- Pixel level: one dataset-wide 2x2 confusion matrix over every labelled-frame pixel; pixel
  accuracy = trace / total; mean pixel accuracy = mean over the classes of the per-class recall
  TP_c / (TP_c + FN_c); mIoU = mean over BOTH classes (normal and abnormal) of
  TP_c / (TP_c + FP_c + FN_c). Two rules for a ratio whose denominator is 0
  (:func:`pixel_scores_from_confusion`). The toolkit's (the default) leaves it out of its mean: a
  class's recall is left out when the class has no target pixels (even if it is predicted), its
  IoU when it has neither target nor predicted pixels; a mean with nothing left is None. So
  confusion [[90, 10], [0, 0]] gives mean pixel accuracy 0.9 (normal only) and mIoU 0.45 (normal
  0.9, abnormal 0). The reference's (``rule="reference"``, what ``evaluate --protocol reference``
  reports) adds 1e-5 to every denominator, so such a class scores 0 and stays in the means:
  confusion [[10000, 0], [0, 0]] gives mean pixel accuracy and mIoU 1.0 by the toolkit's rule and
  0.5 by the reference's. Pixel AUROC and AP use binned torchmetrics states
  (``thresholds=int``): constant memory however many pixels are seen.
- Under DDP every rank accumulates its own shard; :meth:`MetricSet.compute` gathers the class
  records (dropping repeated windows by their key, so a padded sampler cannot count a window
  twice) and sums the pixel states, then returns identical results on every rank.
"""
from __future__ import annotations

import functools
import math
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fmmodel.errors import FmModelError
from fmmodel.protocol import EVAL_PROTOCOLS, PIXEL_EPS

if TYPE_CHECKING:
    from torchmetrics import MetricCollection


_METRICS = ("BinaryAccuracy", "BinaryAUROC", "BinaryAveragePrecision", "BinaryConfusionMatrix", "BinaryF1Score",
            "BinaryPrecision", "BinaryPrecisionRecallCurve", "BinaryRecall", "BinaryROC")


@functools.cache
def _tm() -> Any:
    """torchmetrics' classification metrics, imported when first used: importing torchmetrics costs
    about 1.3 s of CPU (its package imports every domain's metrics), which every ``fmmodel``
    command, and every process that only loads a model, would otherwise pay at start."""
    import torchmetrics  # deliberately late: see above
    import torchmetrics.classification
    return types.SimpleNamespace(MetricCollection=torchmetrics.MetricCollection,
                                 **{n: getattr(torchmetrics.classification, n) for n in _METRICS})

DEFAULT_PIXEL_THRESHOLDS = 201  # 0, 0.005, ..., 1: constant-size state per recording
# The decision threshold on P(abnormal): abnormal when the probability exceeds it (predicted_abnormal).
THRESHOLD = 0.5


def predicted_abnormal(prob: Any) -> Any:
    """Return where ``prob`` (P(abnormal): a float, numpy array or tensor) is decided abnormal:
    ``prob > THRESHOLD``, the authors' argmax of two logits (a tie, p == 0.5, is normal: argmax
    returns the first class). The one decision rule of evaluate, predict and the pictures."""
    return prob > THRESHOLD


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Return P(abnormal) from two-class logits: (B, 2) -> (B,), (B, 2, H, W) -> (B, H, W)."""
    if logits.ndim < 2 or logits.shape[1] != 2:
        raise FmModelError(f"expected logits with 2 classes on axis 1, got shape {tuple(logits.shape)}")
    return torch.softmax(logits.detach().float(), dim=1)[:, 1]


def window_probability_from_mask(mask_prob: torch.Tensor) -> torch.Tensor:
    """Return a window's class probability from its pixel probabilities (B, H, W) -> (B,).

    A frame is abnormal when any pixel is, so a segmentation model's class score is its most
    abnormal pixel.
    """
    return mask_prob.flatten(1).amax(dim=1)


def _check_probs(p: torch.Tensor, what: str) -> None:
    if p.numel() and (bool(torch.isnan(p).any()) or float(p.min()) < 0.0 or float(p.max()) > 1.0):
        raise FmModelError(f"{what}: expected probabilities in [0, 1] (softmax of the logits), "
                           f"got values in [{float(p.min()):.3g}, {float(p.max()):.3g}]")


def _quiet(fn: Callable[[], Any]) -> Any:
    # torchmetrics warns on single-class inputs; we report those cases as null instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def class_scores(prob: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """Return the class-level metrics of window probabilities ``prob`` and 0/1 ``target``.

    AUROC and AP are None when they are undefined (only one class among the targets); so are
    FDR and MDR without negatives or positives. ``n`` is the number of windows.
    """
    prob = prob.detach().float().cpu()
    target = target.detach().long().cpu()
    _check_probs(prob, "class metrics")
    n = int(target.numel())
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return out
    # sync_on_compute=False: records are already gathered from every rank
    coll = _tm().MetricCollection({
        "accuracy": _tm().BinaryAccuracy(sync_on_compute=False),
        "f1": _tm().BinaryF1Score(sync_on_compute=False),
        "precision": _tm().BinaryPrecision(sync_on_compute=False),
        "recall": _tm().BinaryRecall(sync_on_compute=False),
        "confusion": _tm().BinaryConfusionMatrix(sync_on_compute=False),
    }, compute_groups=False)
    coll.update(predicted_abnormal(prob).long(), target)  # decisions (integers): torchmetrics applies no threshold
    res = _quiet(coll.compute)
    cm = res["confusion"].long()
    tn, fp, fn, tp = (int(cm[0, 0]), int(cm[0, 1]), int(cm[1, 0]), int(cm[1, 1]))
    out.update({k: float(res[k]) for k in ("accuracy", "f1", "precision", "recall")})
    out["fdr"] = _ratio(fp, fp + tn)
    out["mdr"] = _ratio(fn, tp + fn)
    both = 0 < int(target.sum()) < n
    out["auroc"] = float(_quiet(lambda: _tm().BinaryAUROC(sync_on_compute=False)(prob, target))) if both else None
    positives = int(target.sum()) > 0
    out["ap"] = (float(_quiet(lambda: _tm().BinaryAveragePrecision(sync_on_compute=False)(prob, target)))
                 if positives else None)
    out["confusion"] = [[tn, fp], [fn, tp]]
    out["positives"] = int(target.sum())
    return out


def class_curves(prob: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray] | None:
    """Return exact ROC and PR curves {"fpr", "tpr", "precision", "recall"}; None with one class."""
    prob = prob.detach().float().cpu()
    target = target.detach().long().cpu()
    if not 0 < int(target.sum()) < int(target.numel()):
        return None
    fpr, tpr, _ = _quiet(lambda: _tm().BinaryROC(sync_on_compute=False)(prob, target))
    precision, recall, _ = _quiet(lambda: _tm().BinaryPrecisionRecallCurve(sync_on_compute=False)(prob, target))
    return {"fpr": fpr.numpy(), "tpr": tpr.numpy(), "precision": precision.numpy(), "recall": recall.numpy()}


def pixel_scores_from_confusion(cm: np.ndarray, rule: str = "toolkit") -> dict[str, Any]:
    """Return pixel accuracy, mean pixel accuracy and mIoU of a 2x2 [[TN, FP], [FN, TP]] matrix.

    Rows are the true class, columns the predicted class. ``rule`` "toolkit": per-class values
    that are undefined (0 / 0) are left out of the means, and a mean with nothing left is None: a
    class's recall (mean pixel accuracy) when the class has no target pixels, its IoU when it has
    neither target nor predicted pixels. ``rule`` "reference": as the authors' metric, every
    denominator carries +1e-5 (``fmmodel.protocol.PIXEL_EPS``), so such a class scores 0 and
    stays in the means.
    """
    if rule not in EVAL_PROTOCOLS:
        raise FmModelError(f"expected a pixel metric rule in {EVAL_PROTOCOLS}, got {rule!r}", field="protocol")
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    diag = np.diag(cm)
    if rule == "reference":
        class_acc = diag / (cm.sum(axis=1) + PIXEL_EPS)
        iou = diag / (cm.sum(axis=1) + cm.sum(axis=0) - diag + PIXEL_EPS)
        return {
            "pixel_accuracy": float(diag.sum() / (total + PIXEL_EPS)),
            "mean_pixel_accuracy": float(class_acc.mean()),
            "miou": float(iou.mean()),
            "iou": [float(x) for x in iou],
            "pixels": int(total),
            "confusion": cm.astype(np.int64).tolist(),
            "rule": rule,
        }
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = diag / cm.sum(axis=1)
        iou = diag / (cm.sum(axis=1) + cm.sum(axis=0) - diag)

    def nanmean(v: np.ndarray) -> float | None:
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else None

    return {
        "pixel_accuracy": _ratio(diag.sum(), total),
        "mean_pixel_accuracy": nanmean(class_acc),
        "miou": nanmean(iou),
        "iou": [None if math.isnan(x) else float(x) for x in iou],
        "pixels": int(total),
        "confusion": cm.astype(np.int64).tolist(),
        "rule": rule,
    }


def _pixel_collection(thresholds: int) -> MetricCollection:
    # sync_on_compute=False: MetricSet syncs explicitly, in a fixed order on every rank
    return _tm().MetricCollection({
        # torchmetrics decides probabilities by preds > threshold: predicted_abnormal's rule (tested)
        "confusion": _tm().BinaryConfusionMatrix(threshold=THRESHOLD, sync_on_compute=False),
        "auroc": _tm().BinaryAUROC(thresholds=thresholds, sync_on_compute=False),
        "ap": _tm().BinaryAveragePrecision(thresholds=thresholds, sync_on_compute=False),
        "roc": _tm().BinaryROC(thresholds=thresholds, sync_on_compute=False),
        "pr": _tm().BinaryPrecisionRecallCurve(thresholds=thresholds, sync_on_compute=False),
    }, compute_groups=[["confusion"], ["auroc", "ap", "roc", "pr"]])


@dataclass
class MetricSet:
    """Accumulates class- (and optionally pixel-) level metrics for ``recordings`` recordings.

    ``update`` takes, per batch: window keys (any int64 unique per window, e.g. the labelled
    frame), recording ids, class targets and probabilities; with ``pixel=True`` also true masks
    (B, H, W) and pixel probabilities (B, H, W). ``compute`` returns a JSON-able dict
    {"overall": {...}, "recordings": {id: {...}}} identical on every rank; its pixel accuracies and
    mIoU follow ``pixel_rule`` (:func:`pixel_scores_from_confusion`).
    """

    recordings: int
    pixel: bool = False
    pixel_thresholds: int = DEFAULT_PIXEL_THRESHOLDS
    pixel_rule: str = "toolkit"
    device: torch.device | str = "cpu"
    _keys: list[np.ndarray] = field(default_factory=list, repr=False)
    _recs: list[np.ndarray] = field(default_factory=list, repr=False)
    _targets: list[np.ndarray] = field(default_factory=list, repr=False)
    _probs: list[np.ndarray] = field(default_factory=list, repr=False)
    _pixel: list[MetricCollection] = field(default_factory=list, repr=False)
    _curves: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pixel_rule not in EVAL_PROTOCOLS:
            raise FmModelError(f"expected a pixel metric rule in {EVAL_PROTOCOLS}, got {self.pixel_rule!r}",
                               field="protocol")
        if self.pixel:
            self._pixel = [_pixel_collection(self.pixel_thresholds).to(self.device) for _ in range(self.recordings)]

    def update(self, keys: torch.Tensor, recording: torch.Tensor, target: torch.Tensor, prob: torch.Tensor,
               mask: torch.Tensor | None = None, mask_prob: torch.Tensor | None = None) -> None:
        """Add one batch (see the class docstring)."""
        prob = prob.detach().float()
        _check_probs(prob, "class metrics")
        self._keys.append(keys.detach().cpu().numpy().astype(np.int64).ravel())
        self._recs.append(recording.detach().cpu().numpy().astype(np.int64).ravel())
        self._targets.append(target.detach().cpu().numpy().astype(np.int64).ravel())
        self._probs.append(prob.cpu().numpy().astype(np.float32).ravel())
        if not self.pixel:
            return
        if mask is None or mask_prob is None:
            raise FmModelError("pixel metrics: expected true masks and pixel probabilities, got none")
        mask_prob = mask_prob.detach().float()
        _check_probs(mask_prob, "pixel metrics")
        mask = mask.detach().long().to(mask_prob.device)
        recs = recording.detach().to(mask_prob.device)
        for r in torch.unique(recs).tolist():
            sel = recs == r
            self._pixel[int(r)].update(mask_prob[sel].reshape(-1), mask[sel].reshape(-1))

    def _local_records(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        return (cat(self._keys, np.int64), cat(self._recs, np.int64), cat(self._targets, np.int64),
                cat(self._probs, np.float32))

    def records(self, gather: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Return the per-window records {key, recording, target, prob}, sorted by key, unique.

        ``gather`` concatenates an array across ranks (``fmmodel.runtime.distributed.all_gather_array``);
        repeated keys (a padded sampler's duplicates) are kept once.
        """
        keys, recs, targets, probs = self._local_records()
        if gather is not None:
            keys, recs, targets, probs = (gather(keys), gather(recs), gather(targets), gather(probs))
        keys, first = np.unique(keys, return_index=True)
        return {"key": keys, "recording": recs[first], "target": targets[first], "prob": probs[first]}

    def compute(self, gather: Callable[[np.ndarray], np.ndarray] | None = None,
                sync_pixels: bool = False) -> dict[str, Any]:
        """Return {"overall": {...}, "recordings": {str(id): {...}}} (see the module docstring).

        ``gather`` as in :meth:`records`; ``sync_pixels`` sums the pixel states over all ranks
        (call it on every rank: it communicates).
        """
        rec = self.records(gather)
        prob, target = torch.from_numpy(rec["prob"]), torch.from_numpy(rec["target"])
        overall: dict[str, Any] = {"class": class_scores(prob, target)}
        per: dict[str, Any] = {}
        for r in range(self.recordings):
            sel = torch.from_numpy(rec["recording"] == r)
            if int(sel.sum()):
                per[str(r)] = {"class": class_scores(prob[sel], target[sel])}
        if self.pixel:
            if sync_pixels:
                for coll in self._pixel:
                    for m in coll.values():
                        m.sync(should_sync=True, distributed_available=torch.distributed.is_initialized)
            total = _pixel_collection(self.pixel_thresholds).to(self.device)
            for r, coll in enumerate(self._pixel):
                if _pixel_count(coll):
                    for name, m in total.items():
                        m.merge_state(coll[name])
                    per.setdefault(str(r), {})["pixel"] = _pixel_result(coll, self.pixel_rule)
            overall["pixel"] = _pixel_result(total, self.pixel_rule) if _pixel_count(total) else {"pixels": 0}
            self._curves = _curves(total) if _pixel_count(total) else None
            if sync_pixels:
                for coll in self._pixel:
                    for m in coll.values():
                        if m._is_synced:
                            m.unsync()
        return {"overall": overall, "recordings": per}

    def pixel_curves(self) -> dict[str, np.ndarray] | None:
        """Return the binned pixel ROC and PR curves over all recordings (and ranks) of the last
        :meth:`compute`; None before it, for classifiers, or without pixels."""
        return self._curves


def _metric(coll: MetricCollection, name: str) -> Any:
    """One metric of a collection (typed as Any: torchmetrics' states are set dynamically)."""
    return coll[name]


def _pixel_count(coll: MetricCollection) -> int:
    return int(_metric(coll, "confusion").confmat.sum())


def _curves(coll: MetricCollection) -> dict[str, np.ndarray]:
    fpr, tpr, _ = _quiet(_metric(coll, "roc").compute)
    precision, recall, _ = _quiet(_metric(coll, "pr").compute)
    return {"fpr": fpr.cpu().numpy(), "tpr": tpr.cpu().numpy(),
            "precision": precision.cpu().numpy(), "recall": recall.cpu().numpy()}


def _pixel_result(coll: MetricCollection, rule: str) -> dict[str, Any]:
    cm = _metric(coll, "confusion").confmat.cpu().numpy()
    out = pixel_scores_from_confusion(cm, rule=rule)
    positives, negatives = int(cm[1].sum()), int(cm[0].sum())
    out["auroc"] = float(_quiet(_metric(coll, "auroc").compute)) if positives and negatives else None
    out["ap"] = float(_quiet(_metric(coll, "ap").compute)) if positives else None
    out["auc_thresholds"] = int(_metric(coll, "auroc").thresholds.numel())
    return out


def summary_line(result: dict[str, Any]) -> str:
    """Return a one-line human summary of ``MetricSet.compute()['overall']``."""
    c = result.get("class", {})
    parts = [f"n={c.get('n', 0)}"]
    for k in ("accuracy", "f1", "fdr", "mdr", "auroc", "ap"):
        v = c.get(k)
        parts.append(f"{k}={'n/a' if v is None else f'{v:.4f}'}")
    p = result.get("pixel")
    if p and p.get("pixels"):
        for k in ("pixel_accuracy", "mean_pixel_accuracy", "miou", "auroc", "ap"):
            v = p.get(k)
            parts.append(f"pixel_{k.removeprefix('pixel_')}={'n/a' if v is None else f'{v:.4f}'}")
    return " ".join(parts)
