"""Learned keypoints: junction labels, heatmap peaks, descriptor sampling, losses by hand, networks."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meddistill.data import make_fundus_phantom
from meddistill.errors import MeddistillError
from meddistill.registration.keypoints import (
    gaussian_kernel,
    heatmap_peaks,
    keypoint_map,
    refine_peaks,
    sample_descriptors,
    smooth_labels,
    vessel_junctions,
)
from meddistill.registration.losses import (
    heatmap_dice_loss,
    superpoint_descriptor_loss,
    superpoint_detector_loss,
    triplet_descriptor_loss,
)
from meddistill.models import KEYPOINT_NETWORKS, MODELS


def test_vessel_junctions_of_a_cross_and_a_fork():
    mask = np.zeros((60, 60), bool)
    mask[30, 5:55] = True  # horizontal line
    mask[5:55, 30] = True  # vertical line: a crossing at (30, 30)
    points = vessel_junctions(mask)
    assert len(points) == 1
    np.testing.assert_allclose(points[0], [30, 30], atol=1.0)
    assert len(vessel_junctions(np.zeros((20, 20), bool))) == 0
    with pytest.raises(ValueError):
        vessel_junctions(np.zeros((2, 2, 2), bool))


def test_vessel_junctions_find_most_phantom_junctions():
    phantom = make_fundus_phantom(256, seed=3)
    found = vessel_junctions(phantom.vessels)
    truth = phantom.junctions
    distance = np.linalg.norm(truth[:, None] - found[None], axis=-1).min(axis=1)
    assert (distance <= 4).mean() > 0.5


def test_keypoint_map_and_smooth_labels_peak_at_one():
    label = keypoint_map(np.array([[5.2, 7.7], [100, 100]]), (20, 30))  # the second is outside
    assert label.sum() == 1 and label[8, 5] == 1
    smooth = smooth_labels(torch.from_numpy(label)[None, None])
    assert smooth.shape == (1, 1, 20, 30)
    assert smooth[0, 0, 8, 5] == pytest.approx(1.0)
    # one pixel away the blob is exp(-1 / (2 σ²)) with σ = 2
    assert smooth[0, 0, 8, 6] == pytest.approx(math.exp(-1 / 8), abs=1e-6)
    assert gaussian_kernel(13, 2.0).max() == pytest.approx(1.0)


def test_heatmap_peaks_nms_threshold_border_and_order():
    heat = torch.zeros(40, 40)
    heat[10, 12] = 0.9
    heat[11, 13] = 0.5  # suppressed by its stronger neighbour
    heat[30, 30] = 0.6
    heat[1, 20] = 0.95  # inside the border
    heat[20, 35] = 0.005  # below threshold
    points, scores = heatmap_peaks(heat, radius=3, threshold=0.01, border=4)
    assert points.tolist() == [[12.0, 10.0], [30.0, 30.0]]
    assert scores.tolist() == pytest.approx([0.9, 0.6])
    assert len(heatmap_peaks(heat, radius=3, max_keypoints=1)[0]) == 1
    with pytest.raises(ValueError):
        heatmap_peaks(heat[None])


def test_heatmap_peaks_keep_one_peak_of_a_plateau():
    heat = torch.zeros(40, 40)
    heat[10, 10:13] = 1.0  # a saturated plateau: three exact local maxima within the radius
    heat[10, 30] = 1.0  # a tie farther away than the radius survives
    points, scores = heatmap_peaks(heat, radius=3, threshold=0.5, border=0)
    assert points.tolist() == [[10.0, 10.0], [30.0, 10.0]]  # first in raster order wins the tie
    assert scores.tolist() == [1.0, 1.0]


def test_refine_peaks_finds_a_gaussian_blob_between_pixels():
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(48.0), indexing="ij")
    centres = [(10.3, 7.8), (30.0, 20.0), (14.45, 30.5)]  # (x, y), the last exactly between two rows
    heat = sum(torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 2.0**2)) for cx, cy in centres)
    points, _ = heatmap_peaks(heat, radius=3, threshold=0.1, border=2)
    refined = refine_peaks(heat, points)
    # the blobs are 7+ sigma apart, so each log-parabola is exact to float precision
    found = sorted(map(tuple, refined.tolist()))
    assert np.allclose(found, sorted(centres), atol=2e-3)
    assert (refined - points).abs().max() <= 0.5


def test_refine_peaks_leaves_flat_axes_and_empty_input_alone():
    heat = torch.zeros(12, 12)
    heat[5, 4:7] = 1.0  # flat along x: saturated
    heat[4, 5], heat[6, 5] = 0.2, 0.6  # skewed along y: the vertex moves down
    refined = refine_peaks(heat, torch.tensor([[5.0, 5.0]]))
    dy = 0.5 * (math.log(0.2) - math.log(0.6)) / (math.log(0.2) - 2 * math.log(1.0) + math.log(0.6))
    assert refined[0, 0] == 5.0
    assert refined[0, 1].item() == pytest.approx(5.0 + dy) and 0 < dy < 0.5
    assert refine_peaks(heat, torch.zeros(0, 2)).shape == (0, 2)


def test_sample_descriptors_interpolates_and_normalises():
    coarse = torch.zeros(2, 2, 2)
    coarse[0, :, 0] = 1.0  # left column points along axis 0
    coarse[1, :, 1] = 1.0  # right column along axis 1
    # an 8×8 image whose corners map onto the 2×2 map (align_corners)
    points = torch.tensor([[0.0, 0.0], [7.0, 7.0], [3.5, 0.0]])
    out = sample_descriptors(coarse, points, (8, 8))
    assert torch.allclose(out[0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(out[1], torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[2], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert sample_descriptors(coarse, torch.zeros(0, 2), (8, 8)).shape == (0, 2)


def test_heatmap_dice_loss_by_hand():
    prediction = torch.tensor([0.5, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    # 1 − 2·1.5 / (1.25 + 3)
    assert heatmap_dice_loss(prediction, target).item() == pytest.approx(1 - 3 / 4.25, abs=1e-5)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    assert heatmap_dice_loss(prediction, target, mask).item() == pytest.approx(1 - 3 / 3.25, abs=1e-5)
    assert heatmap_dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        heatmap_dice_loss(prediction, target[..., :1])


def test_triplet_descriptor_loss_by_hand():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # matched Φ = 0; the only other descriptor is both the hardest and the random one, Φ = 1:
    # max(0, 0.8 + 0 − 1) = 0
    assert triplet_descriptor_loss(anchor, positive).item() == pytest.approx(0.0)
    swapped = positive.flip(0)
    # matched Φ = 1, negatives Φ = 0: 0.8 + 1 − 0 = 1.8
    assert triplet_descriptor_loss(anchor, swapped).item() == pytest.approx(1.8)
    with pytest.raises(ValueError):
        triplet_descriptor_loss(anchor[:1], positive[:1])


def test_triplet_descriptor_loss_ignores_neighbours_as_negatives():
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # keypoints 0 and 1 are 2 px apart (indistinguishable), 2 is far away
    positions = torch.tensor([[10.0, 10.0], [12.0, 10.0], [60.0, 60.0]])
    # without positions, 0 and 1 are each other's hardest negative (Φ = 0): 0.8 − ½(Φ_rand + 0) > 0
    assert triplet_descriptor_loss(anchor, anchor, generator=torch.Generator().manual_seed(0)).item() > 0
    # with them, every anchor's only negative is at Φ = 1: max(0, 0.8 − 1) = 0
    assert triplet_descriptor_loss(anchor, anchor, positions=positions).item() == pytest.approx(0.0)
    # all neighbours: no negatives at all, no loss
    assert triplet_descriptor_loss(anchor[:2], anchor[:2], positions=positions[:2]).item() == 0.0


def test_triplet_descriptor_loss_has_gradients():
    anchor = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1).requires_grad_()
    positive = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    triplet_descriptor_loss(anchor, positive).backward()
    assert anchor.grad.abs().sum() > 0


def test_superpoint_detector_loss_targets():
    keypoints = torch.zeros(1, 1, 8, 16)
    keypoints[0, 0, 2, 3] = 1.0  # cell 0, position 2·8 + 3 = 19; cell 1 is empty → dustbin (64)
    logits = torch.full((1, 65, 1, 2), -10.0)
    logits[0, 19, 0, 0] = 10.0
    logits[0, 64, 0, 1] = 10.0
    assert superpoint_detector_loss(logits, keypoints).item() < 1e-6
    wrong = logits.clone()
    wrong[0, 19, 0, 0], wrong[0, 64, 0, 0] = -10.0, 10.0
    assert superpoint_detector_loss(wrong, keypoints).item() > 5.0


def test_superpoint_descriptor_loss_by_hand():
    # two cells (1×2 grid); identity warp: each cell corresponds to itself only
    descriptors = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).t().reshape(1, 2, 1, 2)
    centres = torch.tensor([[[3.5, 3.5], [11.5, 3.5]]])
    # matched dots 1 (no positive loss); unmatched dots 0 < 0.2 (no negative loss)
    assert superpoint_descriptor_loss(descriptors, descriptors, centres).item() == pytest.approx(0.0)
    same = torch.ones(1, 2, 1, 2) / math.sqrt(2)
    # every dot is 1: positives cost 0, the 2 negatives cost 0.8 each → 1.6 / 4 pairs
    assert superpoint_descriptor_loss(same, same, centres).item() == pytest.approx(0.4, abs=1e-4)


@pytest.mark.parametrize("name", sorted(KEYPOINT_NETWORKS))
def test_keypoint_networks_shapes_and_gradients(name):
    torch.manual_seed(0)
    net = MODELS.build(name)
    image = torch.rand(1, 1, 64, 64)
    out = net(image)
    assert out.heatmap.shape == (1, 1, 64, 64)
    assert out.descriptors.shape == (1, 256, 8, 8)
    assert 0 <= out.heatmap.min() and out.heatmap.max() <= 1
    assert torch.allclose(out.descriptors.norm(dim=1), torch.ones(1, 8, 8), atol=1e-4)
    (out.heatmap.mean() + out.descriptors.mean()).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_unknown_keypoint_network_is_a_clear_error():
    with pytest.raises(MeddistillError, match="did you mean"):
        MODELS.build("superretina-lj")
