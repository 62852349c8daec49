"""Fréchet Semantic Distance (GKD paper, Eq. 11): how far a network's aligned latents lie from
the semantic autoencoder's latents of the true label maps, over one dataset.

Both latent sets come from the same tiles: each image is cut into non-overlapping
``patch_size`` tiles (the training patch size the headers were fitted at), keeping tiles at
least half inside the field of view. Lower is more domain-invariant.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_frechet_distance
from torch import Tensor, nn

from .builders import build_configured_network
from .checkpoint import load_weights
from .config import load_config
from .data import Preparation, VesselSample
from .distill import METHODS, GKDDistiller, build_distiller
from .distill.gkd import one_hot_labels
from .errors import MeddistillError
from .models import pad_to_multiple
from .tasks import SegmentationTask


def _tiles(sample: VesselSample, patch_size: int, preparation: Preparation) -> tuple[Tensor, Tensor]:
    """Image tiles ``(N, C, p, p)`` and label tiles ``(N, p, p)`` at least half inside the FOV,
    after preparing the photo as the network's training did."""
    image, fov, (vessels,) = preparation(sample.image, sample.fov, (sample.vessels,))
    labels = torch.from_numpy(vessels.astype(np.int64))
    height, width = fov.shape
    image = torch.from_numpy(image)
    fov = torch.from_numpy(fov)
    images, masks = [], []
    for top in range(0, height - patch_size + 1, patch_size):
        for left in range(0, width - patch_size + 1, patch_size):
            window = (slice(top, top + patch_size), slice(left, left + patch_size))
            if fov[window].float().mean() >= 0.5:
                images.append(image[(slice(None),) + window])
                masks.append(labels[window])
    if not images:
        return torch.empty(0, image.shape[0], patch_size, patch_size), torch.empty(0, patch_size, patch_size)
    return torch.stack(images), torch.stack(masks)


@torch.no_grad()
def semantic_latents(
    network: nn.Module,
    header: nn.Module,
    autoencoder: nn.Module,
    samples: Sequence[VesselSample],
    patch_size: int,
    preparation: Preparation = Preparation(),
    num_classes: int = 2,
    batch_size: int = 16,
    level: int = -1,
) -> tuple[Tensor, Tensor]:
    """Aligned latents of ``network``'s encoder feature ``level`` (the bottleneck by default) and
    autoencoder latents of the labels, ``(N, C)`` each."""
    network_latents, label_latents = [], []
    for sample in samples:
        images, labels = _tiles(sample, patch_size, preparation)
        for start in range(0, len(images), batch_size):
            image, label = images[start : start + batch_size], labels[start : start + batch_size]
            padded, _ = pad_to_multiple(image, network.stride)
            network_latents.append(header.encode(network.encode(padded)[level]))
            padded_labels, _ = pad_to_multiple(one_hot_labels(label, num_classes), network.stride)
            label_latents.append(autoencoder.encode(padded_labels))
    if not network_latents:
        raise MeddistillError(f"no {patch_size}-px tile lies at least half inside a field of view")
    return torch.cat(network_latents), torch.cat(label_latents)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``x`` and ``y`` ``(N, C)``."""
    if len(x) < 2 or len(y) < 2:
        raise MeddistillError("the Fréchet distance needs at least two latents per set")
    x, y = x.double(), y.double()
    return float(compute_frechet_distance(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T)))


def frechet_semantic_distance(
    network: nn.Module,
    header: nn.Module,
    autoencoder: nn.Module,
    samples: Sequence[VesselSample],
    patch_size: int,
    preparation: Preparation = Preparation(),
    level: int = -1,
) -> float:
    """FSD of ``network`` (through its alignment ``header`` on encoder feature ``level``) on ``samples``."""
    network.eval()
    latents = semantic_latents(network, header, autoencoder, samples, patch_size, preparation, level=level)
    return frechet_distance(*latents)


def load_gkd_alignment(run_dir: str | Path) -> tuple[GKDDistiller, int]:
    """The autoencoder and alignment networks a GKD run trained, and its patch size.

    Returns a :class:`GKDDistiller` holding the run's teacher and its starting student, with
    ``autoencoder``, ``teacher_alignment`` and ``student_alignment`` loaded from the run folder.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise MeddistillError(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(config_path)
    if METHODS.get(config.method.name) is not GKDDistiller:
        raise MeddistillError(f"{run_dir} is a '{config.method.name}' run; FSD needs the alignment networks of a GKD run")
    student, teacher = build_configured_network(config.student), build_configured_network(config.teacher)
    patch = config.data.patch_size
    example = torch.zeros(1, 3, patch, patch)
    distiller = build_distiller("gkd", student, teacher, SegmentationTask(config.train.loss), example, config.method.args)
    load_weights(distiller.autoencoder, run_dir / "stage-autoencoder")
    load_weights(
        nn.ModuleDict({"teacher": distiller.teacher_alignment, "student": distiller.student_alignment}),
        run_dir / "stage-alignment",
    )
    return distiller.eval(), patch
