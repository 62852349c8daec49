"""Tasks: everything that differs between kinds of problem, behind one interface.

A task turns the data section of a config into a training dataset and a validation set,
says what the networks see (``inputs``), gives the supervised loss terms and validates a
model. The engine and the distillers talk to the task only, so one engine trains vessel
segmenters and retinal keypoint networks alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from monai.losses import DiceCELoss, SoftclDiceLoss
from torch import Tensor, nn
from torch.utils.data import Dataset

from .config import DataConfig, ExperimentConfig
from .errors import MeddistillError
from .registry import Registry, check_arguments

SEGMENTATION_LOSSES = ("ce", "dice_ce")

TASKS: Registry[type["Task"]] = Registry("task")


@dataclass
class TaskData:
    """What a task trains and validates on. ``dataset`` items are dicts of tensors and the
    dataset has ``set_epoch(epoch)``; ``meta`` goes into every checkpoint's metadata."""

    dataset: Dataset
    validation: list
    meta: dict[str, Any] = field(default_factory=dict)


class Task(nn.Module):
    """Base of every task (an ``nn.Module`` so loss modules move with the distiller)."""

    name = "task"

    def inputs(self, batch: dict[str, Tensor]) -> Tensor:
        """The tensor the networks are called on."""
        return batch["image"]

    def losses(self, output: Any, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named supervised loss terms of the networks' ``output`` on ``batch``."""
        raise NotImplementedError

    def loss(self, output: Any, batch: dict[str, Tensor]) -> Tensor:
        return sum(self.losses(output, batch).values())

    def build_data(self, data: DataConfig, seed: int) -> TaskData:
        raise NotImplementedError

    def validate(self, model: nn.Module, validation: list, device: torch.device) -> dict[str, float]:
        raise NotImplementedError


@TASKS.register("vessel-segmentation")
class SegmentationTask(Task):
    """Multi-class segmentation from logits ``(B, K, *spatial)`` and labels ``(B, *spatial)``;
    trained on random patches, validated on whole images. ``clahe`` equalises each photo's
    contrast before normalisation (:func:`~meddistill.data.equalize_contrast`); the checkpoint
    records it, so inference repeats it. ``cldice_weight`` > 0 adds that times the soft clDice
    loss of the foreground classes (Shit et al., CVPR 2021), which rewards keeping thin
    vessels connected, as a term of its own (``cldice``). ``fov_diameter`` (pixels), when set,
    resizes every training photo so that its field of view is that wide before patches are
    drawn (2× DRIVE's 540 px draws thin vessels 2 px wide); the checkpoint records it, so
    inference and validation resize each photo alike and score at its own size."""

    name = "vessel-segmentation"

    def __init__(
        self, loss: str = "dice_ce", clahe: bool = False, cldice_weight: float = 0.0, fov_diameter: float | None = None
    ) -> None:
        super().__init__()
        self.clahe = clahe
        if fov_diameter is not None and (not isinstance(fov_diameter, (int, float)) or fov_diameter < 16):
            raise MeddistillError(f"task.args.fov_diameter must be a width in pixels of at least 16, not {fov_diameter!r}")
        self.fov_diameter = fov_diameter
        if loss not in SEGMENTATION_LOSSES:
            raise MeddistillError(f"unknown loss '{loss}'; choose from {', '.join(SEGMENTATION_LOSSES)}")
        self.loss_name = loss
        self.criterion = (
            DiceCELoss(to_onehot_y=True, softmax=True) if loss == "dice_ce" else nn.CrossEntropyLoss()
        )
        if not isinstance(cldice_weight, (int, float)) or cldice_weight < 0:
            raise MeddistillError(f"task.args.cldice_weight must be a number at least 0, not {cldice_weight!r}")
        self.cldice_weight = cldice_weight
        self.cldice = SoftclDiceLoss(to_onehot_y=True, softmax=True, include_background=False)

    def losses(self, output: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        labels = batch["label"]
        losses = {"task": self.criterion(output, labels.unsqueeze(1) if self.loss_name == "dice_ce" else labels)}
        if self.cldice_weight:
            losses["cldice"] = self.cldice_weight * self.cldice(output, labels.unsqueeze(1))
        return losses

    def build_data(self, data: DataConfig, seed: int) -> TaskData:
        from .builders import build_samples
        from .data import PatchDataset, Preparation, rescale_sample, training_fov_diameter

        train, validation = build_samples(data, seed)
        if self.fov_diameter:
            train = [rescale_sample(sample, self.fov_diameter) for sample in train]
        dataset = PatchDataset(
            train,
            data.patch_size,
            data.patches_per_image,
            augment=data.augment,
            seed=seed,
            clahe=self.clahe,
            rotate_degrees=data.rotate_degrees,
            scale_range=data.scale_range,
        )
        # the checkpoint records how inference must prepare photos (read back by Preparation.from_meta)
        return TaskData(dataset, validation, asdict(Preparation(training_fov_diameter(train), self.clahe)))

    def validate(self, model: nn.Module, validation: list, device: torch.device) -> dict[str, float]:
        from .data import Preparation
        from .inference import evaluate_samples

        # validation photos come from the training set, so they are at the training scale already,
        # unless fov_diameter resized the training photos: then they are resized alike
        return evaluate_samples(model, validation, device, Preparation(self.fov_diameter, self.clahe))


def build_task(config: ExperimentConfig) -> Task:
    """The task a config names, with its arguments (segmentation takes ``train.loss``)."""
    from . import registration  # noqa: F401  (registers the keypoint task)

    cls = TASKS.get(config.task.name)
    args = dict(config.task.args)
    if cls is SegmentationTask:
        args.setdefault("loss", config.train.loss)
    check_arguments(f"task '{config.task.name}'", cls, args)
    try:
        return cls(**args)
    except TypeError as err:
        raise MeddistillError(f"task '{config.task.name}': {err}".replace("__init__() ", "")) from None
