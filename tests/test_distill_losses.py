import math

import pytest
import torch

from meddistill.distill import at_loss, attention_map, fsp_loss, fsp_matrix, hint_loss, kd_loss


def _logits(*values):
    """One pixel, len(values) classes: shape (1, K, 1, 1)."""
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)


def test_kd_loss_temperature_one():
    # student p = (1/2, 1/2); teacher q = (3/4, 1/4)
    # KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120...
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(_logits(0.0, 0.0), _logits(math.log(3), 0.0), 1.0).item() == pytest.approx(expected, abs=1e-9)


def test_kd_loss_temperature_scales_by_t_squared():
    # T = 2: teacher logits /2 -> q = (√3, 1)/(√3 + 1); student stays uniform; loss = KL · T²
    q = torch.tensor([math.sqrt(3), 1.0], dtype=torch.float64) / (math.sqrt(3) + 1)
    expected = 4 * float((q * (q / 0.5).log()).sum())
    assert expected == pytest.approx(0.1453631, abs=1e-6)
    assert kd_loss(_logits(0.0, 0.0), _logits(math.log(3), 0.0), 2.0).item() == pytest.approx(expected, abs=1e-9)


def test_kd_loss_zero_for_equal_logits_and_averaged_over_pixels():
    logits = torch.randn(2, 3, 4, 5)
    assert kd_loss(logits, logits.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # one differing pixel out of 2 -> half the single-pixel loss
    student = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    teacher = student.clone()
    teacher[0, 0, 0, 0] = math.log(3)
    single = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(student, teacher).item() == pytest.approx(single / 2, abs=1e-9)


def test_kd_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        kd_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


def test_attention_map_and_at_loss_by_hand():
    # student: 2 channels over 2 pixels, |f|² channel mean = (1, 1) -> (1/√2, 1/√2)
    student = torch.tensor([[[[1.0, 1.0]], [[1.0, -1.0]]]])
    # teacher: |f|² = (4, 0) -> (1, 0)
    teacher = torch.tensor([[[[2.0, 0.0]]]])
    amap = attention_map(student)
    assert amap.shape == (1, 1, 1, 2)
    assert torch.allclose(amap.flatten(), torch.tensor([2**-0.5, 2**-0.5]))
    # ((1/√2 - 1)² + (1/√2)²) / 2 = 0.2928932...
    expected = ((2**-0.5 - 1) ** 2 + 0.5) / 2
    assert at_loss(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_at_loss_resizes_student_map_and_works_in_3d():
    student, teacher = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 16, 16)
    assert at_loss(student, teacher).item() >= 0
    assert at_loss(torch.ones(1, 2, 4, 4, 4), torch.ones(1, 3, 4, 4, 4)).item() == pytest.approx(0.0, abs=1e-9)


def test_fsp_matrix_and_loss_by_hand():
    first = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    second = torch.tensor([[[[3.0, 4.0]]]])  # (1, 1, 1, 2)
    # G = first · secondᵀ / (H·W) = [[(3 + 8)/2], [(0 + 4)/2]]
    assert torch.allclose(fsp_matrix(first, second), torch.tensor([[[5.5], [2.0]]]))
    # teacher pair gives G = [[1.5], [1.5]] -> loss = ((5.5-1.5)² + (2-1.5)²)/2 = 8.125
    t_first = torch.tensor([[[[1.0, 1.0]], [[1.0, 1.0]]]])
    t_second = torch.tensor([[[[1.0, 2.0]]]])
    assert torch.allclose(fsp_matrix(t_first, t_second), torch.tensor([[[1.5], [1.5]]]))
    expected = ((5.5 - 1.5) ** 2 + (2.0 - 1.5) ** 2) / 2
    assert fsp_loss((first, second), (t_first, t_second)).item() == pytest.approx(expected)


def test_fsp_matrix_pools_the_larger_map():
    first = torch.arange(16.0).view(1, 1, 4, 4)
    second = torch.ones(1, 1, 2, 2)
    # 2x2 average pool of 0..15 -> (2.5, 4.5, 10.5, 12.5); dot with ones / 4 = 7.5
    assert fsp_matrix(first, second).item() == pytest.approx(7.5)


def test_hint_loss_by_hand_and_gradients():
    student = torch.tensor([[[[1.0, 2.0]]]], requires_grad=True)
    teacher = torch.tensor([[[[0.0, 4.0]]]])
    loss = hint_loss(student, teacher)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert torch.allclose(student.grad, torch.tensor([[[[1.0, -2.0]]]]))  # 2 (s - t) / N


@pytest.mark.parametrize("loss_fn", [at_loss, hint_loss])
def test_feature_losses_send_gradients_to_the_student(loss_fn):
    student = torch.randn(2, 3, 8, 8, requires_grad=True)
    teacher = torch.randn(2, 3, 8, 8)
    loss_fn(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
