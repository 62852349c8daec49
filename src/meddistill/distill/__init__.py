"""Distillation methods: functional losses, feature taps and the method registry."""

from .hooks import FeatureTap, tap_points
from .losses import (
    at_loss,
    attention_map,
    class_variation_map,
    coco_loss,
    cross_layer_correlation,
    cwd_loss,
    gradient_penalty,
    ifv_loss,
    pairwise_affinity,
    pairwise_loss,
    fsp_loss,
    fsp_matrix,
    hint_loss,
    inter_graph_loss,
    intra_graph_loss,
    kd_loss,
)
from .methods import METHODS, Distiller, PreStage, build_distiller
from .gkd import AlignmentNetwork, GKDDistiller, SemanticAutoencoder, alignment_losses  # registers "gkd"
from .structured import CoCoDistiller, CWDDistiller, HolisticCritic, IFVDDistiller, SKDDistiller
from .keypoint_kd import KeypointDistiller  # registers "keypoint_kd"

__all__ = [
    "METHODS",
    "AlignmentNetwork",
    "CWDDistiller",
    "CoCoDistiller",
    "Distiller",
    "FeatureTap",
    "GKDDistiller",
    "HolisticCritic",
    "IFVDDistiller",
    "KeypointDistiller",
    "PreStage",
    "SKDDistiller",
    "SemanticAutoencoder",
    "alignment_losses",
    "at_loss",
    "attention_map",
    "class_variation_map",
    "coco_loss",
    "cross_layer_correlation",
    "cwd_loss",
    "gradient_penalty",
    "ifv_loss",
    "pairwise_affinity",
    "pairwise_loss",
    "build_distiller",
    "fsp_loss",
    "fsp_matrix",
    "hint_loss",
    "inter_graph_loss",
    "intra_graph_loss",
    "kd_loss",
    "tap_points",
]
