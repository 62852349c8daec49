"""Tasks: the supervised loss and the prediction rule of one kind of problem.

A distiller asks its task for the supervised term, so one distillation method serves
2D and 3D segmentation alike (and, later, registration with its own task).
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn

from .errors import MeddistillError

SEGMENTATION_LOSSES = ("ce", "dice_ce")


class SegmentationTask(nn.Module):
    """Multi-class segmentation from logits ``(B, K, *spatial)`` and labels ``(B, *spatial)``."""

    def __init__(self, loss: str = "dice_ce") -> None:
        super().__init__()
        if loss not in SEGMENTATION_LOSSES:
            raise MeddistillError(f"unknown loss '{loss}'; choose from {', '.join(SEGMENTATION_LOSSES)}")
        self.loss_name = loss
        self.criterion = (
            DiceCELoss(to_onehot_y=True, softmax=True) if loss == "dice_ce" else nn.CrossEntropyLoss()
        )

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        labels = batch["label"]
        if self.loss_name == "dice_ce":
            return self.criterion(logits, labels.unsqueeze(1))
        return self.criterion(logits, labels)

    @staticmethod
    def probabilities(logits: Tensor) -> Tensor:
        """Foreground probability ``(B, *spatial)`` of a binary segmentation."""
        return torch.softmax(logits.float(), dim=1)[:, 1]
