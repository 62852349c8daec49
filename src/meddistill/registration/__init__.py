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
from .fire import FirePair, PairOutcome, category_auc, load_fire, score_pair, summarize
from .geometry import Estimate, bend, estimate_transform, fit_quadratic, map_points, plausible, quadratic_terms, unmap_points
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
    "bend",
    "build_matcher",
    "category_auc",
    "estimate_transform",
    "fit_quadratic",
    "fov_interior",
    "load_fire",
    "map_points",
    "match_ground_truth",
    "match_guided",
    "match_mutual_nearest",
    "plausible",
    "preprocess_fundus",
    "quadratic_terms",
    "register_images",
    "resize_matrix",
    "score_pair",
    "summarize",
    "unmap_points",
    "warp_to_fixed",
    "warp_to_reference",
]
