"""Figures of a registered pair: match lines, checkerboard and colour overlay."""

from __future__ import annotations

import cv2
import numpy as np

from .pipeline import RegistrationResult, warp_to_fixed


def match_lines(fixed: np.ndarray, moving: np.ndarray, result: RegistrationResult, height: int = 600) -> np.ndarray:
    """Both photos side by side (scaled to ``height``) with inlier matches green, outliers red."""
    scales = [height / fixed.shape[0], height / moving.shape[0]]
    left, right = (cv2.resize(im, (round(im.shape[1] * s), height)) for im, s in zip((fixed, moving), scales))
    canvas = np.concatenate([left, right], axis=1)
    for k, (p, q) in enumerate(zip(result.fixed_points, result.moving_points)):
        colour = (0, 200, 0) if k < len(result.inlier_mask) and result.inlier_mask[k] else (220, 0, 0)
        start = tuple(int(v) for v in p * scales[0])
        end = (int(q[0] * scales[1]) + left.shape[1], int(q[1] * scales[1]))
        cv2.line(canvas, start, end, colour, 1, cv2.LINE_AA)
    return canvas


def checkerboard(fixed: np.ndarray, warped: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate ``tiles``×``tiles`` squares of the fixed image and the warped moving image."""
    height, width = fixed.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((yy * tiles // height) + (xx * tiles // width)) % 2 == 0
    return np.where(mask[..., None], fixed, warped)


def colour_overlay(fixed: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """Fixed green channel in magenta, warped moving green channel in green: aligned vessels turn grey."""
    return np.stack([fixed[..., 1], warped[..., 1], fixed[..., 1]], axis=-1)


def registration_figures(fixed: np.ndarray, moving: np.ndarray, result: RegistrationResult) -> dict[str, np.ndarray]:
    """``matches`` always; ``checkerboard`` and ``overlay`` when the registration succeeded."""
    figures = {"matches": match_lines(fixed, moving, result)}
    if result.mapping is not None:
        warped = warp_to_fixed(moving, result.mapping, fixed.shape)
        figures["checkerboard"] = checkerboard(fixed, warped)
        figures["overlay"] = colour_overlay(fixed, warped)
    return figures
