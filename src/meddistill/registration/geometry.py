"""Robust transform estimation from correspondences (OpenCV RANSAC / USAC) and its verdict."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import MeddistillError

MODELS = ("affine", "homography")


@dataclass
class Estimate:
    """A transform (3×3, source pixels → target pixels) or None, with the inlier mask."""

    matrix: np.ndarray | None
    inliers: np.ndarray  # (N,) bool


def estimate_transform(source: np.ndarray, target: np.ndarray, model: str = "affine", threshold_px: float = 5.0) -> Estimate:
    """Fit ``model`` to ``(N, 2)`` point correspondences robustly.

    ``affine``: 3-point RANSAC, then a Levenberg-Marquardt refit on the inliers
    (``cv2.estimateAffine2D``), as the correspondence-registration paper does. ``homography``:
    MAGSAC++ (``cv2.USAC_MAGSAC``), SuperRetina's model. Too few points give no transform.
    """
    if model not in MODELS:
        raise MeddistillError(f"unknown transform model '{model}'; choose from {', '.join(MODELS)}")
    minimum = 3 if model == "affine" else 4
    none = Estimate(None, np.zeros(len(source), bool))
    if len(source) < minimum:
        return none
    src, dst = np.asarray(source, np.float32), np.asarray(target, np.float32)
    if model == "affine":
        matrix, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold_px,
                                            maxIters=5000, confidence=0.999, refineIters=20)
        if matrix is not None:
            matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    else:
        matrix, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold_px, maxIters=5000, confidence=0.999)
    if matrix is None or mask is None:
        return none
    return Estimate(matrix.astype(np.float64), mask.ravel().astype(bool))


def plausible(matrix: np.ndarray, max_scale: float = 4.0, max_perspective: float = 1e-3) -> bool:
    """Whether a transform could relate two photos of one eye: orientation kept, scale within
    ``1/max_scale``…``max_scale``, near-affine (perspective terms below ``max_perspective`` per px)."""
    linear = matrix[:2, :2] / matrix[2, 2]
    determinant = float(np.linalg.det(linear))
    singular = np.linalg.svd(linear, compute_uv=False)
    return (
        determinant > 0
        and singular.max() <= max_scale
        and singular.min() >= 1 / max_scale
        and float(np.abs(matrix[2, :2] / matrix[2, 2]).max()) <= max_perspective
    )
