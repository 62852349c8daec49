"""Retinal image registration: keypoints, matching, robust transforms, FIRE protocol."""

from .features import (
    KEYPOINT_METHODS,
    MATCHERS,
    Features,
    GlueMatching,
    LearnedKeypoints,
    MutualNearest,
    build_matcher,
    match_guided,
    match_mutual_nearest,
)
from .fire import FirePair, PairOutcome, category_auc, load_fire, map_points, score_pair, summarize
from .geometry import Estimate, estimate_transform, plausible
from .pipeline import RegistrationResult, register_images, warp_to_fixed
from .preprocess import fov_interior, preprocess_fundus, resize_matrix
from .task import KeypointPairDataset, KeypointTask, warp_to_reference
from .matching import MatchingTask, match_ground_truth

__all__ = [
    "KEYPOINT_METHODS",
    "MATCHERS",
    "GlueMatching",
    "MutualNearest",
    "Estimate",
    "Features",
    "FirePair",
    "KeypointPairDataset",
    "KeypointTask",
    "LearnedKeypoints",
    "MatchingTask",
    "PairOutcome",
    "RegistrationResult",
    "build_matcher",
    "category_auc",
    "estimate_transform",
    "fov_interior",
    "load_fire",
    "map_points",
    "match_ground_truth",
    "match_guided",
    "match_mutual_nearest",
    "plausible",
    "preprocess_fundus",
    "register_images",
    "resize_matrix",
    "score_pair",
    "summarize",
    "warp_to_fixed",
    "warp_to_reference",
]
