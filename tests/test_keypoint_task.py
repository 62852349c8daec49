"""The retinal keypoint task on the shared engine: pairs, warping, training and the CLI."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from meddistill.builders import phantom_samples
from meddistill.cli import app
from meddistill.errors import MeddistillError
from meddistill.registration.task import KeypointPairDataset, random_affine, transform_points, warp_to_reference

runner = CliRunner()


def test_warp_to_reference_identity_and_shift():
    maps = torch.arange(20.0).view(1, 1, 4, 5)
    same, inside = warp_to_reference(maps, torch.eye(3)[None])
    assert torch.allclose(same, maps) and inside.all()
    shift = torch.eye(3)[None].clone()
    shift[0, 0, 2] = 1.0  # reference x lands on warped x + 1
    moved, inside = warp_to_reference(maps, shift)
    assert torch.allclose(moved[..., :4], maps[..., 1:])
    assert inside[0, 0, :, :4].all() and not inside[0, 0, :, 4].any()


def test_transform_points_and_random_affine_keep_the_centre_close():
    matrix = torch.tensor([[0.0, -1.0, 10.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert transform_points(matrix, torch.tensor([[1.0, 2.0]])).tolist() == [[8.0, 1.0]]
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = random_affine(100, rng)
        centre = m @ np.array([50, 50, 1.0])
        assert np.abs(centre[:2] - 50).max() <= 10 + 1e-9  # the shift is at most 10 % of the side
        assert np.allclose(m[2], [0, 0, 1])


def test_pair_dataset_labels_follow_the_warp():
    samples = phantom_samples(2, 256, seed=5)
    dataset = KeypointPairDataset(samples, image_size=256, patch_size=128, patches_per_image=3, seed=1)
    assert len(dataset) == 6
    item = dataset[4]
    assert item["image"].shape == item["warped"].shape == item["label"].shape == (1, 128, 128)
    assert item["label"].sum() > 0
    # The warped copy shows the crop moved by the matrix: resampling it back matches the crop
    # where both see (up to the change of look).
    back, inside = warp_to_reference(item["warped"][None], item["matrix"][None])
    mask = inside[0, 0].bool()
    correlation = np.corrcoef(back[0, 0][mask].numpy(), item["image"][0][mask].numpy())[0, 1]
    assert correlation > 0.6
    dataset.set_epoch(1)
    assert not torch.equal(dataset[4]["matrix"], item["matrix"])
    with pytest.raises(ValueError):
        KeypointPairDataset(samples, image_size=256, patch_size=100)


def test_pair_dataset_shift_bound():
    samples = phantom_samples(1, 256, seed=5)
    centre = np.array([64, 64, 1.0])
    shifts = {}
    for max_shift in (0.1, 0.3):
        dataset = KeypointPairDataset(samples, image_size=256, patch_size=128, patches_per_image=40, max_shift=max_shift)
        moved = np.array([np.abs(dataset[i]["matrix"].double().numpy() @ centre - centre)[:2].max() for i in range(40)])
        assert moved.max() <= max_shift * 128 + 1e-3  # the crop centre moves by the shift alone
        shifts[max_shift] = moved.max()
    assert shifts[0.3] > 0.1 * 128  # the larger bound is used, not ignored
    with pytest.raises(MeddistillError, match="max_shift"):
        KeypointPairDataset(samples, image_size=256, patch_size=128, max_shift=1.2)


def _write_config(tmp_path, **train):
    config = {
        "name": "kp",
        "output": str(tmp_path / "runs"),
        "task": {"name": "retinal-keypoints", "args": {"image_size": 256}},
        "data": {"dataset": "phantom", "phantom_count": 4, "phantom_size": 256, "patch_size": 128,
                 "patches_per_image": 2, "val_fraction": 0.25},
        "student": {"name": "retina-student"},
        "train": {"epochs": 2, "batch_size": 2, "monitor": "mauc", "threads": 1, **train},
    }
    path = tmp_path / "kp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained_keypoints(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("kp")
    result = runner.invoke(app, ["train", str(_write_config(tmp_path))])
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "kp"


def test_keypoint_training_logs_each_term_and_validates_by_fire_protocol(trained_keypoints):
    header = (trained_keypoints / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("train_detector", "train_geometric", "train_descriptor", "val_mauc", "val_auc_S", "val_failed"):
        assert column in header
    meta = json.loads((trained_keypoints / "best.json").read_text())
    assert meta["task"] == "retinal-keypoints" and meta["model"] == "retina-student"


def test_register_with_a_trained_keypoint_checkpoint(trained_keypoints, tmp_path):
    photo = phantom_samples(1, 256, seed=9)[0].image
    for name in ("fixed.png", "moving.png"):
        Image.fromarray(photo).save(tmp_path / name)
    result = runner.invoke(app, ["register", str(tmp_path / "fixed.png"), str(tmp_path / "moving.png"),
                                 "--method", "retina-student", "--weights", str(trained_keypoints / "best"),
                                 "--json", str(tmp_path / "r.json")])
    assert result.exit_code in (0, 1), result.output  # an untrained network may fail, but says so
    verdict = json.loads((tmp_path / "r.json").read_text())
    assert verdict["status"] in ("ok", "failed") and verdict["method"] == "retina-student"


def test_learned_method_errors_are_one_line(trained_keypoints, tmp_path, monkeypatch):
    import meddistill.zoo

    photo = phantom_samples(1, 256, seed=9)[0].image
    Image.fromarray(photo).save(tmp_path / "a.png")
    pair = [str(tmp_path / "a.png"), str(tmp_path / "a.png")]
    with monkeypatch.context() as patch:  # an installation whose weights folder lacks the method's file
        patch.setattr(meddistill.zoo, "WEIGHTS_DIR", tmp_path / "no-weights")
        result = runner.invoke(app, ["register", *pair, "--method", "superretina-lk"])
    assert result.exit_code == 2 and "no weights for method 'superretina-lk'" in result.output
    result = runner.invoke(app, ["register", *pair, "--method", "sift", "--weights", "x"])
    assert result.exit_code == 2 and "--weights is for learned methods" in result.output
    result = runner.invoke(app, ["register", *pair, "--method", "superpoint", "--matcher", "glue"])
    assert result.exit_code == 2 and "no shipped glue matcher fits method 'superpoint'" in result.output
    result = runner.invoke(app, ["segment", str(tmp_path / "a.png"), "--model", str(trained_keypoints / "best"),
                                 "--out", str(tmp_path / "seg")])
    assert result.exit_code == 2 and "not a vessel-segmentation one" in result.output


def test_keypoint_kd_terms_vanish_for_a_student_equal_to_its_teacher():
    from meddistill.distill import KeypointDistiller
    from meddistill.models import MODELS
    from meddistill.registration import KeypointTask

    torch.manual_seed(0)
    teacher = MODELS.build("retina-student")
    student = MODELS.build("retina-student")
    student.load_state_dict(teacher.state_dict())
    distiller = KeypointDistiller(student, teacher, KeypointTask(image_size=64), threshold=0.0)
    student.eval()  # the distiller keeps the teacher in eval mode; batch norm must match
    image = torch.rand(2, 1, 64, 64)
    out_s, out_t = student(image), teacher(image)
    losses = distiller.distillation_losses({}, out_s, out_t)
    assert losses["heatmap_kd"].item() == pytest.approx(0.0, abs=1e-5)
    # identical descriptors: the matched distance is 0, so the triplet term is at most the margin
    assert 0.0 <= losses["descriptor_kd"].item() <= 0.8 + 1e-6
    sum(losses.values()).backward()
    assert any(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_reverse_distillation_of_the_swin_student_runs_on_the_engine(trained_keypoints, tmp_path):
    path = _write_config(tmp_path, epochs=1)
    config = yaml.safe_load(path.read_text())
    config.update(name="kp-swin", student={"name": "superretina-swin"},
                  teacher={"name": "retina-student", "weights": str(trained_keypoints / "best")},
                  method={"name": "keypoint_kd"})
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["distill", str(path)])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "runs" / "kp-swin" / "metrics.csv").read_text().splitlines()[0]
    assert "train_heatmap_kd" in header and "train_descriptor_kd" in header and "train_detector" in header


def _expansion_inputs(warped_peak: float):
    heatmap, warped = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    heatmap[0, 0, 20, 20], heatmap[0, 0, 40, 40] = 0.9, 0.8
    warped[0, 0, 22, 23], warped[0, 0, 42, 43] = warped_peak, warped_peak
    descriptors = torch.zeros(1, 4, 8, 8)
    descriptors[0, 0, :, :4], descriptors[0, 1, :, 4:] = 1.0, 1.0  # left half e0, right half e1
    matrix = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]]])
    return heatmap, warped, descriptors, matrix


def _batch(matrix, epoch):
    return {"matrix": matrix, "photo": torch.tensor([0]), "origin": torch.tensor([[0, 0]]), "epoch": torch.tensor([epoch])}


def test_progressive_keypoint_expansion_verifies_then_fades():
    from meddistill.registration import KeypointTask

    task = KeypointTask(image_size=64, nms_radius=3)
    heatmap, warped, descriptors, matrix = _expansion_inputs(0.9)
    expanded = task.expand(heatmap, warped, descriptors, descriptors.clone(), _batch(matrix, 0))
    assert torch.nonzero(expanded[0, 0]).tolist() == [[20, 20], [40, 40]]
    assert task.value_maps[0][20, 20] == 5
    nothing = torch.zeros_like(heatmap)
    assert task.expand(nothing, nothing, descriptors, descriptors, _batch(matrix, 4))[0, 0, 20, 20] == 1  # 5 − 4
    assert task.expand(nothing, nothing, descriptors, descriptors, _batch(matrix, 5)).sum() == 0


def test_progressive_keypoint_expansion_rejects_points_the_warped_view_misses():
    from meddistill.registration import KeypointTask

    task = KeypointTask(image_size=64, nms_radius=3)
    heatmap, warped, descriptors, matrix = _expansion_inputs(0.3)  # below 0.5 where they land
    assert task.expand(heatmap, warped, descriptors, descriptors, _batch(matrix, 0)).sum() == 0


def test_homographic_adaptation_with_only_the_identity_is_the_heatmap():
    from meddistill.models import MODELS
    from meddistill.registration.task import homographic_adaptation

    torch.manual_seed(0)
    net = MODELS.build("retina-student").eval()
    grey = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    direct = net(torch.from_numpy(grey).float().div(255)[None, None]).heatmap[0, 0].detach().numpy()
    np.testing.assert_allclose(homographic_adaptation(net, grey, warps=1), direct, atol=1e-5)
    averaged = homographic_adaptation(net, grey, warps=4)
    assert averaged.shape == (64, 64) and 0 <= averaged.min() and averaged.max() <= 1


def test_superpoint_objective_with_homographic_adaptation_labels(trained_keypoints, tmp_path):
    path = _write_config(tmp_path, epochs=1)
    config = yaml.safe_load(path.read_text())
    config.update(name="kp-superpoint", student={"name": "superpoint"})
    config["task"]["args"].update(objective="superpoint", adaptation_from=str(trained_keypoints / "best"), adaptation_warps=2)
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "runs" / "kp-superpoint" / "metrics.csv").read_text().splitlines()[0]
    assert "train_detector" in header and "train_descriptor" in header and "train_geometric" not in header
    config.update(name="kp-bad", student={"name": "retina-student"})
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and "needs a network with a 65-channel cell detector" in result.output


def test_adaptation_and_detection_thresholds_are_task_args(trained_keypoints):
    from meddistill.registration.task import KeypointTask, ValidationPair
    from meddistill.zoo import load_model

    network, _ = load_model(trained_keypoints / "best", task="retinal-keypoints")
    dataset = KeypointPairDataset(phantom_samples(1, 256, seed=5), image_size=256, patch_size=128)
    dataset.relabel(network, warps=1, threshold=0.0)
    assert len(dataset.labels[0]) > 0
    dataset.relabel(network, warps=1, threshold=1.01)  # above any heatmap value: no label survives
    assert len(dataset.labels[0]) == 0
    sample = phantom_samples(1, 256, seed=6)[0]
    pair = ValidationPair("S01", sample.image, sample.image, np.array([[100.0, 100.0]]), np.array([[100.0, 100.0]]))
    blind = KeypointTask(image_size=256, detection_threshold=1.01)
    assert blind.validate(network, [pair], torch.device("cpu"))["failed"] == 1.0


def test_glue_matcher_trains_on_a_frozen_detector_and_registers(trained_keypoints, tmp_path):
    path = _write_config(tmp_path, epochs=1)
    config = yaml.safe_load(path.read_text())
    config.update(name="kp-glue", student={"name": "glue", "args": {"layers": 1}})
    config["task"] = {"name": "keypoint-matching", "args": {"detector": str(trained_keypoints / "best"), "image_size": 256}}
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "kp-glue"
    assert "train_assignment" in (run / "metrics.csv").read_text().splitlines()[0]
    assert json.loads((run / "best.json").read_text())["detector"] == str(trained_keypoints / "best")
    photo = phantom_samples(1, 256, seed=9)[0].image
    Image.fromarray(photo).save(tmp_path / "a.png")
    result = runner.invoke(app, ["register", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--method", "retina-student",
                                 "--weights", str(trained_keypoints / "best"), "--matcher", "glue",
                                 "--matcher-weights", str(run / "best"), "--json", str(tmp_path / "g.json")])
    assert result.exit_code in (0, 1), result.output
    assert json.loads((tmp_path / "g.json").read_text())["status"] in ("ok", "failed")
    result = runner.invoke(app, ["register", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--matcher", "glue",
                                 "--matcher-weights", str(run / "best")])
    assert result.exit_code == 2 and "needs a learned keypoint method" in result.output
    # without --matcher-weights: the glue shipped for the method, and none fits a user's own detector
    result = runner.invoke(app, ["register", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--method", "retina-student",
                                 "--weights", str(trained_keypoints / "best"), "--matcher", "glue"])
    assert result.exit_code == 2 and "no shipped glue matcher fits this detector" in result.output
