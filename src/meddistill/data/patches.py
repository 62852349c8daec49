"""Image normalisation and the patch dataset that feeds training.

The code works on any number of spatial dimensions: 2D photos (H, W) and 3D volumes (D, H, W)
go through the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import cv2
import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.data import get_track_meta, set_track_meta
from torch.utils.data import Dataset

from ..errors import MeddistillError

__all__ = ["PatchDataset", "equalize_contrast", "normalize_image"]


class _Sample(Protocol):
    """What the datasets need of a sample: a :class:`~meddistill.data.datasets.VesselSample` or a
    :class:`~meddistill.data.phantom.FundusPhantom`."""

    image: np.ndarray  # (*S, C) uint8
    vessels: np.ndarray  # (*S) bool
    fov: np.ndarray  # (*S) bool


@contextmanager
def _plain_tensors() -> Iterator[None]:
    """MONAI transforms on plain tensors within: their MetaTensor bookkeeping costs more than
    augmenting a 128-px patch does (10.3 → 4.3 ms a patch, the same values; RESULTS §4a,
    session 26), and the loader is what a GPU waits for."""
    tracked = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(tracked)


def equalize_contrast(image: np.ndarray) -> np.ndarray:
    """CLAHE (OpenCV, clip limit 2, 8×8 tiles) on a 2D photo's luminance: ``(H, W, 3)`` RGB or
    ``(H, W, 1)`` grey uint8 in, same shape out. Colour photos are equalised in the L channel of
    CIELAB, so hue is kept while uneven illumination and faint vessels are evened out."""
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
        raise MeddistillError(f"contrast equalisation needs a 2D uint8 grey or RGB image, got {image.shape} {image.dtype}")
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    if image.shape[-1] == 1:
        return clahe.apply(np.ascontiguousarray(image[..., 0]))[..., None]
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def normalize_image(image: np.ndarray, fov: np.ndarray, clahe: bool = False) -> np.ndarray:
    """Z-score each channel with its mean and std inside the field of view; zero outside.

    This is the one preprocessing step of training and inference alike; ``clahe`` equalises
    the contrast first (:func:`equalize_contrast`), a choice the checkpoint records.

    Args:
        image: (*S, C) channel-last image, e.g. (H, W, 3) uint8.
        fov: (*S) bool field-of-view mask.
        clahe: apply :func:`equalize_contrast` before z-scoring (2D uint8 photos only).

    Returns:
        (C, *S) float32 array, mean 0 and std 1 per channel inside ``fov``, 0 outside.
    """
    if not fov.any():
        raise MeddistillError("the field-of-view mask is empty; there is nothing to normalise")
    if clahe:
        image = equalize_contrast(image)
    channels = np.moveaxis(image, -1, 0).astype(np.float32)
    inside = channels[:, fov]  # (C, N)
    mean = inside.mean(axis=1)
    std = np.maximum(inside.std(axis=1), 1e-6)  # a flat channel stays finite
    shape = (-1,) + (1,) * fov.ndim
    return np.where(fov, (channels - mean.reshape(shape)) / std.reshape(shape), 0).astype(np.float32)


def _bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corner indices of the True pixels, high exclusive."""
    low, high = [], []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        low.append(hits[0])
        high.append(hits[-1] + 1)
    return np.array(low), np.array(high)


def _augmentation(spatial_dims: int, patch_size: int, rotate_degrees: float, scale_range: float) -> Compose:
    """Random flips, 90° rotations and mild intensity changes; spatial ones hit image, label and FOV alike.

    With ``rotate_degrees`` or ``scale_range`` set, a random rotation by up to that angle (about
    every axis in 3D) and a zoom by a factor in ``[1 - scale_range, 1 + scale_range]`` come first:
    they turn the larger window :func:`_window_size` cut into a ``patch_size`` patch, so no
    corner is left empty. Labels and FOV are resampled by nearest neighbour.
    """
    keys = ["image", "label", "fov"]
    affine = []
    if rotate_degrees or scale_range:
        affine.append(
            RandAffined(
                keys,
                spatial_size=(patch_size,) * spatial_dims,
                prob=1.0,
                rotate_range=(math.radians(rotate_degrees),) * _rotation_axes(spatial_dims),
                scale_range=(scale_range,) * spatial_dims,
                mode=("bilinear", "nearest", "nearest"),
                padding_mode="zeros",
            )
        )
    return Compose(
        affine
        + [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
        + [
            RandRotate90d(keys, prob=0.5, spatial_axes=(spatial_dims - 2, spatial_dims - 1)),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            RandAdjustContrastd("image", gamma=(0.8, 1.25), retain_stats=True, prob=0.3),
            RandGaussianNoised("image", std=0.05, prob=0.3),
        ]
    )


def _rotation_axes(spatial_dims: int) -> int:
    """How many angles a random rotation draws: one in 2D, one per axis in 3D."""
    return 1 if spatial_dims == 2 else 3


def _window_size(patch_size: int, rotate_degrees: float, scale_range: float, spatial_dims: int = 2) -> int:
    """Side of the window to cut so that a ``patch_size`` patch rotated by up to ``rotate_degrees``
    (about each axis) and zoomed out by up to ``1 + scale_range`` still lies inside it.

    A rotation by at most θ ≤ 45° about one axis stretches a square's extent by at most
    cos θ + sin θ; composed about several axes, by that power, and never beyond the diagonal √d.
    """
    angle = math.radians(min(rotate_degrees, 45.0))
    stretch = min((math.cos(angle) + math.sin(angle)) ** _rotation_axes(spatial_dims), math.sqrt(spatial_dims))
    return math.ceil(patch_size * (1 + scale_range) * stretch)


class PatchDataset(Dataset):
    """Random square (cubic in 3D) patches centred inside the field of view, for training.

    Item ``i`` comes from sample ``i % len(samples)``; its centre and augmentation depend only
    on ``(seed, epoch, i)``, so a run is reproducible whatever the DataLoader workers do.
    Images are normalised once by :func:`normalize_image` (with CLAHE when ``clahe``).
    ``rotate_degrees`` and ``scale_range`` add a random rotation and zoom when ``augment``
    (see :func:`_augmentation`).
    Call :meth:`set_epoch` before each epoch to draw new patches.

    Each item is a dict: ``image`` (C, p, p) float32, ``label`` (p, p) int64 in {0, 1},
    ``fov`` (p, p) bool. Pixels beyond the image border are 0 in all three.
    """

    def __init__(
        self,
        samples: Sequence[_Sample],
        patch_size: int,
        patches_per_image: int,
        augment: bool = True,
        seed: int = 0,
        clahe: bool = False,
        rotate_degrees: float = 0.0,
        scale_range: float = 0.0,
    ) -> None:
        if not samples:
            raise MeddistillError("no training images: the patch dataset is empty")
        if rotate_degrees < 0 or not 0 <= scale_range < 1:
            raise MeddistillError(
                f"rotate_degrees must be >= 0 and scale_range in [0, 1), got {rotate_degrees} and {scale_range}"
            )
        self.patch_size = patch_size
        self.patches_per_image = patches_per_image
        self.seed = seed
        self.epoch = 0
        spatial_dims = samples[0].fov.ndim
        self._augment = _augmentation(spatial_dims, patch_size, rotate_degrees, scale_range) if augment else None
        self._window = _window_size(patch_size, rotate_degrees, scale_range, spatial_dims) if augment else patch_size
        # Padding by a window on every side lets any in-image centre be cut with plain slicing.
        before, after = self._window // 2, self._window - self._window // 2
        pad = [(before, after)] * spatial_dims
        self._images = [np.pad(normalize_image(s.image, s.fov, clahe), [(0, 0)] + pad) for s in samples]
        self._labels = [np.pad(s.vessels, pad) for s in samples]
        self._fovs = [np.pad(s.fov, pad) for s in samples]
        self._boxes = [_bounding_box(s.fov) for s in samples]

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._images) * self.patches_per_image

    def _random_centre(self, k: int, rng: np.random.Generator) -> tuple[int, ...]:
        """A uniformly random FOV pixel of sample ``k``, by rejection within the FOV's bounding box.

        Rejection keeps memory flat (no list of all FOV pixels) and, on a disc, accepts ~78 % of draws.
        """
        low, high = self._boxes[k]
        offset = self._window // 2
        fov = self._fovs[k]
        while True:
            centre = tuple(int(c) for c in rng.integers(low, high))
            if fov[tuple(c + offset for c in centre)]:
                return centre

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = index % len(self._images)
        # In padded coordinates a patch centred on pixel c starts at c.
        start = self._random_centre(k, rng)
        window = tuple(slice(c, c + self._window) for c in start)
        item = {
            "image": torch.from_numpy(self._images[k][(slice(None),) + window].copy()),
            "label": torch.from_numpy(self._labels[k][window][None].astype(np.int64)),
            "fov": torch.from_numpy(self._fovs[k][window][None].copy()),
        }
        if self._augment is not None:
            self._augment.set_random_state(seed=int(rng.integers(2**31)))
            with _plain_tensors():
                item = self._augment(item)
            # resampling turns label and FOV into floats (of exact 0 / 1 values, by nearest neighbour)
            item["label"], item["fov"] = item["label"].long(), item["fov"].bool()
            item["image"] = item["image"] * item["fov"]  # intensity changes must not leak outside the FOV
        return {"image": item["image"], "label": item["label"][0], "fov": item["fov"][0]}
