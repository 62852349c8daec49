"""Is 0.5 the right threshold? F1, Se and Sp of a segmentation model at several thresholds, pooled
over the held-out images of a config's split and, for comparison, over its training images.

    python scripts/threshold_sweep.py drive-teacher configs/drive_teacher_clahe.yaml
    python scripts/threshold_sweep.py drive-teacher configs/drive_teacher_clahe.yaml --flips   # test-time flips
    python scripts/threshold_sweep.py drive-teacher configs/drive_teacher_clahe.yaml --thresholds 0.5 \
        --drop-smaller-than 10 40 160 --hysteresis-low 0.3 0.4                               # post-processing

Two classic post-processings add rows at each threshold: ``--drop-smaller-than N`` removes
connected vessel pieces of fewer than N pixels (8-connected; scikit-image
``remove_small_objects``), ``--hysteresis-low L`` keeps pixels above L that connect to pixels
above the threshold (``apply_hysteresis_threshold``).

Choose a threshold on the training images only: one picked on the held-out images is tuned
to the set that scores it.
"""

import argparse
from collections.abc import Callable

import numpy as np
import torch
from skimage.filters import apply_hysteresis_threshold
from skimage.morphology import remove_small_objects

from meddistill.builders import build_samples
from meddistill.config import load_config
from meddistill.data import Preparation, VesselSample
from meddistill.inference import predict_probability
from meddistill.metrics import MetricAccumulator
from meddistill.zoo import load_model


FLIPS = [(), (0,), (1,), (0, 1)]  # none, vertical, horizontal, both


def probability(net: torch.nn.Module, sample: VesselSample, preparation: Preparation, flips: bool) -> np.ndarray:
    """The model's vessel probability, or its mean over the four flips of the photo."""
    views = []
    for axes in FLIPS if flips else FLIPS[:1]:
        image, fov = (np.flip(a, axes).copy() for a in (sample.image, sample.fov))
        views.append(np.flip(predict_probability(net, image, fov, preparation=preparation), axes))
    return np.mean(views, axis=0)


def rules(args: argparse.Namespace) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each table row's name and its rule from a probability map (H, W) to a vessel mask."""
    table = {}
    for threshold in args.thresholds:
        table[f"{threshold:g}"] = lambda p, t=threshold: p >= t
        for size in args.drop_smaller_than:
            table[f"{threshold:g}, pieces < {size} px dropped"] = (
                lambda p, t=threshold, n=size: remove_small_objects(p >= t, max_size=n - 1, connectivity=2))
        for low in args.hysteresis_low:
            table[f"hysteresis {low:g}–{threshold:g}"] = lambda p, t=threshold, lo=low: apply_hysteresis_threshold(p, lo, t)
    return table


def pooled_scores(maps: list[np.ndarray], samples: list[VesselSample], rule: Callable) -> dict[str, float]:
    """F1, Se and Sp of ``rule``'s masks, pooled over the images' fields of view."""
    accumulator = MetricAccumulator()
    for prob, sample in zip(maps, samples):
        accumulator.update(rule(prob).astype(np.float32), sample.vessels, sample.fov)
    return accumulator.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint or shipped name")
    parser.add_argument("config", help="experiment config whose data split to use")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65])
    parser.add_argument("--flips", action="store_true", help="average the predictions of the four flips")
    parser.add_argument("--drop-smaller-than", type=int, nargs="*", default=[], metavar="PX",
                        help="also drop connected vessel pieces of fewer than PX pixels")
    parser.add_argument("--hysteresis-low", type=float, nargs="*", default=[], metavar="LOW",
                        help="also keep pixels above LOW connected to pixels above the threshold")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, meta = load_model(args.model)
    preparation = Preparation.from_meta(meta)
    config = load_config(args.config)
    train, held_out = build_samples(config.data, config.seed)
    sets = {name: ([probability(net, s, preparation, args.flips) for s in samples], samples)
            for name, samples in (("held-out", held_out), ("training", train))}
    print("| rule | " + " | ".join(f"{name} {m}" for name in sets for m in ("F1", "Se", "Sp")) + " |")
    print("|---" * (1 + 3 * len(sets)) + "|")
    for label, rule in rules(args).items():
        cells = []
        for maps, samples in sets.values():
            scores = pooled_scores(maps, samples, rule)
            cells += [f"{scores[m]:.4f}" for m in ("f1", "sensitivity", "specificity")]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
