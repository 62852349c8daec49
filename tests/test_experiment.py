"""`meddistill experiment`: a whole cross-domain grid on phantoms, driven as a user would."""

import csv
import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import tiny_config_dict
from meddistill.builders import phantom_samples
from meddistill import cli, experiment
from meddistill.cli import app
from meddistill.config import config_to_dict
from meddistill.cost import ModelCost
from meddistill.experiment import load_grid, plan_runs
from meddistill.run_lock import hold_run_folder


def _write_folder_dataset(root, samples):
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for s in samples:
        Image.fromarray(s.image).save(root / "images" / f"{s.name}.png")
        Image.fromarray(s.vessels.astype(np.uint8) * 255).save(root / "masks" / f"{s.name}.png")


@pytest.fixture()
def grid(tmp_path):
    teacher = tiny_config_dict(tmp_path, "teacher", student={"name": "fanet", "args": {"base_channels": 8}},
                               train={"epochs": 1, "batch_size": 2})
    student = tiny_config_dict(tmp_path, "student", train={"epochs": 1, "batch_size": 2, "loss": "ce"})
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student))
    _write_folder_dataset(tmp_path / "unseen", phantom_samples(2, 80, seed=9))
    spec = {
        "name": "g",
        "teacher": str(tmp_path / "teacher.yaml"),
        "student": str(tmp_path / "student.yaml"),
        "students": ["enet"],
        "methods": {
            "none": {"method": "none"},
            "kd": {"method": "kd"},
            "gkd": {"method": "gkd", "args": {"latent_dim": 16, "autoencoder_epochs": 1, "alignment_epochs": 1}},
        },
        "targets": {"unseen": {"dataset": "folder", "root": str(tmp_path / "unseen")}},
        "out": str(tmp_path / "results"),
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_experiment_trains_evaluates_and_writes_the_table(grid, tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "results"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model / method"] for r in rows] == ["teacher", "enet / none", "enet / kd", "enet / gkd"]
    source = "phantom (held-out)"
    for r in rows:  # GAP is source minus target, for every metric
        assert float(r["F1 GAP unseen"]) == pytest.approx(float(r[f"F1 {source}"]) - float(r["F1 unseen"]), abs=2e-4)
    by_label = {r["model / method"]: r for r in rows}
    # FSD: the GKD student, and the scratch student it started from, through the GKD run's SAN
    assert by_label["enet / gkd"]["FSD unseen"] and by_label["enet / gkd"]["FSD start unseen"]
    assert not by_label["enet / kd"]["FSD unseen"] and not by_label["enet / none"]["FSD start unseen"]
    assert (out / "results.md").read_text().count("\n| ") >= 4 and "not finished" not in (out / "results.md").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["phantom__held_out_.jpg", "unseen.jpg"]
    # a second call finds every run done and every metric cached
    again = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost"])
    assert again.exit_code == 0 and "$ meddistill" not in again.output
    # a checkpoint written before FOV diameters were recorded is evaluated at its training scale all the same
    best = tmp_path / "runs" / "g-enet-none" / "best.json"
    meta = json.loads(best.read_text())
    del meta["fov_diameter_px"]
    best.write_text(json.dumps(meta))
    (out / "metrics.json").unlink()
    assert CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"]).exit_code == 0
    again_rows = {r["model / method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert again_rows["enet / none"]["F1 unseen"] == by_label["enet / none"]["F1 unseen"]
    # weights trained again to the same best epoch are evaluated again, never read from the cache
    weights = tmp_path / "runs" / "g-enet-kd" / "best.safetensors"
    original = weights.read_bytes()
    save_file({k: torch.zeros_like(v) for k, v in load_file(weights).items()}, weights)
    retrained = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"])
    assert retrained.exit_code == 0 and "enet / kd unseen" in retrained.output
    assert sum(key.startswith(f"{tmp_path / 'runs' / 'g-enet-kd'}@") for key in json.loads((out / "metrics.json").read_text())) == 1
    weights.write_bytes(original)
    assert CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"]).exit_code == 0
    # runs archived away keep their rows, FSD included, from out/metrics.json and out/runs.json
    runs = tmp_path / "runs"
    for name in ("g-enet-kd", "g-enet-gkd"):
        (runs / name).rename(tmp_path / name)
    archived = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"])
    assert archived.exit_code == 0 and "enet / gkd: run folder absent, reported from" in archived.output
    archived_rows = {r["model / method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert archived_rows == again_rows
    assert "figures left as they are: 2 row(s)" in archived.output  # not redrawn without those rows
    monkeypatch.setattr(cli, "console", Console(width=300))  # one table row a line
    status = CliRunner().invoke(app, ["experiment", str(grid), "--status"])
    assert "2 of 4 runs done, 2 more reported from earlier results" in status.output
    gkd_line = next(line for line in status.output.splitlines() if "enet / gkd" in line)
    assert f"missing here; its results are kept in {out / 'metrics.json'}" in gkd_line
    # ... but not once the grid plans that run with other settings
    spec = yaml.safe_load(grid.read_text())
    spec["methods"]["kd"]["args"] = {"temperature": 2.0}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    changed_kd = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"])
    assert changed_kd.exit_code == 0 and "skipping enet / kd: run not finished" in changed_kd.output
    assert "enet / kd" not in {r["model / method"] for r in csv.DictReader((out / "results.csv").open())}
    assert (out / "results.md").read_text().endswith("\n\nNot in the table, not finished: enet / kd.\n")
    status = CliRunner().invoke(app, ["experiment", str(grid), "--status"])
    assert "2 of 4 runs done, 1 more reported" in status.output  # KD's results are another config's
    # a finished run trained with other settings is never silently reused
    student = yaml.safe_load((tmp_path / "student.yaml").read_text())
    student["train"]["epochs"] = 2
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student))
    changed = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost"])
    assert changed.exit_code == 2 and "holds a run with other settings (train.epochs: 1 there, 2 here)" in changed.output


def test_a_target_defined_otherwise_is_evaluated_afresh(grid, tmp_path, monkeypatch):
    """Cached metrics belong to a target's definition, not just its name: never a stale number."""
    spec = yaml.safe_load(grid.read_text())
    spec["methods"] = {"none": {"method": "none"}}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert CliRunner().invoke(app, ["experiment", str(grid), "--no-cost"]).exit_code == 0
    rows = lambda: {r["model / method"]: r for r in csv.DictReader((tmp_path / "results" / "results.csv").open())}  # noqa: E731
    before = rows()
    _write_folder_dataset(tmp_path / "other", phantom_samples(2, 96, seed=31))
    spec["targets"]["unseen"]["root"] = str(tmp_path / "other")
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "runs" / "g-enet-none").rename(tmp_path / "archived")  # its results can no longer stand
    moved = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"])
    assert moved.exit_code == 0, moved.output
    assert "teacher unseen" in moved.output and "skipping enet / none: run not finished" in moved.output
    after = rows()
    assert list(after) == ["teacher"] and after["teacher"]["F1 unseen"] != before["teacher"]["F1 unseen"]
    assert after["teacher"]["F1 phantom (held-out)"] == before["teacher"]["F1 phantom (held-out)"]  # still cached
    assert json.loads((tmp_path / "results" / "targets.json").read_text())["unseen"]["root"] == str(tmp_path / "other")


def test_a_target_can_be_a_random_subset_of_its_images(grid):
    """As the GKD paper tests on 1,000 slices drawn from LiTS."""
    spec = yaml.safe_load(grid.read_text())
    spec["targets"]["unseen"] |= {"images": 1, "seed": 5}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    config = load_grid(grid)
    _, students = plan_runs(config)
    datasets = experiment.load_grid_datasets(config, students[0].config)
    assert len(datasets["unseen"]) == 1
    assert [s.name for s in experiment.load_grid_datasets(config, students[0].config)["unseen"]] == [s.name for s in datasets["unseen"]]
    spec["targets"]["unseen"]["images"] = 3
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["experiment", str(grid), "--no-train", "--no-cost"])
    assert result.exit_code == 2 and "target 'unseen': cannot draw 3 images from a dataset of 2" in result.output


def test_status_lists_how_far_each_run_has_trained(grid, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=300))  # one table row a line
    _, runs = plan_runs(load_grid(grid))
    run_dirs = {r.label: r.run_dir for r in runs}
    scratch = next(r for r in runs if r.label == "enet / none")
    run_dirs["enet / none"].mkdir(parents=True)
    (run_dirs["enet / none"] / "last.json").write_text(json.dumps({"epoch": 0}))
    run_dirs["enet / gkd"].mkdir(parents=True)
    (run_dirs["enet / gkd"] / "stage-autoencoder.json").write_text("{}")
    result = CliRunner().invoke(app, ["experiment", str(grid), "--status"])
    assert result.exit_code == 0, result.output
    assert "1 of 4 runs done" in result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") == 4}
    assert "done: 1 of 1 epochs" in lines["enet / none"]
    assert "partial: pre-stage autoencoder trained" in lines["enet / gkd"]
    assert lines["teacher"].rstrip("│ ").endswith("missing") and lines["enet / kd"].rstrip("│ ").endswith("missing")
    assert not (tmp_path / "results").exists()  # nothing trained or evaluated
    # --only narrows the list to a row and the runs it needs, as it narrows the training
    kd_only = CliRunner().invoke(app, ["experiment", str(grid), "--status", "--only", "kd"])
    kd_lines = [line.split("│")[1].strip() for line in kd_only.output.splitlines() if line.count("│") == 4]
    assert kd_lines == ["teacher", "enet / kd"] and "0 of 2 runs done" in kd_only.output, kd_only.output
    misspelt = CliRunner().invoke(app, ["experiment", str(grid), "--status", "--only", "gdk"])
    assert misspelt.exit_code == 2 and "'gdk' is not a row of the grid (did you mean 'gkd'?)" in misspelt.output
    with hold_run_folder(run_dirs["enet / gkd"]):  # as a training does
        busy = CliRunner().invoke(app, ["experiment", str(grid), "--status"])
        twice = CliRunner().invoke(app, ["experiment", str(grid)])  # a second run of a grid that trains
    assert re.search(r"partial: pre-stage autoencoder trained, training now \(process \d+ on ", busy.output), busy.output
    assert twice.exit_code == 2 and "enet / gkd is being trained by process" in twice.output, twice.output
    # a folder holding a run with other settings says so
    (run_dirs["enet / none"] / "config.yaml").write_text(yaml.safe_dump(config_to_dict(scratch.config) | {"seed": 5}))
    changed = CliRunner().invoke(app, ["experiment", str(grid), "--status"])
    assert "other settings in its folder (seed: 5 there, 0 here)" in changed.output
    assert "0 of 4 runs done" in changed.output  # its epochs are another run's
    # once it has logged epochs, a run being trained says how long it has to go at its latest pace
    gkd = next(r for r in runs if r.label == "enet / gkd")
    gkd.config.train.epochs = 23
    (gkd.run_dir / "metrics.csv").write_text("epoch,lr,seconds\n0,0.1,600\n1,0.1,300\n2,0.1,360\n")
    (gkd.run_dir / "last.json").write_text(json.dumps({"epoch": 2}))
    assert experiment.run_progress(gkd)[1] == "partial: 3 of 23 epochs"  # no pace when nothing trains it
    with hold_run_folder(gkd.run_dir):
        words = experiment.run_progress(gkd)[1]
    assert words.endswith("), about 2 h 00 min to go at 6.0 min per epoch"), words


def test_a_run_executed_elsewhere_is_the_same_run(grid):
    """Where and how a run trained (device, threads, precision, loader workers) is not what it learns."""
    _, runs = plan_runs(load_grid(grid))
    scratch = next(r for r in runs if r.label == "enet / none")
    saved = config_to_dict(scratch.config)
    saved["train"] |= {"device": "cuda", "threads": 16, "deterministic": not saved["train"]["deterministic"], "amp": "on"}
    saved["data"]["num_workers"] = 4
    assert experiment._config_differences(saved, scratch) == []
    saved["train"]["epochs"] += 1
    assert experiment._config_differences(saved, scratch) == [f"train.epochs: {saved['train']['epochs']} there, {scratch.config.train.epochs} here"]


def test_set_says_how_every_run_of_the_grid_executes_here(grid):
    """``experiment --set train.amp=on`` reaches each training command and config, teacher included."""
    teacher, students = plan_runs(load_grid(grid), experiment.runtime_overrides(["train.amp=on", "train.threads=1"]))
    for run in (teacher, *students):
        assert (run.config.train.amp, run.config.train.threads) == (True, 1)  # YAML's on; the engine reads it so
        assert {"train.amp=true", "train.threads=1"} <= set(run.command)
    assert [r.run_dir for r in students] == [r.run_dir for r in plan_runs(load_grid(grid))[1]]  # the same runs


@pytest.mark.parametrize("assignment", ["train.epochs=3", "student.name=enet", "train.amp"])
def test_set_refuses_what_changes_what_the_runs_learn(grid, assignment):
    result = CliRunner().invoke(app, ["experiment", str(grid), "--status", "--set", assignment])
    assert result.exit_code == 2
    assert f"--set '{assignment}': a grid takes only how its runs execute" in result.output, result.output


def test_grid_mistakes_are_one_line_errors(grid, tmp_path):
    spec = yaml.safe_load(grid.read_text())
    spec["methods"]["kd"]["method"] = "kdd"
    grid.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["experiment", str(grid)])
    assert result.exit_code == 2 and "did you mean 'kd'" in result.output
    spec["methods"] = {"kd": {"method": "kd"}}
    spec["target"] = spec.pop("targets")
    grid.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["experiment", str(grid)])
    assert result.exit_code == 2 and "unknown config key 'target' (did you mean 'targets'?)" in result.output
    spec["targets"] = spec.pop("target")
    spec["methods"]["none"] = {"method": "none"}
    del spec["teacher"]
    spec["teacher_weights"] = "chase-teacherr"
    grid.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["experiment", str(grid)])
    assert result.exit_code == 2 and "no shipped model or checkpoint named 'chase-teacherr' (did you mean 'chase-teacher'?)" in result.output
    spec["teacher_weights"] = "chase-teacher"
    spec["device"] = "gpu"
    grid.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["experiment", str(grid)])
    assert result.exit_code == 2 and "unknown device 'gpu': use auto, cpu, cuda or cuda:N" in result.output


def test_replicates_share_the_split_and_report_their_mean(grid, tmp_path):
    spec = yaml.safe_load(grid.read_text())
    spec["replicates"] = 2
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, runs = plan_runs(load_grid(grid))
    by_label = {r.label: r for r in runs}
    assert list(by_label)[:2] == ["enet / none", "enet / none (seed 1)"]
    replicate = by_label["enet / gkd (seed 1)"].config
    assert (replicate.name, replicate.seed, replicate.data.split_seed) == ("g-enet-gkd-seed1", 1, 0)
    assert replicate.student.weights == str(tmp_path / "runs" / "g-enet-none-seed1" / "best")  # its own scratch start
    assert by_label["enet / gkd"].config.data.split_seed is None  # the first replicate is the plain run

    del spec["methods"]["gkd"]
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost"])
    assert result.exit_code == 0, result.output
    rows = {r["model / method"]: r for r in csv.DictReader((tmp_path / "results" / "results.csv").open())}
    assert list(rows) == ["teacher", "enet / none", "enet / none (seed 1)", "enet / none (mean of 2 seeds)",
                          "enet / kd", "enet / kd (seed 1)", "enet / kd (mean of 2 seeds)"]
    for row in ("none", "kd"):
        seeds = [float(rows[f"enet / {row}{s}"]["F1 unseen"]) for s in ("", " (seed 1)")]
        assert float(rows[f"enet / {row} (mean of 2 seeds)"]["F1 unseen"]) == pytest.approx(np.mean(seeds), abs=1e-4)
    assert rows["enet / none"]["F1 unseen"] != rows["enet / none (seed 1)"]["F1 unseen"]  # the seed does change the run
    spec["replicates"] = 0
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    zero = CliRunner().invoke(app, ["experiment", str(grid)])
    assert zero.exit_code == 2 and "replicates must be at least 1, got 0" in zero.output


def test_rows_can_start_from_another_rows_student(grid, tmp_path):
    spec = yaml.safe_load(grid.read_text())
    spec["methods"]["none, 12 more epochs"] = {"method": "none", "start_from": "none"}
    spec["methods"]["gkd, after 24 epochs"] = {"method": "gkd", "start_from": "none, 12 more epochs"}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, runs = plan_runs(load_grid(grid))
    by_label = {r.label: r for r in runs}
    control, gkd = by_label["enet / none, 12 more epochs"], by_label["enet / gkd"]
    assert control.config.name == "g-enet-none-12-more-epochs"
    assert control.config.student.weights == gkd.config.student.weights == str(tmp_path / "runs" / "g-enet-none" / "best")
    assert control.command[3] == "train" and control.config.method.name == "none"
    later = by_label["enet / gkd, after 24 epochs"].config.student.weights
    assert later == str(tmp_path / "runs" / "g-enet-none-12-more-epochs" / "best")
    assert by_label["enet / kd"].config.student.weights is None  # the other baselines start untrained

    for start, message in [("nnoe", "not a row of the grid (did you mean 'none'?)"),
                           ("gkd, after 24 epochs", "in a loop: none, 12 more epochs -> gkd, after 24 epochs -> none, 12 more epochs")]:
        spec["methods"]["none, 12 more epochs"]["start_from"] = start
        grid.write_text(yaml.safe_dump(spec, sort_keys=False))
        result = CliRunner().invoke(app, ["experiment", str(grid)])
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_run_waits_for_the_run_it_starts_from(grid, tmp_path, monkeypatch):
    spec = yaml.safe_load(grid.read_text())
    spec["methods"] = {"gkd": spec["methods"]["gkd"], "kd": spec["methods"]["kd"], "none": {"method": "none"}}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, runs = plan_runs(load_grid(grid))
    started = []

    class FinishedAtOnce:
        def __init__(self, command, **_):
            started.append(command[command.index("--set") + 1])
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(experiment.subprocess, "Popen", FinishedAtOnce)
    monkeypatch.setattr(experiment, "run_state", lambda run_dir, epochs: "done" if any(run_dir.name in s for s in started) else "missing")
    experiment.train_runs(runs, parallel=2)
    assert started == ['name="g-enet-none"', 'name="g-enet-kd"', 'name="g-enet-gkd"']  # gkd waited for none, kd did not


def test_scratch_students_train_beside_the_teacher_and_distilled_ones_wait_for_it(grid, monkeypatch):
    teacher, students = plan_runs(load_grid(grid))
    teacher_done = []
    started = []

    class FinishesWhenPolled:
        def __init__(self, command, **_):
            started.append((command[command.index("--set") + 1] if "--set" in command else "teacher", list(teacher_done)))
            self.returncode = 0

        def poll(self):
            teacher_done.append(True)
            return 0

    monkeypatch.setattr(experiment.subprocess, "Popen", FinishesWhenPolled)
    monkeypatch.setattr(experiment, "run_state", lambda run_dir, epochs: "done" if any(run_dir.name in s for s, _ in started) else "missing")
    experiment.train_runs([teacher, *students], parallel=3)
    assert [name for name, _ in started] == ["teacher", 'name="g-enet-none"', 'name="g-enet-kd"', 'name="g-enet-gkd"']
    assert started[1][1] == []  # the scratch student started before anything had finished
    assert started[2][1] != []  # KD waited for the teacher's weights, though a slot was free


def test_the_run_others_wait_for_starts_first(grid, monkeypatch):
    spec = yaml.safe_load(grid.read_text())
    gkd_args = spec["methods"]["gkd"]["args"]
    spec["methods"] = {
        "none": {"method": "none"},
        "none, 12 more epochs": {"method": "none", "start_from": "none"},
        "gkd": spec["methods"]["gkd"],
        "gkd + intra": {"method": "gkd", "args": {**gkd_args, "inter_weight": 0}, "stages_from": "gkd"},
    }
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, runs = plan_runs(load_grid(grid))
    run_dirs = {r.config.name: r.run_dir for r in runs}
    started = []

    class TrainsAtOnce:  # leaves a finished run's checkpoint
        def __init__(self, command, **_):
            started.append(command[command.index("--set") + 1].split("=")[1].strip('"'))
            run_dirs[started[-1]].mkdir(parents=True, exist_ok=True)
            (run_dirs[started[-1]] / "last.json").write_text(json.dumps({"epoch": 0}))
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(experiment.subprocess, "Popen", TrainsAtOnce)
    experiment.train_runs(runs, parallel=1)
    # GKD before the control listed above it: the ablation row waits for its pre-stages
    assert started == ["g-enet-none", "g-enet-gkd", "g-enet-none-12-more-epochs", "g-enet-gkd-intra"]


def test_only_trains_the_named_rows_and_the_runs_they_need(grid, monkeypatch):
    spec = yaml.safe_load(grid.read_text())
    gkd_args = spec["methods"]["gkd"]["args"]
    spec["methods"]["gkd + intra"] = {"method": "gkd", "args": {**gkd_args, "inter_weight": 0}, "stages_from": "gkd"}
    spec["replicates"] = 2
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    trained = []
    monkeypatch.setattr(experiment, "train_runs", lambda runs, parallel: trained.append(([r.config.name for r in runs], parallel)))

    def only(*args):
        result = CliRunner().invoke(app, ["experiment", str(grid), *args])
        assert result.exit_code == 2, result.output
        return result.output

    assert "no finished runs to report yet" in only("--only", "gkd + intra", "--jobs", "3")  # nothing really trained
    assert trained.pop() == (["teacher", "g-enet-none", "g-enet-none-seed1", "g-enet-gkd", "g-enet-gkd-seed1",
                              "g-enet-gkd-intra", "g-enet-gkd-intra-seed1"], 3)  # its start, teacher and pre-stages
    only("--only", "kd")
    assert trained.pop() == (["teacher", "g-enet-kd", "g-enet-kd-seed1"], 1)  # a row's name, not a part of one
    assert "'gdk' is not a row of the grid (did you mean 'gkd'?)" in only("--only", "gdk")
    assert not trained
    monkeypatch.undo()
    assert "jobs must be at least 1, got 0" in only("--jobs", "0")
    spec["jobs"] = 0
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert "jobs must be at least 1, got 0" in only()  # in the grid too, where it would wait forever


def test_a_grid_can_distil_from_a_teacher_trained_elsewhere(grid, tmp_path):
    trained = CliRunner().invoke(app, ["train", str(tmp_path / "teacher.yaml"), "--set", 'name="mine"', "--no-progress"])
    assert trained.exit_code == 0, trained.output
    spec = yaml.safe_load(grid.read_text())
    spec["teacher_weights"] = str(tmp_path / "runs" / "mine" / "best")
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    both = CliRunner().invoke(app, ["experiment", str(grid)])
    assert both.exit_code == 2 and "either 'teacher' (a config to train) or 'teacher_weights'" in both.output

    del spec["teacher"]
    spec["methods"] = {"none": {"method": "none"}, "kd": {"method": "kd", "start_from": "none"}}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost"])
    assert result.exit_code == 0, result.output
    assert "teacher.yaml" not in result.output and "$ meddistill distill" in result.output  # nothing trains the teacher
    assert not (tmp_path / "runs" / "teacher").exists()
    kd = yaml.safe_load((tmp_path / "runs" / "g-enet-kd" / "config.yaml").read_text())
    assert kd["teacher"]["weights"] == spec["teacher_weights"] and kd["teacher"]["args"] == {"base_channels": 8}
    rows = list(csv.DictReader((tmp_path / "results" / "results.csv").open()))
    assert [r["model / method"] for r in rows] == ["teacher", "enet / none", "enet / kd"]
    assert any(k.startswith(f"{spec['teacher_weights']}@") for k in json.loads((tmp_path / "results" / "metrics.json").read_text()))  # keyed by its weights


def test_rows_may_share_pre_stages_only_where_the_stages_are_the_same(grid):
    spec = yaml.safe_load(grid.read_text())
    gkd_args = spec["methods"]["gkd"]["args"]
    spec["methods"]["gkd + intra"] = {"method": "gkd", "args": {**gkd_args, "inter_weight": 0, "cross_weight": 0},
                                      "stages_from": "gkd"}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, runs = plan_runs(load_grid(grid))
    by_label = {r.label: r for r in runs}
    assert by_label["enet / gkd + intra"].stages_from == by_label["enet / gkd"].run_dir
    assert by_label["enet / gkd"].stages_from is None

    bad_rows = [
        ({"stages_from": "gdk"}, "not a row of the grid (did you mean 'gkd'?)"),
        ({"args": {**gkd_args, "latent_dim": 8}}, "their 'latent_dim' differs"),
        ({"method": "kd", "args": {}}, "the same method and the same starting student"),
    ]
    for change, message in bad_rows:
        spec["methods"]["gkd + intra"].update(change)
        grid.write_text(yaml.safe_dump(spec, sort_keys=False))
        result = CliRunner().invoke(app, ["experiment", str(grid)])
        assert result.exit_code == 2 and message in result.output, result.output
        spec["methods"]["gkd + intra"] = {"method": "gkd", "args": {**gkd_args, "inter_weight": 0}, "stages_from": "gkd"}


def test_a_run_copies_the_pre_stages_once_its_source_has_trained_them(grid, tmp_path, monkeypatch):
    spec = yaml.safe_load(grid.read_text())
    spec["methods"] = {
        "gkd + intra": {"method": "gkd", "args": {**spec["methods"]["gkd"]["args"], "inter_weight": 0}, "stages_from": "gkd"},
        "gkd": spec["methods"]["gkd"],
        "none": {"method": "none"},
    }
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, runs = plan_runs(load_grid(grid))
    run_dirs = {r.config.name: r.run_dir for r in runs}
    started = []

    class TrainsAtOnce:  # writes what a finished run leaves: its pre-stages and its checkpoint
        def __init__(self, command, **_):
            name = command[command.index("--set") + 1].split("=")[1].strip('"')
            started.append((name, "--resume" in command, sorted(p.name for p in run_dirs[name].glob("stage-*"))))
            run_dirs[name].mkdir(parents=True, exist_ok=True)
            if name == "g-enet-gkd":
                (run_dirs[name] / "stage-autoencoder.json").write_text("{}")
                (run_dirs[name] / "stage-autoencoder.safetensors").write_bytes(b"weights")
            (run_dirs[name] / "last.json").write_text(json.dumps({"epoch": 0}))
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(experiment.subprocess, "Popen", TrainsAtOnce)
    experiment.train_runs(runs, parallel=2)
    assert started == [
        ("g-enet-none", False, []),
        ("g-enet-gkd", False, []),
        ("g-enet-gkd-intra", True, ["stage-autoencoder.json", "stage-autoencoder.safetensors"]),  # waited, copied, resumed
    ]
    assert (run_dirs["g-enet-gkd-intra"] / "stage-autoencoder.safetensors").read_bytes() == b"weights"


def test_costs_are_measured_once_per_architecture_and_kept_for_later_reports(grid, tmp_path, monkeypatch):
    measured = []

    def fake_measure_cost(net, shape, threads, repeats):
        measured.append(type(net).__name__)
        return ModelCost(len(measured), 1.5, 10.0 * len(measured), (9.0, 11.0), 3.0, threads, tuple(shape))

    monkeypatch.setattr(experiment, "measure_cost", fake_measure_cost)
    config = load_grid(grid)
    teacher, students = plan_runs(config)

    def untimed():
        return {run.label: {"run": run, "net": None} for run in [teacher, *students]}

    out = tmp_path / "results"
    fresh = untimed()
    experiment.attach_costs(fresh, config, out, measure=True)
    assert measured == ["FANet", "ENet"]  # the three ENet rows share one measurement
    assert fresh["enet / kd"]["cost"] == fresh["enet / none"]["cost"] != fresh["teacher"]["cost"]
    reported = untimed()
    experiment.attach_costs(reported, config, out, measure=False)
    assert len(measured) == 2
    assert {label: r["cost"] for label, r in reported.items()} == {label: r["cost"] for label, r in fresh.items()}
    nothing_kept = untimed()
    experiment.attach_costs(nothing_kept, config, tmp_path / "elsewhere", measure=False)
    assert all("cost" not in r for r in nothing_kept.values())


def test_kept_rows_stand_only_while_their_teacher_is_the_one_they_were_distilled_from(grid, tmp_path, monkeypatch):
    """A teacher trained again makes the kept rows distilled from the old one stale: never a mixed table."""
    spec = yaml.safe_load(grid.read_text())
    spec["methods"] = {"none": {"method": "none"}, "kd": {"method": "kd", "start_from": "none"}}
    grid.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert CliRunner().invoke(app, ["experiment", str(grid), "--no-cost"]).exit_code == 0
    runs, out = tmp_path / "runs", tmp_path / "results"
    recorded = json.loads((out / "runs.json").read_text())
    kd_record = next(v for k, v in recorded.items() if k.startswith(f"{runs / 'g-enet-kd'}@"))
    assert sorted(kd_record["made_from"]) == [str(runs / "g-enet-none"), str(runs / "teacher")]
    (runs / "g-enet-kd").rename(tmp_path / "archived-kd")
    labels = lambda: [r["model / method"] for r in csv.DictReader((out / "results.csv").open())]  # noqa: E731
    kept = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"])
    assert "enet / kd: run folder absent, reported from" in kept.output and labels() == ["teacher", "enet / none", "enet / kd"]
    # the teacher is trained again (other weights): the archived KD row no longer stands
    weights = runs / "teacher" / "best.safetensors"
    original = weights.read_bytes()
    save_file({k: v + 0.01 for k, v in load_file(weights).items()}, weights)
    stale = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"])
    assert stale.exit_code == 0, stale.output
    assert "enet / kd: not reported: its results in" in stale.output and "teacher unseen" in stale.output
    assert labels() == ["teacher", "enet / none"]
    monkeypatch.setattr(cli, "console", Console(width=300))
    status = CliRunner().invoke(app, ["experiment", str(grid), "--status"])
    kd_line = next(line for line in status.output.splitlines() if "enet / kd" in line)
    assert "made from other weights than its teacher's or start's now" in kd_line
    # with the teacher it was distilled from back, it stands again
    weights.write_bytes(original)
    back = CliRunner().invoke(app, ["experiment", str(grid), "--no-cost", "--no-train"])
    assert "enet / kd: run folder absent, reported from" in back.output and labels() == ["teacher", "enet / none", "enet / kd"]
