"""Distillation losses as plain functions on tensors (2D or 3D feature maps).

Shapes: logits and features are ``(B, C, *spatial)`` with ``spatial`` = ``(H, W)`` or
``(D, H, W)``. Every loss returns a scalar averaged as documented, so its weight in a
config means the same thing whatever the patch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _resize_like(x: Tensor, reference: Tensor) -> Tensor:
    """Resize ``x`` spatially to ``reference``'s spatial size (no-op when equal)."""
    if x.shape[2:] == reference.shape[2:]:
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=reference.shape[2:], mode=mode, align_corners=False)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Pixel-wise KD (Hinton et al.): ``KL(softmax(t/T) || softmax(s/T)) * T**2``.

    The KL divergence is summed over classes and averaged over pixels and batch.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit shapes differ: {student_logits.shape} vs {teacher_logits.shape}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return kl.mean() * temperature**2


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention of Zagoruyko & Komodakis: L2-normalised channel mean of ``|f|**p``.

    ``(B, C, *spatial)`` → ``(B, 1, *spatial)`` whose flattened map has unit L2 norm.
    """
    amap = feature.abs().pow(p).mean(dim=1, keepdim=True)
    norm = amap.flatten(1).norm(dim=1).clamp_min(1e-12)
    return amap / norm.view(-1, *([1] * (amap.dim() - 1)))


def at_loss(student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer: mean squared difference of normalised attention maps.

    The student's map is resized to the teacher's spatial size and re-normalised first.
    """
    student_map = _resize_like(attention_map(student_feature, p), teacher_feature)
    student_map = attention_map(student_map, 1.0)
    return (student_map - attention_map(teacher_feature, p)).pow(2).mean()


def fsp_matrix(first: Tensor, second: Tensor) -> Tensor:
    """Flow of solution procedure (Yim et al.): ``G = first · secondᵀ / (H·W)``.

    ``first`` ``(B, C1, *s1)`` is average-pooled to ``second``'s size ``s2``; returns ``(B, C1, C2)``.
    """
    if first.shape[2:] != second.shape[2:]:
        pool = F.adaptive_avg_pool2d if first.dim() == 4 else F.adaptive_avg_pool3d
        first = pool(first, second.shape[2:])
    a, b = first.flatten(2), second.flatten(2)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]


def fsp_loss(student_pair: tuple[Tensor, Tensor], teacher_pair: tuple[Tensor, Tensor]) -> Tensor:
    """Mean squared difference of student and teacher FSP matrices (equal channel counts)."""
    return (fsp_matrix(*student_pair) - fsp_matrix(*teacher_pair)).pow(2).mean()


def hint_loss(student_hint: Tensor, teacher_hint: Tensor) -> Tensor:
    """FitNets hint: MSE between the (adapted) student feature and the teacher feature.

    The student feature is resized to the teacher's spatial size when they differ.
    """
    return F.mse_loss(_resize_like(student_hint, teacher_hint), teacher_hint)
