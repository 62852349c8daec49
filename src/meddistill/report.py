"""Figures for reports: segmentation overlays and training curves."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def overlay(image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.6) -> np.ndarray:
    """Colour overlay ``(H, W, 3)`` uint8 of a binary ``mask`` on an RGB ``image``.

    Without ``truth`` vessels are yellow; with it, true positives are green, false
    positives red and false negatives blue.
    """
    out = image.astype(np.float32).copy()
    layers = (
        [(mask, (255, 255, 0))]
        if truth is None
        else [(mask & truth, (0, 220, 0)), (mask & ~truth, (255, 0, 0)), (~mask & truth, (0, 90, 255))]
    )
    for where, colour in layers:
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(colour, np.float32)
    return out.clip(0, 255).astype(np.uint8)


def folder_name(label: str) -> str:
    """``gkd + intra`` → ``gkd-intra``, ``runs/x/best`` → ``runs-x-best``: a label made safe
    for a folder name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")


def read_metrics_csv(path: str | Path) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    with Path(path).open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                columns.setdefault(key, []).append(float(value) if value not in ("", None) else float("nan"))
    return columns


def plot_training_curves(runs: dict[str, Path], out_path: str | Path, metric: str = "val_f1") -> None:
    """Training loss and one validation metric per epoch for several runs, side by side."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for label, run_dir in runs.items():
        columns = read_metrics_csv(Path(run_dir) / "metrics.csv")
        ax_loss.plot(columns["epoch"], columns["train_loss"], label=label)
        if metric in columns:
            ax_metric.plot(columns["epoch"], columns[metric], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss (sum of terms)", title="training loss")
    name = metric.removeprefix("val_")
    ax_metric.set(xlabel="epoch", ylabel=name, title=f"validation {name}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_panels(panels: dict[str, np.ndarray], out_path: str | Path, columns: int = 4) -> None:
    """A grid of titled images (RGB or grayscale)."""
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, panel) in zip(axes.flat, panels.items()):
        ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
