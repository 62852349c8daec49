"""Segmentation distillation baselines the GKD paper compares against: SKD, IFVD, CWD, CoCo.

SKD, IFVD and CoCo share one shape: pixel-wise KD, a feature-relation term, and a holistic
WGAN-GP critic that scores (image, class probabilities) pairs, teacher's as real and
student's as fake. The critic trains in the same step as the student: its loss sees the
student's output detached, and the student's adversarial term sees the critic's weights
detached, so one optimiser serves both without either pulling the other the wrong way.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import Tensor, nn
from torch.func import functional_call

from .losses import coco_loss, cwd_loss, gradient_penalty, ifv_loss, kd_loss, pairwise_loss
from .methods import METHODS, LogitDistiller, TeacherStudentDistiller


class HolisticCritic(nn.Module):
    """WGAN critic: ``(B, C_image + K, *S)`` → ``(B,)`` scores. No normalisation layers (WGAN-GP)."""

    def __init__(self, in_channels: int, spatial_dims: int = 2, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        widths = [in_channels] + [width * 2**i for i in range(depth)]
        self.convs = nn.Sequential(
            *(
                Convolution(spatial_dims, a, b, strides=2, kernel_size=3, act=("leakyrelu", {"negative_slope": 0.2}), norm=None)
                for a, b in zip(widths[:-1], widths[1:])
            )
        )
        self.score = nn.Linear(widths[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.convs(x).flatten(2).mean(2)).squeeze(1)


class StructuredDistiller(TeacherStudentDistiller):
    """Pixel-wise KD + :meth:`feature_losses` + holistic adversarial term; subclasses pick the feature term."""

    def __init__(
        self,
        student,
        teacher,
        task,
        example: Tensor,
        pixel_weight: float = 10.0,
        feature_weight: float = 1.0,
        holistic_weight: float = 0.1,
        temperature: float = 1.0,
        gradient_penalty_weight: float = 10.0,
        points: list[str] | None = None,
    ) -> None:
        super().__init__(student, teacher, task, feature_weight, points)
        self.pixel_weight, self.holistic_weight = pixel_weight, holistic_weight
        self.temperature, self.gradient_penalty_weight = temperature, gradient_penalty_weight
        with torch.no_grad():
            classes = teacher(example).shape[1]
        self.critic = HolisticCritic(example.shape[1] + classes, example.dim() - 2) if holistic_weight else None

    def feature_losses(self, batch, student_features, teacher_features) -> dict[str, Tensor]:
        raise NotImplementedError

    def distillation_losses(self, batch, student_logits, teacher_logits) -> dict[str, Tensor]:
        image = batch["image"]
        losses = {}
        if self.pixel_weight:
            losses["pixel"] = self.pixel_weight * kd_loss(student_logits, teacher_logits, self.temperature)
        if self.weight:
            terms = self.feature_losses(batch, self.student_tap.features, self.teacher_tap.features)
            losses.update({name: self.weight * value for name, value in terms.items()})
        if self.critic is not None:
            real = torch.cat([image, torch.softmax(teacher_logits, 1)], 1)
            fake = torch.cat([image, torch.softmax(student_logits, 1)], 1)
            frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
            losses["holistic"] = -self.holistic_weight * functional_call(self.critic, frozen, (fake,)).mean()
            losses["critic"] = (
                self.critic(fake.detach()).mean()
                - self.critic(real).mean()
                + self.gradient_penalty_weight * gradient_penalty(self.critic, real, fake)
            )
        return losses


@METHODS.register("skd")
class SKDDistiller(StructuredDistiller):
    """Structured KD (Liu et al. 2019): pixel-wise 10 + pair-wise 1 + holistic 0.1.

    The pair-wise term compares affinity matrices of the last decoder features, max-pooled to
    ``grid`` nodes per axis.
    """

    points = ("decoder",)

    def __init__(self, student, teacher, task, example, pixel_weight=10.0, pair_weight=1.0, holistic_weight=0.1, grid: int = 16, **kwargs):
        super().__init__(student, teacher, task, example, pixel_weight, pair_weight, holistic_weight, **kwargs)
        self.grid = grid

    def feature_losses(self, batch, student_features, teacher_features):
        return {"pair": pairwise_loss(student_features["decoder"], teacher_features["decoder"], self.grid)}


@METHODS.register("ifvd")
class IFVDDistiller(StructuredDistiller):
    """Intra-class feature variation distillation (Wang et al. 2020): pixel-wise 10 + IFV 50 + holistic 0.1."""

    points = ("decoder",)

    def __init__(self, student, teacher, task, example, pixel_weight=10.0, ifv_weight=50.0, holistic_weight=0.1, **kwargs):
        super().__init__(student, teacher, task, example, pixel_weight, ifv_weight, holistic_weight, **kwargs)
        with torch.no_grad():
            self.num_classes = teacher(example).shape[1]

    def feature_losses(self, batch, student_features, teacher_features):
        return {"ifv": ifv_loss(student_features["decoder"], teacher_features["decoder"], batch["label"], self.num_classes)}


@METHODS.register("coco")
class CoCoDistiller(StructuredDistiller):
    """CoCo-style cross-layer correlation distillation (Zou & Sun 2021) with adversarial distillation.

    Correlation of the spatial affinities of two encoder stages, MSE weight 1, plus the
    holistic critic (0.1); the paper's paraphraser module is not included.
    """

    points = ("stage1", "stage2")

    def __init__(self, student, teacher, task, example, pixel_weight=0.0, coco_weight=1.0, holistic_weight=0.1, **kwargs):
        super().__init__(student, teacher, task, example, pixel_weight, coco_weight, holistic_weight, **kwargs)

    def feature_losses(self, batch, student_features, teacher_features):
        pair = lambda f: (f[self.points[0]], f[self.points[1]])  # noqa: E731
        return {"coco": coco_loss(pair(student_features), pair(teacher_features))}


@METHODS.register("cwd")
class CWDDistiller(LogitDistiller):
    """Channel-wise distillation (Shu et al. 2021) on the logits: τ = 4, weight 3."""

    logit_loss = staticmethod(cwd_loss)

    def __init__(self, student, teacher, task, weight: float = 3.0, temperature: float = 4.0):
        super().__init__(student, teacher, task, weight, temperature)
