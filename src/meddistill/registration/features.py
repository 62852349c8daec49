"""Keypoints and descriptors (a registry of methods) and descriptor matching."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..registry import Registry


@dataclass
class Features:
    """Keypoints ``(N, 2)`` pixel (x, y) and their descriptors ``(N, D)``, float32."""

    keypoints: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)


KEYPOINT_METHODS: Registry = Registry("keypoint method")


@KEYPOINT_METHODS.register("sift")
class SIFT:
    """OpenCV SIFT (Lowe 2004) on the preprocessed grey image: the hand-crafted baseline."""

    default_matcher = "mnn"

    def __init__(self, max_keypoints: int = 2000) -> None:
        self._sift = cv2.SIFT_create(nfeatures=max_keypoints)

    def __call__(self, grey: np.ndarray) -> Features:
        keypoints, descriptors = self._sift.detectAndCompute(grey, None)
        if not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
        return Features(np.array([k.pt for k in keypoints], np.float32), descriptors.astype(np.float32))


def match_mutual_nearest(a: np.ndarray, b: np.ndarray, ratio: float = 0.9) -> np.ndarray:
    """Index pairs ``(M, 2)`` of descriptors that are each other's nearest neighbour (L2) and pass
    Lowe's ratio test (nearest < ``ratio`` × second nearest, both ways where a second exists)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), int)
    distances = np.sqrt(np.maximum(
        (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T, 0.0))  # (Na, Nb)
    forward, backward = distances.argmin(1), distances.argmin(0)
    pairs = np.array([(i, j) for i, j in enumerate(forward) if backward[j] == i], int).reshape(-1, 2)
    if len(b) > 1 and len(pairs):
        second = np.partition(distances[pairs[:, 0]], 1, axis=1)[:, 1]
        pairs = pairs[distances[pairs[:, 0], pairs[:, 1]] < ratio * second]
    return pairs
