import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from meddistill import metrics
from meddistill.metrics import SEGMENTATION_METRICS, MetricAccumulator, segmentation_metrics

# prob >= 0.5 predicts    target
# [[1, 0, 1],             [[1, 0, 0],
#  [0, 1, 0],              [1, 1, 0],
#  [1, 0, 1]]              [0, 0, 1]]
# TP = (0,0), (1,1), (2,2) = 3;  FP = (0,2), (2,0) = 2;  FN = (1,0) = 1;  TN = (0,1), (1,2), (2,1) = 3
PROB = np.array([[0.9, 0.2, 0.7], [0.4, 0.6, 0.1], [0.8, 0.3, 0.5]])
TARGET = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)


def test_keys():
    assert tuple(segmentation_metrics(PROB, TARGET)) == SEGMENTATION_METRICS


def test_hand_computed_3x3():
    m = segmentation_metrics(PROB, TARGET)
    assert m["sensitivity"] == pytest.approx(3 / 4)  # TP / (TP + FN)
    assert m["specificity"] == pytest.approx(3 / 5)  # TN / (TN + FP)
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["f1"] == pytest.approx(6 / 9)  # 2TP / (2TP + FP + FN)
    # IoU fg = 3 / (3 + 2 + 1) = 1/2, IoU bg = 3 / (3 + 1 + 2) = 1/2
    assert m["miou"] == pytest.approx(0.5)
    # positives 0.9, 0.4, 0.6, 0.5 beat 5, 3, 3, 3 of the negatives 0.2, 0.7, 0.1, 0.8, 0.3
    assert m["auc"] == pytest.approx(14 / 20)


def test_fov_excludes_pixels():
    fov = np.ones((3, 3), dtype=bool)
    fov[:, 0] = False
    # inside the FOV: TP = (1,1), (2,2); FP = (0,2); TN = (0,1), (1,2), (2,1); FN = 0
    expected = {
        "sensitivity": 1.0,
        "specificity": 3 / 4,
        "accuracy": 5 / 6,
        "f1": 4 / 5,
        "miou": (2 / 3 + 3 / 4) / 2,
        "auc": 6 / 8,  # positives 0.6, 0.5 each beat 3 of the negatives 0.2, 0.7, 0.1, 0.3
    }
    m = segmentation_metrics(PROB, TARGET, fov)
    assert m == pytest.approx(expected)
    # anything outside the FOV must not matter
    prob, target = PROB.copy(), TARGET.copy()
    prob[:, 0] = [0.0, 1.0, 0.0]
    target[:, 0] = [False, False, True]
    assert segmentation_metrics(prob, target, fov) == pytest.approx(expected)


def test_threshold():
    m = segmentation_metrics(PROB, TARGET, threshold=0.65)
    # predicted: 0.9, 0.7, 0.8 -> TP = 1, FP = 2, FN = 3, TN = 3
    assert m["sensitivity"] == pytest.approx(1 / 4)
    assert m["specificity"] == pytest.approx(3 / 5)
    assert m["auc"] == pytest.approx(14 / 20)


def test_tensor_and_batched_inputs_match_numpy():
    rng = np.random.default_rng(0)
    prob = rng.random((2, 5, 6))
    target = rng.random((2, 5, 6)) > 0.6
    fov = rng.random((2, 5, 6)) > 0.2
    from_numpy = segmentation_metrics(prob, target, fov)
    from_torch = segmentation_metrics(torch.from_numpy(prob).float(), torch.from_numpy(target), torch.from_numpy(fov))
    assert from_torch == pytest.approx(from_numpy, abs=1e-6)
    assert from_numpy["auc"] == pytest.approx(roc_auc_score(target[fov], prob[fov]))


def test_degenerate_cases_give_nan():
    m = segmentation_metrics(PROB, np.zeros((3, 3), dtype=bool))
    assert math.isnan(m["auc"]) and math.isnan(m["sensitivity"])
    assert m["specificity"] == pytest.approx(4 / 9)
    empty = segmentation_metrics(PROB, TARGET, np.zeros((3, 3), dtype=bool))
    assert all(math.isnan(v) for v in empty.values())


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        segmentation_metrics(PROB, TARGET[:2])
    with pytest.raises(ValueError):
        segmentation_metrics(PROB, TARGET, np.ones((2, 3), dtype=bool))


def test_counts_are_exact_across_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    pred, target = rng.random(103) > 0.5, rng.random(103) > 0.3
    expected = [
        np.sum(pred & target),
        np.sum(pred & ~target),
        np.sum(~pred & ~target),
        np.sum(~pred & target),
    ]
    monkeypatch.setattr(metrics, "_COUNT_CHUNK", 10)
    np.testing.assert_array_equal(metrics._confusion_counts(pred, target), expected)


def _cases(seed: int, n: int = 4, size: int = 48):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        target = rng.random((size, size)) > 0.85
        prob = np.clip(0.35 * target + 0.65 * rng.random((size, size)), 0.0, 1.0)
        yy, xx = np.mgrid[:size, :size]
        fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.2) ** 2
        yield prob.astype(np.float32), target, fov


def test_accumulator_equals_one_shot():
    cases = list(_cases(seed=2))
    acc = MetricAccumulator()
    for prob, target, fov in cases:
        acc.update(prob, target, fov)
    pooled = segmentation_metrics(*(np.stack(arrays) for arrays in zip(*cases)))
    accumulated = acc.compute()
    for name in SEGMENTATION_METRICS:
        tolerance = 1e-3 if name == "auc" else 1e-12
        assert accumulated[name] == pytest.approx(pooled[name], abs=tolerance), name
    assert 0.5 < pooled["auc"] < 1.0


def test_accumulator_auc_exact_when_values_sit_in_distinct_bins():
    acc = MetricAccumulator()
    acc.update(PROB, TARGET)
    assert acc.compute()["auc"] == pytest.approx(14 / 20)
    tied = MetricAccumulator()
    tied.update(np.array([0.55, 0.55, 0.15, 0.95]), np.array([True, False, False, True]))
    assert tied.compute()["auc"] == pytest.approx(roc_auc_score([1, 0, 0, 1], [0.55, 0.55, 0.15, 0.95]))


def test_accumulator_auc_resolves_saturated_probabilities():
    # sigmoid outputs crowd next to 0 and 1, where uniform 1e-3 bins would tie most pairs
    rng = np.random.default_rng(3)
    target = rng.random(20000) < 0.15
    logit = np.where(target, rng.normal(2.0, 4.0, target.size), rng.normal(-9.0, 4.0, target.size))
    prob = 1.0 / (1.0 + np.exp(-logit))
    acc = MetricAccumulator()
    for part in np.array_split(np.arange(target.size), 3):
        acc.update(prob[part], target[part])
    assert acc.compute()["auc"] == pytest.approx(roc_auc_score(target, prob), abs=1e-5)


def test_accumulator_empty_reset_and_range_check():
    acc = MetricAccumulator()
    assert all(math.isnan(v) for v in acc.compute().values())
    acc.update(PROB, TARGET)
    acc.reset()
    assert math.isnan(acc.compute()["auc"])
    with pytest.raises(ValueError):
        acc.update(PROB + 1.0, TARGET)


def test_sensitivity_at_specificity_hand_computed():
    # ROC points (FPR, TPR): (0, 0), (0, 1/2), (1/2, 1) for the tied 0.6 pair, (1, 1)
    acc = MetricAccumulator()
    acc.update(np.array([0.9, 0.6, 0.6, 0.2]), np.array([True, True, False, False]))
    assert acc.sensitivity_at(1.0) == pytest.approx(0.5)
    assert acc.sensitivity_at(0.75) == pytest.approx(0.75)
    assert acc.sensitivity_at(0.5) == pytest.approx(1.0)
    assert acc.sensitivity_at(0.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        acc.sensitivity_at(1.5)
    assert math.isnan(MetricAccumulator().sensitivity_at(0.9))


def test_sensitivity_at_own_specificity_matches_threshold_metrics():
    acc = MetricAccumulator()
    for prob, target, fov in _cases(seed=4):
        acc.update(prob, target, fov)
    scores = acc.compute()
    assert acc.sensitivity_at(scores["specificity"]) == pytest.approx(scores["sensitivity"], abs=2e-3)
