"""Distillers: a student, a frozen teacher and the losses that tie them together.

Every distiller is an ``nn.Module`` whose ``forward(batch)`` returns named, already
weighted losses; the engine sums them, back-propagates and logs each term. Features
are tapped with forward hooks, so teacher and student networks stay unmodified.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import MeddistillError
from ..registry import Registry, check_arguments
from ..tasks import Task
from .hooks import FeatureTap, tap_points
from .losses import at_loss, fsp_loss, hint_loss, kd_loss

METHODS: Registry[type["Distiller"]] = Registry("distillation method")


@dataclass
class PreStage:
    """Training a method needs before distillation proper (e.g. GKD's autoencoder).

    The engine trains ``module`` alone for ``epochs`` with the distiller's ``stage`` set to
    ``name``, then saves it as ``stage-<name>.safetensors`` in the run folder.
    """

    name: str
    module: nn.Module
    epochs: int


class Distiller(nn.Module):
    """Student trained on the task alone (method ``none``): the scratch baseline."""

    needs_teacher = False
    needs_trained_student = False  # True: the config must give student.weights to start from
    # Method args that act in the distillation stage alone (loss weights, input views): runs that
    # differ only in these train identical pre-stages, so a grid row may reuse another's (``stages_from``).
    distill_stage_args: tuple[str, ...] = ()

    def __init__(self, student: nn.Module, teacher: nn.Module | None, task: Task) -> None:
        super().__init__()
        # Looked up once: the name keys this method's loss term on every training step.
        self.method_name = next((n for n in METHODS if METHODS.get(n) is type(self)), type(self).__name__)
        if self.needs_teacher and teacher is None:
            raise MeddistillError(f"method '{self.method_name}' needs a teacher in the config")
        self.student = student
        self.task = task
        # Stored outside the module tree: the teacher is frozen, never saved with the
        # student, and DDP must not try to synchronise it.
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.stage = "distill"

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def to(self, *args, **kwargs):
        if self._teacher:
            self._teacher[0].to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def pre_stages(self) -> list[PreStage]:
        """Stages to train, in order, before the distillation stage; none by default."""
        return []

    def set_stage(self, stage: str) -> None:
        """Switch to a pre-stage's name or to ``"distill"``; the engine calls this."""
        self.stage = stage

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the distillation stage optimises: the student and any adapters."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.task.losses(self.student(self.task.inputs(batch)), batch)


@METHODS.register("none")
class ScratchDistiller(Distiller):
    """No teacher: supervised training only."""


class TeacherStudentDistiller(Distiller):
    """Runs teacher (no grad) and student on the same batch and adds distillation terms."""

    needs_teacher = True
    points: tuple[str, ...] = ()

    def __init__(self, student, teacher, task, weight: float = 1.0, points: list[str] | None = None):
        super().__init__(student, teacher, task)
        self.weight = weight
        if points is not None:
            self.points = tuple(points)
        self.student_tap = FeatureTap(student, tap_points(student, list(self.points)))
        self.teacher_tap = FeatureTap(self.teacher, tap_points(self.teacher, list(self.points)))

    def feature_channels(self, example: Tensor) -> tuple[dict[str, int], dict[str, int]]:
        """Channel counts at each tap point, found by one forward pass on ``example``."""
        with torch.no_grad():
            was_training = self.student.training
            self.student.eval()
            self.student(example)
            self.student.train(was_training)
            self.teacher(example)
        channels = lambda tap: {k: v.shape[1] for k, v in tap.features.items()}  # noqa: E731
        return channels(self.student_tap), channels(self.teacher_tap)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        image = self.task.inputs(batch)
        student_logits = self.student(image)
        with torch.no_grad():
            teacher_logits = self.teacher(image)
        losses = self.task.losses(student_logits, batch)
        losses.update(self.distillation_losses(batch, student_logits, teacher_logits))
        return losses

    def distillation_losses(self, batch: dict[str, Tensor], student_logits: Tensor, teacher_logits: Tensor) -> dict[str, Tensor]:
        """Named, weighted distillation terms; by default the one term of :meth:`distillation_loss`."""
        term = self.distillation_loss(
            student_logits, teacher_logits, self.student_tap.features, self.teacher_tap.features
        )
        return {self.method_name: self.weight * term}

    def distillation_loss(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_features: dict[str, Tensor],
        teacher_features: dict[str, Tensor],
    ) -> Tensor:
        raise NotImplementedError


def _adapter(in_channels: int, out_channels: int, spatial_dims: int, with_bn_relu: bool) -> nn.Module:
    conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(in_channels, out_channels, 1, bias=not with_bn_relu)
    if not with_bn_relu:
        return conv
    norm = (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(out_channels)
    return nn.Sequential(conv, norm, nn.ReLU(inplace=True))


class LogitDistiller(TeacherStudentDistiller):
    """Distils the logits with ``logit_loss(student_logits, teacher_logits, temperature)``."""

    logit_loss = staticmethod(kd_loss)

    def __init__(self, student, teacher, task, weight: float = 1.0, temperature: float = 4.0):
        super().__init__(student, teacher, task, weight)
        self.temperature = temperature

    def distillation_loss(self, student_logits, teacher_logits, *_features):
        return self.logit_loss(student_logits, teacher_logits, self.temperature)


@METHODS.register("kd")
class KDDistiller(LogitDistiller):
    """Pixel-wise KD with temperature (Hinton et al. 2015): T = 4, weight 1."""


@METHODS.register("at")
class ATDistiller(TeacherStudentDistiller):
    """Attention transfer (Zagoruyko & Komodakis 2017), summed over tap points; β = 1000."""

    points = ("stage1", "stage2", "bottleneck")

    def __init__(self, student, teacher, task, weight: float = 1000.0, p: float = 2.0, points=None):
        super().__init__(student, teacher, task, weight, points)
        self.p = p

    def distillation_loss(self, _s_logits, _t_logits, student_features, teacher_features):
        return sum(at_loss(student_features[k], teacher_features[k], self.p) for k in self.points)


@METHODS.register("fsp")
class FSPDistiller(TeacherStudentDistiller):
    """Flow of solution procedure (Yim et al. 2017) over consecutive tap-point pairs.

    Student features pass through 1×1 conv adapters to the teacher's channel counts,
    since FSP matrices are only comparable at equal sizes.
    """

    points = ("stage1", "stage2", "bottleneck")

    def __init__(self, student, teacher, task, weight: float = 1.0, points=None, example: Tensor | None = None):
        super().__init__(student, teacher, task, weight, points)
        if example is None:
            raise ValueError("FSPDistiller needs an example input to size its adapters")
        s_channels, t_channels = self.feature_channels(example)
        dims = example.dim() - 2
        self.adapters = nn.ModuleDict(
            {k: _adapter(s_channels[k], t_channels[k], dims, with_bn_relu=False) for k in self.points}
        )

    def distillation_loss(self, _s_logits, _t_logits, student_features, teacher_features):
        adapted = {k: self.adapters[k](student_features[k]) for k in self.points}
        pairs = zip(self.points[:-1], self.points[1:])
        return sum(
            fsp_loss((adapted[a], adapted[b]), (teacher_features[a], teacher_features[b])) for a, b in pairs
        )


@METHODS.register("fitnets")
class FitNetsDistiller(TeacherStudentDistiller):
    """FitNets hint learning (Romero et al. 2015): conv+BN+ReLU regressor, MSE to the teacher hint."""

    points = ("stage2",)

    def __init__(self, student, teacher, task, weight: float = 1.0, point: str = "stage2", example: Tensor | None = None):
        super().__init__(student, teacher, task, weight, [point])
        if example is None:
            raise ValueError("FitNetsDistiller needs an example input to size its regressor")
        s_channels, t_channels = self.feature_channels(example)
        self.regressor = _adapter(s_channels[point], t_channels[point], example.dim() - 2, with_bn_relu=True)

    def distillation_loss(self, _s_logits, _t_logits, student_features, teacher_features):
        point = self.points[0]
        return hint_loss(self.regressor(student_features[point]), teacher_features[point])


def build_distiller(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None,
    task: Task,
    example: Tensor,
    args: dict | None = None,
) -> Distiller:
    """Build a registered distiller; ``example`` ``(1, C, *spatial)`` sizes any adapters."""
    cls = METHODS.get(name)
    args = dict(args or {})
    if "example" in inspect.signature(cls).parameters:
        args["example"] = example
    check_arguments(f"method '{name}'", cls, args, passed=3)  # student, teacher, task
    try:
        return cls(student, teacher, task, **args)
    except TypeError as err:
        raise MeddistillError(f"method '{name}': {err}".replace("__init__() ", "")) from None
