"""The FIRE fundus-registration protocol (Hernandez-Matas et al. 2017), as SuperRetina evaluates it.

Layout: ``Images/<C><NN>_1.jpg`` (reference = fixed) and ``<C><NN>_2.jpg`` (query = moving),
``Ground Truth/control_points_<C><NN>_1_2.txt`` with rows ``x_ref y_ref x_query y_query``;
category ``C`` is S, P or A. Pair P37 is excluded (bad annotation).

A method gives a transform mapping query pixels to reference pixels (3×3 projective, or a 2×6
quadratic: :func:`map_points`), or none: failed.
Per pair, the error is the mean distance between mapped query points and their reference
points, in original pixels. A pair is *failed* without a transform, *inaccurate* when the
largest distance exceeds 50 px or the median 20 px, *acceptable* otherwise. The AUC of a
category is the mean over thresholds t = 1…25 px of the fraction of its pairs with error
< t; mAUC is the mean of the S, P and A AUCs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MeddistillError
from .geometry import map_points

CATEGORIES = ("S", "P", "A")
EXCLUDED = ("P37",)
_THRESHOLDS = np.arange(1, 26)


@dataclass
class FirePair:
    """One FIRE pair: image paths and the control points, ``(N, 2)`` pixel (x, y) each."""

    name: str  # e.g. "S01"
    fixed: Path  # <name>_1, the reference
    moving: Path  # <name>_2, the query
    fixed_points: np.ndarray
    moving_points: np.ndarray

    @property
    def category(self) -> str:
        return self.name[0]


def load_fire(root: str | Path) -> list[FirePair]:
    """The pairs of a FIRE-layout folder, P37 excluded, sorted by name."""
    root = Path(root)
    truth = root / "Ground Truth"
    if not (root / "Images").is_dir() or not truth.is_dir():
        raise MeddistillError(f"{root} is not a FIRE folder (expected 'Images/' and 'Ground Truth/')")
    pairs = []
    for path in sorted(truth.glob("control_points_*_1_2.txt")):
        name = path.name.removeprefix("control_points_").removesuffix("_1_2.txt")
        if name in EXCLUDED or name[:1] not in CATEGORIES:
            continue
        images = [next(iter(sorted((root / "Images").glob(f"{name}_{k}.*"))), None) for k in (1, 2)]
        if None in images:
            raise MeddistillError(f"FIRE pair {name}: missing Images/{name}_1.* or {name}_2.*")
        try:
            points = np.loadtxt(path, ndmin=2, dtype=np.float64)
        except ValueError as err:
            raise MeddistillError(f"cannot read {path}: {err}") from None
        if points.shape[1] != 4 or len(points) == 0:
            raise MeddistillError(f"{path} must have rows of 4 numbers: x_ref y_ref x_query y_query")
        pairs.append(FirePair(name, images[0], images[1], points[:, :2], points[:, 2:]))
    if not pairs:
        raise MeddistillError(f"no FIRE pairs (Ground Truth/control_points_<C><NN>_1_2.txt) in {root}")
    return pairs


@dataclass
class PairOutcome:
    """One pair's result under the protocol."""

    name: str
    status: str  # failed | inaccurate | acceptable
    mean_error: float  # px; inf when failed
    median_error: float
    max_error: float


def score_pair(pair: FirePair, transform: np.ndarray | None) -> PairOutcome:
    if transform is None:
        return PairOutcome(pair.name, "failed", np.inf, np.inf, np.inf)
    distances = np.linalg.norm(map_points(transform, pair.moving_points) - pair.fixed_points, axis=1)
    mean, median, worst = float(distances.mean()), float(np.median(distances)), float(distances.max())
    status = "inaccurate" if worst > 50 or median > 20 else "acceptable"
    return PairOutcome(pair.name, status, mean, median, worst)


def category_auc(errors: list[float]) -> float:
    """Mean over t = 1…25 px of the fraction of pairs with error < t."""
    if not errors:
        return float("nan")
    errors_array = np.asarray(errors)
    return float(np.mean([(errors_array < t).mean() for t in _THRESHOLDS]))


def summarize(outcomes: list[PairOutcome]) -> dict[str, float]:
    """Failed / inaccurate / acceptable rates, AUC per category and mAUC."""
    n = len(outcomes)
    summary = {status: sum(o.status == status for o in outcomes) / n for status in ("failed", "inaccurate", "acceptable")}
    for category in CATEGORIES:
        summary[f"auc_{category}"] = category_auc([o.mean_error for o in outcomes if o.name[0] == category])
    present = [summary[f"auc_{c}"] for c in CATEGORIES if not np.isnan(summary[f"auc_{c}"])]
    summary["mauc"] = float(np.mean(present)) if present else float("nan")
    summary["pairs"] = n
    return summary
