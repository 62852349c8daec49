"""`meddistill crossval`: k-fold cross-validation on phantoms, driven as a user would."""

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config_dict
from meddistill.builders import build_samples
from meddistill.cli import app
from meddistill.crossval import plan_folds
from meddistill.data import Preparation
from meddistill.inference import predict_probability
from meddistill.metrics import MetricAccumulator
from meddistill.zoo import load_model


@pytest.fixture()
def config(tmp_path):
    values = tiny_config_dict(tmp_path, "cv", train={"epochs": 1, "batch_size": 2})
    values["data"]["folds"] = 2
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_crossval_trains_every_fold_and_pools_the_held_out_images(config, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["crossval", str(config), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "pooled over all folds (4 images)" in result.output
    out = tmp_path / "runs" / "cv-crossval"
    report = json.loads((out / "crossval.json").read_text())
    assert report["scored"] == [0, 1] and report["checkpoint"] == "last"
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == sorted(f"phantom_0_{i:03d}" for i in range(4))  # each image once

    # the pooled score is every fold's own network on the images that fold held out, and nothing else
    _, runs = plan_folds(config)
    expected = MetricAccumulator(0.5)
    for run, fold in zip(runs, report["folds"]):
        net, meta = load_model(str(run.run_dir / "last"))
        held_out = build_samples(run.config.data, run.config.seed)[1]
        assert fold["images"] == [s.name for s in held_out]
        for sample in held_out:
            expected.update(predict_probability(net, sample.image, sample.fov, preparation=Preparation.from_meta(meta)),
                            sample.vessels, sample.fov)
    assert report["pooled"] == pytest.approx(expected.compute())
    assert "| fold 0 (" in (out / "crossval.md").read_text()

    trained = (runs[0].run_dir / "last.safetensors").stat().st_mtime_ns
    again = runner.invoke(app, ["crossval", str(config), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert (runs[0].run_dir / "last.safetensors").stat().st_mtime_ns == trained  # finished folds are not trained again
    assert json.loads((tmp_path / "again" / "crossval.json").read_text())["pooled"] == report["pooled"]
    status = runner.invoke(app, ["crossval", str(config), "--status"])
    assert status.exit_code == 0 and status.output.count("done: 1 of 1 epochs") == 2


def test_crossval_scores_only_the_finished_folds_and_says_so(config, tmp_path):
    runner = CliRunner()
    no_fold = runner.invoke(app, ["crossval", str(config), "--no-train"])
    assert no_fold.exit_code == 2 and "no fold has finished training yet" in no_fold.output
    assert runner.invoke(app, ["train", str(config), "--set", "name=cv-fold1", "--set", "data.fold=1", "--no-progress"]).exit_code == 0
    partial = runner.invoke(app, ["crossval", str(config), "--no-train"])
    assert partial.exit_code == 0, partial.output
    assert "pooled over fold 1 of 2 (2 images)" in partial.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--set", "data.folds=0"], "sets no cross-validation"),
     (["--checkpoint", "first"], "checkpoint must be one of last, best"),
     (["--set", "data.fold"], "must look like key.sub=value"),
     (["--set", "task.name=retinal-keypoints"], "crossval scores segmentation")],
)
def test_crossval_mistakes_are_one_line_errors(config, args, message):
    result = CliRunner().invoke(app, ["crossval", str(config), "--no-train", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_each_fold_distils_from_its_own_teacher(tmp_path):
    values = tiny_config_dict(tmp_path, "student-cv", method={"name": "kd"},
                              teacher={"name": "fanet", "weights": "runs/teacher-cv-fold{fold}/last"})
    values["data"]["folds"] = 2
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(values))
    _, runs = plan_folds(path)
    assert [r.config.teacher.weights for r in runs] == ["runs/teacher-cv-fold0/last", "runs/teacher-cv-fold1/last"]
    assert runs[1].command[3] == "distill" and "teacher.weights=\"runs/teacher-cv-fold1/last\"" in runs[1].command


def test_spread_is_the_sample_deviation_and_the_standard_error():
    from meddistill.crossval import spread

    std, error = spread([{"f1": 0.7}, {"f1": 0.8}, {"f1": 0.9}])
    assert std == pytest.approx(0.1) and error == pytest.approx(0.1 / 3**0.5)
    assert all(v != v for v in spread([{"f1": 0.7}]))  # one value has no spread: NaN, not 0
