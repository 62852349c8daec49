"""A SuperGlue-style attentional graph matcher (Sarlin et al. 2020).

Keypoint positions and scores are encoded by an MLP and added to the descriptors; layers of
self- and cross-attention (message passing over the complete graphs within and between the
two images) refine them; their inner products, with a learnable dustbin row and column, go
through a log-domain Sinkhorn to a partial assignment. A match is a mutual best assignment
above ``threshold`` (0.2); the rest go to the dustbins (no match).

Shapes: keypoints ``(N, 2)`` pixels, scores ``(N,)``, descriptors ``(N, D)``; ``forward`` takes a
list of image pairs, since pairs differ in keypoint counts.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn


def log_optimal_transport(scores: Tensor, dustbin: Tensor, iterations: int = 100) -> Tensor:
    """Log-domain Sinkhorn on ``scores`` ``(N, M)`` padded with a dustbin row and column of value
    ``dustbin``; the N + M mass of points is balanced against the dustbins (SuperGlue's marginals).
    Returns log assignment probabilities ``(N + 1, M + 1)``, rows of real points summing to 1.

    Written out because none of this project's libraries provides it (kornia's matchers load
    pretrained weights and are not installed here).
    """
    n, m = scores.shape
    padded = torch.cat([
        torch.cat([scores, dustbin.expand(n, 1)], dim=1),
        torch.cat([dustbin.expand(1, m), dustbin.expand(1, 1)], dim=1),
    ], dim=0)
    norm = -math.log(n + m)
    log_mu = torch.cat([torch.full((n,), norm), torch.tensor([math.log(m) + norm])]).to(scores)
    log_nu = torch.cat([torch.full((m,), norm), torch.tensor([math.log(n) + norm])]).to(scores)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iterations):
        u = log_mu - torch.logsumexp(padded + v[None, :], dim=1)
        v = log_nu - torch.logsumexp(padded + u[:, None], dim=0)
    return padded + u[:, None] + v[None, :] - norm


def mutual_matches(log_assignment: Tensor, threshold: float = 0.2) -> np.ndarray:
    """Index pairs ``(K, 2)`` that are each other's best real assignment with probability > threshold."""
    inner = log_assignment[:-1, :-1]
    if inner.numel() == 0:
        return np.zeros((0, 2), int)
    best_b, best_a = inner.argmax(dim=1), inner.argmax(dim=0)
    rows = torch.arange(inner.shape[0], device=inner.device)
    keep = (best_a[best_b] == rows) & (inner[rows, best_b].exp() > threshold)
    return torch.stack([rows[keep], best_b[keep]], dim=1).cpu().numpy()


def assignment_loss(log_assignment: Tensor, matches: Tensor, unmatched_a: Tensor, unmatched_b: Tensor) -> Tensor:
    """SuperGlue's loss: negative log assignment of the true matches ``(K, 2)`` and of the
    unmatched points of either image to its dustbin, averaged over all those terms."""
    terms = [
        log_assignment[matches[:, 0], matches[:, 1]],
        log_assignment[unmatched_a, -1],
        log_assignment[-1, unmatched_b],
    ]
    return -torch.cat(terms).mean()


def _mlp(channels: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(channels) - 1):
        layers.append(nn.Linear(channels[i], channels[i + 1]))
        if i < len(channels) - 2:
            layers += [nn.LayerNorm(channels[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _Propagation(nn.Module):
    """One message-passing step: x ← x + MLP([x ‖ attention(x, source)])."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = _mlp([2 * dim, 2 * dim, dim])
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: Tensor, source: Tensor) -> Tensor:
        message, _ = self.attention(x[None], source[None], source[None], need_weights=False)
        return x + self.mlp(torch.cat([x, message[0]], dim=-1))


class GlueMatcher(nn.Module):
    """Attentional graph matcher. Args: descriptor ``dim`` (256), ``layers`` of self+cross
    attention pairs (6), ``heads`` (4), Sinkhorn ``iterations`` (100)."""

    def __init__(self, dim: int = 256, layers: int = 6, heads: int = 4, iterations: int = 100) -> None:
        super().__init__()
        self.keypoint_encoder = _mlp([3, 32, 64, 128, dim])
        self.self_layers = nn.ModuleList(_Propagation(dim, heads) for _ in range(layers))
        self.cross_layers = nn.ModuleList(_Propagation(dim, heads) for _ in range(layers))
        self.projection = nn.Linear(dim, dim)
        self.dustbin = nn.Parameter(torch.tensor(1.0))
        self.iterations, self.dim = iterations, dim

    def encode(self, keypoints: Tensor, scores: Tensor, descriptors: Tensor, size: tuple[int, int]) -> Tensor:
        height, width = size
        centre = keypoints.new_tensor([width / 2, height / 2])
        normalised = (keypoints - centre) / (0.7 * max(height, width))  # SuperGlue's normalisation
        return descriptors + self.keypoint_encoder(torch.cat([normalised, scores[:, None]], dim=1))

    def forward(self, pairs: list[tuple[dict, dict]]) -> list[Tensor]:
        """Each pair ``(a, b)`` of dicts with ``keypoints`` (N, 2), ``scores`` (N,), ``descriptors``
        (N, D) and ``size`` (H, W) → its log assignment ``(N + 1, M + 1)``."""
        return [self.match(a, b) for a, b in pairs]

    def match(self, a: dict, b: dict) -> Tensor:
        x = self.encode(a["keypoints"], a["scores"], a["descriptors"], a["size"])
        y = self.encode(b["keypoints"], b["scores"], b["descriptors"], b["size"])
        for self_layer, cross_layer in zip(self.self_layers, self.cross_layers):
            x, y = self_layer(x, x), self_layer(y, y)
            x, y = cross_layer(x, y), cross_layer(y, x)
        scores = self.projection(x) @ self.projection(y).t() / math.sqrt(self.dim)
        return log_optimal_transport(scores, self.dustbin, self.iterations)
