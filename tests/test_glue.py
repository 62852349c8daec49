"""The attentional graph matcher: optimal transport, matches, loss by hand, the network."""

import numpy as np
import pytest
import torch

from meddistill.models.glue import GlueMatcher, assignment_loss, log_optimal_transport, mutual_matches


def test_optimal_transport_rows_and_columns_of_points_sum_to_one():
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    log_p = log_optimal_transport(scores, torch.tensor(0.5), iterations=200)
    assert log_p.shape == (5, 7)
    assert torch.allclose(log_p[:-1].exp().sum(dim=1), torch.ones(4), atol=1e-4)
    assert torch.allclose(log_p[:, :-1].exp().sum(dim=0), torch.ones(6), atol=1e-4)


def test_strong_diagonal_matches_and_an_outlier_goes_to_the_dustbin():
    scores = torch.full((3, 3), -10.0)
    scores[0, 0] = scores[1, 1] = 10.0  # point 2 of each image has no partner
    log_p = log_optimal_transport(scores, torch.tensor(0.0))
    assert mutual_matches(log_p).tolist() == [[0, 0], [1, 1]]
    assert log_p[2, -1].exp() > 0.9 and log_p[-1, 2].exp() > 0.9
    assert mutual_matches(log_p[:1, :1]).shape == (0, 2)


def test_assignment_loss_by_hand():
    log_p = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]]) + 1e-12)
    loss = assignment_loss(log_p, torch.tensor([[0, 0]]), torch.tensor([1]), torch.tensor([1]))
    expected = -(np.log(0.8) + np.log(0.5) + np.log(0.5)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _features(n, seed):
    g = torch.Generator().manual_seed(seed)
    return {"keypoints": torch.rand(n, 2, generator=g) * 64, "scores": torch.rand(n, generator=g),
            "descriptors": torch.nn.functional.normalize(torch.randn(n, 32, generator=g), dim=1), "size": (64, 64)}


def test_glue_matcher_shapes_gradients_and_permutation_equivariance():
    torch.manual_seed(0)
    matcher = GlueMatcher(dim=32, layers=2, heads=4, iterations=20).eval()
    a, b = _features(5, 1), _features(7, 2)
    log_p = matcher([(a, b)])[0]
    assert log_p.shape == (6, 8)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    shuffled = {k: (v[order] if torch.is_tensor(v) else v) for k, v in b.items()}
    assert torch.allclose(matcher.match(a, shuffled)[:-1, :-1], log_p[:-1, :-1][:, order], atol=1e-4)
    matcher.train()
    assignment_loss(matcher.match(a, b), torch.tensor([[0, 0]]), torch.tensor([1]), torch.tensor([2])).backward()
    assert matcher.dustbin.grad is not None and matcher.keypoint_encoder[0].weight.grad is not None


def test_match_ground_truth_by_hand():
    from meddistill.registration import match_ground_truth

    a = torch.tensor([[10.0, 10.0], [30.0, 30.0], [50.0, 50.0]])
    b = torch.tensor([[12.0, 11.0], [34.0, 32.0], [90.0, 90.0]])
    shift = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    matches, unmatched_a, unmatched_b = match_ground_truth(a, b, shift)
    # a0 → (12, 11) = b0 exactly; a1 → (32, 31): 2.2 px from b1 (a match); a2 → (52, 51): far from all
    assert matches.tolist() == [[0, 0], [1, 1]]
    assert unmatched_a.tolist() == [2] and unmatched_b.tolist() == [2]
    none, only_a, only_b = match_ground_truth(a, b[:0], shift)
    assert none.shape == (0, 2) and only_a.tolist() == [0, 1, 2] and only_b.numel() == 0
