"""Keypoint labels, heatmap peaks and descriptor sampling for the learned keypoint methods.

Labels come from vessel junctions (bifurcations and crossings) of manual vessel masks, as in
SuperRetina's semi-supervised setting; heatmaps are read out by non-maximum suppression and
descriptors are sampled bilinearly from the coarse descriptor map at the keypoints.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.morphology import skeletonize
from torch import Tensor


def vessel_junctions(vessels: np.ndarray, merge_radius: int = 3) -> np.ndarray:
    """Junction points ``(N, 2)`` (x, y) float32 of a binary vessel mask ``(H, W)``.

    The mask is skeletonised; a skeleton pixel with three or more skeleton neighbours is a
    junction pixel. Junction pixels closer than ``merge_radius`` are one junction (a crossing
    skeletonises into two nearby forks), placed at their centroid.
    """
    if vessels.ndim != 2:
        raise ValueError(f"vessels must be a 2D mask, got shape {vessels.shape}")
    skeleton = skeletonize(vessels > 0)
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant") - 1
    junction = skeleton & (neighbours >= 3)
    if not junction.any():
        return np.zeros((0, 2), np.float32)
    grown = ndimage.binary_dilation(junction, iterations=max(merge_radius // 2, 1))
    labels, count = ndimage.label(grown)
    centres = ndimage.center_of_mass(junction, labels, range(1, count + 1))
    return np.array([(x, y) for y, x in centres], np.float32).reshape(-1, 2)


def keypoint_map(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary map ``(H, W)`` float32 with a 1 at each (x, y) point rounded to the pixel grid."""
    label = np.zeros(shape, np.float32)
    if len(points):
        xy = np.rint(points).astype(int)
        keep = (xy[:, 0] >= 0) & (xy[:, 0] < shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < shape[0])
        label[xy[keep, 1], xy[keep, 0]] = 1.0
    return label


def gaussian_kernel(size: int = 13, sigma: float = 2.0) -> Tensor:
    """``(size, size)`` Gaussian with its peak at 1 (max-normalised, not sum-normalised)."""
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(axis**2) / (2 * sigma**2))
    return g[:, None] * g[None, :]


def smooth_labels(labels: Tensor, size: int = 13, sigma: float = 2.0) -> Tensor:
    """SuperRetina's soft labels: binary keypoint maps ``(B, 1, H, W)`` blurred by a max-normalised
    Gaussian, so each keypoint is a blob that peaks at 1 (overlaps clipped at 1)."""
    kernel = gaussian_kernel(size, sigma).to(labels)[None, None]
    return F.conv2d(labels, kernel, padding=size // 2).clamp_max(1.0)


def heatmap_peaks(
    heatmap: Tensor, radius: int = 10, threshold: float = 0.01, border: int = 4, max_keypoints: int | None = None
) -> tuple[Tensor, Tensor]:
    """Keypoints of one heatmap ``(H, W)`` by non-maximum suppression.

    A pixel is a keypoint when it is the maximum of its ``(2·radius+1)²`` window, above
    ``threshold`` and at least ``border`` px from the edge. Returns (x, y) ``(N, 2)`` float and
    scores ``(N,)``, strongest first (at most ``max_keypoints``).
    """
    if heatmap.dim() != 2:
        raise ValueError(f"heatmap must be (H, W), got {tuple(heatmap.shape)}")
    # A square max filter is separable: two 1D passes cost 2k instead of k² comparisons a pixel
    # (10× faster at radius 10, the readout was as slow as the CPU student's network).
    size = 2 * radius + 1
    rows = F.max_pool2d(heatmap[None, None], (1, size), stride=1, padding=(0, radius))
    pooled = F.max_pool2d(rows, (size, 1), stride=1, padding=(radius, 0))[0, 0]
    peak = (heatmap == pooled) & (heatmap > threshold)
    if border:
        peak[:border] = peak[-border:] = False
        peak[:, :border] = peak[:, -border:] = False
    ys, xs = torch.nonzero(peak, as_tuple=True)
    scores = heatmap[ys, xs]
    order = _break_ties(ys, xs, torch.argsort(scores, descending=True, stable=True), radius, peak.shape, max_keypoints)
    return torch.stack([xs[order], ys[order]], dim=1).float(), scores[order]


def _break_ties(
    ys: Tensor, xs: Tensor, order: Tensor, radius: int, shape: tuple[int, int], max_keypoints: int | None
) -> Tensor:
    """The first ``max_keypoints`` of ``order`` that lie outside the ``(2·radius+1)²`` window of
    an earlier one.

    Two local maxima that close are exactly equal (each is ≥ the other): flat plateaus, such as
    a saturated sigmoid or neighbouring pixels given the same value, produce them. Keeping all
    puts several keypoints on one spot and makes the count hinge on the last bit of the
    heatmap. The first in ``order`` (strongest, then raster order) wins, so peaks without a tie
    are all kept.
    """
    taken = np.zeros(shape, bool)
    keep: list[int] = []
    for index, y, x in zip(order.tolist(), ys[order].tolist(), xs[order].tolist()):
        if max_keypoints is not None and len(keep) == max_keypoints:
            break
        if not taken[y, x]:
            keep.append(index)
            taken[max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1] = True
    return order.new_tensor(keep, dtype=torch.long)


def refine_peaks(heatmap: Tensor, points: Tensor) -> Tensor:
    """Sub-pixel keypoints: integer peaks ``(N, 2)`` (x, y) of ``heatmap`` ``(H, W)``, each moved
    to the vertex of a parabola through the log-heatmap at the peak and its two neighbours, per
    axis.

    The fit is exact for a Gaussian blob, the shape SuperRetina's smoothed labels teach, and the
    vertex of a peak stays within half a pixel of it. Without it a keypoint found at 768 px is
    up to half a pixel, 1.9 px of a 2912-px FIRE photo, from where the heatmap puts it. A flat
    axis (a saturated heatmap) leaves the coordinate as it is. OpenCV refines SIFT's extrema the
    same way, but only inside its own detector, hence this function.
    """
    if len(points) == 0:
        return points
    height, width = heatmap.shape
    log = heatmap.float().clamp_min(1e-6).log()
    x, y = points[:, 0].long(), points[:, 1].long()
    centre = log[y, x]

    def vertex(minus: Tensor, plus: Tensor) -> Tensor:
        curvature = minus - 2 * centre + plus
        peaked = curvature < -1e-6
        offset = 0.5 * (minus - plus) / torch.where(peaked, curvature, -1.0)
        return torch.where(peaked, offset, 0.0).clamp(-0.5, 0.5)

    dx = vertex(log[y, (x - 1).clamp_min(0)], log[y, (x + 1).clamp_max(width - 1)])
    dy = vertex(log[(y - 1).clamp_min(0), x], log[(y + 1).clamp_max(height - 1), x])
    return points + torch.stack([dx, dy], dim=1).to(points)


def sample_descriptors(descriptors: Tensor, keypoints: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Descriptors ``(N, D)`` (unit length) at keypoints ``(N, 2)`` (x, y) of an image of
    ``image_size`` (H, W) pixels, bilinearly interpolated from a coarse map ``(D, h, w)``."""
    height, width = image_size
    if len(keypoints) == 0:
        return descriptors.new_zeros((0, descriptors.shape[0]))
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=keypoints.device)
    grid = (keypoints * scale - 1.0).view(1, 1, -1, 2).to(descriptors.dtype)
    sampled = F.grid_sample(descriptors[None], grid, mode="bilinear", align_corners=True)[0, :, 0]  # (D, N)
    return F.normalize(sampled.t(), dim=1)


def read_keypoints(
    heatmap: Tensor, descriptors: Tensor, radius: int = 10, threshold: float = 0.01, border: int = 4,
    max_keypoints: int | None = None, subpixel: bool = True,
) -> dict:
    """One image's keypoints from a network's output: ``heatmap`` ``(H, W)``, ``descriptors``
    ``(D, h, w)`` → dict of ``keypoints`` (N, 2) (x, y), ``scores`` (N,), ``descriptors`` (N, D)
    and ``size`` (H, W), what the matchers take. ``subpixel`` refines the peaks (`refine_peaks`)."""
    size = tuple(heatmap.shape)
    points, scores = heatmap_peaks(heatmap, radius, threshold, border, max_keypoints)
    if subpixel:
        points = refine_peaks(heatmap, points)
    return {"keypoints": points, "scores": scores, "descriptors": sample_descriptors(descriptors, points, size), "size": size}
