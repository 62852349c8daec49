"""FANet teacher: a U-Net built from selective-kernel units with strip-pooling attention.

Follows the "fully attention-based network" teacher of the GKD paper (Li et al., JBHI 2021):
each encoder stage is a residual selective-kernel unit (SKNet, Li et al., CVPR 2019), and
strip-pooling attention (Hou et al., CVPR 2020) gates the bottleneck and every decoder stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import SegmentationNet, conv_bn


class SelectiveKernel(nn.Module):
    """SK convolution: 3x3 and dilated 3x3 (5x5 receptive field) branches mixed by a per-channel
    softmax attention over branches, computed from the globally pooled sum of the branches.

    The squeeze FC has no BatchNorm (unlike SKNet) so that training works with batch size 1.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(channels, channels, 3, dilation=d) for d in (1, 2)])
        hidden = max(channels // reduction, min_hidden)
        self.squeeze = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU())
        self.select = nn.Conv2d(hidden, channels * len(self.branches), 1)

    def forward(self, x: Tensor) -> Tensor:
        branches = torch.stack([branch(x) for branch in self.branches], dim=1)  # (B, K, C, H, W)
        pooled = branches.sum(dim=1).mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        logits = self.select(self.squeeze(pooled))  # (B, K*C, 1, 1)
        weights = logits.view(x.shape[0], len(self.branches), -1, 1, 1).softmax(dim=1)
        return (weights * branches).sum(dim=1)


class SKUnit(nn.Module):
    """Residual unit: 3x3 conv (channel change) -> selective kernel -> 1x1 linear conv, plus a projected identity."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels, 3),
            SelectiveKernel(out_channels),
            conv_bn(out_channels, out_channels, 1, act=None),
        )
        self.shortcut = (
            nn.Identity() if in_channels == out_channels else conv_bn(in_channels, out_channels, 1, act=None)
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class StripPooling(nn.Module):
    """Strip-pooling attention: average H- and W-strips, 1D convs, expand and sum, 1x1 conv, sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_h = conv_bn(channels, channels, (3, 1), act=None)
        self.conv_w = conv_bn(channels, channels, (1, 3), act=None)
        self.fuse = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), x scaled by a gate in (0, 1)."""
        strip_h = self.conv_h(x.mean(dim=3, keepdim=True))  # (B, C, H, 1)
        strip_w = self.conv_w(x.mean(dim=2, keepdim=True))  # (B, C, 1, W)
        # Broadcasting the sum expands both strips to (B, C, H, W).
        return x * torch.sigmoid(self.fuse(F.relu(strip_h + strip_w)))


class UpStage(nn.Module):
    """Bilinear x2 upsampling, skip concatenation, double 3x3 conv, strip-pooling attention."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv_bn(in_channels + skip_channels, out_channels, 3),
            conv_bn(out_channels, out_channels, 3),
            StripPooling(out_channels),
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """x: (B, C_in, h, w), skip: (B, C_skip, 2h, 2w) -> (B, C_out, 2h, 2w)."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class FANet(SegmentationNet):
    """FANet teacher, total stride 16.

    With b = ``base_channels``, ``encode`` returns ``[enc1 (b, stride 1), enc2 (2b, stride 2),
    enc4 (4b, stride 4), enc8 (8b, stride 8), enc16 (8b, stride 16, bottleneck)]``; the
    bottleneck is capped at 8b because bilinear upsampling adds no channels (as in the
    bilinear U-Net). The "decoder" tap is the full-resolution feature before the 1x1 classifier.
    """

    stride = 16
    feature_points = {"stage1": "enc4", "stage2": "enc8", "bottleneck": "enc16", "decoder": "dec1"}

    def __init__(self, in_channels: int = 3, out_channels: int = 2, base_channels: int = 32) -> None:
        super().__init__()
        b = base_channels
        self.enc1 = SKUnit(in_channels, b)
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), SKUnit(b, 2 * b))
        self.enc4 = nn.Sequential(nn.MaxPool2d(2), SKUnit(2 * b, 4 * b))
        self.enc8 = nn.Sequential(nn.MaxPool2d(2), SKUnit(4 * b, 8 * b))
        self.enc16 = nn.Sequential(nn.MaxPool2d(2), SKUnit(8 * b, 8 * b), StripPooling(8 * b))
        self.dec8 = UpStage(8 * b, 8 * b, 4 * b)
        self.dec4 = UpStage(4 * b, 4 * b, 2 * b)
        self.dec2 = UpStage(2 * b, 2 * b, b)
        self.dec1 = UpStage(b, b, b)
        self.head = nn.Conv2d(b, out_channels, 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in (self.enc1, self.enc2, self.enc4, self.enc8, self.enc16):
            x = stage(x)
            features.append(x)
        return features

    def decode(self, features: list[Tensor]) -> Tensor:
        s1, s2, s4, s8, x = features
        x = self.dec1(self.dec2(self.dec4(self.dec8(x, s8), s4), s2), s1)
        return self.head(x)
