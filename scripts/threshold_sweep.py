"""Is 0.5 the right threshold? F1, Se and Sp of a segmentation model at several thresholds, pooled
over the held-out images of a config's split and, for comparison, over its training images.

    python scripts/threshold_sweep.py drive-teacher configs/drive_teacher_clahe.yaml
    python scripts/threshold_sweep.py drive-teacher configs/drive_teacher_clahe.yaml --flips   # test-time flips

Choose a threshold on the training images only: one picked on the held-out images is tuned
to the set that scores it.
"""

import argparse

import numpy as np
import torch

from meddistill.builders import build_samples
from meddistill.config import load_config
from meddistill.data import Preparation, VesselSample
from meddistill.inference import predict_probability
from meddistill.metrics import segmentation_metrics
from meddistill.zoo import load_model


FLIPS = [(), (0,), (1,), (0, 1)]  # none, vertical, horizontal, both


def probability(net: torch.nn.Module, sample: VesselSample, preparation: Preparation, flips: bool) -> np.ndarray:
    """The model's vessel probability, or its mean over the four flips of the photo."""
    views = []
    for axes in FLIPS if flips else FLIPS[:1]:
        image, fov = (np.flip(a, axes).copy() for a in (sample.image, sample.fov))
        views.append(np.flip(predict_probability(net, image, fov, preparation=preparation), axes))
    return np.mean(views, axis=0)


def pooled(net: torch.nn.Module, samples: list[VesselSample], preparation: Preparation, flips: bool) -> tuple:
    """Probabilities, truth and FOV of every image, flattened and concatenated."""
    probs = [probability(net, s, preparation, flips) for s in samples]
    return tuple(np.concatenate([a.ravel() for a in arrays]) for arrays in
                 (probs, [s.vessels for s in samples], [s.fov for s in samples]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint or shipped name")
    parser.add_argument("config", help="experiment config whose data split to use")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65])
    parser.add_argument("--flips", action="store_true", help="average the predictions of the four flips")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, meta = load_model(args.model)
    preparation = Preparation.from_meta(meta)
    config = load_config(args.config)
    train, held_out = build_samples(config.data, config.seed)
    sets = {name: pooled(net, samples, preparation, args.flips) for name, samples in
            (("held-out", held_out), ("training", train))}
    print("| threshold | " + " | ".join(f"{name} {m}" for name in sets for m in ("F1", "Se", "Sp")) + " |")
    print("|---" * (1 + 3 * len(sets)) + "|")
    for threshold in args.thresholds:
        cells = []
        for prob, truth, fov in sets.values():
            scores = segmentation_metrics(prob, truth, fov, threshold=threshold)
            cells += [f"{scores[m]:.4f}" for m in ("f1", "sensitivity", "specificity")]
        print(f"| {threshold:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
