"""What one training step of each row of a grid costs: seconds and peak memory, on the CPU.

    python scripts/bench_training_step.py configs/chase_dice_gpu.yaml --threads 2 [--amp on]

Each row (and the teacher) is set up as the grid plans its first replicate: its config, its
teacher and starting student, its method arguments, its batch of the config's patches. In a
fresh process per row, one optimiser step of the row's distillation stage (GKD's pre-stage
networks are frozen there; their untrained weights do the same arithmetic) runs once to warm
up, once to read the peak resident-memory increase (``meddistill.cost.peak_memory_increase``),
then ``--steps`` times; the median of those is reported. Rows whose method and arguments are
the same (a control and its scratch row) are measured once. ``--amp on`` runs each step under
bfloat16 autocast, as ``train.amp: on`` trains. Needs the grid's teacher and scratch students
trained, and a quiet machine.
"""

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from meddistill.config import ExperimentConfig
from meddistill.cost import peak_memory_increase
from meddistill.engine import Trainer
from meddistill.errors import MeddistillError
from meddistill.experiment import load_grid, plan_runs


def measure_step(config: ExperimentConfig, steps: int, threads: int, amp: str) -> dict:
    """Run in a fresh process: median seconds per step and the peak memory of one step, MiB."""
    config.train.device, config.train.threads, config.train.amp, config.data.num_workers = "cpu", threads, amp, 0
    trainer = Trainer(config, progress=False)
    trainer.distiller.set_stage("distill")
    trainer.model.train()
    batch = next(iter(trainer.loader))

    def step() -> None:
        trainer.train_step(batch, trainer.optimizer)

    step()
    peak = peak_memory_increase(step)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {"seconds": statistics.median(seconds), "peak_mib": peak, "batch": list(batch["image"].shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="grid YAML whose rows to measure")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row, after two untimed")
    parser.add_argument("--amp", choices=["off", "on"], default="off", help="on: bfloat16 autocast (train.amp: on)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads < 1 or args.steps < 1:
        parser.error("--threads and --steps must be at least 1")
    teacher, students = plan_runs(load_grid(args.grid))
    rows, seen = [], set()
    for run in (teacher, *students):
        key = (run.config.student.name, run.variant.method, json.dumps(run.variant.args, sort_keys=True))
        if run.label == (run.replicate_of or run.label) and key not in seen and not run.weights:
            seen.add(key)
            rows.append(run)
    results = {}
    for run in rows:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            results[run.label] = pool.submit(measure_step, run.config, args.steps, args.threads, args.amp).result()
        print(f"{run.label}: {results[run.label]}", flush=True)
    # each student's rows against its own scratch row; the teacher has none
    scratch = {run.config.student.name: results[run.label]["seconds"] for run in rows if run.row == "none"}
    print(f"\n{args.threads} thread(s), amp {args.amp}, median of {args.steps} steps; batch {next(iter(results.values()))['batch']}\n")
    print("| run | s per step | × its scratch student | peak memory of a step (MiB) |\n|---|---|---|---|")
    for run in rows:
        r, base = results[run.label], scratch.get(run.config.student.name)
        ratio = f"{r['seconds'] / base:.1f}" if base else "–"
        print(f"| {run.label} | {r['seconds']:.2f} | {ratio} | {r['peak_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "amp": args.amp, "steps": args.steps, "rows": results}, f, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    try:
        main()
    except MeddistillError as error:
        sys.exit(f"error: {error}")
