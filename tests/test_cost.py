import math

import pytest
import torch
from torch import nn

from meddistill.cost import (
    ModelCost,
    count_flops,
    count_parameters,
    measure_cost,
    measure_latency,
    measure_peak_memory,
    peak_memory_increase,
)
from meddistill.errors import MeddistillError


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_count_parameters():
    assert count_parameters(nn.Linear(3, 4)) == 16
    frozen = nn.Linear(3, 4).requires_grad_(False)
    assert count_parameters(frozen) == 16
    # weight and bias only: running mean/var and the batch counter are buffers
    assert count_parameters(nn.BatchNorm2d(4)) == 8


def test_count_flops():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    assert count_flops(conv, (1, 1, 8, 8)) == 2 * 9 * 64
    assert count_flops(nn.Linear(10, 5), (2, 10)) == 2 * 2 * 10 * 5
    # elementwise ops are not counted
    assert count_flops(nn.Sequential(nn.Linear(10, 5), nn.ReLU()), (2, 10)) == 2 * 2 * 10 * 5


def test_train_flags_are_restored():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    model.train()
    model[2].eval()  # e.g. a frozen normalisation layer inside a training model
    count_flops(model, (2, 4))
    measure_latency(model, (2, 4), warmup=0, repeats=1)
    assert [m.training for m in model] == [True, True, False]


def test_measure_latency(two_threads):
    median, q25, q75 = measure_latency(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 32, 32), threads=1, warmup=1, repeats=5)
    assert all(math.isfinite(v) and v > 0 for v in (median, q25, q75))
    assert q25 <= median <= q75
    assert torch.get_num_threads() == 2


def test_threads_restored_when_forward_fails(two_threads):
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(Boom(), (1, 4), threads=1, warmup=1, repeats=1)
    assert torch.get_num_threads() == 2


def test_invalid_arguments():
    with pytest.raises(MeddistillError):
        measure_latency(nn.Linear(2, 2), (1, 2), threads=0)
    with pytest.raises(MeddistillError):
        measure_latency(nn.Linear(2, 2), (1, 2), repeats=0)
    with pytest.raises(MeddistillError):
        measure_peak_memory(nn.Linear(2, 2), (1, 2), threads=0)


def test_measure_cost(two_threads):
    # the output alone is a (1, 64, 256, 256) float32 tensor: 16 MiB
    model = nn.Conv2d(1, 64, 3, padding=1)
    cost = measure_cost(model, (1, 1, 256, 256), threads=1, warmup=1, repeats=3)
    assert isinstance(cost, ModelCost)
    assert cost.params == 64 * 9 + 64
    assert cost.gflops == pytest.approx(2 * 9 * 64 * 256 * 256 / 1e9)
    assert cost.latency_ms_iqr[0] <= cost.latency_ms <= cost.latency_ms_iqr[1]
    assert 10 <= cost.peak_memory_mb < 300
    assert cost.threads == 1 and cost.input_shape == (1, 1, 256, 256)
    assert torch.get_num_threads() == 2


def test_example_input_follows_a_channels_last_model():
    from meddistill.cost import _example_input

    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3))
    assert not _example_input(net, (1, 2, 8, 8)).is_contiguous(memory_format=torch.channels_last)
    net = net.to(memory_format=torch.channels_last)
    x = _example_input(net, (1, 2, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (1, 2, 8, 8)


def test_peak_memory_increase_sees_what_the_call_touched():
    def touch_64_mib():
        block = torch.ones(16 * 2**20)  # float32: 64 MiB, written so every page is resident
        del block

    touch_64_mib()
    assert 60 <= peak_memory_increase(touch_64_mib) < 80
    assert peak_memory_increase(lambda: None) < 4
