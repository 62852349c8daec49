"""Procedural colour fundus phantom: the toolkit's embedded default data.

A phantom is a synthetic retinal photograph with exact labels known by construction:
the binary vessel mask, the circular field of view (FOV) and the vessel junctions
(bifurcations and crossings). It stands in for real data in the demo and the tests.

Anatomy, in units of the disc diameter DD (about 1/7 of the FOV diameter): the fovea lies
about 2.5 DD temporal to the optic disc. Artery/vein trunk pairs leave the disc, the first
two as the superior and inferior temporal arcades that curve around the fovea, the others
as nasal and papillomacular branches. Trees branch with Murray's law
(``w0**3 = w1**3 + w2**3``) and Murray's optimal bifurcation angles, thin branches stop
where vessels are already dense, and no branch crosses the temporal raphe or enters the
foveal avascular zone.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ..errors import MeddistillError

__all__ = ["FundusPhantom", "make_fundus_phantom", "make_phantom_dataset"]

# Per-channel (R, G, B) optical density of a fully opaque vessel: blood absorbs green most,
# red hardly at all; venous blood is darker than arterial blood.
_ABSORB_VEIN = np.array([0.16, 0.60, 0.50], np.float32)
_ABSORB_ARTERY = np.array([0.06, 0.40, 0.32], np.float32)
_SHIFT = 4  # fixed-point bits of the cv2 drawing coordinates


@dataclass(frozen=True)
class FundusPhantom:
    """One synthetic fundus photograph and its exact labels.

    Attributes:
        image: (H, W, 3) uint8 RGB photograph, black outside the FOV.
        vessels: (H, W) bool vessel mask, False outside the FOV.
        fov: (H, W) bool circular field of view.
        junctions: (N, 2) float32 (x, y) pixel coordinates of vessel bifurcations and
            centreline crossings inside the FOV, none within 2 px of another.
        optic_disc: (x, y) centre of the optic disc in pixels.
    """

    image: np.ndarray
    vessels: np.ndarray
    fov: np.ndarray
    junctions: np.ndarray
    optic_disc: tuple[float, float]


@dataclass(frozen=True)
class _Geometry:
    """Where things are, in pixels; ``temporal`` and ``superior`` are unit (x, y) vectors."""

    height: int
    width: int
    centre: np.ndarray
    radius: float  # of the FOV
    disc: np.ndarray
    fovea: np.ndarray
    dd: float  # disc diameter
    temporal: np.ndarray
    superior: np.ndarray  # points up in the image

    @property
    def scale(self) -> float:
        """Size factor, 1 for a 512 px image."""
        return self.radius / 240

    @property
    def width_scale(self) -> float:
        """Vessel width factor: as ``scale``, but small images keep drawable vessels."""
        return max(self.scale, 0.3)


@dataclass(frozen=True)
class _Branch:
    """A vessel piece between two bifurcations, before it is traced."""

    start: tuple[float, float]
    heading: float  # radians, image coordinates
    width: float  # pixels
    vein: bool
    hemisphere: int  # +1 superior, -1 inferior, 0 free to cross the raphe
    arcade: float  # radius of its arcade around the fovea in DD, 0 off the arcade


@dataclass(frozen=True)
class _Trees:
    """Traced vessels: one (K, 2) (x, y) centreline per branch, its width and kind."""

    paths: list[np.ndarray]
    widths: np.ndarray
    vein: np.ndarray
    bifurcations: np.ndarray  # (N, 2)


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _geometry(rng: np.random.Generator, height: int, width: int, eye: str) -> _Geometry:
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    radius = 0.47 * min(height, width) * rng.uniform(0.97, 1.0)
    dd = 2 * radius / 7 * rng.uniform(0.9, 1.05)
    # The disc-fovea line tilts a few degrees, the fovea slightly below the disc.
    tilt = math.radians(rng.uniform(2, 10))
    side = 1.0 if eye == "left" else -1.0  # the disc lies on the image's side of the eye
    temporal = np.array([side * math.cos(tilt), math.sin(tilt)])
    superior = side * np.array([temporal[1], -temporal[0]])
    # The fovea sits near the centre, shifted temporally so that the disc stays inside.
    shift = rng.uniform(0.0, 0.1) * temporal + rng.uniform(-0.05, 0.05) * superior
    fovea = centre + shift * radius
    disc = fovea - temporal * dd * rng.uniform(2.3, 2.6)
    return _Geometry(height, width, centre, radius, disc, fovea, dd, temporal, superior)


def _murray_split(
    rng: np.random.Generator, w0: float, trunk: bool
) -> tuple[float, float, float, float]:
    """Child widths (larger first) and their deviation angles from the parent (radians).

    A trunk gives off thinner side branches; elsewhere bifurcations are more symmetric.
    """
    alpha = rng.uniform(0.3, 0.7) if trunk else rng.uniform(0.5, 1.0)  # w2 / w1
    w1 = w0 / (1 + alpha**3) ** (1 / 3)
    w2 = alpha * w1
    c1 = (w0**4 + w1**4 - w2**4) / (2 * w0**2 * w1**2)
    c2 = (w0**4 + w2**4 - w1**4) / (2 * w0**2 * w2**2)
    # Measured retinal angles fall somewhat below Murray's optimum (about 75 deg in all).
    shrink = rng.uniform(0.6, 0.95)
    a1 = math.acos(min(1.0, c1)) * shrink
    a2 = math.acos(max(-1.0, min(1.0, c2))) * shrink
    lo, hi = math.radians(30), math.radians(80)
    k = min(max(a1 + a2, lo), hi) / (a1 + a2)
    return w1, w2, a1 * k, a2 * k


class _Grower:
    """Grows the artery and vein trees of one phantom, widest branch first."""

    def __init__(self, rng: np.random.Generator, g: _Geometry) -> None:
        self.rng, self.g = rng, g
        self.step = max(1.0, 2.0 * g.scale)
        self.w_min = max(1.0, 1.3 * g.width_scale)
        self.length_factor = rng.uniform(0.8, 1.2)
        self.tortuosity = rng.uniform(0.6, 1.4)
        # Space filling: a thin branch stops where the vessels grown so far are dense.
        self.cell = 6 * self.step
        self.occupancy = np.zeros(
            (int(g.height / self.cell) + 3, int(g.width / self.cell) + 3), np.int32
        )
        self.crowded = rng.uniform(22, 35)  # centreline points in 3x3 cells

    def trunks(self, n_trees: int) -> list[_Branch]:
        """One artery and one vein per trunk, leaving the disc centre."""
        g, rng, ws = self.g, self.rng, self.g.width_scale
        t_angle = math.atan2(g.temporal[1], g.temporal[0])
        up = math.copysign(1.0, _wrap(math.atan2(g.superior[1], g.superior[0]) - t_angle))
        # (degrees from temporal towards superior, hemisphere, arcade, vein width at 512)
        plan = [(rng.uniform(70, 90), 1, True, 7.5), (-rng.uniform(70, 90), -1, True, 7.5)]
        others = [(rng.uniform(110, 150), 1), (-rng.uniform(110, 150), -1), (180.0, 0)]
        others += [(rng.uniform(20, 40), 0), (-rng.uniform(20, 40), 0)]  # papillomacular
        plan += [(d, h, False, rng.uniform(4.5, 6.0)) for d, h in others[: n_trees - 2]]
        out = []
        for deg, hemi, arcade, w_vein in plan[:n_trees]:
            # Artery and vein of one arcade run apart: one outside the other.
            radii = rng.permutation([1.7, 2.05]) + rng.uniform(0, 0.25, 2) if arcade else (0.0, 0.0)
            for vein, radius in zip((True, False), radii):
                w = w_vein * ws * (1.0 if vein else rng.uniform(0.72, 0.85))
                h = t_angle + up * math.radians(deg + rng.uniform(-12, 12))
                # The central vessels emerge slightly nasal of the disc centre.
                x, y = g.disc + (_unit(h) * rng.uniform(0.0, 0.08) - 0.08 * g.temporal) * g.dd
                out.append(_Branch((x, y), h, w, vein, hemi, radius))
        return out

    def trace(self, b: _Branch) -> np.ndarray:
        """(K, 2) centreline of a branch steered by anatomy plus smooth random curvature."""
        g, step = self.g, self.step
        w = b.width / g.width_scale  # as if at 512
        length = self.length_factor * g.width_scale * (30 + 6 * w) * self.rng.uniform(0.6, 1.4)
        n = max(2, int(length / step))
        sigma = self.tortuosity * 0.006 * (1 + 3 / (1 + w)) * math.sqrt(step / 2)
        noise = sigma * self.rng.standard_normal(n)
        gain = 0.12 * min(1.0, w / 4) if b.arcade else 0.02
        fx, fy = g.fovea
        tx, ty = g.temporal
        sx, sy = g.superior
        dx, dy = g.disc
        h = b.hemisphere
        # Past the top of its arc an arcade heads temporally, slightly away from the raphe.
        out_x, out_y = g.temporal * 0.97 + h * g.superior * 0.26
        x, y = b.start
        theta, kappa = b.heading, 0.0
        # Small vessels inside the arcades converge on the fovea.
        to_fovea = math.atan2(fy - y, fx - x)
        macular = math.hypot(fx - x, fy - y) < 2.3 * g.dd and math.cos(to_fovea - theta) > 0.3
        pts = np.empty((n + 1, 2))
        pts[0] = x, y
        for i in range(n):
            # The curvature is an Ornstein-Uhlenbeck process: smooth tortuosity.
            kappa = 0.93 * kappa + noise[i]
            if b.arcade:
                # Circle around the fovea from the disc side, pulled to the arcade radius.
                qx, qy = x - fx, y - fy
                rho = math.hypot(qx, qy)
                a, c = (qx * tx + qy * ty) / rho, (qx * sx + qy * sy) / rho
                pull = 1.5 * (rho / (b.arcade * g.dd) - 1) / rho
                wx = h * (c * tx - a * sx) - pull * qx
                wy = h * (c * ty - a * sy) - pull * qy
                m = min(1.0, max(0.0, a / 0.4))
                want = math.atan2((1 - m) * wy + m * out_y, (1 - m) * wx + m * out_x)
            elif macular:
                want = math.atan2(fy - y, fx - x)
            else:
                want = math.atan2(y - dy, x - dx)  # vessels radiate out of the disc
            theta += kappa + gain * _wrap(want - theta)
            x, y = x + step * math.cos(theta), y + step * math.sin(theta)
            pts[i + 1] = x, y
        return pts

    def stop(self, b: _Branch, pts: np.ndarray) -> int:
        """Index of the first point where the branch must end, or -1."""
        g = self.g
        q = pts - g.fovea
        outside = ((pts - g.centre) ** 2).sum(1) > (g.radius + 3 * self.step) ** 2
        end = outside | ((q**2).sum(1) < (0.3 * g.dd) ** 2)  # foveal avascular zone
        if b.hemisphere:
            end |= (q @ g.temporal > 0) & (b.hemisphere * (q @ g.superior) < 0)
        if b.width < 3 * self.g.width_scale:
            cells = self._cells(pts)
            dense = sum(
                self.occupancy[cells[:, 0] + i, cells[:, 1] + j]
                for i in (-1, 0, 1)
                for j in (-1, 0, 1)
            )
            # Near its start a branch sits beside its parent and sibling.
            away = ((pts - pts[0]) ** 2).sum(1) > (2 * self.cell) ** 2
            end |= away & (dense > self.crowded)
        end[0] = False
        return int(np.argmax(end)) if end.any() else -1

    def _cells(self, pts: np.ndarray) -> np.ndarray:
        cells = (pts[:, ::-1] / self.cell).astype(int) + 1
        return np.clip(cells, 1, np.array(self.occupancy.shape) - 2)

    def grow(self, n_trees: int) -> _Trees:
        heap = [(-b.width, i, b) for i, b in enumerate(self.trunks(n_trees))]
        heapq.heapify(heap)
        count = len(heap)
        paths, widths, vein, bifurcations = [], [], [], []
        while heap and len(paths) < 5000:
            b = heapq.heappop(heap)[2]
            pts = self.trace(b)
            k = self.stop(b, pts)
            if k >= 0:
                pts = pts[: k + 1]
            np.add.at(self.occupancy, tuple(self._cells(pts).T), 1)
            paths.append(pts)
            widths.append(b.width)
            vein.append(b.vein)
            if k >= 0:
                continue
            w1, w2, a1, a2 = _murray_split(self.rng, b.width, b.arcade > 0)
            if w1 < self.w_min:
                continue
            end = (float(pts[-1, 0]), float(pts[-1, 1]))
            d = pts[-1] - pts[-2]
            theta = math.atan2(d[1], d[0])
            side = 1 if self.rng.random() < 0.5 else -1
            bifurcations.append(end)
            # The larger child carries on the arcade.
            for child in (
                _Branch(end, theta + side * a1, w1, b.vein, b.hemisphere, b.arcade),
                _Branch(end, theta - side * a2, max(w2, self.w_min), b.vein, b.hemisphere, 0.0),
            ):
                heapq.heappush(heap, (-child.width, count, child))
                count += 1
        return _Trees(paths, np.array(widths), np.array(vein), np.reshape(bifurcations, (-1, 2)))


def _crossings(trees: _Trees) -> np.ndarray:
    """(K, 2) exact intersection points of the centrelines of different branches."""
    segs = np.concatenate([np.concatenate([p[:-1], p[1:]], axis=1) for p in trees.paths])
    branch = np.repeat(np.arange(len(trees.paths)), [len(p) - 1 for p in trees.paths])
    p, r = segs[:, :2], segs[:, 2:] - segs[:, :2]
    # Two segments can only intersect if their midpoints are within one segment length.
    reach = np.hypot(r[:, 0], r[:, 1]).max()
    i, j = cKDTree(p + r / 2).query_pairs(reach, output_type="ndarray").T
    keep = branch[i] != branch[j]
    i, j = i[keep], j[keep]
    qp, ri, rj = p[j] - p[i], r[i], r[j]
    denom = ri[:, 0] * rj[:, 1] - ri[:, 1] * rj[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (qp[:, 0] * rj[:, 1] - qp[:, 1] * rj[:, 0]) / denom
        u = (qp[:, 0] * ri[:, 1] - qp[:, 1] * ri[:, 0]) / denom
    # Open intervals: children touching their parent at the bifurcation do not cross it.
    eps = 1e-6
    hit = (t > eps) & (t < 1 - eps) & (u > eps) & (u < 1 - eps)
    return p[i[hit]] + t[hit, None] * ri[hit]


def _junctions(trees: _Trees, g: _Geometry) -> np.ndarray:
    """(N, 2) float32 bifurcations and crossings inside the FOV, 2 px apart at least."""
    pts = np.concatenate([trees.bifurcations, _crossings(trees)])
    inside = ((pts - g.centre) ** 2).sum(1) < (g.radius - 1) ** 2
    # The trunks start in a tangle at the disc centre where no junction is resolvable.
    off_disc_core = ((pts - g.disc) ** 2).sum(1) > (0.3 * g.dd) ** 2
    pts = pts[inside & off_disc_core]
    keep = np.ones(len(pts), bool)
    for i, j in sorted(cKDTree(pts).query_pairs(2.0)):
        if keep[i] and keep[j]:
            keep[j] = False
    return pts[keep].astype(np.float32)


def _rasterise(
    shape: tuple[int, int],
    paths: list[np.ndarray],
    widths: np.ndarray,
    values: np.ndarray,
    frac: float,
    ss: int,
) -> np.ndarray:
    """Draw each path ``frac`` times its width with its value (0-255), ``ss`` times
    supersampled; return the (H, W) float32 box-filtered image in [0, 1]."""
    h, w = shape
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    # Pixel centres: native x maps to supersampled (x + 0.5) * ss - 0.5.
    fixed = [np.round(((p + 0.5) * ss - 0.5) * (1 << _SHIFT)).astype(np.int32) for p in paths]
    # cv2 draws a thick line about one pixel wider than asked.
    thick = np.maximum(1, np.round(widths * frac * ss) - 1).astype(int)
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for t, v, f in zip(thick.tolist(), values.astype(int).tolist(), fixed):
        groups.setdefault((t, v), []).append(f)
    for (t, v), lines in groups.items():
        if v > 0:
            cv2.polylines(canvas, lines, False, v, thickness=t, shift=_SHIFT)
    small = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) float32 smooth random field of unit scale varying over ``cells`` cells."""
    coarse = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    return cv2.resize(coarse, shape[::-1], interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, g: _Geometry) -> np.ndarray:
    """(H, W, 3) float32 RGB fundus without vessels, in 0-255 units."""
    shape = (g.height, g.width)
    yy, xx = np.mgrid[: g.height, : g.width].astype(np.float32)
    red = rng.uniform(185, 240)
    colour = np.array([red, red * rng.uniform(0.42, 0.56), red * rng.uniform(0.22, 0.34)])
    texture = (
        0.05 * _smooth_noise(rng, shape, 3)
        + 0.02 * _smooth_noise(rng, shape, 8)
        + 0.008 * _smooth_noise(rng, shape, 24)
    )
    choroid = 0.015 * _smooth_noise(rng, shape, 60)  # fine mottling, mostly in red
    img = (1 + texture)[..., None] * (1 + choroid[..., None] * np.float32([1.0, 0.4, 0.3]))
    img *= colour.astype(np.float32)

    # Macula and fovea: more pigment, so darker, above all in green and blue.
    fd2 = ((xx - g.fovea[0]) ** 2 + (yy - g.fovea[1]) ** 2) / g.dd**2
    macula = rng.uniform(0.6, 1.0) * np.exp(-fd2 / 0.98) + 0.4 * np.exp(-fd2 / 0.045)
    img *= 1 - macula[..., None] * np.float32([0.12, 0.3, 0.3])

    # Optic disc: a slightly vertical yellowish oval with a paler cup.
    rx = 0.5 * g.dd * rng.uniform(0.95, 1.05)
    ry = 0.5 * g.dd * rng.uniform(1.05, 1.2)
    ell = np.sqrt(((xx - g.disc[0]) / rx) ** 2 + ((yy - g.disc[1]) / ry) ** 2)
    disc = (1 / (1 + np.exp((ell - 1) / 0.06)))[..., None]
    cup = (1 / (1 + np.exp((ell - rng.uniform(0.3, 0.5)) / 0.1)))[..., None]
    rim_colour = np.float32([250, rng.uniform(180, 215), rng.uniform(100, 140)])
    img = img * (1 - disc) + rim_colour * disc
    img += (np.float32([255, 240, 190]) - img) * (0.5 * cup)

    # Uneven illumination: vignetting times a smooth gradient in a random direction.
    rad = np.hypot(xx - g.centre[0], yy - g.centre[1]) / g.radius
    ux, uy = _unit(rng.uniform(0, 2 * math.pi))
    ramp = ((xx - g.centre[0]) * ux + (yy - g.centre[1]) * uy) / g.radius
    illum = (1 - rng.uniform(0.2, 0.45) * rad**3) * (1 + rng.uniform(0.0, 0.2) * ramp)
    return img * illum[..., None]


def _render_vessels(
    rng: np.random.Generator, trees: _Trees, g: _Geometry
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool mask and (H, W, 3) float32 optical density of the vessels."""
    shape, ws = (g.height, g.width), g.width_scale
    # The mask is exact to a quarter pixel: a pixel is vessel when half of it is covered.
    full = np.full(len(trees.paths), 255)
    mask = _rasterise(shape, trees.paths, trees.widths, full, 1.0, 4) >= 0.5
    # Thicker vessels hold more blood along the ray, up to saturation.
    blood = np.round(255 * np.minimum(1.0, (trees.widths / (4 * ws)) ** 0.4))
    # The central light reflex shows on wide vessels, stronger on arteries.
    shine = np.round(255 * np.clip((trees.widths - 3 * ws) / (3 * ws), 0, 1))
    reflex = rng.uniform(0.0, 0.6) * np.where(trees.vein, 0.5, 1.0)
    contrast = rng.uniform(0.8, 1.3)
    density = np.zeros((*shape, 3), np.float32)
    for is_vein, absorb in ((True, _ABSORB_VEIN), (False, _ABSORB_ARTERY)):
        sel = np.flatnonzero(trees.vein == is_vein)
        paths = [trees.paths[i] for i in sel]
        # Averaging nested tubes approximates the chord length through a round vessel.
        amount = sum(
            _rasterise(shape, paths, trees.widths[sel], blood[sel], f, 2) for f in (1.0, 0.7, 0.4)
        ) / 3
        amount -= _rasterise(shape, paths, trees.widths[sel], shine[sel] * reflex[sel], 0.25, 2) / 3
        density += amount[..., None] * (absorb * contrast)
    return mask, density


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
            about 0.93 * min(H, W); vessel widths scale with it (about 1-8 px at 512).
        seed: random seed; the same seed gives the same phantom.
        n_trees: artery/vein trunk pairs leaving the disc (1-7): first the superior and
            inferior temporal arcades, then nasal and papillomacular branches.
        eye: which eye (the disc lies on that side of the image); random if None.

    Returns:
        A :class:`FundusPhantom`.
    """
    height, width = _validate(size, n_trees, eye)
    rng = np.random.default_rng(seed)
    if eye is None:
        eye = "left" if rng.random() < 0.5 else "right"
    g = _geometry(rng, height, width, eye)
    trees = _Grower(rng, g).grow(n_trees)
    vessels, density = _render_vessels(rng, trees, g)

    img = _background(rng, g) * np.exp(-density)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 0.9) * g.scale)
    img += rng.uniform(1.5, 4.0) * rng.standard_normal(img.shape, dtype=np.float32)
    yy, xx = np.ogrid[:height, :width]
    fov = (xx - g.centre[0]) ** 2 + (yy - g.centre[1]) ** 2 <= g.radius**2
    image = np.clip(img, 0, 255).astype(np.uint8)
    image[~fov] = 0
    return FundusPhantom(
        image=image,
        vessels=vessels & fov,
        fov=fov,
        junctions=_junctions(trees, g),
        optic_disc=(float(g.disc[0]), float(g.disc[1])),
    )


def make_phantom_dataset(n: int, size: int = 256, seed: int = 0) -> list[FundusPhantom]:
    """``n`` different phantoms of side ``size``; different seeds share none."""
    if n < 1:
        raise MeddistillError(f"a phantom dataset needs n >= 1, got {n}")
    seeds = np.random.SeedSequence(seed).generate_state(n)
    return [make_fundus_phantom(size, int(s)) for s in seeds]
