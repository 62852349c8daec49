"""Binary vessel-segmentation metrics, computed only inside the field of view (FOV).

Pixels are pooled over all images given (one confusion matrix and one ROC curve for the whole
set), which is the convention of the DRIVE/CHASE_DB1 result tables. Definitions:

- sensitivity = TP / (TP + FN), specificity = TN / (TN + FP),
  accuracy = (TP + TN) / (TP + FP + TN + FN)
- f1 = 2TP / (2TP + FP + FN), i.e. the Dice coefficient of the foreground
- miou = mean of the foreground IoU TP / (TP + FP + FN) and the background IoU
  TN / (TN + FN + FP) (the GKD paper's convention)
- auc = area under the ROC curve of the foreground probability

A pixel is predicted foreground when ``prob >= threshold`` (as MONAI's ``AsDiscrete``).
A metric whose denominator is zero (e.g. AUC with no vessel pixel inside the FOV) is NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix
from monai.utils import convert_to_numpy
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_auc_score

SEGMENTATION_METRICS = ("sensitivity", "specificity", "accuracy", "auc", "f1", "miou")

# MONAI's get_confusion_matrix returns float32 counts, exact only up to 2**24.
_COUNT_CHUNK = 2**24

# bit pattern of float16(0.5); non-negative float16 bit patterns sort like their values
_HALF_BITS = int(np.float16(0.5).view(np.uint16))
_AUC_BINS = 2 * _HALF_BITS + 1


def _fov_pixels(
    prob: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    fov: np.ndarray | torch.Tensor | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the probabilities (float64) and labels (bool) of the pixels inside the FOV, flattened."""
    prob_np = convert_to_numpy(prob)
    target_np = convert_to_numpy(target).astype(bool)
    if prob_np.shape != target_np.shape:
        raise ValueError(f"prob and target shapes differ: {prob_np.shape} vs {target_np.shape}")
    if fov is None:
        return prob_np.astype(np.float64).ravel(), target_np.ravel()
    fov_np = convert_to_numpy(fov).astype(bool)
    if fov_np.shape != prob_np.shape:
        raise ValueError(f"fov shape {fov_np.shape} differs from prob shape {prob_np.shape}")
    return prob_np[fov_np].astype(np.float64), target_np[fov_np]


def _auc_bin(p: np.ndarray) -> np.ndarray:
    """Monotone bin index in [0, _AUC_BINS) of probabilities in [0, 1], fine near both 0 and 1."""
    tail_bits = np.minimum(p, 1.0 - p).astype(np.float16).view(np.uint16).astype(np.int64)
    return np.where(p <= 0.5, tail_bits, 2 * _HALF_BITS - tail_bits)


def _confusion_counts(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Exact [TP, FP, TN, FN] (int64) of flat boolean prediction and label vectors."""
    counts = np.zeros(4, dtype=np.int64)
    for start in range(0, pred.size, _COUNT_CHUNK):
        chunk = slice(start, start + _COUNT_CHUNK)
        # (B=1, C=1, S) layout expected by MONAI
        y_pred = torch.from_numpy(pred[chunk]).view(1, 1, -1).float()
        y = torch.from_numpy(target[chunk]).view(1, 1, -1).float()
        counts += get_confusion_matrix(y_pred, y).view(4).to(torch.int64).numpy()
    return counts


def _metrics_from_counts(counts: np.ndarray, auc: float) -> dict[str, float]:
    """Threshold metrics from [TP, FP, TN, FN] counts, plus the given AUC."""
    cm = torch.as_tensor(counts, dtype=torch.float64)
    # the background IoU is the foreground "threat score" with the classes swapped
    cm_background = cm[[2, 3, 0, 1]]

    def metric(name: str, matrix: torch.Tensor) -> float:
        return float(compute_confusion_matrix_metric(name, matrix).item())

    iou_fg = metric("threat score", cm)
    iou_bg = metric("threat score", cm_background)
    return {
        "sensitivity": metric("sensitivity", cm),
        "specificity": metric("specificity", cm),
        "accuracy": metric("accuracy", cm),
        "auc": auc,
        "f1": metric("f1 score", cm),
        "miou": (iou_fg + iou_bg) / 2.0,
    }


def segmentation_metrics(
    prob: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    fov: np.ndarray | torch.Tensor | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Pooled binary segmentation metrics inside the FOV, with an exact AUC.

    Args:
        prob: foreground probability in [0, 1], any shape, e.g. (H, W), (N, H, W) or (D, H, W).
        target: ground-truth foreground mask, same shape (cast to bool).
        fov: field-of-view mask, same shape; None means the whole image.
        threshold: ``prob >= threshold`` is predicted foreground.

    Returns:
        A dict with the keys of :data:`SEGMENTATION_METRICS`; undefined metrics are NaN.
    """
    p, y = _fov_pixels(prob, target, fov)
    counts = _confusion_counts(p >= threshold, y)
    n_pos, n_total = int(y.sum()), y.size
    auc = float(roc_auc_score(y, p)) if 0 < n_pos < n_total else float("nan")
    return _metrics_from_counts(counts, auc)


class MetricAccumulator:
    """Pools pixels of many images into the metrics of :func:`segmentation_metrics` in bounded memory.

    Keeps exact confusion counts and, per class, a histogram of the probabilities over
    28673 bins: the float16 values of ``min(p, 1 - p)``, mirrored about 0.5.
    Bin edges are thus at most 1e-3 apart relative to ``p`` (or ``1 - p``) in both saturated
    tails, where a sigmoid output piles up (uniform bins would tie most background pixels in the lowest bin). The AUC is
    the trapezoidal area under the ROC curve whose thresholds are the bin edges: it equals the
    exact AUC except that a (vessel, background) pair falling in the same bin counts as a tie
    (1/2); on 2M saturated synthetic probabilities it differs from scikit-learn's by 5e-8.
    The threshold metrics are exact and equal those of :func:`segmentation_metrics` on the
    stacked images. Memory is two int64 histograms (450 KiB) whatever the number of pixels.

    Example::

        acc = MetricAccumulator()
        for prob, target, fov in cases:
            acc.update(prob, target, fov)
        scores = acc.compute()
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget all pixels seen so far."""
        self._counts = np.zeros(4, dtype=np.int64)
        self._hist_pos = np.zeros(_AUC_BINS, dtype=np.int64)
        self._hist_neg = np.zeros(_AUC_BINS, dtype=np.int64)

    def update(
        self,
        prob: np.ndarray | torch.Tensor,
        target: np.ndarray | torch.Tensor,
        fov: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Add the FOV pixels of one image or batch (same conventions as :func:`segmentation_metrics`)."""
        p, y = _fov_pixels(prob, target, fov)
        if p.size and (p.min() < 0.0 or p.max() > 1.0):
            raise ValueError(f"probabilities must lie in [0, 1], got [{p.min():g}, {p.max():g}]")
        self._counts += _confusion_counts(p >= self.threshold, y)
        bin_index = _auc_bin(p)
        self._hist_pos += np.bincount(bin_index[y], minlength=_AUC_BINS)
        self._hist_neg += np.bincount(bin_index[~y], minlength=_AUC_BINS)

    def compute(self) -> dict[str, float]:
        """Metrics of all pixels added so far; see :func:`segmentation_metrics`."""
        curve = self.roc_curve()
        auc = float("nan") if curve is None else float(area_under_curve(*curve))
        return _metrics_from_counts(self._counts, auc)

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(FPR, TPR) at every bin edge, from (0, 0) to (1, 1); None without both classes."""
        n_pos, n_neg = int(self._hist_pos.sum()), int(self._hist_neg.sum())
        if n_pos == 0 or n_neg == 0:
            return None
        # sweep the threshold from the top bin down
        tpr = np.concatenate([[0.0], np.cumsum(self._hist_pos[::-1]) / n_pos])
        fpr = np.concatenate([[0.0], np.cumsum(self._hist_neg[::-1]) / n_neg])
        return fpr, tpr

    def sensitivity_at(self, specificity: float) -> float:
        """The highest sensitivity reachable at ``specificity`` on the ROC curve (NaN without both classes).

        Between two thresholds the curve is linear (the operating point of a randomised choice
        between them), so models can be compared at one specificity whatever their calibration.
        """
        if not 0.0 <= specificity <= 1.0:
            raise ValueError(f"specificity must lie in [0, 1], got {specificity:g}")
        curve = self.roc_curve()
        if curve is None:
            return float("nan")
        fpr, tpr = curve
        target = 1.0 - specificity
        below = int(np.searchsorted(fpr, target, side="right")) - 1  # the last point with FPR <= target
        if below == len(fpr) - 1 or fpr[below] == target:
            return float(tpr[below])
        step = (target - fpr[below]) / (fpr[below + 1] - fpr[below])
        return float(tpr[below] + step * (tpr[below + 1] - tpr[below]))
