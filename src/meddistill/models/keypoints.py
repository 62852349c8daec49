"""Learned keypoint networks: SuperPoint, SuperRetina (and its large-kernel variant), the
Swin-UNETR reverse-distillation student and a light CPU student.

Every network maps a preprocessed grey fundus image ``(B, 1, H, W)`` (values in [0, 1], H and W
multiples of 8; 32 for the Swin student) to ``KeypointOutput``: a keypoint probability heatmap
``(B, 1, H, W)`` and a unit-length descriptor map ``(B, D, H/8, W/8)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from torch import Tensor, nn


class KeypointOutput(NamedTuple):
    heatmap: Tensor  # (B, 1, H, W) in [0, 1]
    descriptors: Tensor  # (B, D, H/8, W/8), unit length along D
    cell_logits: Tensor | None = None  # SuperPoint only: (B, 65, H/8, W/8) detector logits


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.ReLU(inplace=True))


class _LargeKernelConv(nn.Module):
    """Parallel 1×1, 3×3 and 5×5 convolutions (+ identity when shapes allow), summed, PReLU:
    the encoder unit of LK-SuperRetina, which widens the receptive field of every layer."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(cin, cout, k, padding=k // 2) for k in kernels)
        self.identity = cin == cout
        self.act = nn.PReLU(cout)

    def forward(self, x: Tensor) -> Tensor:
        out = sum(branch(x) for branch in self.branches)
        return self.act(out + x if self.identity else out)


class VGGEncoder(nn.Module):
    """SuperPoint's VGG encoder: four conv pairs, three 2×2 max-pools → ``(B, C4, H/8, W/8)``.

    ``forward`` returns the output of every pair (full, 1/2, 1/4 and 1/8 resolution), the
    skips SuperRetina's detector decoder uses. ``large_kernel`` swaps each 3×3 conv for a
    1×1 + 3×3 + 5×5 unit.
    """

    def __init__(self, channels: tuple[int, int, int, int] = (64, 64, 128, 128), large_kernel: bool = False) -> None:
        super().__init__()
        unit = _LargeKernelConv if large_kernel else _conv
        stages, cin = [], 1
        for cout in channels:
            stages.append(nn.Sequential(unit(cin, cout), unit(cout, cout)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.channels = channels

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        return skips


class SuperRetinaDescriptorHead(nn.Module):
    """``(B, C, H/8, W/8)`` → unit descriptors ``(B, D, H/8, W/8)``: 3×3 conv, a 4×4 stride-2 conv
    and a 1×1 conv at 1/16 for context, batch norm, L2-normalised, then a transposed conv back
    to 1/8.

    The batch norm is ours: without it the triplet loss drove every descriptor to one vector
    (measured on DRIVE crops: mean pairwise cosine 0.65 → 0.997 in 25 steps, loss stuck at the
    margin); centring each channel over positions rules that collapse out.
    """

    def __init__(self, cin: int, hidden: int = 256, dim: int = 256) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(cin, hidden),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 1),
            nn.BatchNorm2d(dim),
        )
        self.up = nn.ConvTranspose2d(dim, dim, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        coarse = F.normalize(self.body(x), dim=1)
        return F.normalize(self.up(coarse), dim=1)


class _UpBlock(nn.Module):
    """Bilinear ×2, concatenate the skip, two 3×3 convs (a U-Net decoder step)."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv(cin + skip, cout), _conv(cout, cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class SuperRetinaNet(nn.Module):
    """SuperRetina (Liu et al. 2022): VGG encoder, full-resolution detector through a U-Net
    decoder (sigmoid heatmap), descriptors at 1/8.

    Args:
        channels: encoder widths per resolution (64, 64, 128, 128).
        descriptor_dim: D (256). ``descriptor_hidden``: width of the descriptor head (256).
        large_kernel: LK-SuperRetina's 1×1/3×3/5×5 encoder units.
    """

    def __init__(
        self,
        channels: tuple[int, int, int, int] = (64, 64, 128, 128),
        descriptor_dim: int = 256,
        descriptor_hidden: int = 256,
        large_kernel: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.encoder = VGGEncoder(channels, large_kernel)
        self.descriptor = SuperRetinaDescriptorHead(channels[3], descriptor_hidden, descriptor_dim)
        self.up = nn.ModuleList([
            _UpBlock(channels[3], channels[2], channels[2]),
            _UpBlock(channels[2], channels[1], channels[1]),
            _UpBlock(channels[1], channels[0], channels[0]),
        ])
        self.detector = nn.Conv2d(channels[0], 1, 1)

    def forward(self, image: Tensor) -> KeypointOutput:
        skips = self.encoder(image)
        x = skips[3]
        for block, skip in zip(self.up, reversed(skips[:3])):
            x = block(x, skip)
        return KeypointOutput(torch.sigmoid(self.detector(x)), self.descriptor(skips[3]))


class SuperPointNet(nn.Module):
    """SuperPoint (DeTone et al. 2018): VGG encoder; detector head with 65 channels per 8×8 cell
    (64 positions + a 'no keypoint' dustbin); descriptor head at 1/8.

    ``forward`` returns the heatmap (the softmax over the 65 channels without the dustbin,
    unfolded to full resolution), the descriptors and the raw cell logits for SuperPoint's
    cross-entropy detector loss.
    """

    def __init__(self, channels: tuple[int, int, int, int] = (64, 64, 128, 128), descriptor_dim: int = 256) -> None:
        super().__init__()
        self.encoder = VGGEncoder(tuple(channels))
        width = channels[3]
        self.detector_head = nn.Sequential(_conv(width, 256), nn.Conv2d(256, 65, 1))
        # batch norm before the L2 normalisation, as in our SuperRetina head: it prevents descriptor collapse
        self.descriptor_head = nn.Sequential(_conv(width, 256), nn.Conv2d(256, descriptor_dim, 1), nn.BatchNorm2d(descriptor_dim))

    def features(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Cell logits ``(B, 65, H/8, W/8)`` and unit descriptors ``(B, D, H/8, W/8)``."""
        bottleneck = self.encoder(image)[3]
        return self.detector_head(bottleneck), F.normalize(self.descriptor_head(bottleneck), dim=1)

    def forward(self, image: Tensor) -> KeypointOutput:
        logits, descriptors = self.features(image)
        heatmap = F.pixel_shuffle(torch.softmax(logits, dim=1)[:, :64], 8)
        return KeypointOutput(heatmap, descriptors, logits)


class SwinRetinaNet(nn.Module):
    """The reverse-distillation student: MONAI's 2D SwinUNETR (feature size 24, depths 2-2-2-2,
    heads 3-6-12-24, dropout 0.5) for the heatmap, and SuperRetina's descriptor head on the
    decoder's 1/8-resolution features, tapped by a forward hook so SwinUNETR stays unmodified.
    H and W must be multiples of 32.
    """

    def __init__(self, feature_size: int = 24, drop_rate: float = 0.5, descriptor_dim: int = 256) -> None:
        super().__init__()
        self.backbone = SwinUNETR(
            in_channels=1, out_channels=1, feature_size=feature_size, spatial_dims=2,
            depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), drop_rate=drop_rate,
        )
        self.descriptor = SuperRetinaDescriptorHead(4 * feature_size, 256, descriptor_dim)
        self._eighth: Tensor | None = None
        # decoder4 fuses the 1/16 decoder path with the 1/8 encoder skip: (B, 4·feature, H/8, W/8)
        self.backbone.decoder4.register_forward_hook(self._keep_eighth)

    def _keep_eighth(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self._eighth = output

    def forward(self, image: Tensor) -> KeypointOutput:
        heatmap = torch.sigmoid(self.backbone(image))
        eighth, self._eighth = self._eighth, None
        return KeypointOutput(heatmap, self.descriptor(eighth))


def large_kernel_superretina(**kwargs) -> SuperRetinaNet:
    """LK-SuperRetina: SuperRetina with 1×1 + 3×3 + 5×5 encoder units."""
    return SuperRetinaNet(large_kernel=True, **kwargs)


class RetinaStudentNet(nn.Module):
    """The CPU student: a narrow VGG encoder, SuperRetina's descriptor head (D = 256, so it is
    distilled from the teacher's descriptors directly) and a detector at 1/8 resolution: 64
    sigmoid outputs per 8×8 cell, unfolded to a full-resolution heatmap (SuperPoint's layout,
    SuperRetina's per-pixel probabilities, so the same Dice losses and KD terms apply).

    Dropping the full-resolution U-Net decoder is what makes it fast: a SuperRetina at a
    quarter width with the decoder measured 20.5 GFLOPs at 768×768, most of it in the decoder.
    """

    def __init__(self, channels: tuple[int, int, int, int] = (8, 16, 32, 32), descriptor_dim: int = 256,
                 descriptor_hidden: int = 64, detector_hidden: int = 64) -> None:
        super().__init__()
        channels = tuple(channels)
        self.encoder = VGGEncoder(channels)
        self.descriptor = SuperRetinaDescriptorHead(channels[3], descriptor_hidden, descriptor_dim)
        self.detector = nn.Sequential(_conv(channels[3], detector_hidden), nn.Conv2d(detector_hidden, 64, 1))

    def forward(self, image: Tensor) -> KeypointOutput:
        bottleneck = self.encoder(image)[3]
        heatmap = F.pixel_shuffle(torch.sigmoid(self.detector(bottleneck)), 8)
        return KeypointOutput(heatmap, self.descriptor(bottleneck))


# Names of the keypoint networks in the model registry, which also holds the segmenters.
KEYPOINT_NETWORKS = {
    "superpoint": SuperPointNet,
    "superretina": SuperRetinaNet,
    "superretina-lk": large_kernel_superretina,
    "superretina-swin": SwinRetinaNet,
    "retina-student": RetinaStudentNet,
}
