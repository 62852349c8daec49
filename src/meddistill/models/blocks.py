"""Building blocks shared by the 2D segmentation networks.

Every network derives from :class:`SegmentationNet`, which fixes the contract the
distillation engine relies on: ``forward`` pads the input to the network's total
stride, runs ``decode(encode(x))`` and crops the logits back to the input size.
"""

from __future__ import annotations

import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import Tensor, nn


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    act: str | tuple | None = "relu",
    padding: int | None = None,
) -> Convolution:
    """Conv2d (no bias, the norm has one) -> BatchNorm2d -> ``act``; 'same' padding unless given."""
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        strides=stride,
        kernel_size=kernel_size,
        dilation=dilation,
        groups=groups,
        act=act,
        norm="batch",
        bias=False,
        padding=padding,
    )


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[slice, slice]]:
    """Pad (B, C, H, W) so that H and W are multiples of ``multiple``.

    The padding is split evenly between both sides and replicates the border (reflection
    would need the pad to be smaller than the image, which fails for stride 32 at 16 px).
    Returns the padded tensor and the (rows, cols) slices that crop it back to (H, W).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        x = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="replicate")
    return x, (slice(top, top + h), slice(left, left + w))


class SegmentationNet(nn.Module):
    """Encoder-decoder segmentation network: (B, in_channels, H, W) -> logits (B, out_channels, H, W).

    Subclasses set ``stride`` (total downsampling factor, the input is padded to a
    multiple of it) and ``feature_points`` (semantic tap name -> dotted submodule name
    for forward hooks: "stage1" at stride 4, "stage2" at stride 8, "bottleneck", "decoder"),
    and implement :meth:`encode` and :meth:`decode`.
    """

    stride: int
    feature_points: dict[str, str]

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder outputs for an input whose H, W are multiples of ``stride``, shallow to deep;
        the last entry is the bottleneck feature."""
        raise NotImplementedError

    def decode(self, features: list[Tensor]) -> Tensor:
        """Logits (B, out_channels, H, W) at the (padded) input size, computed only from ``features``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        padded, (rows, cols) = pad_to_multiple(x, self.stride)
        return self.decode(self.encode(padded))[..., rows, cols]
