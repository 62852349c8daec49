"""Distillation methods: functional losses, feature taps and the method registry."""

from .hooks import FeatureTap, tap_points
from .losses import (
    at_loss,
    attention_map,
    fsp_loss,
    fsp_matrix,
    hint_loss,
    inter_graph_loss,
    intra_graph_loss,
    kd_loss,
)
from .methods import METHODS, Distiller, PreStage, build_distiller
from .gkd import AlignmentNetwork, GKDDistiller, SemanticAutoencoder  # registers "gkd"

__all__ = [
    "METHODS",
    "AlignmentNetwork",
    "Distiller",
    "GKDDistiller",
    "PreStage",
    "SemanticAutoencoder",
    "FeatureTap",
    "at_loss",
    "attention_map",
    "build_distiller",
    "fsp_loss",
    "fsp_matrix",
    "hint_loss",
    "inter_graph_loss",
    "intra_graph_loss",
    "kd_loss",
    "tap_points",
]
