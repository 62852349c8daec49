"""An ensemble of segmenters that averages their class probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import MeddistillError


class ProbabilityEnsemble(nn.Module):
    """Segmenters averaged: image ``(B, C, *S)`` → log of the members' mean class probabilities ``(B, K, *S)``.

    The output is a log-probability, so whatever takes a softmax of a segmenter's logits
    (inference, metrics, a distiller's teacher) gets the members' mean probability, 2D or 3D.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise MeddistillError(f"an ensemble needs at least two models, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        mean = torch.stack([torch.softmax(member(x).float(), dim=1) for member in self.members]).mean(dim=0)
        return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
