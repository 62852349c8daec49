"""Register two fundus photos: preprocess, detect and describe, match, estimate, judge, warp."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import MeddistillError
from .features import KEYPOINT_METHODS, Features, build_matcher, match_guided
from .geometry import Estimate, bend, estimate_transform, fit_quadratic, map_points, plausible, unmap_points
from .preprocess import fov_interior, preprocess_fundus, resize_matrix

# The quadratic may depart from the homography it starts from by at most this fraction of the
# fixed photo's larger side, within the overlap. It rejects fits that the points do not pin
# down (twelve parameters extrapolating from a cluster), not bends: on the development pairs
# (RESULTS §3) the largest bend, over the whole photo, was 3.5 %.
MAX_BEND = 0.05


@dataclass
class RegistrationResult:
    """What ``register`` reports. ``transform`` maps moving pixel (x, y) to fixed pixel (x, y)
    in the original image sizes; it is None when the registration failed. ``quadratic`` (2×6,
    see :func:`map_points`) is the curved-retina refinement of ``transform``, when one was asked
    for and the inliers support it; :attr:`mapping` is the better of the two."""

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
    quadratic: np.ndarray | None = None

    @property
    def mapping(self) -> np.ndarray | None:
        """The transform to apply, moving → fixed pixels: the quadratic where there is one."""
        return self.transform if self.quadratic is None else self.quadratic

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "transform": None if self.transform is None else self.transform.tolist(),
            "quadratic": None if self.quadratic is None else self.quadratic.tolist(),
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
    None keeps them all). The transform (``model``: ``affine``, ``homography`` or ``quadratic``)
    is estimated there (inliers within ``threshold_px`` px at ``size``) and converted to
    original pixels. The result is ``failed`` (with a reason) when fewer than ``min_inliers``
    matches, or fewer than ``min_inlier_ratio`` of them, agree, or when the transform is
    implausible (a reflection or an extreme scale). An accepted transform is then refined once
    by guided matching (:func:`match_guided`, ``guided_radius`` px at ``size``; 0 skips it),
    and the reported matches and inliers are the refined fit's. ``quadratic`` estimates a
    homography, which gives the verdict, then bends it by :func:`fit_quadratic` on its inliers,
    unless fewer than 20 support the bend or it departs from the homography by more than
    :data:`MAX_BEND` (then ``quadratic`` stays None and the homography stands).
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
        if model == "quadratic":
            result.quadratic = _refine_quadratic(result, threshold_px / np.sqrt(to_fixed[0, 0] * to_fixed[1, 1]), fixed.shape, moving.shape)
    return result


def _refine_quadratic(result: RegistrationResult, threshold_px: float, fixed_shape: tuple[int, ...], moving_shape: tuple[int, ...]) -> np.ndarray | None:
    """The quadratic refinement of an accepted homography on its inliers (original pixels), or
    None where the inliers do not support one."""
    inliers = result.inlier_mask
    quadratic, _ = fit_quadratic(result.moving_points[inliers], result.fixed_points[inliers], threshold_px)
    if quadratic is None:
        return None
    height, width = moving_shape[:2]
    grid = np.stack(np.meshgrid(np.linspace(0, width - 1, 16), np.linspace(0, height - 1, 16)), -1).reshape(-1, 2)
    landing = map_points(result.transform, grid)
    overlap = (landing >= 0).all(1) & (landing[:, 0] < fixed_shape[1]) & (landing[:, 1] < fixed_shape[0])
    return quadratic if bend(quadratic, result.transform, grid[overlap]) <= MAX_BEND * max(fixed_shape[:2]) else None


def _estimate(features: list[Features], pairs: np.ndarray, model: str, threshold_px: float) -> Estimate:
    """The robust fit of ``model`` to the matched keypoints, moving → fixed."""
    return estimate_transform(features[1].keypoints[pairs[:, 1]], features[0].keypoints[pairs[:, 0]], model, threshold_px)


def warp_to_fixed(moving: np.ndarray, transform: np.ndarray, fixed_shape: tuple[int, ...]) -> np.ndarray:
    """The moving image resampled onto the fixed image's pixel grid (zeros outside it), by a
    3×3 transform or a 2×6 quadratic (moving → fixed pixels)."""
    height, width = fixed_shape[:2]
    if transform.shape == (3, 3):
        return cv2.warpPerspective(moving, transform, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    # The inverse quadratic, solved on a grid every 8 px and interpolated: it is smooth, and
    # solving it at every pixel of a 2912² photo would cost seconds. The grid's points sit
    # where cv2.resize samples them, so the interpolated map is exact at every grid point.
    cells = (max(width // 8, 2), max(height // 8, 2))
    columns = (np.arange(cells[0]) + 0.5) * width / cells[0] - 0.5
    rows = (np.arange(cells[1]) + 0.5) * height / cells[1] - 0.5
    grid = np.stack(np.meshgrid(columns, rows), -1).reshape(-1, 2)
    source = unmap_points(transform, grid).reshape(cells[1], cells[0], 2).astype(np.float32)
    source = cv2.resize(source, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.remap(moving, source[..., 0], source[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
