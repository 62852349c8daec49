import csv
import json

import pytest
import torch

from conftest import tiny_config_dict
from meddistill.config import config_from_dict
from meddistill.engine import train
from meddistill.errors import MeddistillError
from meddistill.tasks import SegmentationTask


def _bar_prediction_of_a_line() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels: a 6-px line on row 3 of an 8×8 image. Logits: a sure 2-px-wide bar on rows 3-4."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 3, 1:7] = 1
    vessel = torch.full((8, 8), -20.0)
    vessel[3:5, 1:7] = 20.0
    return torch.stack([-vessel, vessel]).unsqueeze(0), labels


def test_cldice_term_by_hand():
    logits, labels = _bar_prediction_of_a_line()
    losses = SegmentationTask(cldice_weight=0.5).losses(logits, {"label": labels})
    assert set(losses) == {"task", "cldice"}
    # Soft erosion removes both a 1-px line and a 2-px bar, so each is its own skeleton: the
    # bar's 12 px hold the line's 6 (topology precision (6 + 1) / (12 + 1)); the line lies
    # inside the bar (sensitivity (6 + 1) / (6 + 1)). Smoothing 1 and 1e-4 as in MONAI.
    precision, sensitivity = 7 / 13, 1.0
    expected = 1 - 2 * precision * sensitivity / (precision + sensitivity + 1e-4)
    assert losses["cldice"].item() == pytest.approx(0.5 * expected, abs=1e-6)
    sure_line = (labels[0].float() * 40 - 20) * torch.tensor([-1.0, 1.0]).view(2, 1, 1)
    perfect = SegmentationTask(cldice_weight=0.5).losses(sure_line.unsqueeze(0), {"label": labels})
    assert perfect["cldice"].item() == pytest.approx(0.0, abs=1e-4)


def test_cldice_is_off_by_default_and_its_weight_is_checked():
    logits, labels = _bar_prediction_of_a_line()
    assert set(SegmentationTask().losses(logits, {"label": labels})) == {"task"}
    for weight in (-1.0, "abc"):
        with pytest.raises(MeddistillError, match="cldice_weight must be a number at least 0"):
            SegmentationTask(cldice_weight=weight)


def test_cldice_term_is_trained_and_logged(tmp_path):
    values = tiny_config_dict(tmp_path, task={"name": "vessel-segmentation", "args": {"cldice_weight": 0.5}},
                              train={"epochs": 1, "batch_size": 2})
    result = train(config_from_dict(values), progress=False)
    row = next(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert 0 < float(row["train_cldice"]) <= 0.5
    assert float(row["train_loss"]) == pytest.approx(float(row["train_task"]) + float(row["train_cldice"]), rel=1e-5)


def test_fov_diameter_trains_on_resized_photos_and_validates_each_at_its_own_size():
    from meddistill.config import DataConfig
    from meddistill.data import Preparation, training_fov_diameter
    from meddistill.inference import evaluate_samples
    from meddistill.zoo import build_network

    data = DataConfig(dataset="phantom", phantom_count=4, phantom_size=64, patch_size=32, patches_per_image=1)
    native = SegmentationTask().build_data(data, seed=0)
    diameter = native.meta["fov_diameter_px"]
    doubled = SegmentationTask(fov_diameter=2 * diameter).build_data(data, seed=0)
    # the training photos were resized (the recorded median diameter doubles, up to rounding) ...
    assert doubled.meta["fov_diameter_px"] == pytest.approx(2 * diameter, rel=0.03)
    assert training_fov_diameter(native.validation) == training_fov_diameter(doubled.validation)
    # ... the validation photos were not: they are resized on the way in and scored at their own size
    torch.manual_seed(0)
    net = build_network("enet").eval()
    task = SegmentationTask(fov_diameter=2 * diameter)
    metrics = task.validate(net, doubled.validation, torch.device("cpu"))
    assert metrics == evaluate_samples(net, doubled.validation, "cpu", Preparation(2 * diameter))
    assert metrics != evaluate_samples(net, doubled.validation, "cpu", Preparation())


def test_fov_diameter_is_checked_and_recorded_in_the_checkpoint(tmp_path):
    for bad in (0, -5, "wide"):
        with pytest.raises(MeddistillError, match="fov_diameter must be a width in pixels"):
            SegmentationTask(fov_diameter=bad)
    values = tiny_config_dict(tmp_path, task={"name": "vessel-segmentation", "args": {"fov_diameter": 90}},
                              train={"epochs": 1, "batch_size": 2})
    result = train(config_from_dict(values), progress=False)
    meta = json.loads((result.run_dir / "last.json").read_text())
    assert meta["fov_diameter_px"] == pytest.approx(90, rel=0.03)
