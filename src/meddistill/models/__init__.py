"""2D segmentation networks: the FANet teacher and the MobileNetV2-UNet and ENet students.

Build one by name with ``MODELS.build("enet", in_channels=3, out_channels=2)``.
"""

from ..registry import Registry
from .blocks import SegmentationNet, pad_to_multiple
from .enet import ENet
from .fanet import FANet
from .mobilenet_unet import MobileNetV2UNet

MODELS: Registry[SegmentationNet] = Registry("model")
MODELS.register("fanet")(FANet)
MODELS.register("mobilenetv2_unet")(MobileNetV2UNet)
MODELS.register("enet")(ENet)

__all__ = ["MODELS", "ENet", "FANet", "MobileNetV2UNet", "SegmentationNet", "pad_to_multiple"]
