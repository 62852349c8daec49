"""Inference on whole images: one pass when it fits, MONAI sliding windows when it is big."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from .data import compute_fov, normalize_image
from .tasks import SegmentationTask


@torch.inference_mode()
def predict_probability(
    model: nn.Module,
    image: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    tile: int = 1024,
    overlap: float = 0.25,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Vessel probability ``(H, W)`` float32 in [0, 1] for an RGB uint8 image ``(H, W, 3)``.

    Images larger than ``tile`` pixels on a side are processed in overlapping tiles
    blended with Gaussian weights, so memory stays bounded for any image size.
    Pixels outside the field of view (computed when ``fov`` is None) get probability 0.
    """
    if fov is None:
        fov = compute_fov(image)
    x = torch.from_numpy(normalize_image(image, fov)).unsqueeze(0).to(device)
    model = model.eval().to(device)
    if max(x.shape[2:]) <= tile:
        logits = model(x)
    else:
        logits = sliding_window_inference(x, (tile, tile), 1, model, overlap=overlap, mode="gaussian")
    prob = SegmentationTask.probabilities(logits)[0].cpu().numpy()
    return np.where(fov, prob, 0.0).astype(np.float32)


def segment_to_files(
    model: nn.Module,
    image: np.ndarray,
    stem: str,
    out_dir: Path,
    *,
    threshold: float = 0.5,
    device: torch.device | str = "cpu",
) -> dict[str, Path]:
    """Write ``<stem>_mask.png`` (0/255), ``<stem>_prob.png`` (0–255) and ``<stem>_overlay.png``."""
    from .data import write_png
    from .report import overlay

    prob = predict_probability(model, image, device=device)
    mask = prob >= threshold
    paths = {kind: out_dir / f"{stem}_{kind}.png" for kind in ("mask", "prob", "overlay")}
    write_png(paths["mask"], (mask * 255).astype(np.uint8))
    write_png(paths["prob"], np.round(prob * 255).astype(np.uint8))
    write_png(paths["overlay"], overlay(image, mask))
    return paths
