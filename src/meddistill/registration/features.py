"""Keypoints and descriptors (a registry of methods) and descriptor matching."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import MeddistillError
from ..registry import Registry
from .keypoints import read_keypoints


@dataclass
class Features:
    """Keypoints ``(N, 2)`` pixel (x, y) and their descriptors ``(N, D)``, float32; learned
    methods add detection ``scores`` ``(N,)`` and the image ``size`` (H, W), which the glue
    matcher needs."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray | None = None
    size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.keypoints)

    def inside(self, mask: np.ndarray) -> Features:
        """The features whose keypoint's pixel is True in ``mask`` ``(H, W)`` bool."""
        height, width = mask.shape
        columns = np.clip(np.rint(self.keypoints[:, 0]).astype(int), 0, width - 1)
        rows = np.clip(np.rint(self.keypoints[:, 1]).astype(int), 0, height - 1)
        keep = mask[rows, columns]
        scores = None if self.scores is None else self.scores[keep]
        return Features(self.keypoints[keep], self.descriptors[keep], scores, self.size)


KEYPOINT_METHODS: Registry = Registry("keypoint method")


@KEYPOINT_METHODS.register("sift")
class SIFT:
    """OpenCV SIFT (Lowe 2004) on the preprocessed grey image: the hand-crafted baseline."""

    default_matcher = "mnn"

    def __init__(self, max_keypoints: int = 2000) -> None:
        self._sift = cv2.SIFT_create(nfeatures=max_keypoints)

    def __call__(self, grey: np.ndarray) -> Features:
        keypoints, descriptors = self._sift.detectAndCompute(grey, None)
        if not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
        return Features(np.array([k.pt for k in keypoints], np.float32), descriptors.astype(np.float32))


class LearnedKeypoints:
    """Keypoints and descriptors from a keypoint network (SuperPoint, SuperRetina and kin).

    The heatmap is read out by non-maximum suppression (radius ``nms_radius`` px, threshold
    ``threshold``, ``border`` px margin, SuperRetina's inference settings), each peak refined to
    sub-pixel precision unless ``subpixel`` is off; descriptors are sampled from the
    1/8-resolution map at the keypoints.
    """

    default_matcher = "mnn"

    def __init__(
        self,
        network: nn.Module,
        nms_radius: int = 10,
        threshold: float = 0.01,
        border: int = 4,
        max_keypoints: int = 2000,
        subpixel: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.network = network.eval().to(device)
        self.nms_radius, self.threshold, self.border, self.max_keypoints = nms_radius, threshold, border, max_keypoints
        self.subpixel = subpixel
        self.device = device

    @classmethod
    def from_checkpoint(cls, name_or_path: str, **kwargs) -> "LearnedKeypoints":
        from ..zoo import load_model

        network, meta = load_model(name_or_path, task="retinal-keypoints")
        # Channels-last lets oneDNN pick its fast kernels for these narrow convolutions: the CPU
        # student's 768×768 forward pass measured 3× faster (0.42 → 0.13 s, one thread).
        network = network.to(memory_format=torch.channels_last)
        # a threshold chosen on the model's validation pairs (scripts/calibrate_keypoints.py)
        kwargs.setdefault("threshold", meta.get("detection_threshold", 0.01))
        return cls(network, **kwargs)

    @torch.inference_mode()
    def __call__(self, grey: np.ndarray) -> Features:
        height, width = grey.shape
        if height % 32 or width % 32:
            raise MeddistillError(f"keypoint networks need image sides that are multiples of 32, got {width}×{height}")
        image = torch.from_numpy(grey).float().div(255)[None, None].to(self.device)
        output = self.network(image)
        found = read_keypoints(output.heatmap[0, 0], output.descriptors[0], self.nms_radius, self.threshold,
                               self.border, self.max_keypoints, self.subpixel)
        as_numpy = lambda t: t.cpu().numpy().astype(np.float32)  # noqa: E731
        return Features(as_numpy(found["keypoints"]), as_numpy(found["descriptors"]), as_numpy(found["scores"]), (height, width))


def _shipped_keypoints(name: str):
    """A registry factory for a learned method: its shipped weights, or a checkpoint path."""

    def build(weights: str | None = None, **kwargs) -> LearnedKeypoints:
        try:
            return LearnedKeypoints.from_checkpoint(weights or name, **kwargs)
        except MeddistillError as err:
            if weights is None:
                raise MeddistillError(f"no weights for method '{name}' are shipped yet; pass a checkpoint with --weights ({err})") from None
            raise

    return build


for _name in ("superpoint", "superretina", "superretina-lk", "superretina-swin", "retina-student"):
    KEYPOINT_METHODS.register(_name)(_shipped_keypoints(_name))


MATCHERS: Registry = Registry("matcher")


@MATCHERS.register("mnn")
class MutualNearest:
    """Mutual nearest neighbours of the descriptors with Lowe's ratio test (``ratio`` 0.9)."""

    def __init__(self, ratio: float = 0.9) -> None:
        self.ratio = ratio

    def __call__(self, a: Features, b: Features) -> np.ndarray:
        return match_mutual_nearest(a.descriptors, b.descriptors, self.ratio)


class GlueMatching:
    """The attentional graph matcher (``models/glue.py``) on a learned method's features;
    matches are mutual best assignments above ``threshold`` (0.2)."""

    def __init__(self, network: nn.Module, threshold: float = 0.2, device: torch.device | str = "cpu") -> None:
        self.network, self.threshold, self.device = network.eval().to(device), threshold, device

    @classmethod
    def from_checkpoint(cls, weights: str | None = None, **kwargs) -> "GlueMatching":
        from ..zoo import load_model

        if weights is None:
            raise MeddistillError("the glue matcher needs weights: a checkpoint, or a shipped glue-<method>")
        return cls(load_model(weights, task="keypoint-matching")[0], **kwargs)

    @torch.inference_mode()
    def __call__(self, a: Features, b: Features) -> np.ndarray:
        from ..models.glue import mutual_matches

        if a.scores is None or b.scores is None:
            raise MeddistillError("the glue matcher needs a learned keypoint method (scores and 256-d descriptors), not SIFT")
        as_dict = lambda f: {"keypoints": torch.from_numpy(f.keypoints).to(self.device),  # noqa: E731
                             "scores": torch.from_numpy(f.scores).to(self.device),
                             "descriptors": torch.from_numpy(f.descriptors).to(self.device), "size": f.size}
        if len(a) == 0 or len(b) == 0:
            return np.zeros((0, 2), int)
        return mutual_matches(self.network.match(as_dict(a), as_dict(b)), self.threshold)


MATCHERS.register("glue")(GlueMatching.from_checkpoint)


def build_matcher(name: str, method: str | None = None, weights: str | None = None) -> MutualNearest | GlueMatching:
    """The matcher ``name``. The glue matcher loads ``weights``, or else the one shipped for the
    keypoint method ``method`` (``glue-<method>``), since it learns one detector's keypoints and
    descriptors; ``method`` None stands for a detector of the user's own."""
    if weights is not None and name != "glue":
        raise MeddistillError("--matcher-weights is for the glue matcher")
    if name == "glue" and weights is None:
        from ..zoo import shipped_models

        if method is None or f"glue-{method}" not in shipped_models():
            fits = f"method '{method}'" if method else "this detector"
            raise MeddistillError(f"no shipped glue matcher fits {fits}; pass a checkpoint with --matcher-weights")
        weights = f"glue-{method}"
    return MATCHERS.get(name)(**({"weights": weights} if weights else {}))


def _descriptor_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L2 distances ``(Na, Nb)`` between descriptor sets ``(Na, D)`` and ``(Nb, D)``."""
    return np.sqrt(np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T, 0.0))


def _mutual_minima(distances: np.ndarray) -> np.ndarray:
    """Index pairs ``(M, 2)`` (row, column) whose entry is the finite minimum of its row and column."""
    forward, backward = distances.argmin(1), distances.argmin(0)
    pairs = [(i, j) for i, j in enumerate(forward) if backward[j] == i and np.isfinite(distances[i, j])]
    return np.array(pairs, int).reshape(-1, 2)


def match_mutual_nearest(a: np.ndarray, b: np.ndarray, ratio: float = 0.9) -> np.ndarray:
    """Index pairs ``(M, 2)`` of descriptors that are each other's nearest neighbour (L2) and pass
    Lowe's ratio test (nearest < ``ratio`` × second nearest, both ways where a second exists)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), int)
    distances = _descriptor_distances(a, b)
    pairs = _mutual_minima(distances)
    if len(b) > 1 and len(pairs):
        second = np.partition(distances[pairs[:, 0]], 1, axis=1)[:, 1]
        pairs = pairs[distances[pairs[:, 0], pairs[:, 1]] < ratio * second]
    return pairs


def match_guided(fixed: Features, moving: Features, transform: np.ndarray, radius: float = 12.0) -> np.ndarray:
    """Guided matching (Hartley & Zisserman, 4.8): index pairs ``(M, 2)`` (fixed, moving) that are
    mutual nearest descriptors among the keypoints that ``transform`` (3×3, moving → fixed
    pixels) brings within ``radius`` px of each other.

    The spatial gate replaces the ratio test, which rejects correct matches whenever a
    vessel's repeated texture gives a close second: a first, robust estimate yields many more
    correspondences, spread over the whole overlap, for the final fit.
    """
    if len(fixed) == 0 or len(moving) == 0:
        return np.zeros((0, 2), int)
    projected = cv2.perspectiveTransform(moving.keypoints[None].astype(np.float64), transform)[0]
    apart = np.linalg.norm(fixed.keypoints[:, None].astype(np.float64) - projected[None], axis=2)  # (Nf, Nm)
    distances = np.where(apart <= radius, _descriptor_distances(fixed.descriptors, moving.descriptors), np.inf)
    return _mutual_minima(distances)
