"""Choose a keypoint network's detection threshold on its own validation pairs.

    python scripts/calibrate_keypoints.py runs/retina-student-scratch
    python scripts/calibrate_keypoints.py runs/retina-superpoint-q --checkpoint last --thresholds 0.001 0.002 0.004

Registers the run's validation pairs (synthetic S and P pairs of its held-out training
photos, as in training) at each threshold, prints the FIRE numbers, and records the best
threshold (highest mAUC, ties to the higher threshold) as ``detection_threshold`` in the
run's ``best.json``, which ``--method NAME`` then uses. SuperRetina's 0.01 suits a sharp,
well-trained heatmap; a network trained briefly has broad, weak peaks that 0.01 lets through.
A SuperPoint heatmap shares each 8×8 cell's probability among its 64 pixels, so its peaks
are lower still and it needs lower thresholds (``--thresholds``). ``--checkpoint`` calibrates
another checkpoint of the run (``last``) and records the threshold in its JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from meddistill.config import config_from_dict
from meddistill.registration import LearnedKeypoints, MutualNearest
from meddistill.registration.task import fire_validation
from meddistill.tasks import build_task
from meddistill.zoo import load_model

THRESHOLDS = (0.01, 0.03, 0.1, 0.3)


def main(run: Path, checkpoint: str = "best", thresholds: tuple[float, ...] = THRESHOLDS) -> None:
    torch.set_num_threads(1)
    meta_path = run / f"{checkpoint}.json"
    meta = json.loads(meta_path.read_text())
    config = config_from_dict(meta["config"])
    task = build_task(config)
    pairs = task.build_data(config.data, config.seed).validation
    network, _ = load_model(run / checkpoint, task="retinal-keypoints")
    scores = {}
    for threshold in thresholds:
        scores[threshold] = fire_validation(LearnedKeypoints(network, threshold=threshold), MutualNearest(), pairs, task.image_size)
        print(f"threshold {threshold}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores[threshold].items()), flush=True)
    best = max(thresholds, key=lambda t: (scores[t]["mauc"], t))
    meta["detection_threshold"] = best
    meta["detection_threshold_validation"] = {str(t): s for t, s in scores.items()}
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"detection_threshold {best} recorded in {meta_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="training run folder")
    parser.add_argument("--checkpoint", default="best", help="checkpoint name in the run folder (best or last)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS, help="detection thresholds to try")
    args = parser.parse_args()
    main(args.run, args.checkpoint, tuple(args.thresholds))
