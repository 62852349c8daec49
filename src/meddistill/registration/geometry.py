"""Robust transform estimation from correspondences (OpenCV RANSAC / USAC) and its verdict."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import MeddistillError

MODELS = ("affine", "homography", "quadratic")


@dataclass
class Estimate:
    """A transform (3×3, source pixels → target pixels) or None, with the inlier mask."""

    matrix: np.ndarray | None
    inliers: np.ndarray  # (N,) bool


def estimate_transform(source: np.ndarray, target: np.ndarray, model: str = "affine", threshold_px: float = 5.0) -> Estimate:
    """Fit ``model`` to ``(N, 2)`` point correspondences robustly.

    ``affine``: 3-point RANSAC, then a Levenberg-Marquardt refit on the inliers
    (``cv2.estimateAffine2D``), as the correspondence-registration paper does. ``homography``:
    MAGSAC++ (``cv2.USAC_MAGSAC``), SuperRetina's model. ``quadratic`` starts from the
    homography; :func:`fit_quadratic` bends it afterwards. Too few points give no transform.
    """
    if model not in MODELS:
        raise MeddistillError(f"unknown transform model '{model}'; choose from {', '.join(MODELS)}")
    minimum = 3 if model == "affine" else 4
    model = "homography" if model == "quadratic" else model
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


def quadratic_terms(points: np.ndarray) -> np.ndarray:
    """The quadratic model's terms ``(N, 6)``: 1, x, y, x², xy, y² of ``(N, 2)`` points (x, y)."""
    x, y = np.asarray(points, np.float64).T
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def map_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a transform to ``(N, 2)`` pixel points: a 3×3 projective matrix, or the 2×6
    coefficients of a quadratic (each output coordinate a combination of :func:`quadratic_terms`)."""
    transform = np.asarray(transform, np.float64)
    if transform.shape == (2, 6):
        return quadratic_terms(points) @ transform.T
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ transform.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def fit_quadratic(
    source: np.ndarray, target: np.ndarray, threshold_px: float, rounds: int = 3, min_points: int = 20
) -> tuple[np.ndarray | None, np.ndarray]:
    """The 12-parameter quadratic transform (Can et al. 2002, the curved retina's model)
    fitted by least squares to ``(N, 2)`` correspondences already cleared by a robust global
    fit, and refitted ``rounds`` times to those within ``threshold_px`` px of the last fit.

    Returns the 2×6 coefficients (pixels in, pixels out; see :func:`map_points`) and the mask of
    the points it kept, or None when fewer than ``min_points`` support it: with fewer, twelve
    parameters follow the noise of the points rather than the eye.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    # Fitted in coordinates of order 1: pixel squares (~10⁶) beside ones make the system ill-conditioned.
    scale = max(float(np.abs(source).max(initial=0.0)), 1.0)
    to_pixels = quadratic_terms(np.full((1, 2), 1 / scale))  # each term's factor from unit to pixel coordinates
    kept = np.ones(len(source), bool)
    coefficients = None
    for _ in range(rounds):
        if kept.sum() < min_points:
            return None, kept
        unit = np.linalg.lstsq(quadratic_terms(source[kept] / scale), target[kept], rcond=None)[0].T  # (2, 6)
        coefficients = unit * to_pixels
        kept = np.linalg.norm(map_points(coefficients, source) - target, axis=1) < threshold_px
    return (coefficients, kept) if kept.sum() >= min_points else (None, kept)


def bend(quadratic: np.ndarray, homography: np.ndarray, points: np.ndarray) -> float:
    """The largest distance (px) between where ``quadratic`` and ``homography`` take ``points``."""
    return float(np.linalg.norm(map_points(quadratic, points) - map_points(homography, points), axis=1).max(initial=0.0))


def unmap_points(quadratic: np.ndarray, points: np.ndarray, iterations: int = 6) -> np.ndarray:
    """The ``(N, 2)`` points that the 2×6 ``quadratic`` takes to ``points``: its inverse, which
    has no closed form, by Newton's method from the inverse of its affine part."""
    points = np.asarray(points, np.float64)
    linear = quadratic[:, 1:3]
    solution = (points - quadratic[:, 0]) @ np.linalg.inv(linear).T
    for _ in range(iterations):
        x, y = solution.T
        # Jacobian of (x, y) -> quadratic_terms @ quadratic.T, one 2×2 per point
        jacobian = np.stack([
            np.stack([linear[r, 0] + 2 * quadratic[r, 3] * x + quadratic[r, 4] * y,
                      linear[r, 1] + quadratic[r, 4] * x + 2 * quadratic[r, 5] * y], axis=-1)
            for r in range(2)], axis=1)  # (N, 2, 2)
        residual = map_points(quadratic, solution) - points
        solution = solution - np.linalg.solve(jacobian, residual[..., None])[..., 0]
    return solution
