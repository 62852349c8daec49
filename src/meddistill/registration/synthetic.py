"""Write a FIRE-layout benchmark from any fundus photos, with known synthetic transforms.

For each photo, three pairs: ``S`` (small motion, overlap above 75 %), ``P`` (large shift and
rotation, partial overlap) and ``A`` (small motion plus a strong appearance change: gamma,
contrast, blur, uneven illumination, noise); every query also gets a smooth non-rigid warp
and a milder appearance change, since no two real visits differ by a global transform alone.
It is a development benchmark: one photo warped is easier to match than two real visits. Image ``_1`` is the photo (the reference), ``_2``
the transformed copy (the query); control points are reference pixels inside both fields of
view with their exact query positions, so ``evaluate fire`` scores a method exactly as on FIRE.
FIRE's errors are in pixels of 2912×2912 photos; writing the benchmark at that size (``size``)
makes its 1–25 px AUC range and its 20 / 50 px accuracy limits as strict as FIRE's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..data import compute_fov
from ..errors import MeddistillError

_MOTION = {  # rotation (deg), scale spread, shift as a fraction of the width
    "S": (4.0, 0.03, (0.0, 0.04)),
    "P": (15.0, 0.08, (0.18, 0.30)),
    "A": (4.0, 0.03, (0.0, 0.04)),
}
# Peak non-rigid displacement as a fraction of the width: the eye is not flat and no global
# transform relates two real visits exactly, so neither does one here.
_WARP = {"S": 0.006, "P": 0.012, "A": 0.010}
# Appearance change between visits: mild for S and P, strong for A.
_LOOK = {"S": 0.35, "P": 0.35, "A": 1.0}


def _random_motion(category: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """3×3 similarity taking reference pixels to query pixels."""
    max_angle, scale_spread, (shift_low, shift_high) = _MOTION[category]
    height, width = shape
    angle = rng.uniform(-max_angle, max_angle)
    scale = 1 + rng.uniform(-scale_spread, scale_spread)
    matrix = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale), [0, 0, 1]])
    direction = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(shift_low, shift_high) * width
    matrix[:2, 2] += shift * np.array([np.cos(direction), np.sin(direction)])
    return matrix


def _change_appearance(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Another visit's look, scaled by ``strength`` in [0, 1]: gamma, contrast, blur, an
    illumination gradient and noise."""
    x = image.astype(np.float32) / 255
    x = x ** np.exp(rng.uniform(-0.5, 0.5) * strength)
    x = (x - x.mean()) * (1 + rng.uniform(-0.3, 0.3) * strength) + x.mean()
    x = cv2.GaussianBlur(x, (0, 0), 0.3 + rng.uniform(0.2, 1.7) * strength)
    height, width = x.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    x = x * (1 + rng.uniform(0.2, 0.5) * strength * (np.cos(angle) * xx + np.sin(angle) * yy - 0.5))[..., None]
    x = x + rng.normal(0, 0.02 * strength, x.shape)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _smooth_field(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 2)`` smooth random displacement (px) whose largest magnitude is ``amplitude``."""
    height, width = shape
    # Drawn on a 64-px-wide grid and resized: blurring full-size noise with σ = width / 8 would
    # cost minutes per pair at FIRE's 2912 px, for the same smoothness.
    coarse = (max(round(64 * height / width), 1), 64)
    noise = [cv2.GaussianBlur(rng.normal(size=coarse).astype(np.float32), (0, 0), 8) for _ in range(2)]
    field = np.stack([cv2.resize(n, (width, height), interpolation=cv2.INTER_CUBIC) for n in noise], -1)
    return field * (amplitude / max(float(np.linalg.norm(field, axis=-1).max()), 1e-9))


def _warp(image: np.ndarray, motion: np.ndarray, field: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Query image: query pixel q shows reference pixel ``motion⁻¹(q) + field(q)``."""
    height, width = field.shape[:2]
    qy, qx = np.mgrid[0:height, 0:width].astype(np.float32)
    inverse = np.linalg.inv(motion)
    w = inverse[2, 0] * qx + inverse[2, 1] * qy + inverse[2, 2]
    map_x = (inverse[0, 0] * qx + inverse[0, 1] * qy + inverse[0, 2]) / w + field[..., 0]
    map_y = (inverse[1, 0] * qx + inverse[1, 1] * qy + inverse[1, 2]) / w + field[..., 1]
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), flags, borderValue=0)


def _query_position(point: np.ndarray, motion: np.ndarray, field: np.ndarray) -> np.ndarray | None:
    """The query pixel showing reference ``point``: solves ``motion⁻¹(q) + field(q) = point``."""
    height, width = field.shape[:2]
    q = (motion @ np.append(point, 1.0))[:2]
    for _ in range(20):  # fixed-point iteration: the field is smooth and small
        if not (0 <= q[0] < width - 1 and 0 <= q[1] < height - 1):
            return None
        q = (motion @ np.append(point - field[int(round(q[1])), int(round(q[0]))], 1.0))[:2]
    return q


def _control_points(fov, query_fov, motion, field, count: int, rng) -> np.ndarray:
    """``(count, 4)`` rows x_ref y_ref x_query y_query, reference points inside both fields of view."""
    ys, xs = np.nonzero(fov)
    rows = []
    for k in rng.permutation(len(xs)):
        q = _query_position(np.array([xs[k], ys[k]], np.float64), motion, field)
        if q is not None and query_fov[int(q[1]), int(q[0])]:
            rows.append([xs[k], ys[k], q[0], q[1]])
            if len(rows) == count:
                return np.array(rows)
    raise MeddistillError("the synthetic pair overlaps too little to place control points")


def synthetic_pair(
    photo: np.ndarray, category: str, rng: np.random.Generator, points_per_pair: int = 10, fixed_aperture: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A query for ``photo`` (RGB uint8) in ``category`` S, P or A, and its control points
    ``(points_per_pair, 4)`` rows x_ref y_ref x_query y_query.

    The query shows the warped retina through the warped field of view, or with
    ``fixed_aperture`` through the part of it that the photo's own field of view covers, as a
    camera whose aperture stays put between visits does."""
    fov = compute_fov(photo)
    motion = _random_motion(category, photo.shape[:2], rng)
    field = _smooth_field(photo.shape[:2], _WARP[category] * photo.shape[1], rng)
    query = _warp(photo, motion, field)
    query_fov = _warp(fov.astype(np.uint8), motion, field, nearest=True) > 0
    if fixed_aperture:
        query_fov &= fov
    query = _change_appearance(query, _LOOK[category], rng) * query_fov[..., None]
    return query, _control_points(fov, query_fov, motion, field, points_per_pair, rng)


def fire_frame(photo: np.ndarray, size: int) -> np.ndarray:
    """``photo`` padded with black to a centred square and resized to ``size``×``size``, as FIRE's
    photos are."""
    height, width = photo.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = cv2.copyMakeBorder(photo, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_CUBIC if size > side else cv2.INTER_AREA)


def write_fire_benchmark(
    photos: dict[str, np.ndarray], out: str | Path, seed: int = 0, points_per_pair: int = 10, size: int | None = None,
    repeats: int = 1, fixed_aperture: bool = False,
) -> list[str]:
    """Write ``Images/`` and ``Ground Truth/`` for ``photos`` (name → RGB uint8); returns pair names.
    With ``size`` each photo is first put in a ``size``×``size`` frame (:func:`fire_frame`).
    ``repeats`` > 1 gives each photo more pairs per category, repeat ``r`` drawn with seed
    ``seed + r`` and numbered after the previous repeat's (a few photos make a larger benchmark).
    ``fixed_aperture`` is :func:`synthetic_pair`'s."""
    if repeats < 1:
        raise MeddistillError(f"repeats must be at least 1, got {repeats}")
    out = Path(out)
    (out / "Images").mkdir(parents=True, exist_ok=True)
    (out / "Ground Truth").mkdir(parents=True, exist_ok=True)
    framed = [fire_frame(photo, size) if size else photo for _, photo in sorted(photos.items())]
    names = []
    for repeat in range(repeats):
        rng = np.random.default_rng(seed + repeat)
        for index, photo in enumerate(framed, start=repeat * len(framed) + 1):
            for category in ("S", "P", "A"):
                name = f"{category}{index:02d}"
                query, points = synthetic_pair(photo, category, rng, points_per_pair, fixed_aperture)
                for k, image in ((1, photo), (2, query)):
                    cv2.imwrite(str(out / "Images" / f"{name}_{k}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 95])
                np.savetxt(out / "Ground Truth" / f"control_points_{name}_1_2.txt", points, fmt="%.3f")
                names.append(name)
    return names
