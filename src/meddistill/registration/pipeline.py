"""Register two fundus photos: preprocess, detect and describe, match, estimate, judge, warp."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import MeddistillError
from .features import KEYPOINT_METHODS, Features, build_matcher, match_guided
from .geometry import Estimate, estimate_transform, plausible
from .preprocess import fov_interior, preprocess_fundus, resize_matrix

@dataclass
class RegistrationResult:
    """What ``register`` reports. ``transform`` maps moving pixel (x, y) to fixed pixel (x, y)
    in the original image sizes; it is None when the registration failed."""

    status: str  # ok | failed
    transform: np.ndarray | None
    matches: int
    inliers: int
    seconds: float
    reason: str = ""
    # for figures: matched keypoints in original pixels, (M, 2) each, and the inlier mask
    fixed_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    moving_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    inlier_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "transform": None if self.transform is None else self.transform.tolist(),
            "matches": self.matches,
            "inliers": self.inliers,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
        }


def _check_pair(fixed: np.ndarray, moving: np.ndarray) -> None:
    for role, image in (("fixed", fixed), ("moving", moving)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MeddistillError(f"the {role} image must be 8-bit RGB (H, W, 3), got {image.shape} {image.dtype}")


def register_images(
    fixed: np.ndarray,
    moving: np.ndarray,
    method: str | Callable[[np.ndarray], Features] = "sift",
    matcher: str | Callable[[Features, Features], np.ndarray] | None = None,
    model: str = "affine",
    size: int = 768,
    min_inliers: int = 10,
    min_inlier_ratio: float = 0.2,
    threshold_px: float = 10.0,
    guided_radius: float = 12.0,
    fov_margin: float | None = 8.0,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` (both ``(H, W, 3)`` uint8, any sizes).

    ``method`` and ``matcher`` are registered names or built ones (build them once to register
    many pairs); the default matcher is the method's, and ``"glue"`` is the one shipped for
    ``method``. Keypoints are found at ``size``×``size`` after :func:`preprocess_fundus`, and
    those within ``fov_margin`` px of the field of view's edge are dropped (:func:`fov_interior`;
    None keeps them all). The transform is estimated there (inliers within ``threshold_px`` px
    at ``size``) and converted to original pixels. The result is ``failed`` (with a reason)
    when fewer than ``min_inliers`` matches, or fewer than ``min_inlier_ratio`` of them, agree,
    or when the transform is implausible (a reflection or an extreme scale). An accepted transform is then
    refined once by guided matching (:func:`match_guided`, ``guided_radius`` px at ``size``; 0
    skips it), and the reported matches and inliers are the refined fit's.
    """
    _check_pair(fixed, moving)
    detector = KEYPOINT_METHODS.build(method) if isinstance(method, str) else method
    matcher = matcher or detector.default_matcher
    if isinstance(matcher, str):
        matcher = build_matcher(matcher, method if isinstance(method, str) else None)
    started = time.perf_counter()
    features = [detector(preprocess_fundus(image, size)) for image in (fixed, moving)]
    if fov_margin is not None:
        features = [found.inside(fov_interior(image, size, fov_margin)) for found, image in zip(features, (fixed, moving))]
    pairs = matcher(features[0], features[1])
    estimate = _estimate(features, pairs, model, threshold_px)
    inliers = int(estimate.inliers.sum())
    evident = inliers >= min_inliers and inliers >= min_inlier_ratio * len(pairs)
    if estimate.matrix is not None and evident and plausible(estimate.matrix) and guided_radius > 0:
        guided = match_guided(features[0], features[1], estimate.matrix, guided_radius)
        refined = _estimate(features, guided, model, threshold_px)
        if refined.matrix is not None and plausible(refined.matrix) and refined.inliers.sum() >= inliers:
            pairs, estimate, inliers = guided, refined, int(refined.inliers.sum())
    fixed_pts = features[0].keypoints[pairs[:, 0]]
    moving_pts = features[1].keypoints[pairs[:, 1]]
    to_fixed, to_moving = resize_matrix(fixed.shape, size), resize_matrix(moving.shape, size)
    seconds = time.perf_counter() - started
    original = lambda points, scale: (points / np.diag(scale)[:2]) if len(points) else points  # noqa: E731
    result = RegistrationResult(
        "failed", None, len(pairs), inliers, seconds,
        fixed_points=original(fixed_pts, to_fixed), moving_points=original(moving_pts, to_moving),
        inlier_mask=estimate.inliers,
    )
    if estimate.matrix is None:
        result.reason = "no transform fits the matches"
    elif not evident:
        result.reason = f"too little evidence (at least {min_inliers} and {min_inlier_ratio:.0%} of the matches must agree)"
    elif not plausible(estimate.matrix):
        result.reason = "implausible transform (reflection, extreme scale or perspective)"
    else:
        result.status = "ok"
        result.transform = np.linalg.inv(to_fixed) @ estimate.matrix @ to_moving
    return result


def _estimate(features: list[Features], pairs: np.ndarray, model: str, threshold_px: float) -> Estimate:
    """The robust fit of ``model`` to the matched keypoints, moving → fixed."""
    return estimate_transform(features[1].keypoints[pairs[:, 1]], features[0].keypoints[pairs[:, 0]], model, threshold_px)


def warp_to_fixed(moving: np.ndarray, transform: np.ndarray, fixed_shape: tuple[int, ...]) -> np.ndarray:
    """The moving image resampled onto the fixed image's pixel grid (zeros outside it)."""
    height, width = fixed_shape[:2]
    return cv2.warpPerspective(moving, transform, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
