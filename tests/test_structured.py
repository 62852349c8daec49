"""SKD, IFVD, CWD and CoCo: their losses against hand-computed values, and each method end to end."""

import csv
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config_dict
from meddistill.checkpoint import save_model
from meddistill.config import config_from_dict
from meddistill.distill import (
    SKDDistiller,
    class_variation_map,
    cross_layer_correlation,
    cwd_loss,
    gradient_penalty,
    ifv_loss,
    pairwise_affinity,
    pairwise_loss,
)
from meddistill.engine import train
from meddistill.models import MODELS
from meddistill.tasks import SegmentationTask


def _positions(*vectors):
    """A ``(1, C, 1, N)`` feature whose N positions hold the given C-vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, len(vectors[0]), 1, len(vectors))


def test_pairwise_affinity_and_loss_by_hand():
    affinity = pairwise_affinity(_positions([1, 0], [1, 1]))
    assert torch.allclose(affinity, torch.tensor([[[1, 2**-0.5], [2**-0.5, 1]]]))
    # student: four parallel positions (all-ones affinity); teacher: alternating orthogonal ones
    student = torch.tensor([[1.0, 0.0]]).T.reshape(1, 2, 1, 1).expand(1, 2, 2, 2)
    teacher = torch.stack([torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])])[None]
    assert pairwise_loss(student, teacher, grid=2).item() == pytest.approx(8 / 16)


def test_class_variation_map_and_ifv_loss_by_hand():
    feature = _positions([1, 0], [0, 1], [3, 4])
    labels = torch.tensor([[[0, 0, 1]]])
    expected = torch.tensor([[[2**-0.5, 2**-0.5, 1.0]]])  # prototypes (.5, .5) and (3, 4)
    assert torch.allclose(class_variation_map(feature, labels, 2), expected)
    same = _positions([1, 0], [1, 0], [3, 4])  # every pixel equals its prototype: map of ones
    assert ifv_loss(same, feature, labels, 2).item() == pytest.approx(((1 - 2**-0.5) ** 2 * 2) / 3)


def test_cwd_loss_by_hand():
    student = torch.zeros(1, 1, 1, 2)  # softmax over positions: (.5, .5)
    teacher = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)  # (.25, .75)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert cwd_loss(student, teacher, temperature=1.0).item() == pytest.approx(expected)
    assert cwd_loss(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="equal shapes"):
        cwd_loss(student, torch.zeros(1, 2, 1, 2))


def test_cross_layer_correlation_of_parallel_positions_is_all_ones():
    parallel = torch.ones(1, 3, 2, 2)
    assert torch.allclose(cross_layer_correlation(torch.ones(1, 5, 4, 4), parallel), torch.ones(1, 4, 4))


def test_gradient_penalty_by_hand():
    weight = torch.tensor([[2.0, 0.0, 0.0]])  # D(x) = w·x, gradient norm 2 everywhere
    critic = lambda x: x.flatten(1) @ weight.T  # noqa: E731
    assert gradient_penalty(critic, torch.randn(4, 3), torch.randn(4, 3)).item() == pytest.approx(1.0)


def test_adversarial_terms_train_only_their_own_side():
    torch.manual_seed(0)
    student, teacher = MODELS.build("enet"), MODELS.build("fanet", base_channels=8)
    example = torch.randn(1, 3, 32, 32)
    distiller = SKDDistiller(student, teacher, SegmentationTask(), example)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.randint(0, 2, (2, 32, 32))}
    losses = distiller(batch)
    assert set(losses) == {"task", "pixel", "pair", "holistic", "critic"}
    losses["holistic"].backward(retain_graph=True)
    assert all(p.grad is None for p in distiller.critic.parameters())
    assert any(p.grad is not None for p in student.parameters())
    student.zero_grad(set_to_none=True)
    losses["critic"].backward()
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for p in distiller.critic.parameters())


@pytest.mark.parametrize(
    "method, terms",
    [("skd", {"pixel", "pair", "holistic", "critic"}), ("ifvd", {"pixel", "ifv", "holistic", "critic"}),
     ("coco", {"coco", "holistic", "critic"}), ("cwd", {"cwd"})],
)
def test_each_baseline_distils_end_to_end(tmp_path, method, terms):
    torch.manual_seed(0)
    save_model(tmp_path / "teacher", MODELS.build("fanet", base_channels=8), {"model": "fanet", "args": {"base_channels": 8}})
    values = tiny_config_dict(
        tmp_path,
        teacher={"name": "fanet", "args": {"base_channels": 8}, "weights": str(tmp_path / "teacher")},
        method={"name": method},
        train={"epochs": 1, "batch_size": 2},
    )
    run = train(config_from_dict(values), progress=False).run_dir
    row = next(csv.DictReader((run / "metrics.csv").open()))
    assert {k.removeprefix("train_") for k in row if k.startswith("train_")} == terms | {"task", "loss"}
    assert set(load_file(str(run / "best.safetensors"))) == set(MODELS.build("enet").state_dict())
