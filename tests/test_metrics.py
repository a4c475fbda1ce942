"""Class- and pixel-level metrics against independent numpy/scipy computations."""
import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from fmmodel.errors import FmModelError
from fmmodel.scoring.metrics import (
    MetricSet,
    class_scores,
    pixel_scores_from_confusion,
    probabilities,
    window_probability_from_mask,
)


def _numpy_ap(prob, target):
    # average precision as the step-wise sum over distinct thresholds: sum (R_n - R_{n-1}) P_n
    order = np.argsort(-prob, kind="mergesort")
    p, t = prob[order], target[order]
    distinct = np.r_[np.nonzero(np.diff(p))[0], p.size - 1]
    tp = np.cumsum(t)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / t.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _random_case(n, seed, pos=0.3):
    rng = np.random.default_rng(seed)
    target = (rng.random(n) < pos).astype(np.int64)
    prob = np.clip(rng.normal(0.35 + 0.3 * target, 0.2), 0, 1).astype(np.float32)
    return prob, target


def test_class_scores_equal_numpy_definitions():
    prob, target = _random_case(500, 1)
    got = class_scores(torch.from_numpy(prob), torch.from_numpy(target))
    pred = prob >= 0.5
    tp = int(np.sum(pred & (target == 1)))
    fp = int(np.sum(pred & (target == 0)))
    fn = int(np.sum(~pred & (target == 1)))
    tn = int(np.sum(~pred & (target == 0)))
    assert got["confusion"] == [[tn, fp], [fn, tp]]
    assert got["n"] == 500 and got["positives"] == int(target.sum())
    assert got["accuracy"] == pytest.approx((tp + tn) / 500)
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    assert got["recall"] == pytest.approx(tp / (tp + fn))
    assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert got["fdr"] == pytest.approx(fp / (fp + tn))
    assert got["mdr"] == pytest.approx(fn / (tp + fn))
    # AUROC is the Mann-Whitney U statistic over positives x negatives (ties count half)
    u = mannwhitneyu(prob[target == 1], prob[target == 0]).statistic
    assert got["auroc"] == pytest.approx(u / (target.sum() * (500 - target.sum())), rel=1e-5)
    assert got["ap"] == pytest.approx(_numpy_ap(prob, target), rel=1e-5)


def test_single_class_gives_null_auroc_and_fdr():
    got = class_scores(torch.tensor([0.9, 0.8, 0.2]), torch.tensor([1, 1, 1]))
    assert got["auroc"] is None and got["fdr"] is None
    assert got["mdr"] == pytest.approx(1 / 3)
    got = class_scores(torch.tensor([0.9, 0.1]), torch.tensor([0, 0]))
    assert got["ap"] is None and got["mdr"] is None and got["fdr"] == pytest.approx(0.5)


def test_logits_are_refused_probabilities_accepted():
    with pytest.raises(FmModelError, match="probabilities"):
        class_scores(torch.tensor([2.3, -1.0]), torch.tensor([1, 0]))
    ms = MetricSet(recordings=1)
    with pytest.raises(FmModelError, match="probabilities"):
        ms.update(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), torch.tensor([3.0]))
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.0], [-5.0, 5.0]])
    z = logits.numpy()
    np.testing.assert_allclose(probabilities(logits).numpy(), np.exp(z[:, 1]) / np.exp(z).sum(1), rtol=1e-6)
    mask = torch.zeros(2, 4, 4)
    mask[1, 2, 3] = 0.7
    assert window_probability_from_mask(mask).tolist() == pytest.approx([0.0, 0.7])


def test_pixel_scores_from_confusion_match_hand_computation():
    cm = np.array([[90, 4], [2, 4]])
    got = pixel_scores_from_confusion(cm)
    assert got["pixel_accuracy"] == pytest.approx(94 / 100)
    assert got["mean_pixel_accuracy"] == pytest.approx((90 / 94 + 4 / 6) / 2)
    assert got["iou"] == pytest.approx([90 / 96, 4 / 10])
    assert got["miou"] == pytest.approx((90 / 96 + 0.4) / 2)
    # no abnormal pixel anywhere, none predicted: abnormal IoU is undefined and left out
    got = pixel_scores_from_confusion(np.array([[50, 0], [0, 0]]))
    assert got["iou"] == [1.0, None] and got["miou"] == 1.0


def _pixel_batches(seed, batches=5, b=4, h=16, w=16, recordings=2):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(batches):
        mask = (rng.random((b, h, w)) < 0.1).astype(np.int64)
        prob = np.clip(rng.normal(0.3 + 0.4 * mask, 0.2), 0, 1).astype(np.float32)
        rec = rng.integers(0, recordings, b)
        keys = np.arange(i * b, (i + 1) * b)
        out.append((keys, rec, mask, prob))
    return out


def _feed(ms, batches):
    for keys, rec, mask, prob in batches:
        mp = torch.from_numpy(prob)
        ms.update(torch.from_numpy(keys), torch.from_numpy(rec), torch.from_numpy(mask.reshape(len(keys), -1).max(1)),
                  window_probability_from_mask(mp), torch.from_numpy(mask), mp)


def test_pixel_metrics_are_dataset_wide_and_per_recording():
    batches = _pixel_batches(3)
    ms = MetricSet(recordings=2, pixel=True)
    _feed(ms, batches)
    res = ms.compute()
    mask = np.concatenate([b[2] for b in batches])
    prob = np.concatenate([b[3] for b in batches])
    rec = np.concatenate([b[1] for b in batches])
    pred = prob >= 0.5
    cm = np.array([[np.sum(~pred & (mask == 0)), np.sum(pred & (mask == 0))],
                   [np.sum(~pred & (mask == 1)), np.sum(pred & (mask == 1))]])
    p = res["overall"]["pixel"]
    assert p["confusion"] == cm.tolist() and p["pixels"] == mask.size
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert p["miou"] == pytest.approx(iou.mean())
    assert p["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    # binned AUROC (201 thresholds) stays close to the exact rank statistic
    pos, neg = prob[mask == 1], prob[mask == 0]
    exact = mannwhitneyu(pos, neg).statistic / (pos.size * neg.size)
    assert p["auroc"] == pytest.approx(exact, abs=5e-3)
    for r in (0, 1):
        sel = rec == r
        pr = res["recordings"][str(r)]["pixel"]
        assert pr["pixels"] == int(sel.sum()) * 16 * 16
    summed = np.add(res["recordings"]["0"]["pixel"]["confusion"], res["recordings"]["1"]["pixel"]["confusion"])
    assert summed.tolist() == cm.tolist()


def test_pixel_state_memory_is_constant():
    ms = MetricSet(recordings=1, pixel=True)

    def state_elems():
        return sum(int(getattr(m, name).numel()) for m in ms._pixel[0].values() for name in m._defaults)

    _feed(ms, _pixel_batches(4, batches=1, recordings=1))
    before = state_elems()
    _feed(ms, _pixel_batches(5, batches=10, recordings=1))
    assert state_elems() == before


def test_repeated_windows_count_once():
    ms = MetricSet(recordings=1)
    ms.update(torch.tensor([0, 1, 2]), torch.zeros(3), torch.tensor([1, 0, 1]), torch.tensor([0.9, 0.2, 0.4]))
    # a padded sampler hands window 2 to a second rank: same key, must not be scored twice
    ms.update(torch.tensor([2]), torch.zeros(1), torch.tensor([1]), torch.tensor([0.4]))
    res = ms.compute()["overall"]["class"]
    assert res["n"] == 3 and res["confusion"] == [[1, 0], [1, 1]]
