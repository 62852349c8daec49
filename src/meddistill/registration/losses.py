"""Training losses of the learned keypoint methods (SuperPoint, SuperRetina, reverse KD).

Heatmaps are ``(B, 1, H, W)`` probabilities; descriptors are unit vectors ``(N, D)`` sampled at
corresponding keypoints, row i of one set matching row i of the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import Tensor

# Eq. 3 of the RKD paper is 1 − 2Σ(P∘Y) / (ΣP² + ΣY²) per image: MONAI's Dice with squared
# denominators, no smoothing in the numerator and a tiny one in the denominator.
_SQUARED_DICE = DiceLoss(squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)


def heatmap_dice_loss(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Squared-denominator Dice between heatmaps ``(B, 1, H, W)``, averaged over the batch.

    Used with smoothed labels (SuperRetina's classification loss), with a warped-back heatmap
    (its geometric loss) and with the teacher's heatmap (the reverse-KD term, Eq. 4). ``mask``
    ``(B, 1, H, W)`` restricts it to the pixels both views see.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"heatmaps differ in shape: {tuple(prediction.shape)} vs {tuple(target.shape)}")
    if mask is not None:
        prediction, target = prediction * mask, target * mask
    return _SQUARED_DICE(prediction, target)


def triplet_descriptor_loss(
    anchor: Tensor,
    positive: Tensor,
    margin: float = 0.8,
    positions: Tensor | None = None,
    exclusion_radius: float = 8.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SuperRetina's descriptor triplet loss on cosine distance Φ = 1 − a·b.

    For anchor i the positive is ``positive[i]``; the negative distance is the mean of the
    hardest (closest non-matching ``positive[j]``) and a random non-matching one:
    mean_i max(0, m + Φ_ii − ½(Φ_rand + Φ_hard)). With the keypoints' ``positions`` ``(N, 2)``
    (px), keypoints closer than ``exclusion_radius`` to the anchor are not negatives: the
    descriptor map is 8× coarser, so two such neighbours cannot be told apart and treating
    them as negatives drives the descriptors to collapse. Anchors without a negative are
    skipped. Averaged rather than summed over keypoints so the scale does not grow with their
    number. Needs at least two keypoints.
    """
    count = anchor.shape[0]
    if count < 2 or anchor.shape != positive.shape:
        raise ValueError(f"need ≥ 2 matching descriptor pairs of equal shape, got {tuple(anchor.shape)} and {tuple(positive.shape)}")
    distance = 1.0 - anchor @ positive.t()  # (N, N)
    allowed = ~torch.eye(count, dtype=torch.bool, device=distance.device)
    if positions is not None:
        allowed &= torch.cdist(positions, positions) >= exclusion_radius
    usable = allowed.any(dim=1)
    if not usable.any():
        return distance.sum() * 0.0
    hardest = distance.masked_fill(~allowed, 4.0).min(dim=1).values  # Φ ≤ 2: a masked entry is never the minimum
    # a random allowed negative per anchor: the allowed entry with the largest random key
    keys = torch.rand(distance.shape, generator=generator).to(distance).masked_fill(~allowed, -1.0)
    random = distance.gather(1, keys.argmax(dim=1, keepdim=True))[:, 0]
    return F.relu(margin + distance.diagonal() - 0.5 * (random + hardest))[usable].mean()


def superpoint_detector_loss(cell_logits: Tensor, keypoints: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """SuperPoint's detector loss: cross-entropy over the 65 classes of every 8×8 cell.

    ``cell_logits`` ``(B, 65, H/8, W/8)``; ``keypoints`` binary ``(B, 1, H, W)``. A cell's class is
    the position of its keypoint, one chosen at random when it holds several, or the dustbin
    (64) when it holds none.
    """
    cells = F.pixel_unshuffle(keypoints, 8)  # (B, 64, h, w)
    noise = torch.rand(cells.shape, generator=generator).to(cells)
    scores = torch.cat([cells * (1.0 + noise), torch.full_like(cells[:, :1], 0.5)], dim=1)
    return F.cross_entropy(cell_logits, scores.argmax(dim=1))


def superpoint_descriptor_loss(
    descriptors: Tensor,
    warped_descriptors: Tensor,
    cell_to_warped: Tensor,
    positive_margin: float = 1.0,
    negative_margin: float = 0.2,
    positive_weight: float = 250.0,
) -> Tensor:
    """SuperPoint's dense descriptor hinge loss over all cell pairs of an image and its warp.

    ``descriptors``, ``warped_descriptors`` ``(B, D, h, w)``; ``cell_to_warped`` ``(B, h·w, 2)``:
    where each cell centre of the first image lands in the second, in pixels. Cells (i, j)
    correspond when the warped centre of i is less than 8 px (one cell) from the centre of j, so
    an unwarped cell corresponds to itself and not to its neighbours 8 px away.
    Loss = mean of λ_d·s·max(0, m_p − dᵀd') + (1 − s)·max(0, dᵀd' − m_n).
    """
    b, _, h, w = warped_descriptors.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = (torch.stack([xs, ys], dim=-1).reshape(-1, 2).to(cell_to_warped) * 8 + 3.5)  # (h·w, 2)
    correspond = (torch.cdist(cell_to_warped, centres[None].expand(b, -1, -1)) < 8.0).float()  # (B, hw, hw)
    dot = torch.bmm(descriptors.flatten(2).transpose(1, 2), warped_descriptors.flatten(2))
    loss = positive_weight * correspond * F.relu(positive_margin - dot) + (1 - correspond) * F.relu(dot - negative_margin)
    return loss.mean()
