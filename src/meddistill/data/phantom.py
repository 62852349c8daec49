"""Procedural colour fundus phantom: the toolkit's embedded default data.

A phantom is a synthetic retinal photograph with exact labels known by construction:
the binary vessel mask, the circular field of view (FOV) and the vessel junctions
(bifurcations and crossings). It stands in for real data in the demo and the tests.

Anatomy, in units of the disc diameter DD (about 1/7 of the FOV diameter): the fovea sits
about 2.5 DD temporal to the optic disc; artery/vein trunk pairs leave the disc, the first
two as the superior and inferior temporal arcades that curve around the fovea and stop at
the horizontal raphe, the others as nasal branches. Trees branch with Murray's law
(``w0**3 = w1**3 + w2**3``) and Murray's optimal bifurcation angles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ..errors import MeddistillError

__all__ = ["FundusPhantom", "make_fundus_phantom", "make_phantom_dataset"]

# Supersampling of the vessel rasteriser: the mask is "at least half the pixel is vessel".
_SS = 4
_SHIFT = 4  # fixed-point bits of the cv2 drawing coordinates

# Per-channel (R, G, B) optical density of a fully opaque vessel: blood absorbs green most,
# red hardly at all; venous blood is darker than arterial blood.
_ABSORB_VEIN = np.array([0.10, 0.60, 0.50], np.float32)
_ABSORB_ARTERY = np.array([0.04, 0.42, 0.34], np.float32)


@dataclass(frozen=True)
class FundusPhantom:
    """One synthetic fundus photograph and its exact labels.

    Attributes:
        image: (H, W, 3) uint8 RGB photograph, black outside the FOV.
        vessels: (H, W) bool vessel mask, False outside the FOV.
        fov: (H, W) bool circular field of view.
        junctions: (N, 2) float32 (x, y) pixel coordinates of vessel bifurcations and
            centreline crossings inside the FOV.
        optic_disc: (x, y) centre of the optic disc in pixels.
    """

    image: np.ndarray
    vessels: np.ndarray
    fov: np.ndarray
    junctions: np.ndarray
    optic_disc: tuple[float, float]


@dataclass
class _Geometry:
    """Where things are, in pixels; ``temporal`` and ``superior`` are unit (x, y) vectors."""

    height: int
    width: int
    centre: np.ndarray
    radius: float
    disc: np.ndarray
    fovea: np.ndarray
    dd: float  # disc diameter
    temporal: np.ndarray
    superior: np.ndarray
    scale: float  # 1 at a 512 px FOV diameter of about 480 px


@dataclass
class _Branch:
    pos: np.ndarray
    heading: float
    width: float
    vein: bool
    tree: int
    hemisphere: int  # +1 superior, -1 inferior, 0 no raphe rule
    arcade: bool  # main lineage of a temporal arcade


@dataclass
class _Vessels:
    """Centreline segments (M, 4) as x0, y0, x1, y1 with per-segment width and labels."""

    segments: list[np.ndarray] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)
    vein: list[bool] = field(default_factory=list)
    branch: list[int] = field(default_factory=list)
    bifurcations: list[np.ndarray] = field(default_factory=list)


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _angle(v: np.ndarray) -> float:
    return math.atan2(v[1], v[0])


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _geometry(rng: np.random.Generator, height: int, width: int, eye: str) -> _Geometry:
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    radius = 0.47 * min(height, width) * rng.uniform(0.97, 1.0)
    dd = 2 * radius / 7 * rng.uniform(0.9, 1.1)
    # The disc-fovea line tilts a few degrees (fovea slightly below the disc).
    tilt = math.radians(rng.uniform(2, 10))
    side = 1.0 if eye == "left" else -1.0  # left eye: disc on the image's left
    temporal = np.array([side * math.cos(tilt), math.sin(tilt)])
    superior = np.array([temporal[1], -temporal[0]]) * side  # points up in the image
    fovea = centre + rng.uniform(-0.06, 0.06, 2) * radius
    disc = fovea - temporal * dd * rng.uniform(2.3, 2.7)
    return _Geometry(
        height, width, centre, radius, disc, fovea, dd, temporal, superior, scale=radius / 240
    )


def _murray_split(rng: np.random.Generator, w0: float) -> tuple[float, float, float, float]:
    """Child widths (larger first) and their deviation angles from the parent (radians)."""
    alpha = rng.uniform(0.3, 1.0)  # asymmetry w2 / w1
    w1 = w0 / (1 + alpha**3) ** (1 / 3)
    w2 = alpha * w1
    c1 = (w0**4 + w1**4 - w2**4) / (2 * w0**2 * w1**2)
    c2 = (w0**4 + w2**4 - w1**4) / (2 * w0**2 * w2**2)
    # Measured retinal angles fall somewhat below Murray's optimum (~75 deg in total).
    shrink = rng.uniform(0.6, 0.95)
    a1 = math.acos(min(1.0, c1)) * shrink
    a2 = math.acos(max(-1.0, min(1.0, c2))) * shrink
    total = a1 + a2
    lo, hi = math.radians(30), math.radians(80)
    if total < lo or total > hi:
        k = min(max(total, lo), hi) / total
        a1, a2 = a1 * k, a2 * k
    return w1, w2, a1, a2


def _grow(rng: np.random.Generator, g: _Geometry, n_trees: int) -> _Vessels:
    """Grow all artery and vein trees from the disc, breadth first."""
    s = g.scale
    step = max(1.0, 2.0 * s)
    w_min = max(1.0, 1.1 * s)
    r_faz = 0.3 * g.dd
    r_stop = g.radius + 3 * step
    length_factor = rng.uniform(0.8, 1.2)
    tortuosity = rng.uniform(0.6, 1.4)
    t_angle = _angle(g.temporal)
    # Angles are measured from the temporal direction towards superior.
    sup_sign = math.copysign(1.0, _wrap(_angle(g.superior) - t_angle))

    def heading(deg: float) -> float:
        return t_angle + sup_sign * math.radians(deg)

    # (angle from temporal in degrees, hemisphere, arcade, vein width at 512)
    trunks = [(rng.uniform(70, 90), 1, True, 8.0), (-rng.uniform(70, 90), -1, True, 8.0)]
    nasal = [(rng.uniform(110, 150), 1), (-rng.uniform(110, 150), -1), (180, 0)]
    nasal += [(rng.uniform(20, 40), 0), (-rng.uniform(20, 40), 0)]  # papillomacular
    for i in range(n_trees - 2):
        deg, hemi = nasal[i % len(nasal)]
        trunks.append((deg + rng.uniform(-10, 10), hemi, False, rng.uniform(4.5, 6.0)))

    queue: list[_Branch] = []
    for tree, (deg, hemi, arcade, w_vein) in enumerate(trunks[:n_trees]):
        for vein in (True, False):
            w = w_vein * s * (1.0 if vein else rng.uniform(0.72, 0.85))
            h = heading(deg + rng.uniform(-12, 12))
            start = g.disc + _unit(h) * g.dd * rng.uniform(0.05, 0.2)
            queue.append(_Branch(start, h, w, vein, 2 * tree + int(vein), hemi, arcade))

    out = _Vessels()
    n_branch = 0
    while queue and len(out.segments) < 20000:
        b = queue.pop(0)
        length = length_factor * s * (14 + 5 * b.width / s) * rng.uniform(0.5, 1.5)
        if b.arcade and b.width > 4 * s:
            length *= 1.6
        pos, theta, kappa = b.pos.copy(), b.heading, 0.0
        sigma = tortuosity * 0.035 * (1.0 + 1.5 / (1.0 + b.width)) * math.sqrt(step / 2)
        pts = [pos.copy()]
        ended = False
        for _ in range(max(2, int(length / step))):
            # Smooth random curvature (Ornstein-Uhlenbeck) gives the tortuosity.
            kappa = 0.85 * kappa + sigma * rng.standard_normal()
            q = pos - g.fovea
            rho = math.hypot(q[0], q[1])
            if b.arcade:
                # Circle around the fovea from the disc side towards the raphe while
                # being pulled to an arcade radius of about 2 DD.
                a, c = q @ g.temporal / rho, q @ g.superior / rho
                tangent = b.hemisphere * (c * g.temporal - a * g.superior)
                target = 2.0 * g.dd * (1 - 0.25 * max(0.0, a))
                want = tangent - 1.5 * (rho - target) / target * (q / rho)
                gain = 0.12 * min(1.0, b.width / (4 * s))
            else:
                want = pos - g.disc  # vessels radiate out of the disc
                gain = 0.02
            theta += kappa + gain * _wrap(_angle(want) - theta)
            pos = pos + step * _unit(theta)
            pts.append(pos.copy())
            q = pos - g.fovea
            if (
                np.hypot(*(pos - g.centre)) > r_stop
                or np.hypot(*q) < r_faz
                or (b.hemisphere and q @ g.temporal > 0 and b.hemisphere * (q @ g.superior) < 0)
            ):
                ended = True
                break
        p = np.asarray(pts)
        out.segments.append(np.concatenate([p[:-1], p[1:]], axis=1))
        out.widths.append(b.width)
        out.vein.append(b.vein)
        out.branch.append(n_branch)
        n_branch += 1
        if ended:
            continue
        w1, w2, a1, a2 = _murray_split(rng, b.width)
        if w1 < w_min:
            continue
        w2 = max(w2, w_min)
        side = 1 if rng.random() < 0.5 else -1
        out.bifurcations.append(pos)
        # The side branch of an arcade takes the side away from the fovea or towards it
        # at random; the larger child carries on the arcade.
        queue.append(_Branch(pos, theta + side * a1, w1, b.vein, b.tree, b.hemisphere, b.arcade))
        queue.append(_Branch(pos, theta - side * a2, w2, b.vein, b.tree, b.hemisphere, False))
    return out


def _flatten(v: _Vessels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-segment arrays: segments (M, 4), widths (M,), vein (M,) bool, branch ids (M,)."""
    counts = [len(s) for s in v.segments]
    segs = np.concatenate(v.segments)
    return (
        segs,
        np.repeat(v.widths, counts),
        np.repeat(v.vein, counts),
        np.repeat(v.branch, counts),
    )


def _crossings(segs: np.ndarray, branch: np.ndarray) -> np.ndarray:
    """(K, 2) exact intersection points of centreline segments of different branches."""
    mid = (segs[:, :2] + segs[:, 2:]) / 2
    reach = np.hypot(*(segs[:, 2:] - segs[:, :2]).T).max()
    # Two segments can only intersect if their midpoints are within one segment length.
    pairs = cKDTree(mid).query_pairs(reach, output_type="ndarray")
    pairs = pairs[branch[pairs[:, 0]] != branch[pairs[:, 1]]]
    p, r = segs[pairs[:, 0], :2], segs[pairs[:, 0], 2:] - segs[pairs[:, 0], :2]
    q, s = segs[pairs[:, 1], :2], segs[pairs[:, 1], 2:] - segs[pairs[:, 1], :2]
    denom = r[:, 0] * s[:, 1] - r[:, 1] * s[:, 0]
    qp = q - p
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (qp[:, 0] * s[:, 1] - qp[:, 1] * s[:, 0]) / denom
        u = (qp[:, 0] * r[:, 1] - qp[:, 1] * r[:, 0]) / denom
    # Open intervals: children touching their parent at the bifurcation do not cross it.
    eps = 1e-6
    hit = (t > eps) & (t < 1 - eps) & (u > eps) & (u < 1 - eps)
    return p[hit] + t[hit, None] * r[hit]


def _junctions(v: _Vessels, segs: np.ndarray, branch: np.ndarray, g: _Geometry) -> np.ndarray:
    pts = np.concatenate([np.reshape(v.bifurcations, (-1, 2)), _crossings(segs, branch)])
    inside = np.hypot(*(pts - g.centre).T) < g.radius - 1
    # The trunks start in a tangle at the disc centre where no junction is resolvable.
    outside_disc_core = np.hypot(*(pts - g.disc).T) > 0.3 * g.dd
    pts = pts[inside & outside_disc_core]
    keep = np.ones(len(pts), bool)
    for i, j in sorted(cKDTree(pts).query_pairs(2.0)):
        if keep[i] and keep[j]:
            keep[j] = False
    return pts[keep].astype(np.float32)


def _rasterise(
    shape: tuple[int, int], segs: np.ndarray, widths: np.ndarray, values: np.ndarray, frac: float
) -> np.ndarray:
    """Draw segments ``frac`` times their width, supersampled; return the (H, W) float32
    box-filtered result in [0, 1] (value 255 maps to 1)."""
    h, w = shape
    canvas = np.zeros((h * _SS, w * _SS), np.uint8)
    # Pixel centres: native x maps to supersampled (x + 0.5) * SS - 0.5.
    fixed = np.round(((segs + 0.5) * _SS - 0.5) * (1 << _SHIFT)).astype(np.int32)
    thick = np.maximum(1, np.round(widths * frac * _SS)).astype(np.int32)
    for t, val in {(t, v) for t, v in zip(thick.tolist(), values.tolist())}:
        sel = (thick == t) & (values == val)
        lines = list(fixed[sel].reshape(-1, 2, 2))
        cv2.polylines(canvas, lines, False, int(val), thickness=int(t), shift=_SHIFT)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) float32 zero-mean, unit-ish random field varying over ``cells`` cells."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(coarse, shape[::-1], interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, g: _Geometry) -> np.ndarray:
    """(H, W, 3) float32 RGB fundus without vessels, in 0-255 units."""
    shape = (g.height, g.width)
    yy, xx = np.mgrid[: g.height, : g.width].astype(np.float32)
    red = rng.uniform(185, 240)
    colour = np.array([red, red * rng.uniform(0.42, 0.56), red * rng.uniform(0.22, 0.34)])
    texture = (
        0.07 * _smooth_noise(rng, shape, 3)
        + 0.04 * _smooth_noise(rng, shape, 8)
        + 0.02 * _smooth_noise(rng, shape, 24)
    )
    choroid = 0.03 * _smooth_noise(rng, shape, 40)  # fine choroidal mottling, mostly red
    img = colour * (1 + texture[..., None]) * (1 + choroid[..., None] * np.array([1.0, 0.4, 0.3]))

    # Macula and fovea: more pigment, so darker, above all in green and blue.
    fd2 = ((xx - g.fovea[0]) ** 2 + (yy - g.fovea[1]) ** 2) / g.dd**2
    macula = rng.uniform(0.6, 1.0) * np.exp(-fd2 / (2 * 0.7**2)) + 0.4 * np.exp(-fd2 / (2 * 0.15**2))
    img *= 1 - macula[..., None] * np.array([0.12, 0.3, 0.3])

    # Optic disc: a slightly vertical, yellowish oval with a paler cup.
    rx = 0.5 * g.dd * rng.uniform(0.9, 1.0)
    ry = 0.5 * g.dd * rng.uniform(1.0, 1.15)
    ell = np.sqrt(((xx - g.disc[0]) / rx) ** 2 + ((yy - g.disc[1]) / ry) ** 2)
    disc = 1 / (1 + np.exp((ell - 1) / 0.07))
    cup_r = rng.uniform(0.3, 0.5)
    cup = 1 / (1 + np.exp((ell - cup_r) / 0.08))
    disc_colour = np.array([250, rng.uniform(190, 225), rng.uniform(120, 160)])
    img = img * (1 - disc[..., None]) + disc_colour * disc[..., None]
    img += (np.array([255, 245, 215]) - img) * (0.7 * cup[..., None])

    # Uneven illumination: vignetting plus a smooth gradient in a random direction.
    rad = np.hypot(xx - g.centre[0], yy - g.centre[1]) / g.radius
    direction = _unit(rng.uniform(0, 2 * math.pi))
    ramp = ((xx - g.centre[0]) * direction[0] + (yy - g.centre[1]) * direction[1]) / g.radius
    illum = (1 - rng.uniform(0.2, 0.45) * rad**3) * (1 + rng.uniform(0.0, 0.2) * ramp)
    return (img * illum[..., None]).astype(np.float32)


def _validate(size: int | tuple[int, int], n_trees: int, eye: str | None) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if min(height, width) < 64:
        raise MeddistillError(f"phantom size must be at least 64 pixels, got {size}")
    if not 1 <= n_trees <= 7:
        raise MeddistillError(f"n_trees must be between 1 and 7, got {n_trees}")
    if eye not in (None, "left", "right"):
        raise MeddistillError(f"eye must be 'left', 'right' or None, got {eye!r}")
    return height, width


def make_fundus_phantom(
    size: int | tuple[int, int] = 512,
    seed: int = 0,
    *,
    n_trees: int = 4,
    eye: Literal["left", "right"] | None = None,
) -> FundusPhantom:
    """Synthesise one colour fundus photograph with its exact vessel labels.

    Args:
        size: image side in pixels, or (H, W). The FOV is a centred circle of diameter
            about 0.94 * min(H, W); vessel widths scale with it (about 1-8 px at 512).
        seed: random seed; the same seed gives the same phantom.
        n_trees: artery/vein trunk pairs leaving the disc: the first two are the
            superior and inferior temporal arcades, the next ones nasal and
            papillomacular branches (1-7).
        eye: which eye (the disc lies on the image's side of that eye); random if None.

    Returns:
        A :class:`FundusPhantom`.
    """
    height, width = _validate(size, n_trees, eye)
    rng = np.random.default_rng(seed)
    if eye is None:
        eye = "left" if rng.random() < 0.5 else "right"
    g = _geometry(rng, height, width, eye)
    tree = _grow(rng, g, n_trees)
    segs, widths, vein, branch = _flatten(tree)
    junctions = _junctions(tree, segs, branch, g)

    shape = (height, width)
    s = g.scale
    # Thicker vessels hold more blood along the ray, up to saturation.
    strength = np.round(255 * np.minimum(1.0, (widths / (5 * s)) ** 0.6))
    full = np.full_like(strength, 255)
    vessels = _rasterise(shape, segs, widths, full, 1.0) >= 0.5
    reflex_strength = np.round(255 * np.clip((widths - 3 * s) / (3 * s), 0, 1))
    reflex = rng.uniform(0.0, 0.6) * np.array([0.5, 1.0])  # vein, artery
    contrast = rng.uniform(0.8, 1.3)
    density = np.zeros((height, width, 3), np.float32)
    for is_vein, absorb, refl in ((True, _ABSORB_VEIN, reflex[0]), (False, _ABSORB_ARTERY, reflex[1])):
        sel = vein == is_vein
        # Averaging nested tubes approximates the chord length through a round vessel.
        blood = sum(
            _rasterise(shape, segs[sel], widths[sel], strength[sel], f) for f in (1.0, 0.85, 0.65, 0.4)
        ) / 4
        if refl > 0:
            blood -= refl * _rasterise(shape, segs[sel], widths[sel], reflex_strength[sel], 0.25) / 4
        density += blood[..., None] * absorb * contrast

    img = _background(rng, g) * np.exp(-density)
    sigma = rng.uniform(0.5, 0.9) * s
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.normal(0, rng.uniform(1.5, 4.0), img.shape).astype(np.float32)

    yy, xx = np.ogrid[:height, :width]
    fov = (xx - g.centre[0]) ** 2 + (yy - g.centre[1]) ** 2 <= g.radius**2
    image = np.clip(img, 0, 255).astype(np.uint8)
    image[~fov] = 0
    return FundusPhantom(
        image=image,
        vessels=vessels & fov,
        fov=fov,
        junctions=junctions,
        optic_disc=(float(g.disc[0]), float(g.disc[1])),
    )


def make_phantom_dataset(n: int, size: int = 256, seed: int = 0) -> list[FundusPhantom]:
    """``n`` different phantoms; datasets built from different seeds share none."""
    if n < 1:
        raise MeddistillError(f"a phantom dataset needs n >= 1, got {n}")
    seeds = np.random.SeedSequence(seed).generate_state(n)
    return [make_fundus_phantom(size, int(s)) for s in seeds]
