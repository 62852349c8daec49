"""Fundus preprocessing for keypoint methods (SuperRetina's): green channel, z-score, CLAHE, gamma, resize."""

from __future__ import annotations

import cv2
import numpy as np


def preprocess_fundus(image: np.ndarray, size: int = 768, gamma: float = 1.2) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB → ``(size, size)`` uint8: green channel, z-scored and stretched to 0-255,
    CLAHE (clip 2, 8×8 tiles), gamma ``gamma``, resized (area interpolation when shrinking)."""
    green = image[..., 1].astype(np.float32)
    z = (green - green.mean()) / max(float(green.std()), 1e-6)
    stretched = cv2.normalize(z, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    equalised = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(stretched)
    corrected = (255 * (equalised / 255.0) ** gamma).astype(np.uint8)
    interpolation = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(corrected, (size, size), interpolation=interpolation)


def resize_matrix(original_shape: tuple[int, ...], size: int) -> np.ndarray:
    """3×3 matrix taking original pixel coordinates (x, y) to those of the ``size``×``size`` resize."""
    height, width = original_shape[:2]
    return np.diag([size / width, size / height, 1.0])
