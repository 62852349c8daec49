"""U-Net with a MobileNetV2 encoder (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

The decoder follows the common MobileNetV2-UNet layout (transposed-conv upsampling,
skip concatenation, one inverted residual per level), which gives 4.69 M parameters, close to the 4.64 M
reported for this student in the GKD paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import SegmentationNet, conv_bn

# (expansion t, channels c, repeats n, first stride s) per stage, MobileNetV2 Table 2.
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` without losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _init_weights(module: nn.Module) -> None:
    """He-normal (fan-out) Conv2d weights and zero biases: torchvision's MobileNetV2 initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn(in_channels, hidden, 1, act="relu6"))
        layers += [
            conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act="relu6"),
            conv_bn(hidden, out_channels, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class UpStage(nn.Module):
    """4x4 stride-2 transposed conv, concatenation with the skip, inverted residual (t=6)."""

    def __init__(self, in_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, 4, stride=2, padding=1)
        self.block = InvertedResidual(2 * skip_channels, skip_channels, 1, 6)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """x: (B, C_in, h, w), skip: (B, C_skip, 2h, 2w) -> (B, C_skip, 2h, 2w)."""
        return self.block(torch.cat([self.up(x), skip], dim=1))


class MobileNetV2UNet(SegmentationNet):
    """MobileNetV2 encoder + U-Net decoder, total stride 32, about 4.7 M parameters at ``width_mult=1``.

    ``encode`` returns the stride 2, 4, 8, 16 and 32 features ``[enc2 (16 c), enc4 (24 c),
    enc8 (32 c), enc16 (96 c), enc32 (1280 c, bottleneck)]`` (channels at ``width_mult=1``).
    The "decoder" tap is the full-resolution feature before the 1x1 classifier.
    """

    stride = 32
    feature_points = {"stage1": "enc4", "stage2": "enc8", "bottleneck": "enc32", "decoder": "dec1"}

    def __init__(self, in_channels: int = 3, out_channels: int = 2, width_mult: float = 1.0) -> None:
        super().__init__()
        channels = make_divisible(_STEM_CHANNELS * width_mult)
        stages: list[list[nn.Module]] = [[conv_bn(in_channels, channels, 3, stride=2, act="relu6")]]
        skips: list[int] = []  # output channels of the stride 2, 4, 8 and 16 stages
        for expansion, c, repeats, stride in _SETTINGS:
            if stride == 2:
                skips.append(channels)
                stages.append([])
            out = make_divisible(c * width_mult)
            for i in range(repeats):
                stages[-1].append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion))
                channels = out
        # As in MobileNetV2, the last 1x1 conv is never made narrower than 1280.
        last = make_divisible(_LAST_CHANNELS * max(1.0, width_mult))
        stages[-1].append(conv_bn(channels, last, 1, act="relu6"))
        self.enc2, self.enc4, self.enc8, self.enc16, self.enc32 = (nn.Sequential(*s) for s in stages)

        self.dec16 = UpStage(last, skips[3])
        self.dec8 = UpStage(skips[3], skips[2])
        self.dec4 = UpStage(skips[2], skips[1])
        self.dec2 = UpStage(skips[1], skips[0])
        self.dec1 = nn.Sequential(
            nn.ConvTranspose2d(skips[0], skips[0], 4, stride=2, padding=1),
            conv_bn(skips[0], skips[0], 3, act="relu6"),
        )
        self.head = nn.Conv2d(skips[0], out_channels, 1)
        _init_weights(self)

    def encode(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in (self.enc2, self.enc4, self.enc8, self.enc16, self.enc32):
            x = stage(x)
            features.append(x)
        return features

    def decode(self, features: list[Tensor]) -> Tensor:
        s2, s4, s8, s16, x = features
        x = self.dec2(self.dec4(self.dec8(self.dec16(x, s16), s8), s4), s2)
        return self.head(self.dec1(x))
