"""How long the training loader takes to draw one patch, in one process at one thread.

On a GPU the model's step takes a few milliseconds, so an epoch takes as long as the loader
needs to draw its patches (``num_workers: 0``): this is the number to watch there.

    python scripts/bench_loader.py configs/chase_student_dice_gpu.yaml
    python scripts/bench_loader.py configs/drive_teacher_clahe.yaml --set data.rotate_degrees=30 --set data.scale_range=0.2

Prints the median over ``--repeats`` passes of the milliseconds per patch, and what that
makes an epoch of the config's patches.
"""

import argparse
import statistics
import time

import torch

from meddistill.config import load_config
from meddistill.tasks import build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="experiment config whose training data to draw")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="config override key=value (repeatable)")
    parser.add_argument("--patches", type=int, default=200, help="patches drawn per pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, after one untimed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config, args.overrides)
    dataset = build_task(config).build_data(config.data, config.seed).dataset
    count = min(args.patches, len(dataset))
    times = []
    for repeat in range(args.repeats + 1):
        dataset.set_epoch(repeat)
        start = time.perf_counter()
        for index in range(count):
            dataset[index]
        times.append((time.perf_counter() - start) / count * 1000)
    per_patch = statistics.median(times[1:])
    print(f"{args.config}: {per_patch:.2f} ms per patch (median of {args.repeats} passes of {count}); "
          f"{per_patch * len(dataset) / 1000:.1f} s per epoch of {len(dataset)} patches")


if __name__ == "__main__":
    main()
