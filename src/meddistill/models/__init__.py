"""Networks by name: the 2D segmenters (FANet teacher, MobileNetV2-UNet and ENet students) and
the retinal keypoint networks (SuperPoint, SuperRetina and its variants, see ``keypoints``);
``ProbabilityEnsemble`` averages trained segmenters.

Build one by name with ``MODELS.build("enet", in_channels=3, out_channels=2)``.
"""

from ..registry import Registry
from .blocks import SegmentationNet, pad_to_multiple
from .enet import ENet
from .ensemble import ProbabilityEnsemble
from .fanet import FANet
from .glue import GlueMatcher
from .keypoints import KEYPOINT_NETWORKS, KeypointOutput
from .mobilenet_unet import MobileNetV2UNet

MODELS: Registry = Registry("model")
MODELS.register("fanet")(FANet)
MODELS.register("mobilenetv2_unet")(MobileNetV2UNet)
MODELS.register("enet")(ENet)
for _name, _factory in KEYPOINT_NETWORKS.items():
    MODELS.register(_name)(_factory)
MODELS.register("glue")(GlueMatcher)

__all__ = ["KEYPOINT_NETWORKS", "MODELS", "ENet", "FANet", "GlueMatcher", "KeypointOutput", "MobileNetV2UNet", "ProbabilityEnsemble", "SegmentationNet", "pad_to_multiple"]
