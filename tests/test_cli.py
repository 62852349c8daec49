"""End-to-end: the CLI driven as a user would, on phantom data the tests make."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_config_dict
from meddistill.cli import app
from meddistill.data import Preparation, make_fundus_phantom, read_rgb
from meddistill.report import folder_name

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained student checkpoint, via `meddistill train`."""
    tmp = tmp_path_factory.mktemp("trained")
    config = tmp / "student.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp, "student", train={"epochs": 1, "batch_size": 2})))
    result = invoke("train", config, "--no-progress")
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "student" / "best"


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "eye.png"
    Image.fromarray(make_fundus_phantom(72, seed=3).image).save(path)
    return path


def test_help_on_every_command():
    commands = ([], ["train"], ["distill"], ["evaluate"], ["evaluate", "segmentation"], ["evaluate", "fsd"],
                ["evaluate", "fire"], ["register"], ["fire-benchmark"], ["experiment"], ["models"], ["segment"], ["bench"], ["demo"])
    for args in commands:
        result = invoke(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_models_lists_every_shipped_weight():
    from meddistill.zoo import shipped_models

    result = invoke("models")
    assert result.exit_code == 0, result.output
    for name in shipped_models():
        assert name in result.output


def test_segment_writes_mask_probability_and_overlay(trained, photo, tmp_path):
    out = tmp_path / "out"
    result = invoke("segment", photo, "--model", trained, "--out", out)
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(out / "eye_mask.png"))
    prob = np.asarray(Image.open(out / "eye_prob.png"))
    overlay = read_rgb(out / "eye_overlay.png")
    assert mask.shape == prob.shape == (72, 72) and overlay.shape == (72, 72, 3)
    assert set(np.unique(mask)) <= {0, 255}
    # the mask is the thresholded probability map
    assert np.array_equal(mask == 255, prob >= 128)


def test_segment_a_folder_of_images(trained, photo, tmp_path):
    second = tmp_path / "eye2.jpg"
    Image.fromarray(make_fundus_phantom(64, seed=4).image).save(second)
    out = tmp_path / "out"
    result = invoke("segment", tmp_path, "--model", trained, "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.glob("*_mask.png")} == {"eye_mask.png", "eye2_mask.png"}
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("segment", empty, "--model", trained, "--out", out)
    assert result.exit_code == 2 and "holds no images" in result.output
    # one corrupt photo among good ones fails before any is segmented
    (tmp_path / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    fresh = tmp_path / "fresh"
    result = invoke("segment", tmp_path, "--model", trained, "--out", fresh)
    assert result.exit_code == 2 and "zz_broken.png" in result.output and not fresh.exists()


def test_distill_from_the_trained_checkpoint(trained, tmp_path):
    values = tiny_config_dict(tmp_path, "kd", teacher={"name": "enet", "weights": str(trained)},
                              method={"name": "kd"}, train={"epochs": 1, "batch_size": 2})
    config = tmp_path / "kd.yaml"
    config.write_text(yaml.safe_dump(values))
    result = invoke("distill", config, "--no-progress")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "kd" / "best.safetensors").is_file()
    # `train` refuses a distillation config and vice versa
    assert invoke("train", config, "--no-progress").exit_code == 2


def test_evaluate_and_bench_write_json(trained, tmp_path):
    folder = tmp_path / "data"
    for i in range(2):
        p = make_fundus_phantom(64, seed=20 + i)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        Image.fromarray(p.image).save(folder / "images" / f"e{i}.png")
        Image.fromarray((p.vessels * 255).astype(np.uint8)).save(folder / "masks" / f"e{i}.png")
    result = invoke("evaluate", "segmentation", "--model", trained, "--dataset", "folder", "--root", folder,
                    "--json", tmp_path / "m.json", "--per-image", tmp_path / "per_image.csv", "--error-maps", tmp_path / "errors")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())["results"][str(trained)]
    assert set(metrics) >= {"sensitivity", "specificity", "accuracy", "auc", "f1", "miou"}
    with (tmp_path / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["image"]) for r in rows] == [(str(trained), "e0"), (str(trained), "e1")]
    # pooled F1 = ΣTP·2 / Σ(2TP + FP + FN): a mediant of the images' F1, so between them
    image_f1 = [float(r["f1"]) for r in rows]
    assert min(image_f1) - 1e-9 <= metrics["f1"] <= max(image_f1) + 1e-9
    for i in range(2):
        photo = np.asarray(Image.open(folder / "images" / f"e{i}.png"))
        truth = np.asarray(Image.open(folder / "masks" / f"e{i}.png")) > 0
        drawn = np.asarray(Image.open(tmp_path / "errors" / folder_name(str(trained)) / f"e{i}_errors.png"))
        assert drawn.shape == photo.shape
        assert (drawn != photo).any(axis=-1)[truth].all()  # every vessel pixel is found (green) or missed (blue)
        false_vessel = (drawn != photo).any(axis=-1) & ~truth
        assert (drawn[false_vessel][:, 0] >= photo[false_vessel][:, 0]).all()  # red
    result = invoke("evaluate", "segmentation", "--model", trained, "--model", trained, "--dataset", "folder",
                    "--root", folder, "--error-maps", tmp_path / "errors")
    assert result.exit_code == 2 and "error-map folder" in result.output
    # an ensemble of a model and its copy scores as the model does; members must prepare photos alike
    twin = tmp_path / "twin"
    for suffix in (".safetensors", ".json"):
        twin.with_suffix(suffix).write_bytes(trained.with_suffix(suffix).read_bytes())
    result = invoke("evaluate", "segmentation", "--model", trained, "--model", twin, "--ensemble",
                    "--dataset", "folder", "--root", folder, "--json", tmp_path / "ensemble.json")
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "ensemble.json").read_text())["results"]
    assert scores["ensemble of 2"] == pytest.approx(scores[str(trained)], abs=1e-6)
    meta = json.loads(twin.with_suffix(".json").read_text())
    twin.with_suffix(".json").write_text(json.dumps(meta | {"clahe": not meta.get("clahe", False)}))
    result = invoke("evaluate", "segmentation", "--model", trained, "--model", twin, "--ensemble",
                    "--dataset", "folder", "--root", folder)
    assert result.exit_code == 2 and "--ensemble needs models that prepare photos alike" in result.output
    # at threshold 0 every pixel of the field of view is called vessel
    result = invoke("evaluate", "segmentation", "--model", trained, "--dataset", "folder", "--root", folder,
                    "--threshold", 0, "--json", tmp_path / "all.json")
    assert result.exit_code == 0, result.output
    everything = json.loads((tmp_path / "all.json").read_text())
    assert everything["threshold"] == 0
    assert everything["results"][str(trained)]["sensitivity"] == 1.0
    assert everything["results"][str(trained)]["specificity"] == 0.0
    result = invoke("bench", "--model", trained, "--size", 64, "--repeats", 2, "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    cost = json.loads((tmp_path / "b.json").read_text())[str(trained)]
    assert 300_000 < cost["params"] < 450_000  # ENet
    assert cost["gflops"] > 0 and cost["latency_ms"] > 0


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.png", "not found"),
        (lambda d: _write(d / "corrupt.png", b"\x89PNG\r\n\x1a\n garbage"), "eye"),
        (lambda d: _save(d / "gray.png", np.zeros((32, 32), np.uint8)), "grayscale"),
        (lambda d: _save(d / "rgba.png", np.zeros((32, 32, 4), np.uint8)), "alpha"),
    ],
)
def test_bad_images_give_one_line_errors(trained, tmp_path, make_input, message):
    path = make_input(tmp_path)
    result = invoke("segment", path, "--model", trained, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "error:" in result.output


def _write(path, data):
    path.write_bytes(data)
    return path


def _save(path, array):
    Image.fromarray(array).save(path)
    return path


def test_user_mistakes_exit_2_without_traceback(trained, photo, tmp_path):
    bad_config = tmp_path / "typo.yaml"
    bad_config.write_text("name: x\ntrian:\n  epochs: 2\n")
    result = invoke("train", bad_config)
    assert result.exit_code == 2 and "did you mean 'train'" in result.output
    # a misspelt argument of the task, the model or the method names the nearest one it takes
    bad_config.write_text("name: x\nstudent: {name: enet}\ntask: {args: {fov_diamter: 500}}\n")
    result = invoke("train", bad_config)
    assert result.exit_code == 2
    assert "task 'vessel-segmentation' has no argument 'fov_diamter' (did you mean 'fov_diameter'?)" in result.output
    bad_config.write_text("name: x\nstudent: {name: fanet, args: {base_chanels: 8}}\n")
    result = invoke("train", bad_config)
    assert result.exit_code == 2 and "model 'fanet' has no argument 'base_chanels' (did you mean 'base_channels'?)" in result.output
    result = invoke("segment", photo, "--model", "drive-studnet", "--out", tmp_path)
    assert result.exit_code == 2 and "no shipped model or checkpoint named 'drive-studnet'" in result.output
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    result = invoke("evaluate", "segmentation", "--model", trained, "--dataset", "folder", "--root", empty)
    assert result.exit_code == 2 and "error:" in result.output
    result = invoke("bench", "--model", trained, "--size", 32, "--repeats", 1, "--json", tmp_path)  # a folder, not a file
    assert result.exit_code == 2 and f"Is a directory: {tmp_path}" in result.output


def test_installed_entry_point_reports_errors_on_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "meddistill", "segment", str(tmp_path / "nope.jpg"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr


def test_demo_quick_writes_report(tmp_path):
    result = invoke("demo", "--quick", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    for name in ("results.md", "results.json", "overlays.png", "training_curves.png"):
        assert (tmp_path / "report" / name).is_file(), name
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results) == {"teacher", "student-scratch", "student-kd"}
    assert results["teacher"]["gflops"] > results["student-kd"]["gflops"]


def test_a_clahe_trained_model_segments_with_clahe(photo, tmp_path):
    from meddistill.checkpoint import read_meta
    from meddistill.inference import predict_probability
    from meddistill.zoo import load_model

    values = tiny_config_dict(tmp_path, "clahe", task={"name": "vessel-segmentation", "args": {"clahe": True}},
                              train={"epochs": 1, "batch_size": 2})
    config = tmp_path / "clahe.yaml"
    config.write_text(yaml.safe_dump(values))
    assert invoke("train", config, "--no-progress").exit_code == 0
    stem = tmp_path / "runs" / "clahe" / "best"
    assert read_meta(stem)["clahe"] is True
    out = tmp_path / "out"
    assert invoke("segment", photo, "--model", stem, "--out", out).exit_code == 0
    net, meta = load_model(stem)
    image = read_rgb(photo)
    expected = {clahe: np.round(255 * predict_probability(net, image, preparation=Preparation(meta["fov_diameter_px"], clahe)))
                for clahe in (True, False)}
    written = np.asarray(Image.open(out / "eye_prob.png"))
    assert np.array_equal(written, expected[True]) and not np.array_equal(written, expected[False])
    # a student distilled from it must see CLAHE-equalised inputs too
    values = tiny_config_dict(tmp_path, "kd", teacher={"name": "enet", "weights": str(stem)}, method={"name": "kd"},
                              train={"epochs": 1, "batch_size": 2})
    config.write_text(yaml.safe_dump(values))
    result = invoke("distill", config, "--no-progress")
    assert result.exit_code == 2 and "task.args.clahe: true" in result.output
