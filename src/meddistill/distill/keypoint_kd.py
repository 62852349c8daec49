"""Keypoint distillation (Almahfouz Nasser et al., reverse knowledge distillation).

The student keeps SuperRetina's own losses (the task's terms) and adds two teacher terms:
Dice between the student's and the teacher's heatmaps (Eq. 4) and a triplet term that pulls
the student's descriptors towards the teacher's at the teacher's keypoints (Eq. 5). The same
method serves both directions: a small CNN teacher guiding a large Swin-UNETR student
(reverse distillation) and a large teacher guiding the light CPU student (ordinary).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models import KeypointOutput
from ..registration.keypoints import heatmap_peaks, sample_descriptors
from ..registration.losses import heatmap_dice_loss, triplet_descriptor_loss
from .methods import METHODS, TeacherStudentDistiller


@METHODS.register("keypoint_kd")
class KeypointDistiller(TeacherStudentDistiller):
    """Args: ``heatmap_weight``, ``descriptor_weight`` (1, 1); the teacher's keypoints are its
    heatmap peaks (``nms_radius`` 10 px, ``threshold`` 0.1, at most ``max_keypoints`` 256 per
    image); ``margin`` of the triplet term (0.8)."""

    def __init__(self, student, teacher, task, heatmap_weight: float = 1.0, descriptor_weight: float = 1.0,
                 nms_radius: int = 10, threshold: float = 0.1, max_keypoints: int = 256, margin: float = 0.8) -> None:
        super().__init__(student, teacher, task)
        self.heatmap_weight, self.descriptor_weight = heatmap_weight, descriptor_weight
        self.nms_radius, self.threshold, self.max_keypoints, self.margin = nms_radius, threshold, max_keypoints, margin

    def distillation_losses(self, batch: dict[str, Tensor], student: KeypointOutput, teacher: KeypointOutput) -> dict[str, Tensor]:
        size = tuple(teacher.heatmap.shape[2:])
        terms = []
        for i in range(teacher.heatmap.shape[0]):
            points, _ = heatmap_peaks(teacher.heatmap[i, 0], self.nms_radius, self.threshold, 4, self.max_keypoints)
            if len(points) < 2:
                continue
            anchor = sample_descriptors(student.descriptors[i], points, size)
            positive = sample_descriptors(teacher.descriptors[i], points, size)
            terms.append(triplet_descriptor_loss(anchor, positive, self.margin, points))
        descriptor = torch.stack(terms).mean() if terms else student.descriptors.sum() * 0.0
        return {
            "heatmap_kd": self.heatmap_weight * heatmap_dice_loss(student.heatmap, teacher.heatmap),
            "descriptor_kd": self.descriptor_weight * descriptor,
        }
