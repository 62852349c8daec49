"""Distillation methods: functional losses, feature taps and the method registry."""

from .hooks import FeatureTap, tap_points
from .losses import at_loss, attention_map, fsp_loss, fsp_matrix, hint_loss, kd_loss
from .methods import METHODS, Distiller, build_distiller

__all__ = [
    "METHODS",
    "Distiller",
    "FeatureTap",
    "at_loss",
    "attention_map",
    "build_distiller",
    "fsp_loss",
    "fsp_matrix",
    "hint_loss",
    "kd_loss",
    "tap_points",
]
