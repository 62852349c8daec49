"""Inference on whole images: one pass when it fits, MONAI sliding windows when it is big."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from .data import VesselSample, compute_fov, normalize_image, rescale_to_fov_diameter, write_png
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
    fov_diameter_px: float | None = None,
    clahe: bool = False,
    tile: int = 1024,
    overlap: float = 0.25,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Vessel probability ``(H, W)`` float32 in [0, 1] for an RGB uint8 image ``(H, W, 3)``.

    With ``fov_diameter_px`` (the training images' field-of-view diameter, in pixels) the
    image is resized so that its field of view has that diameter, segmented, and the map
    resized back: vessels then have the widths the network learnt, whatever the camera's
    resolution. Images larger than ``tile`` pixels on a side are processed in overlapping
    tiles blended with Gaussian weights, so memory stays bounded for any image size.
    Pixels outside the field of view (computed when ``fov`` is None) get probability 0.
    ``clahe`` must match the model's training (the checkpoint's ``clahe`` metadata).
    """
    if fov is None:
        fov = compute_fov(image)
    height, width = fov.shape
    net_image, net_fov, _ = rescale_to_fov_diameter(image, fov, fov_diameter_px)
    x = torch.from_numpy(normalize_image(net_image, net_fov, clahe)).unsqueeze(0).to(device)
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
    fov_diameter_px: float | None = None,
    clahe: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` pooled over whole images, inside each image's field of view.

    ``fov_diameter_px`` rescales each image to that field-of-view diameter first (see
    :func:`predict_probability`, as ``clahe``); metrics are at the original size.
    """
    accumulator = MetricAccumulator()
    for sample in samples:
        prob = predict_probability(model, sample.image, sample.fov, fov_diameter_px=fov_diameter_px, clahe=clahe, device=device)
        accumulator.update(prob, sample.vessels, sample.fov)
    return accumulator.compute()


def segment_to_files(
    model: nn.Module,
    image: np.ndarray,
    stem: str,
    out_dir: Path,
    *,
    threshold: float = 0.5,
    fov_diameter_px: float | None = None,
    clahe: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, Path]:
    """Write ``<stem>_mask.png`` (0/255), ``<stem>_prob.png`` (0–255) and ``<stem>_overlay.png``."""
    from .report import overlay  # imported here: it pulls in matplotlib, which inference alone never needs

    prob = predict_probability(model, image, fov_diameter_px=fov_diameter_px, clahe=clahe, device=device)
    mask = prob >= threshold
    paths = {kind: out_dir / f"{stem}_{kind}.png" for kind in ("mask", "prob", "overlay")}
    write_png(paths["mask"], (mask * 255).astype(np.uint8))
    write_png(paths["prob"], np.round(prob * 255).astype(np.uint8))
    write_png(paths["overlay"], overlay(image, mask))
    return paths
