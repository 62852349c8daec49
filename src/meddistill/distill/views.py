"""Perturbed views of a batch for GKD's contrastive graphs: cutout, Sobel, noise, blur.

Each view is a function ``(B, C, *spatial) → (B, C, *spatial)`` on normalised images, 2D or
3D; randomness comes from torch's global generator, which the engine seeds and restores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.layers import GaussianFilter
from monai.transforms import SobelGradients
from torch import Tensor

from ..errors import MeddistillError
from ..registry import check_arguments


def random_cutout(images: Tensor, fraction: float = 0.25) -> Tensor:
    """Zero one random box per image whose sides are ``fraction`` of the image's (Random Cutout)."""
    out = images.clone()
    spatial = images.shape[2:]
    sides = [max(1, round(s * fraction)) for s in spatial]
    for b in range(images.shape[0]):
        box = tuple(
            slice(start, start + side)
            for start, side in ((int(torch.randint(0, s - side + 1, ())), side) for s, side in zip(spatial, sides))
        )
        out[(b, slice(None)) + box] = 0
    return out


_SOBEL = SobelGradients(kernel_size=3)


def sobel_magnitude(images: Tensor) -> Tensor:
    """Per-channel Sobel gradient magnitude (MONAI ``SobelGradients``), rescaled to the input's std."""
    dims = images.dim() - 2
    grads = torch.stack([_SOBEL(image) for image in images])  # (B, dims * C, *spatial), axis-major
    magnitude = grads.unflatten(1, (dims, images.shape[1])).pow(2).sum(dim=1).sqrt()
    scale = images.flatten(2).std(dim=2) / magnitude.flatten(2).std(dim=2).clamp_min(1e-6)
    return magnitude * scale.view(*scale.shape, *([1] * dims))


def gaussian_noise(images: Tensor, std: float = 0.2) -> Tensor:
    """Add zero-mean Gaussian noise (``std`` in units of the normalised intensity)."""
    return images + std * torch.randn_like(images)


def gaussian_blur(images: Tensor, sigma: float = 1.5) -> Tensor:
    """Gaussian blur with ``sigma`` pixels along every spatial axis (MONAI ``GaussianFilter``)."""
    return GaussianFilter(images.dim() - 2, sigma=sigma).to(images.device)(images)


VIEWS: dict[str, Callable[[Tensor], Tensor]] = {
    "cutout": random_cutout,
    "sobel": sobel_magnitude,
    "noise": gaussian_noise,
    "blur": gaussian_blur,
}


def make_views(images: Tensor, names: list[str], args: dict[str, dict] | None = None) -> Tensor:
    """Anchor plus one perturbed copy per name: ``(B, C, *S)`` → ``(B, 1 + len(names), C, *S)``.

    ``args`` maps a view name to keyword arguments of its function, e.g. ``{"noise": {"std": 0.1}}``.
    """
    args = args or {}
    unknown = [n for n in [*names, *args] if n not in VIEWS]
    if unknown:
        raise MeddistillError(f"unknown view '{unknown[0]}'; choose from {', '.join(VIEWS)}")
    for name, view_args in args.items():
        if not isinstance(view_args, dict):
            raise MeddistillError(f"the arguments of view '{name}' must map names to values, e.g. {{std: 0.1}}, not {view_args!r}")
        check_arguments(f"view '{name}'", VIEWS[name], view_args, passed=1)
    return torch.stack([images] + [VIEWS[n](images, **args.get(n, {})) for n in names], dim=1)
