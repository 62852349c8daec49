"""The demo: the whole distillation job on the embedded phantom data, in a few minutes.

Trains a FANet-style teacher, an ENet student from scratch and an ENet student
distilled from the teacher, evaluates all three on unseen phantoms, measures their CPU
cost at 512×512 and writes a report folder (table, overlays, training curves).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from .builders import phantom_samples
from .config import config_from_dict
from .cost import measure_cost
from .engine import resolve_device, train
from .inference import evaluate_samples, predict_probability
from .report import overlay, plot_panels, plot_training_curves
from .zoo import load_model

TEST_SEED = 10_000  # disjoint from the training phantoms' seeds


def _settings(quick: bool) -> dict:
    if quick:
        return {"count": 4, "size": 96, "patch": 64, "patches": 4, "teacher_epochs": 1, "student_epochs": 1, "test": 2, "width": 8}
    return {"count": 12, "size": 256, "patch": 96, "patches": 16, "teacher_epochs": 8, "student_epochs": 10, "test": 6, "width": 16}


def _experiments(runs: Path, s: dict) -> dict[str, dict]:
    base = {
        "seed": 0,
        "output": str(runs),
        "data": {
            "dataset": "phantom",
            "phantom_count": s["count"],
            "phantom_size": s["size"],
            "patch_size": s["patch"],
            "patches_per_image": s["patches"],
            "val_fraction": 0.25,
        },
        "train": {"batch_size": 8, "optimizer": {"name": "adam", "lr": 2e-3}, "threads": 2},
    }
    teacher = {"name": "fanet", "args": {"base_channels": s["width"]}}
    return {
        "teacher": {**base, "name": "teacher", "student": teacher, "train": {**base["train"], "epochs": s["teacher_epochs"]}},
        "student-scratch": {**base, "name": "student-scratch", "student": {"name": "enet"}, "train": {**base["train"], "epochs": s["student_epochs"]}},
        "student-kd": {
            **base,
            "name": "student-kd",
            "student": {"name": "enet"},
            "teacher": {**teacher, "weights": str(runs / "teacher" / "best")},
            "method": {"name": "kd", "args": {"temperature": 4.0, "weight": 1.0}},
            "train": {**base["train"], "epochs": s["student_epochs"]},
        },
    }


def run_demo(out: Path, *, quick: bool = False, console: Console | None = None) -> dict[str, dict]:
    """Run the demo into ``out``; returns metrics and cost per model."""
    console = console or Console()
    settings = _settings(quick)
    runs = out / "runs"
    if runs.exists():  # the demo's own earlier output, regenerated from scratch
        shutil.rmtree(runs)
    out.mkdir(parents=True, exist_ok=True)

    for label, values in _experiments(runs, settings).items():
        console.print(f"[bold]training {label}[/]")
        train(config_from_dict(values), progress=not quick)

    test = phantom_samples(settings["test"], settings["size"], seed=TEST_SEED)
    device = resolve_device("cpu")
    results: dict[str, dict] = {}
    predictions: dict[str, np.ndarray] = {}
    for label in ("teacher", "student-scratch", "student-kd"):
        net, _ = load_model(runs / label / "best")
        metrics = evaluate_samples(net, test, device)
        cost = measure_cost(net, (1, 3, 512, 512), threads=1, repeats=5 if quick else 10)
        results[label] = {**metrics, "params": cost.params, "gflops": cost.gflops, "cpu_ms_512": cost.latency_ms}
        predictions[label] = predict_probability(net, test[0].image, test[0].fov) >= 0.5

    table = Table(title=f"phantom demo: {len(test)} unseen phantoms, cost at 512×512 on 1 CPU thread")
    for column in ("model", "sensitivity", "F1", "AUC", "params (M)", "GFLOPs", "CPU ms"):
        table.add_column(column, justify="right")
    for label, r in results.items():
        table.add_row(label, f"{r['sensitivity']:.3f}", f"{r['f1']:.3f}", f"{r['auc']:.3f}",
                      f"{r['params'] / 1e6:.3f}", f"{r['gflops']:.2f}", f"{r['cpu_ms_512']:.0f}")
    console.print(table)

    sample = test[0]
    panels = {"phantom": sample.image, "ground truth": overlay(sample.image, sample.vessels)}
    panels.update({f"{k} (green TP, red FP, blue FN)": overlay(sample.image, v, sample.vessels) for k, v in predictions.items()})
    plot_panels(panels, out / "overlays.png", columns=3)
    plot_training_curves({k: runs / k for k in results}, out / "training_curves.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    with (out / "results.md").open("w") as f:
        f.write("| model | sensitivity | F1 | AUC | params (M) | GFLOPs | CPU ms (512², 1 thread) |\n|---|---|---|---|---|---|---|\n")
        for label, r in results.items():
            f.write(f"| {label} | {r['sensitivity']:.3f} | {r['f1']:.3f} | {r['auc']:.3f} | "
                    f"{r['params'] / 1e6:.3f} | {r['gflops']:.2f} | {r['cpu_ms_512']:.0f} |\n")
    console.print(f"report: {out}/results.md, overlays.png, training_curves.png")
    return results
