import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from meddistill.data.phantom import FundusPhantom, make_fundus_phantom, make_phantom_dataset
from meddistill.errors import MeddistillError


@pytest.fixture(scope="module")
def big() -> FundusPhantom:
    return make_fundus_phantom(512, seed=0)


@pytest.fixture(scope="module")
def small() -> list[FundusPhantom]:
    return [make_fundus_phantom(256, seed=s) for s in range(4)]


def _assert_same(a: FundusPhantom, b: FundusPhantom) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.vessels, b.vessels)
    np.testing.assert_array_equal(a.junctions, b.junctions)
    assert a.optic_disc == b.optic_disc


def test_shapes_and_dtypes(big):
    assert big.image.shape == (512, 512, 3) and big.image.dtype == np.uint8
    assert big.vessels.shape == big.fov.shape == (512, 512)
    assert big.vessels.dtype == big.fov.dtype == np.bool_
    assert big.junctions.ndim == 2 and big.junctions.shape[1] == 2
    assert big.junctions.dtype == np.float32
    assert len(big.optic_disc) == 2
    rect = make_fundus_phantom((200, 180), seed=1)
    assert rect.image.shape == (200, 180, 3) and rect.vessels.shape == (200, 180)


def test_deterministic_per_seed_and_varied_between_seeds(small):
    _assert_same(make_fundus_phantom(256, seed=2), small[2])
    assert not np.array_equal(small[0].vessels, small[1].vessels)
    assert not np.array_equal(small[0].image, small[1].image)


def test_circular_fov_is_black_outside_and_vessel_free(big, small):
    for p in [big, *small]:
        h, w = p.fov.shape
        assert p.fov[h // 2, w // 2] and not p.fov[0, 0] and not p.fov[-1, -1]
        assert 0.6 < p.fov.mean() < 0.72  # a circle of diameter ~0.93 of the side
        assert not (p.vessels & ~p.fov).any()
        assert (p.image[~p.fov] == 0).all()
        assert p.image[p.fov].mean() > 40


def test_vessel_fraction_is_realistic(big, small):
    for p in [big, *small]:
        assert 0.06 < p.vessels[p.fov].mean() < 0.20


def test_vessels_darker_than_background_strongest_in_green(big, small):
    for p in [big, *small]:
        background = p.fov & ~p.vessels
        vessel = p.image[p.vessels].astype(float).mean(0)
        rest = p.image[background].astype(float).mean(0)
        contrast = 1 - vessel / rest
        assert contrast[1] > 0.08
        assert contrast[1] > contrast[0]


def test_optic_disc_is_bright_and_on_the_side_of_the_eye():
    for eye, seed in (("left", 0), ("right", 0), ("left", 5)):
        p = make_fundus_phantom(256, seed=seed, eye=eye)
        x, y = p.optic_disc
        assert (x < 128) if eye == "left" else (x > 128)
        assert p.fov[int(y), int(x)]
        green = p.image[..., 1].astype(float)
        disc = green[int(y) - 5 : int(y) + 6, int(x) - 5 : int(x) + 6]
        assert np.percentile(disc, 90) > np.percentile(green[p.fov], 90)


def test_junctions_lie_on_vessels_inside_fov(big, small):
    for p in [big, *small]:
        xy = np.round(p.junctions).astype(int)
        assert p.fov[xy[:, 1], xy[:, 0]].all()
        to_vessel = ndi.distance_transform_edt(~p.vessels)
        assert to_vessel[xy[:, 1], xy[:, 0]].max() <= 1.5
        gaps = np.hypot(*(p.junctions[:, None] - p.junctions[None]).transpose(2, 0, 1))
        np.fill_diagonal(gaps, np.inf)
        assert gaps.min() >= 2.0
    assert len(big.junctions) >= 50


def test_junction_count_matches_skeleton_branch_points(big):
    skeleton = skeletonize(big.vessels)
    neighbours = ndi.convolve(skeleton.astype(int), np.ones((3, 3), int), mode="constant") - 1
    branch_points = skeleton & (neighbours >= 3)
    # A crossing gives two nearby branch points: count clusters.
    _, clusters = ndi.label(ndi.binary_dilation(branch_points, iterations=2))
    assert 0.5 < clusters / len(big.junctions) < 2.0


def test_more_trees_give_more_vessels():
    few = make_fundus_phantom(192, seed=3, n_trees=1)
    many = make_fundus_phantom(192, seed=3, n_trees=7)
    assert few.vessels.sum() < many.vessels.sum()


def test_dataset_is_varied_and_reproducible():
    data = make_phantom_dataset(3, size=96, seed=0)
    assert len(data) == 3 and all(p.image.shape == (96, 96, 3) for p in data)
    assert not np.array_equal(data[0].vessels, data[1].vessels)
    _assert_same(make_phantom_dataset(3, size=96, seed=0)[2], data[2])
    other = make_phantom_dataset(3, size=96, seed=1)
    assert all(not np.array_equal(a.image, b.image) for a in data for b in other)


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 16}, {"size": (64, 20)}, {"n_trees": 0}, {"n_trees": 9}, {"eye": "middle"}],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(MeddistillError):
        make_fundus_phantom(**kwargs)


def test_empty_dataset_raises():
    with pytest.raises(MeddistillError):
        make_phantom_dataset(0)
