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


# ---- GKD: dual contrastive graphs over semantic latents (Qi et al., Eqs. 5-8) ----------------
# ``latents`` are ``(B, V, C)``: per image, view 0 is the anchor and views 1.. its augmented
# copies, each embedded by an alignment network's encoding header.


def _outer(a: Tensor, b: Tensor) -> Tensor:
    """Similarity map ``aᵀ b`` of two latents: ``(..., C)`` × ``(..., C)`` → ``(..., C, C)``."""
    return a.unsqueeze(-1) * b.unsqueeze(-2)


def _flat_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of two stacks of maps ``(..., C, C)``, flattened: → ``(...)``."""
    return F.cosine_similarity(a.flatten(-2), b.flatten(-2), dim=-1, eps=1e-8)


def intra_coupling_graph(latents: Tensor) -> tuple[Tensor, Tensor]:
    """Intra-coupling graph: one node per coupling (anchor, view i), edges anchor-to-view.

    Nodes ``N_i = s_0ᵀ s_i`` ``(B, V-1, C, C)``; edges ``E_i = cos(N_0, N_i)`` ``(B, V-1)``,
    where ``N_0 = s_0ᵀ s_0`` is the anchor's own node.
    """
    anchor, views = latents[:, :1], latents[:, 1:]
    nodes = _outer(anchor, views)
    edges = _flat_cosine(_outer(anchor, anchor), nodes)
    return nodes, edges


def inter_coupling_graph(latents: Tensor) -> tuple[Tensor, Tensor]:
    """Inter-coupling graph among the augmented views only.

    Nodes ``N_i = s_iᵀ s_i`` ``(B, V-1, C, C)``; edges ``E_ij = cos(N_i, N_j)`` for ``i < j``,
    ``(B, (V-1)(V-2)/2)``.
    """
    views = latents[:, 1:]
    nodes = _outer(views, views)
    first, second = torch.triu_indices(views.shape[1], views.shape[1], offset=1, device=latents.device)
    edges = _flat_cosine(nodes[:, first], nodes[:, second])
    return nodes, edges


def _check_latents(student: Tensor, teacher: Tensor, min_views: int) -> None:
    if student.shape != teacher.shape or student.dim() != 3:
        raise ValueError(f"latents must both be (B, V, C), got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if student.shape[1] < min_views:
        raise ValueError(f"this graph needs at least {min_views} views per image, got {student.shape[1]}")


def intra_graph_loss(student_latents: Tensor, teacher_latents: Tensor) -> Tensor:
    """Eq. 5: ``mean|N^T - N^S| + mean|E^T - E^S|`` over the intra-coupling graphs."""
    _check_latents(student_latents, teacher_latents, 2)
    s_nodes, s_edges = intra_coupling_graph(student_latents)
    t_nodes, t_edges = intra_coupling_graph(teacher_latents)
    return (t_nodes - s_nodes).abs().mean() + (t_edges - s_edges).abs().mean()


def inter_graph_loss(student_latents: Tensor, teacher_latents: Tensor) -> Tensor:
    """Eqs. 6-8: ``KL(softmax(N^T) || softmax(N^S)) + mean|E^T - E^S|`` over the inter-coupling graphs.

    The softmax runs along each node's rows; the KL is summed over a row and averaged over rows.
    """
    _check_latents(student_latents, teacher_latents, 3)
    s_nodes, s_edges = inter_coupling_graph(student_latents)
    t_nodes, t_edges = inter_coupling_graph(teacher_latents)
    log_s, log_t = F.log_softmax(s_nodes, dim=-1), F.log_softmax(t_nodes, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1).mean()
    return kl + (t_edges - s_edges).abs().mean()


# ---- structured and relational baselines (SKD, IFVD, CWD, CoCo) -----------------------------


def _pool_to(x: Tensor, size: tuple[int, ...], mode: str = "max") -> Tensor:
    """Adaptive max (or average) pooling of ``(B, C, *S)`` to ``size``."""
    dims = x.dim() - 2
    if mode == "max":
        return (F.adaptive_max_pool2d if dims == 2 else F.adaptive_max_pool3d)(x, size)
    return (F.adaptive_avg_pool2d if dims == 2 else F.adaptive_avg_pool3d)(x, size)


def pairwise_affinity(feature: Tensor) -> Tensor:
    """Cosine similarity between all pairs of positions: ``(B, C, *S)`` → ``(B, N, N)``, N = prod(S)."""
    nodes = F.normalize(feature.flatten(2), dim=1, eps=1e-8)
    return torch.bmm(nodes.transpose(1, 2), nodes)


def pairwise_loss(student_feature: Tensor, teacher_feature: Tensor, grid: int = 16) -> Tensor:
    """SKD pair-wise term: both features max-pooled to ``grid`` per axis, MSE of their affinity matrices."""
    size = (grid,) * (teacher_feature.dim() - 2)
    student = pairwise_affinity(_pool_to(student_feature, size))
    teacher = pairwise_affinity(_pool_to(teacher_feature, size))
    return (student - teacher).pow(2).mean()


def class_variation_map(feature: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """IFVD: cosine similarity of every pixel's feature to its class prototype.

    ``feature`` ``(B, C, *S)``; ``labels`` ``(B, *L)`` integers, nearest-resized to ``S``. The
    prototype of a class is the mean feature over its pixels in that image. Returns ``(B, *S)``.
    """
    labels = F.interpolate(labels[:, None].float(), size=feature.shape[2:], mode="nearest")[:, 0].long()
    one_hot = F.one_hot(labels, num_classes).movedim(-1, 1).float().flatten(2)  # (B, K, N)
    flat = feature.flatten(2)  # (B, C, N)
    prototypes = torch.bmm(flat, one_hot.transpose(1, 2)) / one_hot.sum(2).clamp_min(1).unsqueeze(1)  # (B, C, K)
    own = torch.gather(prototypes, 2, labels.flatten(1).unsqueeze(1).expand(-1, flat.shape[1], -1))  # (B, C, N)
    return F.cosine_similarity(flat, own, dim=1, eps=1e-8).view(labels.shape)


def ifv_loss(student_feature: Tensor, teacher_feature: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """IFVD: MSE between student and teacher intra-class feature-variation maps (student resized to the teacher)."""
    student = class_variation_map(_resize_like(student_feature, teacher_feature), labels, num_classes)
    return (student - class_variation_map(teacher_feature, labels, num_classes)).pow(2).mean()


def cwd_loss(student_map: Tensor, teacher_map: Tensor, temperature: float = 4.0) -> Tensor:
    """Channel-wise distillation (Shu et al.): per channel, softmax over positions at temperature τ;
    ``KL(teacher || student)`` summed over positions, times ``τ² / (B·C)``."""
    if student_map.shape != teacher_map.shape:
        raise ValueError(f"CWD needs equal shapes, got {tuple(student_map.shape)} and {tuple(teacher_map.shape)}")
    log_s = F.log_softmax(student_map.flatten(2) / temperature, dim=2)
    log_t = F.log_softmax(teacher_map.flatten(2) / temperature, dim=2)
    batch, channels = student_map.shape[:2]
    return (log_t.exp() * (log_t - log_s)).sum() * temperature**2 / (batch * channels)


def cross_layer_correlation(shallow: Tensor, deep: Tensor) -> Tensor:
    """CoCo-style cross-layer correlation: the product of two layers' spatial affinity matrices.

    ``shallow`` is average-pooled to ``deep``'s size; returns ``A_shallow · A_deep / N`` ``(B, N, N)``.
    """
    shallow = _pool_to(shallow, tuple(deep.shape[2:]), mode="avg")
    a, b = pairwise_affinity(shallow), pairwise_affinity(deep)
    return torch.bmm(a, b) / a.shape[-1]


def coco_loss(student_pair: tuple[Tensor, Tensor], teacher_pair: tuple[Tensor, Tensor]) -> Tensor:
    """MSE of student and teacher cross-layer correlations; the student pair is resized to the teacher's."""
    student = tuple(_resize_like(s, t) for s, t in zip(student_pair, teacher_pair))
    return (cross_layer_correlation(*student) - cross_layer_correlation(*teacher_pair)).pow(2).mean()


def gradient_penalty(critic, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al.): ``E[(‖∇D(x̂)‖₂ - 1)²]`` at random interpolates ``x̂`` of real and fake."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
