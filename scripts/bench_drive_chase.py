"""Benchmark: train on DRIVE, test in-domain (held-out DRIVE images) and on CHASE_DB1 (unseen).

Two stages, run from the repository root:

    python scripts/bench_drive_chase.py train --jobs 2   # teacher, then every student x method run (resumes partial runs)
    python scripts/bench_drive_chase.py report           # metrics of every finished run, CPU cost, Markdown + JSON

`report` caches each model's metrics next to the output (re-running only evaluates new
runs) and measures latency last, so run it on an otherwise idle machine.

Each training run is an ordinary CLI call (printed before it starts), so any row can be
reproduced on its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from meddistill.config import load_config
from meddistill.cost import measure_cost
from meddistill.data import Preparation, load_dataset, split_samples, training_fov_diameter
from meddistill.experiment import load_grid, plan_runs, run_state, train_runs
from meddistill.inference import evaluate_samples
from meddistill.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
TEACHER_CONFIG = ROOT / "configs" / "drive_teacher.yaml"
STUDENT_CONFIG = ROOT / "configs" / "drive_student.yaml"
GRID = ROOT / "configs" / "gkd_drive_chase.yaml"
METHODS = ["none", "kd", "at", "fitnets", "fsp"]
STUDENTS = ["enet", "mobilenetv2_unet"]


def run_name(student: str, method: str) -> str:
    return f"drive-{student}-{method}"


def train_stage(args, teacher_cfg, student_cfg) -> None:
    """The runs of the DRIVE grid (configs/gkd_drive_chase.yaml) for the chosen students and methods."""
    teacher, students = plan_runs(load_grid(GRID))
    train_runs([teacher], 1)
    # KD for every student first (each gets a distilled model soonest), then the other methods student by student.
    chosen = [r for r in students if r.config.student.name in args.students and r.variant.method in args.methods]
    first = [r for m in args.methods[:2] for r in chosen if r.variant.method == m]
    train_runs(first + [r for r in chosen if r not in first], args.jobs)


def report_stage(args, teacher_cfg, student_cfg) -> None:
    drive_train, drive_val = split_samples(
        load_dataset(teacher_cfg.data.dataset, ROOT / teacher_cfg.data.root), teacher_cfg.data.val_fraction, teacher_cfg.seed
    )
    chase = load_dataset("chase", ROOT / args.chase)
    train_diameter = training_fov_diameter(drive_train)
    candidates = {"teacher (FANet)": (ROOT / teacher_cfg.run_dir, teacher_cfg.train.epochs)}
    candidates.update({f"{s} / {m}": (ROOT / student_cfg.output / run_name(s, m), student_cfg.train.epochs)
                       for s in args.students for m in args.methods})
    out = ROOT / args.out
    cache_path = out.with_suffix(".metrics.json")
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    results = {}
    for label, (run_dir, epochs) in candidates.items():
        if run_state(run_dir, epochs) != "done":
            print(f"skipping {label}: run not finished", flush=True)
            continue
        stem = run_dir / "best"
        net, meta = load_model(stem)
        entry = cache.get(label, {})
        if entry.get("checkpoint_epoch") != meta["epoch"] or entry.get("run") != str(run_dir):
            entry = {"run": str(run_dir), "checkpoint_epoch": meta["epoch"]}
        evaluations = {
            "drive_heldout": lambda: evaluate_samples(net, drive_val, "cpu"),
            "chase": lambda: evaluate_samples(net, chase, "cpu"),  # native resolution
            "chase_scaled": lambda: evaluate_samples(net, chase, "cpu", Preparation(train_diameter)),
        }
        for key, evaluate in evaluations.items():
            if key not in entry:
                entry[key] = evaluate()
                cache[label] = entry
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_text(json.dumps(cache, indent=2))
                print(label, key, json.dumps(entry[key]), flush=True)
        results[label] = {"checkpoint": str(stem.relative_to(ROOT)), **cache[label]}
    if args.skip_cost:
        return
    for label, r in results.items():  # cost last: latency needs a quiet machine
        cost = measure_cost(load_model(ROOT / r["checkpoint"])[0], (1, 3, 512, 512), threads=args.threads, repeats=10)
        r.update(params=cost.params, gflops=cost.gflops, cpu_ms_512=cost.latency_ms, peak_memory_mb=cost.peak_memory_mb)

    out.with_suffix(".json").write_text(json.dumps(
        {"drive_heldout_images": [s.name for s in drive_val], "chase_images": len(chase), "threads": args.threads,
         "results": results}, indent=2))
    lines = [
        f"Trained on {len(drive_train)} DRIVE training images; in-domain = {len(drive_val)} held-out DRIVE images "
        f"({', '.join(s.name for s in drive_val)}); unseen = all {len(chase)} CHASE_DB1 images (1st observer), "
        f"rescaled so that their field of view is {train_diameter:.0f} px wide like DRIVE's (the CLI default). "
        f"Metrics pooled over pixels inside the FOV, threshold 0.5. Cost: 1×3×512×512, {args.threads} thread.",
        "",
        "| model / method | DRIVE F1 | DRIVE Se | DRIVE AUC | CHASE Se | CHASE Sp | CHASE Acc | CHASE AUC | CHASE F1 | CHASE mIoU | params (M) | GFLOPs | CPU ms | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        d, c = r["drive_heldout"], r["chase_scaled"]
        lines.append(
            f"| {label} | {d['f1']:.4f} | {d['sensitivity']:.4f} | {d['auc']:.4f} | {c['sensitivity']:.4f} | "
            f"{c['specificity']:.4f} | {c['accuracy']:.4f} | {c['auc']:.4f} | {c['f1']:.4f} | {c['miou']:.4f} | "
            f"{r['params'] / 1e6:.3f} | {r['gflops']:.2f} | {r['cpu_ms_512']:.0f} | {r['peak_memory_mb']:.0f} |"
        )
    lines += [
        "",
        "CHASE_DB1 at its native resolution (`--native-scale`): FOV about 1.7 times wider than DRIVE's, so vessels are wider than any seen in training.",
        "",
        "| model / method | CHASE Se | CHASE Sp | CHASE AUC | CHASE F1 | CHASE mIoU |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        c = r["chase"]
        lines.append(f"| {label} | {c['sensitivity']:.4f} | {c['specificity']:.4f} | {c['auc']:.4f} | {c['f1']:.4f} | {c['miou']:.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["train", "report"])
    parser.add_argument("--students", nargs="+", default=STUDENTS)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time (1 thread each)")
    parser.add_argument("--chase", default="../shared/data/CHASEDB1")
    parser.add_argument("--out", default="docs/results/drive_chase")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the latency measurement")
    parser.add_argument("--skip-cost", action="store_true", help="only evaluate (and cache) metrics; write no table")
    args = parser.parse_args()
    teacher_cfg, student_cfg = load_config(TEACHER_CONFIG), load_config(STUDENT_CONFIG)
    (train_stage if args.stage == "train" else report_stage)(args, teacher_cfg, student_cfg)


if __name__ == "__main__":
    main()
