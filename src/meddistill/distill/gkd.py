"""Generalizable knowledge distillation (GKD, Qi et al.): MSAN alignment, DCGD graphs, DICD.

The three phases of the paper map onto one run of the engine:

1. ``autoencoder`` pre-stage: a semantic autoencoder learns to reconstruct label maps (L1);
   the teacher and the student were trained beforehand with the task loss alone
   (``teacher.weights`` and ``student.weights`` in the config point at them).
2. ``alignment`` pre-stage: teacher and student alignment networks (TAN, SAN) map each frozen
   network's bottleneck (or the student's ``student_level``) to a shared latent of size C and
   back; loss = feature reconstruction L1 + λ·L1 to the autoencoder's latent of the label map
   (Eqs. 2-4).
3. distillation: the student learns with the task loss + α·intra-coupling + β·inter-coupling
   graph distillation over perturbed views (Eqs. 5-8) + γ·domain-invariant cross distillation
   by header exchange (Eq. 9). Autoencoder, TAN and SAN are frozen.

Design choices the paper leaves open (stated here so they can be changed): encoders end in
an RMS normalisation, so latents and graph terms stay O(1) with the paper's weights of 100; headers pool
to a 4×4 (4×4×4) grid before the linear map to the latent, so they work at any input size;
the cross-distillation L1 compares softmax probabilities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from ..errors import MeddistillError
from ..models.blocks import pad_to_multiple
from .losses import inter_graph_loss, intra_graph_loss
from .methods import METHODS, Distiller, PreStage
from .views import make_views

_GRID = 4


def _conv(dims: int, cin: int, cout: int, stride: int = 1, act: bool = True) -> nn.Module:
    norm = ("group", {"num_groups": min(8, cout)}) if act else None
    return Convolution(dims, cin, cout, strides=stride, kernel_size=3, act="RELU" if act else None, norm=norm)


class _LatentEncoder(nn.Module):
    """``(B, C_in, *S)`` → ``(B, latent)`` of unit root-mean-square: convs, pooling to a fixed grid, linear."""

    def __init__(self, dims: int, layers: list[nn.Module], channels: int, latent_dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*layers)
        self.pool = (nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d)(_GRID)
        self.linear = nn.Linear(channels * _GRID**dims, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        latent = self.linear(self.pool(self.convs(x)).flatten(1))
        # RMS normalisation bounds the latent's scale without saturating (a tanh saturated,
        # its gradient vanished and every latent collapsed to one constant code).
        return latent * torch.rsqrt(latent.pow(2).mean(dim=1, keepdim=True) + 1e-6)


class _LatentDecoder(nn.Module):
    """``(B, latent)`` → ``(B, C_out, *size)``: linear to a grid, upsample, convs."""

    def __init__(self, dims: int, latent_dim: int, channels: int, layers: list[nn.Module]) -> None:
        super().__init__()
        self.dims, self.channels = dims, channels
        self.linear = nn.Linear(latent_dim, channels * _GRID**dims)
        self.convs = nn.Sequential(*layers)

    def forward(self, latent: Tensor, size: tuple[int, ...], steps: int = 0) -> Tensor:
        """``steps`` ×2 upsamplings happen inside ``convs``; the grid is first resized to ``size / 2**steps``."""
        grid = F.relu(self.linear(latent)).view(-1, self.channels, *([_GRID] * self.dims))
        start = tuple(max(1, s // 2**steps) for s in size)
        mode = "bilinear" if self.dims == 2 else "trilinear"
        x = self.convs(F.interpolate(grid, size=start, mode=mode, align_corners=False))
        return x if x.shape[2:] == tuple(size) else F.interpolate(x, size=size, mode=mode, align_corners=False)


class SemanticAutoencoder(nn.Module):
    """Label-map autoencoder: one-hot ``(B, K, *S)`` → latent ``(B, C)`` → probabilities ``(B, K, *S)``.

    Four stride-2 convolutions (group norm, ReLU) halve the map to 1/16, a linear layer gives
    the latent; the decoder mirrors it with four ×2 upsamplings. Without normalisation the
    encoder's output did not depend on its input and every latent was the same.
    """

    def __init__(self, num_classes: int = 2, latent_dim: int = 512, spatial_dims: int = 2, width: int = 16) -> None:
        super().__init__()
        widths = [num_classes] + [width * 2**i for i in range(4)]
        down = [_conv(spatial_dims, a, b, stride=2) for a, b in zip(widths[:-1], widths[1:])]
        self.encoder = _LatentEncoder(spatial_dims, down, widths[-1], latent_dim)
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        up: list[nn.Module] = []
        for a, b in zip(widths[:0:-1], widths[-2:0:-1] + [width]):
            up += [nn.Upsample(scale_factor=2, mode=mode, align_corners=False), _conv(spatial_dims, a, b)]
        up.append(_conv(spatial_dims, width, num_classes, act=False))
        self.decoder = _LatentDecoder(spatial_dims, latent_dim, widths[-1], up)

    def encode(self, labels: Tensor) -> Tensor:
        return self.encoder(labels)

    def decode(self, latent: Tensor, size: tuple[int, ...]) -> Tensor:
        """Class probabilities ``(B, K, *size)``."""
        return torch.softmax(self.decoder(latent, size, steps=4), dim=1)

    def forward(self, labels: Tensor) -> Tensor:
        return self.decode(self.encode(labels), tuple(labels.shape[2:]))


class AlignmentNetwork(nn.Module):
    """One network's alignment net (TAN or SAN): symmetric encoding and decoding headers.

    ``encode``: bottleneck ``(B, C_f, *s)`` → latent ``(B, C)``; ``decode``: latent → ``(B, C_f, *size)``.
    """

    def __init__(self, feature_channels: int, latent_dim: int = 512, spatial_dims: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = _LatentEncoder(spatial_dims, [_conv(spatial_dims, feature_channels, hidden)], hidden, latent_dim)
        layers = [_conv(spatial_dims, hidden, hidden), _conv(spatial_dims, hidden, feature_channels, act=False)]
        self.decoder = _LatentDecoder(spatial_dims, latent_dim, hidden, layers)

    def encode(self, feature: Tensor) -> Tensor:
        return self.encoder(feature)

    def decode(self, latent: Tensor, size: tuple[int, ...]) -> Tensor:
        return self.decoder(latent, size)


def alignment_losses(header: AlignmentNetwork, feature: Tensor, label_latent: Tensor) -> tuple[Tensor, Tensor]:
    """Eqs. 2-3 for one alignment network: feature reconstruction L1 and L1 to the label latent (unweighted)."""
    latent = header.encode(feature)
    reconstruction = (header.decode(latent, tuple(feature.shape[2:])) - feature).abs().mean()
    return reconstruction, (latent - label_latent).abs().mean()


def one_hot_labels(labels: Tensor, num_classes: int) -> Tensor:
    """``(B, *S)`` integer labels → ``(B, K, *S)`` float one-hot."""
    return F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()


@METHODS.register("gkd")
class GKDDistiller(Distiller):
    """GKD: the student learns from graphs of aligned semantic latents and header exchange.

    Args (config ``method.args``; defaults are the paper's):
        latent_dim: C, the shared latent size (512).
        intra_weight, inter_weight, cross_weight: α, β, γ of Eq. 10 (100, 100, 0.5); a zero
            weight drops the term (the ablation rows).
        regularization_weight: λ of Eq. 4 (0.5).
        views: perturbations for the graphs (cutout, sobel, noise, blur).
        view_args: keyword arguments per view (defaults: cutout ``fraction`` 0.25 of each side,
            noise ``std`` 0.2, blur ``sigma`` 1.5 px; the paper gives no values).
        autoencoder_epochs, alignment_epochs: length of the two pre-stages (30, 10; the paper
            gives none).
        student_level: which of the student's encoder features SAN aligns and the header exchange
            replaces, as an index into ``student.encode(x)`` (-1, the bottleneck, as in the paper).
            A MobileNetV2-U-Net's bottleneck barely reaches the label latent (held-out cosine
            0.15 vs the teacher's 0.73; RESULTS §4); its 1/8 level (-3) reaches 0.63.
        autoencoder_dice_weight: weight of a soft Dice term added to the autoencoder's L1
            reconstruction (1). With L1 alone (0, the paper's loss) the autoencoder collapses
            to an all-background map on sparse vessel labels: L1 is minimised by the median.
            Measured on DRIVE patches, 16 epochs: L1 alone gives reconstruction F1 0.00 and a
            constant latent; L1 + Dice gives F1 0.28 and latents that vary across patches.
    """

    needs_teacher = True
    needs_trained_student = True  # SAN is fitted to the task-trained student's features
    distill_stage_args = ("intra_weight", "inter_weight", "cross_weight", "views", "view_args")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        task,
        example: Tensor,
        latent_dim: int = 512,
        intra_weight: float = 100.0,
        inter_weight: float = 100.0,
        cross_weight: float = 0.5,
        regularization_weight: float = 0.5,
        views: list[str] | None = None,
        view_args: dict[str, dict] | None = None,
        autoencoder_epochs: int = 30,
        alignment_epochs: int = 10,
        autoencoder_dice_weight: float = 1.0,
        student_level: int = -1,
    ) -> None:
        super().__init__(student, teacher, task)
        for name in ("encode", "decode"):
            for role, net in (("student", student), ("teacher", teacher)):
                if not hasattr(net, name):
                    raise MeddistillError(f"GKD needs a {role} with encode/decode (an encoder-decoder network)")
        self.views = list(views) if views is not None else ["cutout", "sobel", "noise", "blur"]
        self.view_args = dict(view_args or {})
        make_views(example, self.views, self.view_args)  # a bad view name or argument fails now
        if inter_weight and len(self.views) < 2:
            raise MeddistillError("GKD's inter-coupling graph needs at least two views; add views or set inter_weight: 0")
        self.intra_weight, self.inter_weight, self.cross_weight = intra_weight, inter_weight, cross_weight
        self.regularization_weight = regularization_weight
        self.epochs = {"autoencoder": autoencoder_epochs, "alignment": alignment_epochs}
        self.autoencoder_dice_weight = autoencoder_dice_weight
        self._dice = DiceLoss(include_background=False)
        self.stride = math.lcm(student.stride, teacher.stride)
        dims = example.dim() - 2
        with torch.no_grad():
            padded, _ = pad_to_multiple(example, self.stride)
            student_features = self._features(student, padded)
            levels = len(student_features)
            if not -levels <= student_level < levels:
                raise MeddistillError(f"student_level {student_level} is out of range: the student's encoder has {levels} levels")
            self.student_level = student_level
            student_channels = student_features[student_level].shape[1]
            teacher_channels = self._features(teacher, padded)[-1].shape[1]
            self.num_classes = teacher(example).shape[1]
        self.autoencoder = SemanticAutoencoder(self.num_classes, latent_dim, dims)
        self.teacher_alignment = AlignmentNetwork(teacher_channels, latent_dim, dims)
        self.student_alignment = AlignmentNetwork(student_channels, latent_dim, dims)

    @staticmethod
    def _features(net: nn.Module, padded: Tensor) -> list[Tensor]:
        """The frozen network's encoder features, computed in eval mode."""
        was_training = net.training
        net.eval()
        features = net.encode(padded)
        net.train(was_training)
        return features

    # ---- stages ----------------------------------------------------------------------
    def pre_stages(self) -> list[PreStage]:
        alignment = nn.ModuleDict({"teacher": self.teacher_alignment, "student": self.student_alignment})
        return [
            PreStage("autoencoder", self.autoencoder, self.epochs["autoencoder"]),
            PreStage("alignment", alignment, self.epochs["alignment"]),
        ]

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        trained = {"autoencoder": [self.autoencoder], "alignment": [self.teacher_alignment, self.student_alignment]}
        for module in (self.autoencoder, self.teacher_alignment, self.student_alignment):
            module.requires_grad_(module in trained.get(stage, []))
        self.student.requires_grad_(stage == "distill")

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters())

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.stage == "autoencoder":
            labels = one_hot_labels(batch["label"], self.num_classes)
            reconstruction = self.autoencoder(labels)
            losses = {"autoencoder_l1": (reconstruction - labels).abs().mean()}
            if self.autoencoder_dice_weight:
                losses["autoencoder_dice"] = self.autoencoder_dice_weight * self._dice(reconstruction, labels)
            return losses
        if self.stage == "alignment":
            return self._alignment_losses(batch)
        return self._distillation_losses(batch)

    def _alignment_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        padded, _ = pad_to_multiple(batch["image"], self.stride)
        labels, _ = pad_to_multiple(one_hot_labels(batch["label"], self.num_classes), self.stride)
        with torch.no_grad():
            label_latent = self.autoencoder.encode(labels)
            features = {
                "teacher": self._features(self.teacher, padded)[-1],
                "student": self._features(self.student, padded)[self.student_level],
            }
        losses = {}
        for role, header in (("teacher", self.teacher_alignment), ("student", self.student_alignment)):
            reconstruction, regularization = alignment_losses(header, features[role], label_latent)
            losses[f"{role}_reconstruction"] = reconstruction
            losses[f"{role}_regularization"] = self.regularization_weight * regularization
        return losses

    def _distillation_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        image = batch["image"]
        padded, crop = pad_to_multiple(image, self.stride)
        batch_size = image.shape[0]
        graphs = bool(self.intra_weight or self.inter_weight)
        inputs = make_views(padded, self.views, self.view_args).flatten(0, 1) if graphs else padded  # (B·V, C, *S) or (B, C, *S)
        views = inputs.shape[0] // batch_size

        student_features = self.student.encode(inputs)
        anchor = lambda feats: [f.unflatten(0, (batch_size, views))[:, 0] for f in feats]  # noqa: E731
        student_anchor = anchor(student_features)
        student_logits = self.student.decode(student_anchor)
        losses = {"task": self.task.loss(student_logits[(..., *crop)], batch)}
        with torch.no_grad():
            teacher_features = self.teacher.encode(inputs)
            teacher_anchor = anchor(teacher_features)
            teacher_prob = torch.softmax(self.teacher.decode(teacher_anchor), dim=1)
            teacher_latents = self.teacher_alignment.encode(teacher_features[-1]).unflatten(0, (batch_size, views))
        student_latents = self.student_alignment.encode(student_features[self.student_level]).unflatten(0, (batch_size, views))

        if self.intra_weight:
            losses["intra"] = self.intra_weight * intra_graph_loss(student_latents, teacher_latents)
        if self.inter_weight:
            losses["inter"] = self.inter_weight * inter_graph_loss(student_latents, teacher_latents)
        if self.cross_weight:
            # Header exchange: each network's latent is decoded into the other's aligned feature
            # and finished by the other's decoder; both must reproduce the teacher's prediction.
            to_teacher = self.teacher_alignment.decode(student_latents[:, 0], tuple(teacher_anchor[-1].shape[2:]))
            via_teacher = self.teacher.decode(teacher_anchor[:-1] + [to_teacher])
            level = self.student_level % len(student_anchor)
            to_student = self.student_alignment.decode(teacher_latents[:, 0], tuple(student_anchor[level].shape[2:]))
            via_student = self.student.decode(student_anchor[:level] + [to_student] + student_anchor[level + 1 :])
            cross = sum((torch.softmax(y, dim=1) - teacher_prob).abs().mean() for y in (via_teacher, via_student))
            losses["cross"] = self.cross_weight * cross
        return losses
