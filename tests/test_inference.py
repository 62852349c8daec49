import numpy as np
import pytest
import torch

from meddistill.data import make_fundus_phantom
from meddistill.inference import predict_probability
from meddistill.models import MODELS
from meddistill.zoo import load_model, shipped_models


@pytest.fixture(scope="module")
def phantom():
    return make_fundus_phantom(96, seed=5)


def test_probability_map_shape_range_and_fov(phantom):
    torch.manual_seed(0)
    net = MODELS.build("enet").eval()
    prob = predict_probability(net, phantom.image, phantom.fov)
    assert prob.shape == phantom.fov.shape and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert np.all(prob[~phantom.fov] == 0)


def test_tiled_inference_stitches_tiles_exactly(phantom):
    torch.manual_seed(0)
    # Pointwise network: every tile sees exactly what the whole image sees, so any
    # difference would come from the stitching itself.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).eval()
    whole = predict_probability(net, phantom.image, phantom.fov, tile=1024)
    tiled = predict_probability(net, phantom.image, phantom.fov, tile=40, overlap=0.5)
    assert np.abs(whole - tiled).max() < 1e-5


def test_tiled_inference_border_effects_stay_small(phantom):
    torch.manual_seed(0)
    # 3x3 convolutions see zero padding at inner tile borders; Gaussian blending keeps that small.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3, padding=1)).eval()
    whole = predict_probability(net, phantom.image, phantom.fov, tile=1024)
    tiled = predict_probability(net, phantom.image, phantom.fov, tile=40, overlap=0.5)
    assert np.abs(whole - tiled).max() < 0.05
    assert np.abs(whole - tiled).mean() < 1e-3


@pytest.mark.parametrize(
    "name", sorted(n for n, meta in shipped_models().items() if meta.get("task", "vessel-segmentation") == "vessel-segmentation")
)
def test_shipped_models_load_and_segment(name, phantom):
    net, meta = load_model(name)
    assert meta["name"] == name and meta["trained_with"]
    prob = predict_probability(net, phantom.image, phantom.fov)
    assert prob.shape == phantom.fov.shape
    assert np.isfinite(prob).all()


def test_fov_rescaling_undoes_a_change_of_camera_resolution(phantom):
    import cv2

    from meddistill.data import Preparation, fov_diameter

    torch.manual_seed(0)
    # 3x3 convolutions: the response depends on vessel width in pixels, as a real network's does.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 5, padding=2)).eval()
    reference = predict_probability(net, phantom.image, phantom.fov)
    big_image = cv2.resize(phantom.image, (192, 192), interpolation=cv2.INTER_LINEAR)
    big_fov = cv2.resize(phantom.fov.astype(np.uint8), (192, 192), interpolation=cv2.INTER_NEAREST).astype(bool)
    expected = cv2.resize(reference, (192, 192), interpolation=cv2.INTER_LINEAR)
    native = predict_probability(net, big_image, big_fov)
    rescaled = predict_probability(net, big_image, big_fov, preparation=Preparation(fov_diameter(phantom.fov)))
    assert rescaled.shape == (192, 192)
    inside = big_fov & cv2.erode(big_fov.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.abs(rescaled - expected)[inside].mean() < 0.5 * np.abs(native - expected)[inside].mean()
