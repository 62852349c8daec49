"""Benchmark registration methods on a FIRE-layout folder: FIRE protocol + CPU cost per pair.

    python scripts/bench_registration.py /tmp/fire_chase --method sift \
        --method retina-student=runs/retina-student-scratch/best --threads 1 \
        --json docs/results/registration_bench.json

A method is NAME or NAME=CHECKPOINT (learned methods). For each one: failed / inaccurate /
acceptable rates, AUC per category and mAUC (``--model``, homography by default; 768×768), the median and
interquartile seconds per pair (preprocessing, detection of both photos, matching, robust
estimation) with ``--threads`` torch/OpenCV threads, and for networks their parameters,
GFLOPs and peak memory at 1×1×768×768. The methods take turns pair by pair, so a busy machine
slows them alike; absolute times still want an otherwise idle machine.

``--threshold-px``, ``--guided-radius``, ``--fov-margin`` and ``--no-subpixel`` change the
pipeline for every method (the defaults are `register_images`'s), for ablations. ``--ceiling``
adds the row of the model fitted by least squares to each pair's own control points: the best
any method could score with that model on this benchmark. With ``--model quadratic`` each
method's row also holds the scores of the homography its bend started from (``homography``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from meddistill.cost import measure_cost
from meddistill.data import read_rgb
from meddistill.registration import KEYPOINT_METHODS, fit_quadratic, load_fire, register_images, score_pair, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--method", action="append", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="homography", help="affine, homography or quadratic")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threshold-px", type=float, default=10.0, help="inlier threshold, px at 768")
    parser.add_argument("--guided-radius", type=float, default=12.0, help="px at 768; 0: no guided matching")
    parser.add_argument("--fov-margin", type=float, default=8.0,
                        help="px at 768; keypoints nearer the field of view's edge are dropped; negative: none are")
    parser.add_argument("--no-subpixel", dest="subpixel", action="store_false", help="integer keypoints (networks)")
    parser.add_argument("--ceiling", action="store_true", help="add the ground-truth fit's row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    pairs = load_fire(args.root)
    images = {p.name: (read_rgb(p.fixed), read_rgb(p.moving)) for p in pairs}
    detectors = {}
    for spec in args.method:
        name, _, weights = spec.partition("=")
        options = ({"weights": weights} if weights else {}) | ({} if name == "sift" else {"subpixel": args.subpixel})
        detectors[spec] = KEYPOINT_METHODS.get(name)(**options)
    outcomes: dict[str, list] = {spec: [] for spec in detectors}
    # with --model quadratic, also the homography each bend started from: one run scores both
    unbent: dict[str, list] = {spec: [] for spec in detectors}
    seconds: dict[str, list[float]] = {spec: [] for spec in detectors}
    # Pairs outside, methods inside: whatever else loads the machine slows every method alike.
    for pair in pairs:
        for spec, detector in detectors.items():
            result = register_images(*images[pair.name], detector, model=args.model, threshold_px=args.threshold_px,
                                     guided_radius=args.guided_radius,
                                     fov_margin=None if args.fov_margin < 0 else args.fov_margin)
            outcomes[spec].append(score_pair(pair, result.mapping))
            unbent[spec].append(score_pair(pair, result.transform))
            seconds[spec].append(result.seconds)
    report = {}
    if args.ceiling:
        row = summarize([score_pair(pair, ground_truth_fit(pair, args.model)) for pair in pairs])
        report["ceiling"] = row
        print_row("ceiling", row)
    for spec, detector in detectors.items():
        name, _, weights = spec.partition("=")
        row = summarize(outcomes[spec]) | {
            "seconds_per_pair_median": float(np.median(seconds[spec])),
            "seconds_per_pair_iqr": [float(np.percentile(seconds[spec], 25)), float(np.percentile(seconds[spec], 75))],
            "threads": args.threads,
            "checkpoint": weights or None,
        }
        network = getattr(detector, "network", None)
        if network is not None:
            cost = measure_cost(network, (1, 1, 768, 768), threads=args.threads, repeats=5)
            row |= {"params_m": cost.params / 1e6, "gflops": cost.gflops, "peak_memory_mb": cost.peak_memory_mb,
                    "network_ms": cost.latency_ms}
        if args.model == "quadratic":
            row["homography"] = summarize(unbent[spec])
            print_row(f"{name} (its homography)", row["homography"])
        report[spec] = row
        print_row(name, row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {"threshold_px": args.threshold_px, "guided_radius": args.guided_radius,
                    "fov_margin": args.fov_margin, "subpixel": args.subpixel}
        args.json.write_text(json.dumps({"root": str(args.root), "model": args.model, "pipeline": settings,
                                         "methods": report}, indent=2))


def ground_truth_fit(pair, model: str) -> np.ndarray:
    """``model`` fitted by least squares to the pair's control points, moving → fixed."""
    moving, fixed = pair.moving_points.astype(np.float64), pair.fixed_points.astype(np.float64)
    if model == "homography":
        return cv2.findHomography(moving, fixed, 0)[0]
    if model == "quadratic":
        return fit_quadratic(moving, fixed, threshold_px=np.inf, rounds=1, min_points=6)[0]
    affine = np.linalg.lstsq(np.c_[moving, np.ones(len(moving))], fixed, rcond=None)[0].T  # (2, 3)
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def print_row(name: str, row: dict) -> None:
    print(f"| {name} | {row['failed']:.3f} | {row['inaccurate']:.3f} | {row['acceptable']:.3f} | "
          f"{row['auc_S']:.3f} | {row['auc_P']:.3f} | {row['auc_A']:.3f} | {row['mauc']:.3f} | "
          f"{row.get('seconds_per_pair_median', 0):.2f} | {row.get('params_m', 0):.2f} |", flush=True)


if __name__ == "__main__":
    main()
