"""Inference on whole images: one pass when it fits, MONAI sliding windows when it is big."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from .data import Preparation, VesselSample, compute_fov, write_png
from .metrics import MetricAccumulator


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """Foreground probability ``(B, *spatial)`` of a binary segmentation's logits ``(B, 2, *spatial)``."""
    return torch.softmax(logits.float(), dim=1)[:, 1]


@torch.inference_mode()
def predict_probability(
    model: nn.Module,
    image: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    preparation: Preparation = Preparation(),
    tile: int = 1024,
    overlap: float = 0.25,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Vessel probability ``(H, W)`` float32 in [0, 1] for an RGB uint8 image ``(H, W, 3)``.

    The image is prepared as the model's training prepared its photos (``preparation``, from
    the checkpoint: :meth:`Preparation.from_meta`): resized so that its field of view has the
    training diameter, whatever the camera's resolution, and the map resized back. Images
    larger than ``tile`` pixels on a side are processed in overlapping tiles blended with
    Gaussian weights, so memory stays bounded for any image size. Pixels outside the field of
    view (computed when ``fov`` is None) get probability 0.
    """
    if fov is None:
        fov = compute_fov(image)
    height, width = fov.shape
    net_input, _, _ = preparation(image, fov)
    x = torch.from_numpy(net_input).unsqueeze(0).to(device)
    model = model.eval().to(device)
    if max(x.shape[2:]) <= tile:
        logits = model(x)
    else:
        logits = sliding_window_inference(x, (tile, tile), 1, model, overlap=overlap, mode="gaussian")
    prob = foreground_probability(logits)[0].cpu().numpy()
    if prob.shape != fov.shape:
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(fov, prob, 0.0).astype(np.float32)


def evaluate_samples(
    model: nn.Module,
    samples: list[VesselSample],
    device: torch.device | str,
    preparation: Preparation = Preparation(),
    each: Callable[[VesselSample, np.ndarray], None] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Metrics of ``model`` pooled over whole images, inside each image's field of view,
    at the original size (each image is prepared as :func:`predict_probability` does).
    ``each``, when given, is called with every sample and its probability map ``(H, W)``,
    to score or draw that image alone; the maps are not kept. ``prob >= threshold`` is vessel.
    """
    accumulator = MetricAccumulator(threshold)
    for sample in samples:
        prob = predict_probability(model, sample.image, sample.fov, preparation=preparation, device=device)
        accumulator.update(prob, sample.vessels, sample.fov)
        if each is not None:
            each(sample, prob)
    return accumulator.compute()


def segment_to_files(
    model: nn.Module,
    image: np.ndarray,
    stem: str,
    out_dir: Path,
    *,
    threshold: float = 0.5,
    preparation: Preparation = Preparation(),
    device: torch.device | str = "cpu",
) -> dict[str, Path]:
    """Write ``<stem>_mask.png`` (0/255), ``<stem>_prob.png`` (0–255) and ``<stem>_overlay.png``."""
    from .report import overlay  # imported here: it pulls in matplotlib, which inference alone never needs

    prob = predict_probability(model, image, preparation=preparation, device=device)
    mask = prob >= threshold
    paths = {kind: out_dir / f"{stem}_{kind}.png" for kind in ("mask", "prob", "overlay")}
    write_png(paths["mask"], (mask * 255).astype(np.uint8))
    write_png(paths["prob"], np.round(prob * 255).astype(np.uint8))
    write_png(paths["overlay"], overlay(image, mask))
    return paths
