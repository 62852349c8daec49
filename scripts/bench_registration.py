"""Benchmark registration methods on a FIRE-layout folder: FIRE protocol + CPU cost per pair.

    python scripts/bench_registration.py /tmp/fire_chase --method sift \
        --method retina-student=runs/retina-student-scratch/best --threads 1 \
        --json docs/results/registration_bench.json

A method is NAME or NAME=CHECKPOINT (learned methods). For each one: failed / inaccurate /
acceptable rates, AUC per category and mAUC (homography, 768×768), the median and
interquartile seconds per pair (preprocessing, detection of both photos, matching, robust
estimation) with ``--threads`` torch/OpenCV threads, and for networks their parameters,
GFLOPs and peak memory at 1×1×768×768. The methods take turns pair by pair, so a busy machine
slows them alike; absolute times still want an otherwise idle machine.
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
from meddistill.registration import KEYPOINT_METHODS, load_fire, register_images, score_pair, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--method", action="append", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="homography", help="affine or homography")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    pairs = load_fire(args.root)
    images = {p.name: (read_rgb(p.fixed), read_rgb(p.moving)) for p in pairs}
    detectors = {}
    for spec in args.method:
        name, _, weights = spec.partition("=")
        detectors[spec] = KEYPOINT_METHODS.get(name)(**({"weights": weights} if weights else {}))
    outcomes: dict[str, list] = {spec: [] for spec in detectors}
    seconds: dict[str, list[float]] = {spec: [] for spec in detectors}
    # Pairs outside, methods inside: whatever else loads the machine slows every method alike.
    for pair in pairs:
        for spec, detector in detectors.items():
            result = register_images(*images[pair.name], detector, model=args.model)
            outcomes[spec].append(score_pair(pair, result.transform))
            seconds[spec].append(result.seconds)
    report = {}
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
        report[spec] = row
        print(f"| {name} | {row['failed']:.3f} | {row['inaccurate']:.3f} | {row['acceptable']:.3f} | "
              f"{row['auc_S']:.3f} | {row['auc_P']:.3f} | {row['auc_A']:.3f} | {row['mauc']:.3f} | "
              f"{row['seconds_per_pair_median']:.2f} | {row.get('params_m', 0):.2f} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"root": str(args.root), "model": args.model, "methods": report}, indent=2))


if __name__ == "__main__":
    main()
