"""The retinal keypoint task: SuperRetina-style training pairs, losses and FIRE-style validation.

Training items are crops of preprocessed fundus photos (at the registration scale, 768 px by
default) with vessel-junction labels from the manual vessel masks, each paired with a copy
warped by a known random affine transform and given another look. Networks see the crop and
its warped copy stacked in one batch. Validation registers synthetic S and P pairs of the
held-out photos and reports the FIRE protocol's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import MeddistillError
from ..tasks import TASKS, Task, TaskData
from .features import LearnedKeypoints, MutualNearest
from .fire import score_pair, summarize
from .keypoints import heatmap_peaks, keypoint_map, sample_descriptors, smooth_labels, vessel_junctions
from .losses import heatmap_dice_loss, superpoint_descriptor_loss, superpoint_detector_loss, triplet_descriptor_loss
from .pipeline import register_images
from .preprocess import preprocess_fundus
from .synthetic import synthetic_pair

# The keypoint task's warps shift a crop by up to this fraction of its side, per axis.
MAX_SHIFT = 0.1


def random_affine(size: int, rng: np.random.Generator, max_angle: float = 20.0, max_log_scale: float = 0.15,
                  max_shear: float = 0.1, max_shift: float = MAX_SHIFT) -> np.ndarray:
    """3×3 affine about the centre of a ``size``-px square: rotation, scale, shear, shift."""
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle))
    scale = np.exp(rng.uniform(-max_log_scale, max_log_scale))
    shear = rng.uniform(-max_shear, max_shear)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array([[1, shear], [0, 1]])
    centre = np.array([size / 2, size / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre - linear @ centre + rng.uniform(-max_shift, max_shift, 2) * size
    return matrix


def change_look(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another visit's look for a uint8 grey image: gamma, contrast, blur and noise."""
    x = (grey.astype(np.float32) / 255) ** np.exp(rng.uniform(-0.4, 0.4))
    x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean()
    x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.1, 1.2))
    x = x + rng.normal(0, rng.uniform(0, 0.03), x.shape)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def random_homography(size: int, rng: np.random.Generator, max_perspective: float = 0.1) -> np.ndarray:
    """:func:`random_affine` with a mild perspective: corners move by up to ``max_perspective``
    of the side, as in SuperPoint's homographic adaptation."""
    corners = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
    moved = corners + rng.uniform(-max_perspective, max_perspective, (4, 2)).astype(np.float32) * size
    return random_affine(size, rng) @ cv2.getPerspectiveTransform(corners, moved)


@torch.inference_mode()
def homographic_adaptation(network: torch.nn.Module, grey: np.ndarray, warps: int = 100, seed: int = 0) -> np.ndarray:
    """SuperPoint's homographic adaptation: the mean heatmap ``(H, W)`` of a square uint8 image over
    ``warps`` random homographies (the identity included), each heatmap warped back and averaged
    over the warps that see the pixel."""
    size = grey.shape[0]
    rng = np.random.default_rng(seed)
    total, seen = np.zeros(grey.shape, np.float32), np.zeros(grey.shape, np.float32)
    device = next(network.parameters()).device
    network.eval()
    for k in range(warps):
        matrix = np.eye(3) if k == 0 else random_homography(size, rng)
        warped = cv2.warpPerspective(grey, matrix, (size, size), flags=cv2.INTER_LINEAR)
        heatmap = network(torch.from_numpy(warped).float().div(255)[None, None].to(device)).heatmap[0, 0].cpu().numpy()
        inverse = np.linalg.inv(matrix)
        total += cv2.warpPerspective(heatmap, inverse, (size, size), flags=cv2.INTER_LINEAR)
        seen += cv2.warpPerspective(np.ones_like(heatmap), inverse, (size, size), flags=cv2.INTER_NEAREST)
    return total / np.maximum(seen, 1)


class KeypointPairDataset(Dataset):
    """Crops ``(1, P, P)`` in [0, 1] of preprocessed photos with their junction labels, each with a
    randomly warped, re-looked copy. Items: ``image``, ``warped``, ``label`` (binary keypoint
    map of ``image``), ``matrix`` ``(3, 3)`` taking ``image`` pixels to ``warped`` pixels, and
    ``photo``, ``origin`` (x0, y0) and ``epoch``, which place the crop for keypoint expansion.
    ``max_shift`` bounds the warp's shift along each axis, as a fraction of the crop side.
    """

    def __init__(self, samples: list, image_size: int = 768, patch_size: int = 256, patches_per_image: int = 8,
                 seed: int = 0, max_shift: float = MAX_SHIFT) -> None:
        if patch_size > image_size or patch_size % 32:
            raise ValueError(f"patch_size must be a multiple of 32 and at most image_size ({image_size}), got {patch_size}")
        if not 0 <= max_shift < 1:
            raise MeddistillError(f"max_shift must be in [0, 1) of the crop side, got {max_shift}")
        self.images, self.labels, self.fovs = [], [], []
        for sample in samples:
            height, width = sample.vessels.shape
            scale = np.array([image_size / width, image_size / height], np.float32)
            self.images.append(preprocess_fundus(sample.image, image_size))
            self.labels.append(vessel_junctions(sample.vessels) * scale)
            self.fovs.append(cv2.resize(sample.fov.astype(np.uint8), (image_size, image_size), interpolation=cv2.INTER_NEAREST) > 0)
        self.patch_size, self.patches_per_image, self.seed, self.epoch = patch_size, patches_per_image, seed, 0
        self.max_shift = max_shift

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def relabel(self, network: torch.nn.Module, warps: int, threshold: float = 0.015, radius: int = 4) -> None:
        """Replace the junction labels by the peaks of each photo's homographic adaptation."""
        for k, image in enumerate(self.images):
            heatmap = torch.from_numpy(homographic_adaptation(network, image, warps, seed=k))
            self.labels[k] = heatmap_peaks(heatmap, radius, threshold, border=4)[0].numpy()

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        k, p = index // self.patches_per_image, self.patch_size
        image, fov = self.images[k], self.fovs[k]
        ys, xs = np.nonzero(fov[p // 2: -(p // 2) or None, p // 2: -(p // 2) or None])  # centres inside the FOV
        pick = rng.integers(len(xs)) if len(xs) else None
        x0, y0 = (int(xs[pick]), int(ys[pick])) if pick is not None else (0, 0)
        crop = image[y0:y0 + p, x0:x0 + p]
        matrix = random_affine(p, rng, max_shift=self.max_shift)
        to_crop = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        warped = cv2.warpAffine(image, (matrix @ to_crop)[:2], (p, p), flags=cv2.INTER_LINEAR, borderValue=0)
        as_tensor = lambda a: torch.from_numpy(a.astype(np.float32) / 255)[None]  # noqa: E731
        return {
            "image": as_tensor(change_look(crop, rng)),
            "warped": as_tensor(change_look(warped, rng)),
            "label": torch.from_numpy(keypoint_map(self.labels[k] - np.array([x0, y0], np.float32), (p, p)))[None],
            "matrix": torch.from_numpy(matrix.astype(np.float32)),
            "photo": torch.tensor(k),
            "origin": torch.tensor([x0, y0]),
            "epoch": torch.tensor(self.epoch),
        }


def warp_to_reference(warped: Tensor, matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Resample maps of the warped view ``(B, C, H, W)`` onto the reference grid.

    ``matrix`` ``(B, 3, 3)`` takes reference pixels to warped pixels. Returns the resampled maps
    and the mask ``(B, 1, H, W)`` of reference pixels that land inside the warped view.
    """
    b, _, h, w = warped.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=warped.device), torch.arange(w, device=warped.device), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3).to(matrix)  # (HW, 3)
    mapped = points @ matrix.transpose(1, 2)  # (B, HW, 3)
    xy = mapped[..., :2] / mapped[..., 2:]
    grid = torch.stack([2 * xy[..., 0] / (w - 1) - 1, 2 * xy[..., 1] / (h - 1) - 1], dim=-1).view(b, h, w, 2)
    inside = (grid.abs() <= 1).all(dim=-1, keepdim=True).permute(0, 3, 1, 2).to(warped.dtype)
    return F.grid_sample(warped, grid.to(warped.dtype), mode="bilinear", align_corners=True), inside


def transform_points(matrix: Tensor, points: Tensor) -> Tensor:
    """``(N, 2)`` (x, y) points mapped by a 3×3 matrix."""
    mapped = torch.cat([points, torch.ones_like(points[:, :1])], dim=1) @ matrix.t()
    return mapped[:, :2] / mapped[:, 2:]


@dataclass
class ValidationPair:
    """A synthetic pair of a held-out photo: RGB images and control points ``(N, 2)``."""

    name: str
    fixed: np.ndarray
    moving: np.ndarray
    fixed_points: np.ndarray
    moving_points: np.ndarray


@TASKS.register("retinal-keypoints")
class KeypointTask(Task):
    """SuperRetina's training objective for a keypoint network on :class:`KeypointPairDataset`.

    Losses: ``detector`` (Dice to the Gaussian-smoothed labels), ``geometric`` (Dice between
    the heatmap and the warped copy's heatmap resampled back, where both views see) and
    ``descriptor`` (triplet loss, margin ``margin``, between descriptors at the labelled
    keypoints and at their warped positions).

    Progressive keypoint expansion (PKE) grows the labels beyond the vessel junctions: a
    heatmap peak (NMS radius ``nms_radius`` px, above ``expansion_threshold``) is verified when
    the warped copy's heatmap is ≥ 0.5 where it lands and its descriptor's nearest neighbour
    among the landed positions is its own, with ratio < ``expansion_ratio``. A verified point
    is written into a value map of its photo (+``expansion_value``, −1 per epoch) and is a label
    while its value is positive, so points the network keeps finding stay labels and the rest
    fade. The value maps live in this process (each DDP rank keeps its own) and are not part of
    the checkpoint: a resumed run grows them anew from the junction labels.

    ``objective: superpoint`` trains SuperPoint's way instead: cross-entropy over the 65
    classes of each 8×8 cell for both views, plus ``descriptor_weight`` (10⁻⁴) × the dense
    descriptor hinge loss. With ``adaptation_from`` (a keypoint checkpoint trained on the
    junctions) the labels are the peaks above ``adaptation_threshold`` (SuperPoint's 0.015) of
    homographic adaptation over ``adaptation_warps`` random homographies of each training
    photo, SuperPoint's self-supervision.

    Validation detects keypoints above ``detection_threshold`` (SuperRetina's 0.01). A
    SuperPoint heatmap spreads each cell's probability over its 64 pixels, so a briefly
    trained one peaks far lower than a SuperRetina heatmap and needs a lower threshold for both.

    Args: ``image_size`` (the registration scale, 768), ``margin`` (0.8), ``nms_radius`` (10),
    ``expansion_threshold`` (0.1), ``expansion_ratio`` (0.7), ``expansion_value`` (5),
    ``max_keypoints`` per crop for the descriptor term (256), ``detection_threshold`` (0.01);
    ``expansion: false`` disables PKE.
    """

    name = "retinal-keypoints"

    def __init__(self, image_size: int = 768, objective: str = "superretina", margin: float = 0.8,
                 nms_radius: int = 10, expansion: bool = True, expansion_threshold: float = 0.1,
                 expansion_ratio: float = 0.7, expansion_value: int = 5, max_keypoints: int = 256,
                 descriptor_weight: float = 1e-4, adaptation_from: str | None = None, adaptation_warps: int = 100,
                 adaptation_threshold: float = 0.015, detection_threshold: float = 0.01) -> None:
        super().__init__()
        if objective not in ("superretina", "superpoint"):
            raise MeddistillError(f"unknown keypoint objective '{objective}'; choose superretina or superpoint")
        self.objective, self.descriptor_weight = objective, descriptor_weight
        self.adaptation_from, self.adaptation_warps = adaptation_from, adaptation_warps
        self.adaptation_threshold, self.detection_threshold = adaptation_threshold, detection_threshold
        self.image_size, self.margin, self.nms_radius, self.max_keypoints = image_size, margin, nms_radius, max_keypoints
        self.expansion, self.expansion_threshold = expansion, expansion_threshold
        self.expansion_ratio, self.expansion_value = expansion_ratio, expansion_value
        self.value_maps: dict[int, Tensor] = {}  # photo index → (image_size, image_size) int16
        self._epoch = 0

    def inputs(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.cat([batch["image"], batch["warped"]], dim=0)

    def losses(self, output, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.objective == "superpoint":
            return self.superpoint_losses(output, batch)
        b = batch["image"].shape[0]
        heatmap, warped_heatmap = output.heatmap[:b], output.heatmap[b:]
        descriptors, warped_descriptors = output.descriptors[:b], output.descriptors[b:]
        labels = batch["label"]
        if self.expansion:
            labels = torch.maximum(labels, self.expand(heatmap.detach(), warped_heatmap.detach(), descriptors.detach(),
                                                       warped_descriptors.detach(), batch))
        back, inside = warp_to_reference(warped_heatmap, batch["matrix"])
        return {
            "detector": heatmap_dice_loss(heatmap, smooth_labels(labels)),
            "geometric": heatmap_dice_loss(heatmap, back, inside),
            "descriptor": self.descriptor_loss(labels, descriptors, warped_descriptors, batch["matrix"]),
        }

    def superpoint_losses(self, output, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if output.cell_logits is None:
            raise MeddistillError("objective 'superpoint' needs a network with a 65-channel cell detector (superpoint)")
        b, (h, w) = batch["image"].shape[0], batch["image"].shape[2:]
        warped_labels = torch.zeros_like(batch["label"])
        for i in range(b):
            ys, xs = torch.nonzero(batch["label"][i, 0] > 0, as_tuple=True)
            moved = transform_points(batch["matrix"][i], torch.stack([xs, ys], dim=1).float()).round().long()
            keep = (moved[:, 0] >= 0) & (moved[:, 0] < w) & (moved[:, 1] >= 0) & (moved[:, 1] < h)
            warped_labels[i, 0, moved[keep, 1], moved[keep, 0]] = 1.0
        ys, xs = torch.meshgrid(torch.arange(h // 8), torch.arange(w // 8), indexing="ij")
        centres = torch.stack([xs, ys], dim=-1).reshape(-1, 2).float().to(batch["matrix"]) * 8 + 3.5
        landed = torch.stack([transform_points(m, centres) for m in batch["matrix"]])  # (B, hw, 2)
        detector = (superpoint_detector_loss(output.cell_logits[:b], batch["label"])
                    + superpoint_detector_loss(output.cell_logits[b:], warped_labels))
        descriptor = superpoint_descriptor_loss(output.descriptors[:b], output.descriptors[b:], landed)
        return {"detector": detector, "descriptor": self.descriptor_weight * descriptor}

    def expand(self, heatmap: Tensor, warped_heatmap: Tensor, descriptors: Tensor, warped_descriptors: Tensor,
               batch: dict[str, Tensor]) -> Tensor:
        """PKE: update the value maps with verified peaks; the expanded labels ``(B, 1, P, P)``."""
        epoch = int(batch["epoch"][0])
        if epoch != self._epoch:  # decay once per epoch
            for photo, values in self.value_maps.items():
                self.value_maps[photo] = (values - (epoch - self._epoch)).clamp_min(0)
            self._epoch = epoch
        size = tuple(heatmap.shape[2:])
        expanded = torch.zeros_like(heatmap)
        for i in range(heatmap.shape[0]):
            photo, (x0, y0) = int(batch["photo"][i]), batch["origin"][i].tolist()
            values = self.value_maps.setdefault(photo, torch.zeros(self.image_size, self.image_size, dtype=torch.int16))
            points = self._verified(heatmap[i, 0], warped_heatmap[i, 0], descriptors[i], warped_descriptors[i],
                                    batch["matrix"][i], size)
            xy = points.round().long().cpu() + torch.tensor([x0, y0])
            values[xy[:, 1], xy[:, 0]] = (values[xy[:, 1], xy[:, 0]] + self.expansion_value).clamp_max(4 * self.expansion_value)
            crop = values[y0:y0 + size[0], x0:x0 + size[1]]
            expanded[i, 0, : crop.shape[0], : crop.shape[1]] = (crop > 0).to(expanded)
        return expanded

    def _verified(self, heatmap: Tensor, warped_heatmap: Tensor, descriptors: Tensor, warped_descriptors: Tensor,
                  matrix: Tensor, size: tuple[int, int]) -> Tensor:
        points, _ = heatmap_peaks(heatmap, self.nms_radius, self.expansion_threshold, 4)
        moved = transform_points(matrix, points)
        inside = ((moved >= 0) & (moved <= torch.tensor([size[1] - 1, size[0] - 1], device=moved.device))).all(dim=1)
        points, moved = points[inside], moved[inside]
        if len(points) < 2:
            return points[:0]
        landed = warped_heatmap[moved[:, 1].round().long(), moved[:, 0].round().long()] >= 0.5
        distance = torch.cdist(sample_descriptors(descriptors, points, size), sample_descriptors(warped_descriptors, moved, size))
        nearest, order = distance.topk(2, dim=1, largest=False)
        own = order[:, 0] == torch.arange(len(points), device=order.device)
        return points[landed & own & (nearest[:, 0] < self.expansion_ratio * nearest[:, 1])]

    def descriptor_loss(self, labels: Tensor, descriptors: Tensor, warped_descriptors: Tensor, matrix: Tensor) -> Tensor:
        size = tuple(labels.shape[2:])
        limit = torch.tensor([size[1] - 5, size[0] - 5], device=labels.device)
        terms = []
        for i in range(labels.shape[0]):
            ys, xs = torch.nonzero(labels[i, 0] > 0, as_tuple=True)
            points = torch.stack([xs, ys], dim=1).float()[: self.max_keypoints]
            moved = transform_points(matrix[i], points)
            keep = ((moved >= 4) & (moved <= limit)).all(dim=1)
            if keep.sum() < 2:
                continue
            anchor = sample_descriptors(descriptors[i], points[keep], size)
            positive = sample_descriptors(warped_descriptors[i], moved[keep], size)
            terms.append(triplet_descriptor_loss(anchor, positive, self.margin, points[keep]))
        return torch.stack(terms).mean() if terms else descriptors.sum() * 0.0

    def build_data(self, data: DataConfig, seed: int) -> TaskData:
        task_data = pair_task_data(data, seed, self.image_size)
        if self.adaptation_from is not None:
            from ..zoo import load_model

            network = load_model(self.adaptation_from, task=self.name)[0]
            task_data.dataset.relabel(network, self.adaptation_warps, self.adaptation_threshold)
        return task_data

    def validate(self, model, validation: list, device: torch.device) -> dict[str, float]:
        detector = LearnedKeypoints(model, threshold=self.detection_threshold, device=device)
        return fire_validation(detector, MutualNearest(), validation, self.image_size)


def pair_task_data(data: DataConfig, seed: int, image_size: int, max_shift: float = MAX_SHIFT) -> TaskData:
    """Training pairs from the training photos (warps shifted by up to ``max_shift`` of the crop
    side); synthetic S and P pairs of the held-out ones."""
    from ..builders import build_samples

    train, held_out = build_samples(data, seed)
    dataset = KeypointPairDataset(train, image_size, data.patch_size, data.patches_per_image, seed, max_shift)
    rng = np.random.default_rng(seed)
    validation = []
    for k, sample in enumerate(held_out):
        for category in ("S", "P"):
            query, points = synthetic_pair(sample.image, category, rng)
            validation.append(ValidationPair(f"{category}{k + 1:02d}", sample.image, query, points[:, :2], points[:, 2:]))
    return TaskData(dataset, validation, {"image_size": image_size})


def fire_validation(detector, matcher, pairs: list[ValidationPair], image_size: int) -> dict[str, float]:
    """Register each pair (homography) and score it by the FIRE protocol."""
    outcomes = [
        score_pair(pair, register_images(pair.fixed, pair.moving, detector, matcher, "homography", image_size).transform)
        for pair in pairs
    ]
    summary = summarize(outcomes)
    return {key: float(summary[key]) for key in ("mauc", "auc_S", "auc_P", "failed", "inaccurate")}
