"""How a segmenter's photos are prepared before the network sees them, as its checkpoint records."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .fov import rescale_to_fov_diameter
from .patches import normalize_image

__all__ = ["Preparation"]


@dataclass(frozen=True)
class Preparation:
    """Input preparation of a trained segmenter: what inference must repeat of its training.

    Attributes:
        fov_diameter_px: the training photos' field-of-view diameter (pixels); a photo is
            resized to it first, so vessels have the widths the network learnt. None keeps
            every photo at its own scale.
        clahe: equalise the contrast (:func:`~meddistill.data.equalize_contrast`) before
            z-scoring.
    """

    fov_diameter_px: float | None = None
    clahe: bool = False

    @classmethod
    def from_meta(cls, meta: dict) -> Preparation:
        """The preparation a checkpoint's metadata records (old checkpoints: no CLAHE)."""
        return cls(meta.get("fov_diameter_px"), bool(meta.get("clahe", False)))

    def at_native_scale(self) -> Preparation:
        """The same preparation without the rescaling (``--native-scale``)."""
        return replace(self, fov_diameter_px=None)

    def __call__(
        self, image: np.ndarray, fov: np.ndarray, masks: tuple[np.ndarray, ...] = ()
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """Network input ``(C, H', W')`` float32, with the field of view and ``masks`` ``(H', W')``
        at the network's scale, for a photo ``(H, W, C)`` uint8 and its masks ``(H, W)`` bool."""
        image, fov, masks = rescale_to_fov_diameter(image, fov, self.fov_diameter_px, masks)
        return normalize_image(image, fov, self.clahe), fov, masks
