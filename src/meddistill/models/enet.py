"""ENet (Paszke et al., 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation").

Max-unpooling indices are not carried through :meth:`ENet.encode`: each upsampling
bottleneck recomputes them by max-pooling the encoder feature that the matching
downsampling bottleneck pooled (stride-2 and stride-4 entries of the feature list).
Max-pooling is deterministic, so the indices are exactly the encoder's, every feature
list entry stays a plain float tensor, and :meth:`ENet.decode` needs nothing but the list.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from ..errors import MeddistillError
from .blocks import SegmentationNet, conv_bn

_INITIAL_CHANNELS = 16


def _act(name: str, channels: int) -> str | tuple:
    """MONAI activation spec: a per-channel PReLU, or ``name`` as is."""
    return ("prelu", {"num_parameters": channels}) if name == "prelu" else name


class InitialBlock(nn.Module):
    """3x3 stride-2 conv (16 - in_channels filters) concatenated with a 2x2 max-pool of the input."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, _INITIAL_CHANNELS - in_channels, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm = nn.BatchNorm2d(_INITIAL_CHANNELS)
        self.act = nn.PReLU(_INITIAL_CHANNELS)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 16, H/2, W/2)."""
        return self.act(self.norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 reduce -> main conv -> 1x1 expand -> spatial dropout, plus identity.

    The main conv is a 3x3 conv with ``dilation`` ("regular" when 1, "dilated" otherwise), or
    a 5x1 then a 1x5 conv when ``asymmetric``. ``act`` is "prelu" (encoder) or "relu" (decoder).
    """

    def __init__(
        self, channels: int, dilation: int = 1, asymmetric: bool = False, dropout: float = 0.1, act: str = "prelu"
    ) -> None:
        super().__init__()
        internal = channels // 4
        if asymmetric:
            main: nn.Module = nn.Sequential(
                nn.Conv2d(internal, internal, (5, 1), padding=(2, 0), bias=False),
                conv_bn(internal, internal, (1, 5), act=_act(act, internal)),
            )
        else:
            main = conv_bn(internal, internal, 3, dilation=dilation, act=_act(act, internal))
        self.branch = nn.Sequential(
            conv_bn(channels, internal, 1, act=_act(act, internal)),
            main,
            conv_bn(internal, channels, 1, act=None),
            nn.Dropout2d(dropout),
        )
        self.act = nn.PReLU(channels) if act == "prelu" else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.branch(x))


class DownsamplingBottleneck(nn.Module):
    """Halves H, W: 2x2 stride-2 conv branch plus a max-pooled, zero-channel-padded identity."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        internal = out_channels // 4
        self.extra_channels = out_channels - in_channels
        self.pool = nn.MaxPool2d(2)
        self.branch = nn.Sequential(
            conv_bn(in_channels, internal, 2, stride=2, padding=0, act=_act("prelu", internal)),
            conv_bn(internal, internal, 3, act=_act("prelu", internal)),
            conv_bn(internal, out_channels, 1, act=None),
            nn.Dropout2d(dropout),
        )
        self.act = nn.PReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/2, W/2)."""
        main = F.pad(self.pool(x), (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(main + self.branch(x))


class UpsamplingBottleneck(nn.Module):
    """Doubles H, W: max-unpooled 1x1-projected identity plus a transposed-conv branch."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        internal = out_channels // 4
        self.project = conv_bn(in_channels, out_channels, 1, act=None)
        self.branch = nn.Sequential(
            conv_bn(in_channels, internal, 1, act="relu"),
            Convolution(
                spatial_dims=2,
                in_channels=internal,
                out_channels=internal,
                strides=2,
                kernel_size=3,
                act="relu",
                norm="batch",
                bias=False,
                is_transposed=True,
                output_padding=1,
            ),
            conv_bn(internal, out_channels, 1, act=None),
            nn.Dropout2d(dropout),
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor, pooled_from: Tensor) -> Tensor:
        """x: (B, C_in, h, w); pooled_from: (B, C_out, 2h, 2w), the input of the matching
        downsampling bottleneck, whose max-pool indices place the unpooled values."""
        _, indices = F.max_pool2d(pooled_from, 2, return_indices=True)
        main = F.max_unpool2d(self.project(x), indices, 2, output_size=pooled_from.shape[-2:])
        return self.act(main + self.branch(x))


class UpsamplingStage(nn.Module):
    """An upsampling bottleneck followed by regular bottlenecks (ReLU, as in the reference decoder)."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int, dropout: float) -> None:
        super().__init__()
        self.up = UpsamplingBottleneck(in_channels, out_channels, dropout)
        self.blocks = nn.Sequential(
            *[Bottleneck(out_channels, dropout=dropout, act="relu") for _ in range(repeats)]
        )

    def forward(self, x: Tensor, pooled_from: Tensor) -> Tensor:
        return self.blocks(self.up(x, pooled_from))


def _dilated_stage(channels: int, dropout: float) -> list[nn.Module]:
    """Bottlenecks x.1 - x.8 of stages 2 and 3."""
    return [
        Bottleneck(channels, dropout=dropout),
        Bottleneck(channels, dilation=2, dropout=dropout),
        Bottleneck(channels, asymmetric=True, dropout=dropout),
        Bottleneck(channels, dilation=4, dropout=dropout),
        Bottleneck(channels, dropout=dropout),
        Bottleneck(channels, dilation=8, dropout=dropout),
        Bottleneck(channels, asymmetric=True, dropout=dropout),
        Bottleneck(channels, dilation=16, dropout=dropout),
    ]


class ENet(SegmentationNet):
    """ENet, total stride 8, about 0.35 M parameters.

    ``encode`` returns ``[initial (B, 16, H/2, W/2), stage1 (B, 64, H/4, W/4),
    stage2 (B, 128, H/8, W/8), stage3 = bottleneck (B, 128, H/8, W/8)]``; ``decode`` uses the
    bottleneck plus the stride-2 and stride-4 entries (for the unpooling indices only).
    The "decoder" tap is stage 5 at half resolution, before the final transposed conv.
    """

    stride = 8
    feature_points = {"stage1": "stage1", "stage2": "stage2", "bottleneck": "stage3", "decoder": "stage5"}

    def __init__(self, in_channels: int = 3, out_channels: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        if not 0 < in_channels < _INITIAL_CHANNELS:
            raise MeddistillError(f"ENet needs 1 to {_INITIAL_CHANNELS - 1} input channels, got {in_channels}")
        self.initial = InitialBlock(in_channels)
        # The paper uses a tenth of the dropout in stage 1.
        self.stage1 = nn.Sequential(
            DownsamplingBottleneck(_INITIAL_CHANNELS, 64, dropout / 10),
            *[Bottleneck(64, dropout=dropout / 10) for _ in range(4)],
        )
        self.stage2 = nn.Sequential(DownsamplingBottleneck(64, 128, dropout), *_dilated_stage(128, dropout))
        self.stage3 = nn.Sequential(*_dilated_stage(128, dropout))
        self.stage4 = UpsamplingStage(128, 64, repeats=2, dropout=dropout)
        self.stage5 = UpsamplingStage(64, _INITIAL_CHANNELS, repeats=1, dropout=dropout)
        self.fullconv = nn.ConvTranspose2d(_INITIAL_CHANNELS, out_channels, 3, stride=2, padding=1, output_padding=1)

    def encode(self, x: Tensor) -> list[Tensor]:
        initial = self.initial(x)
        stage1 = self.stage1(initial)
        stage2 = self.stage2(stage1)
        return [initial, stage1, stage2, self.stage3(stage2)]

    def decode(self, features: list[Tensor]) -> Tensor:
        initial, stage1, bottleneck = features[0], features[1], features[-1]
        return self.fullconv(self.stage5(self.stage4(bottleneck, stage1), initial))
