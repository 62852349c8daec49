"""The keypoint-matching task: train the glue matcher on a frozen keypoint network's features.

The pairs are those of the retinal-keypoints task (a crop and its randomly warped copy). The
frozen detector finds keypoints in both; the ground truth follows from the known warp: a
keypoint whose warped position is within ``match_radius`` px of a keypoint of the copy, each
the other's nearest, is a match; one farther than ``unmatched_radius`` px from every keypoint
of the other image belongs in the dustbin; the ambiguous ones in between are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import MeddistillError
from ..models.glue import assignment_loss
from ..tasks import TASKS, Task, TaskData
from .features import GlueMatching, LearnedKeypoints
from .keypoints import read_keypoints
from .task import fire_validation, pair_task_data, transform_points


def match_ground_truth(keypoints_a: Tensor, keypoints_b: Tensor, matrix: Tensor, match_radius: float = 3.0,
                       unmatched_radius: float = 5.0) -> tuple[Tensor, Tensor, Tensor]:
    """True matches ``(K, 2)`` and the unmatched indices of ``a`` and of ``b``, given ``matrix``
    taking ``a`` pixels to ``b`` pixels."""
    if len(keypoints_a) == 0 or len(keypoints_b) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=keypoints_a.device)
        return empty.view(0, 2), torch.arange(len(keypoints_a), device=keypoints_a.device), torch.arange(len(keypoints_b), device=keypoints_a.device)
    distance = torch.cdist(transform_points(matrix, keypoints_a), keypoints_b)  # (N, M)
    nearest_b, nearest_a = distance.min(dim=1), distance.min(dim=0)
    rows = torch.arange(len(keypoints_a), device=distance.device)
    mutual = (nearest_a.indices[nearest_b.indices] == rows) & (nearest_b.values < match_radius)
    matches = torch.stack([rows[mutual], nearest_b.indices[mutual]], dim=1)
    unmatched_a = torch.nonzero(nearest_b.values > unmatched_radius).flatten()
    unmatched_b = torch.nonzero(nearest_a.values > unmatched_radius).flatten()
    return matches, unmatched_a, unmatched_b


@TASKS.register("keypoint-matching")
class MatchingTask(Task):
    """Train a matcher (the ``glue`` network) on the features of a frozen keypoint network.

    Args: ``detector`` (checkpoint of a retinal-keypoints network, required), ``image_size``
    (768), ``nms_radius`` (4 px on the training crops), ``threshold`` (0.01), ``max_keypoints``
    per crop (512), ``match_radius`` (3 px), ``unmatched_radius`` (5 px), ``max_shift`` of the
    training warps per axis (0.3 of the crop side). The matcher encodes keypoint positions, so it
    must see shifts as large as those of the pairs it will match: FIRE's P pairs move by up to
    30 % of the photo, and a matcher trained on the keypoint task's 10 % learns to expect small
    motion and fails them.
    """

    name = "keypoint-matching"

    def __init__(self, detector: str | None = None, image_size: int = 768, nms_radius: int = 4, threshold: float = 0.01,
                 max_keypoints: int = 512, match_radius: float = 3.0, unmatched_radius: float = 5.0,
                 max_shift: float = 0.3) -> None:
        super().__init__()
        if detector is None:
            raise MeddistillError("the keypoint-matching task needs task.args.detector: a trained keypoint checkpoint")
        from ..zoo import load_model

        self.detector_name = detector
        self.detector, meta = load_model(detector, task="retinal-keypoints")
        self.detector.requires_grad_(False)
        # validation registers pairs as `register` will: at the detector's calibrated threshold
        self.detection_threshold = meta.get("detection_threshold", 0.01)
        self.image_size, self.nms_radius, self.threshold, self.max_keypoints = image_size, nms_radius, threshold, max_keypoints
        self.match_radius, self.unmatched_radius, self.max_shift = match_radius, unmatched_radius, max_shift
        self._features: list[tuple[dict, dict]] = []

    def train(self, mode: bool = True) -> "MatchingTask":
        super().train(mode)
        self.detector.eval()  # frozen: dropout stays off while the matcher trains
        return self

    def inputs(self, batch: dict[str, Tensor]) -> list[tuple[dict, dict]]:
        """Keypoints of each crop and of its warped copy, from the frozen detector."""
        b = batch["image"].shape[0]
        with torch.no_grad():
            output = self.detector(torch.cat([batch["image"], batch["warped"]]))
        read = lambda i: read_keypoints(output.heatmap[i, 0], output.descriptors[i], self.nms_radius,  # noqa: E731
                                        self.threshold, 4, self.max_keypoints)
        self._features = [(read(i), read(b + i)) for i in range(b)]
        return self._features

    def losses(self, output: list[Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = []
        for (a, b), log_assignment, matrix in zip(self._features, output, batch["matrix"]):
            matches, unmatched_a, unmatched_b = match_ground_truth(
                a["keypoints"], b["keypoints"], matrix, self.match_radius, self.unmatched_radius)
            if len(matches) + len(unmatched_a) + len(unmatched_b):
                terms.append(assignment_loss(log_assignment, matches, unmatched_a, unmatched_b))
        return {"assignment": torch.stack(terms).mean() if terms else sum(o.sum() for o in output) * 0.0}

    def build_data(self, data: DataConfig, seed: int) -> TaskData:
        task_data = pair_task_data(data, seed, self.image_size, self.max_shift)
        task_data.meta["detector"] = self.detector_name
        return task_data

    def validate(self, model, validation: list, device: torch.device) -> dict[str, float]:
        detector = LearnedKeypoints(self.detector, threshold=self.detection_threshold, device=device)
        return fire_validation(detector, GlueMatching(model, device=device), validation, self.image_size)
