"""Sensitivity of every finished model of a grid at the teacher's specificity, per dataset.

A model that marks more pixels as vessel gains sensitivity at 0.5 by losing specificity, so
the grid table's sensitivity partly measures calibration. Here each model is read off its own
ROC curve at the specificity the teacher has at 0.5 on the same dataset: a gain that remains
is a better ranking of vessel pixels, not a lower threshold.

    python scripts/sensitivity_at_specificity.py configs/chase_dice.yaml --only mobilenetv2_unet

Inputs are prepared as `meddistill experiment` prepares them (targets rescaled to the training
field-of-view diameter). Prints a Markdown table; rows with two or more seeds get a mean row.
"""

import argparse
import sys
from collections import defaultdict

import numpy as np
import torch

from meddistill.data import Preparation, VesselSample
from meddistill.engine import resolve_device
from meddistill.errors import MeddistillError
from meddistill.experiment import load_grid, load_grid_datasets, load_run_model, plan_runs
from meddistill.inference import predict_probability
from meddistill.metrics import MetricAccumulator


def accumulate(
    net: torch.nn.Module, samples: list[VesselSample], preparation: Preparation, device: torch.device
) -> MetricAccumulator:
    """The pooled pixels of ``net``'s predictions on ``samples``, predicted on ``device``."""
    accumulator = MetricAccumulator()
    for sample in samples:
        prob = predict_probability(net, sample.image, sample.fov, preparation=preparation, device=device)
        accumulator.update(prob, sample.vessels, sample.fov)
    return accumulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="experiment grid config")
    parser.add_argument("--only", action="append", default=[], help="keep only the student rows whose label contains this (repeatable: any of them)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.grid)
    teacher, students = plan_runs(grid)
    if teacher.state() != "done":
        raise MeddistillError(f"the teacher has no checkpoint at {teacher.checkpoint}: train the grid's teacher first")
    datasets = load_grid_datasets(grid, teacher.config)
    wanted = [r for r in students if not args.only or any(part in r.label for part in args.only)]
    finished = [r for r in wanted if r.state() == "done"]
    runs = [teacher] + finished  # the teacher is its best checkpoint, as the students' configs name it
    diameters: dict[str, float] = {}
    device = resolve_device(grid.device)
    rows: dict[str, dict[str, tuple[float, float, float]]] = {}  # label -> dataset -> (Sp, Se, Se at teacher's Sp)
    reference: dict[str, float] = {}
    for run in runs:
        net, _, preparation = load_run_model(run, diameters)
        row = {}
        for name, samples in datasets.items():
            accumulator = accumulate(net, samples, preparation, device)
            scores = accumulator.compute()
            reference.setdefault(name, scores["specificity"])  # the teacher's: it comes first
            row[name] = (scores["specificity"], scores["sensitivity"], accumulator.sensitivity_at(reference[name]))
        rows[run.label] = row
        print(f"evaluated {run.label}", flush=True)

    groups = defaultdict(list)  # replicates together, in plan order
    for run in runs:
        if run.label in rows:
            groups[run.replicate_of or run.label].append(run.label)
    print("\n| model / method | " + " | ".join(f"{n} Sp | {n} Se | {n} Se at teacher's Sp" for n in datasets) + " |")
    print("|---" * (1 + 3 * len(datasets)) + "|")
    for label, members in groups.items():
        table = {m: rows[m] for m in members}
        if len(members) > 1:
            table[f"{label} (mean of {len(members)} seeds)"] = {
                name: tuple(float(np.mean([rows[m][name][i] for m in members])) for i in range(3)) for name in datasets
            }
        for row_label, row in table.items():
            print(f"| {row_label} | " + " | ".join(f"{v:.4f}" for n in datasets for v in row[n]) + " |")
    print("\nteacher's specificity at 0.5: " + ", ".join(f"{n} {s:.4f}" for n, s in reference.items()))


if __name__ == "__main__":
    try:
        main()
    except MeddistillError as error:
        sys.exit(f"error: {error}")
