"""Tests of the 2D data layer: image IO, dataset layouts, FOV estimation and patch datasets."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from monai.data import get_track_meta
from PIL import Image
from torch.utils.data import DataLoader

from meddistill.data import (
    PatchDataset,
    Preparation,
    VesselSample,
    compute_fov,
    equalize_contrast,
    fov_diameter,
    hold_out_subjects,
    load_chase,
    load_dataset,
    load_drive,
    load_folder,
    load_hrf,
    load_stare,
    normalize_image,
    random_subset,
    read_mask,
    read_rgb,
    rescale_sample,
    rescale_to_fov_diameter,
    split_samples,
    write_png,
)
from meddistill.errors import MeddistillError

H, W = 40, 48


def _fundus(seed: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny synthetic fundus photo: a bright textured disc on black with a few dark 'vessels'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (0.45 * min(h, w)) ** 2
    vessels = fov & ((np.abs(yy - xx * 0.7 - rng.integers(0, h // 2)) < 1.5) | (np.abs(xx - rng.integers(w // 3, w)) < 1))
    image = np.zeros((h, w, 3), np.uint8)
    base = np.array([170, 90, 40]) + rng.integers(-20, 20, (h, w, 3))
    image[fov] = np.clip(base[fov] - 60 * vessels[fov, None], 0, 255)
    return image, vessels, fov


def _save(path: Path, array: np.ndarray) -> None:
    """Save with the format of the suffix; ``.gz`` gzips the inner format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=Path(path.stem).suffix.lstrip(".").upper())
        path.write_bytes(gzip.compress(buffer.getvalue()))
    elif path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


# --------------------------------------------------------------------------- io


def test_read_rgb_formats_round_trip(tmp_path):
    image, _, _ = _fundus(0)
    for name in ("a.tif", "a.png", "a.bmp", "a.ppm", "a.ppm.gz"):
        _save(tmp_path / name, image)
        np.testing.assert_array_equal(read_rgb(tmp_path / name), image, err_msg=name)
    _save(tmp_path / "a.jpg", image)
    jpeg = read_rgb(tmp_path / "a.jpg")
    assert jpeg.shape == (H, W, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - image).mean() < 10


def test_read_mask_thresholds_and_layouts(tmp_path):
    _, vessels, _ = _fundus(1)
    _save(tmp_path / "m255.gif", vessels)
    _save(tmp_path / "m01.png", vessels.astype(np.uint8))
    Image.fromarray(vessels).convert("1").save(tmp_path / "bilevel.png")
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 1] = vessels * 255  # foreground in one channel only
    _save(tmp_path / "rgb.tif", rgb)
    grey = np.where(vessels, 200, 100).astype(np.uint8)  # 0..255 data: threshold at 127
    _save(tmp_path / "grey.png", grey)
    for name in ("m255.gif", "m01.png", "bilevel.png", "rgb.tif", "grey.png"):
        mask = read_mask(tmp_path / name, like_shape=(H, W, 3))
        assert mask.dtype == np.bool_
        np.testing.assert_array_equal(mask, vessels, err_msg=name)


def test_write_png_creates_folders(tmp_path):
    image, vessels, _ = _fundus(2)
    write_png(tmp_path / "deep" / "er" / "img.png", image)
    write_png(tmp_path / "deep" / "mask.png", vessels)
    np.testing.assert_array_equal(read_rgb(tmp_path / "deep" / "er" / "img.png"), image)
    np.testing.assert_array_equal(read_mask(tmp_path / "deep" / "mask.png"), vessels)
    with pytest.raises(ValueError):
        write_png(tmp_path / "f.png", image.astype(np.float32))


def _truncated(fmt: str):
    def write(path: Path) -> None:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format=fmt)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    return write


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        ("missing.png", None, "file not found: .*missing.png"),
        ("noise.png", lambda p: p.write_bytes(np.random.default_rng(0).bytes(300)),
         "cannot read .*noise.png: not a valid PNG image"),
        ("cut.png", _truncated("PNG"), "cannot read .*cut.png: corrupt or truncated"),
        ("cut.jpg", _truncated("JPEG"), "cannot read .*cut.jpg: corrupt or truncated"),
        ("bad.ppm.gz", lambda p: p.write_bytes(b"not gzip"), "cannot read .*bad.ppm.gz: corrupt gzip"),
        ("g.png", lambda p: _save(p, np.zeros((H, W), np.uint8)),
         r"g.png is a single-channel \(grayscale\) image; fundus photos must be RGB colour images"),
        ("g.jpg", lambda p: _save(p, np.zeros((H, W), np.uint8)), "g.jpg is a single-channel"),
        ("a.png", lambda p: _save(p, np.zeros((H, W, 4), np.uint8)), "a.png has an alpha channel; save it as RGB"),
        ("t16.tif", lambda p: tifffile.imwrite(p, np.zeros((H, W, 3), np.uint16)),
         "t16.tif is 16-bit; convert it to 8-bit RGB"),
        ("p16.png", lambda p: cv2.imwrite(str(p), np.full((H, W, 3), 999, np.uint16)),
         "p16.png is 16-bit; convert it to 8-bit RGB"),
        ("f.tif", lambda p: tifffile.imwrite(p, np.zeros((H, W, 3), np.float32), photometric="rgb"),
         "f.tif has float32 pixels"),
        ("x.txt", lambda p: p.write_text("hi"), "unsupported file type '.txt'"),
    ],
)
def test_read_rgb_errors(tmp_path, name, write, message):
    if write is not None:
        write(tmp_path / name)
    with pytest.raises(MeddistillError, match=message) as err:
        read_rgb(tmp_path / name)
    assert "\n" not in str(err.value)


def test_read_mask_errors(tmp_path):
    _save(tmp_path / "small.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(MeddistillError, match=r"mask .*small.png is 30x20 but image .*img.tif is 48x40"):
        read_mask(tmp_path / "small.png", like_shape=(H, W, 3), like_path=tmp_path / "img.tif")
    cv2.imwrite(str(tmp_path / "m16.png"), np.zeros((H, W), np.uint16))
    with pytest.raises(MeddistillError, match="m16.png is 16-bit; save it as an 8-bit mask"):
        read_mask(tmp_path / "m16.png")
    _save(tmp_path / "ma.png", np.zeros((H, W, 4), np.uint8))
    with pytest.raises(MeddistillError, match="alpha channel"):
        read_mask(tmp_path / "ma.png")


# --------------------------------------------------------------------------- layouts


def _drive(root: Path, split: str = "training", numbers=(21, 22)) -> dict[str, tuple]:
    truth = {}
    for n in numbers:
        image, vessels, fov = _fundus(n)
        _save(root / split / "images" / f"{n}_{split}.tif", image)
        _save(root / split / "1st_manual" / f"{n}_manual1.gif", vessels)
        _save(root / split / "mask" / f"{n}_{split}_mask.gif", fov)
        truth[f"{n}_{split}"] = (image, vessels, fov)
    return truth


def _check(samples: list[VesselSample], truth: dict[str, tuple], exact_image=True, fov_iou=None) -> None:
    assert [s.name for s in samples] == sorted(truth)
    for s in samples:
        image, vessels, fov = truth[s.name]
        assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
        assert s.vessels.dtype == np.bool_ and s.fov.dtype == np.bool_
        if exact_image:
            np.testing.assert_array_equal(s.image, image)
        np.testing.assert_array_equal(s.vessels, vessels)
        if fov_iou is None:
            np.testing.assert_array_equal(s.fov, fov)
        else:
            assert _iou(s.fov, fov) > fov_iou


def test_load_drive(tmp_path):
    truth = _drive(tmp_path)
    test_truth = _drive(tmp_path, "test", numbers=(1,))
    _check(load_drive(tmp_path), truth)
    _check(load_drive(tmp_path / "training"), truth)  # the split folder itself
    _check(load_drive(tmp_path, split="test"), test_truth)
    _check(load_dataset("auto", tmp_path), truth)


def test_load_chase(tmp_path):
    truth = {}
    for name in ("Image_01L", "Image_01R"):
        image, vessels, fov = _fundus(len(truth) + 5)
        _save(tmp_path / f"{name}.jpg", image)
        _save(tmp_path / f"{name}_1stHO.png", vessels)
        _save(tmp_path / f"{name}_2ndHO.png", ~vessels & fov)
        truth[name] = (image, vessels, fov)
    _check(load_chase(tmp_path), truth, exact_image=False, fov_iou=0.8)  # JPEG blurs the tiny disc edge
    second = load_dataset("auto", tmp_path, observer="2ndHO")
    np.testing.assert_array_equal(second[0].vessels, ~truth["Image_01L"][1] & truth["Image_01L"][2])
    assert {s.subject for s in second} == {"Image_01"}  # one child's two eyes stay on one side of a split
    with pytest.raises(MeddistillError, match="cannot split 1 image"):
        split_samples(second, 0.5, seed=0)
    with pytest.raises(MeddistillError, match="unknown CHASE_DB1 observer '1stH0' \\(did you mean '1stHO'\\?\\)"):
        load_chase(tmp_path, observer="1stH0")


def test_load_stare(tmp_path):
    truth = {}
    for name in ("im0001", "im0044"):
        image, vessels, fov = _fundus(int(name[2:]))
        _save(tmp_path / "stare-images" / f"{name}.ppm.gz", image)
        _save(tmp_path / "labels-ah" / f"{name}.ah.ppm.gz", np.repeat(vessels[..., None] * 255, 3, -1).astype(np.uint8))
        _save(tmp_path / "labels-vk" / f"{name}.vk.ppm", vessels)
        truth[name] = (image, vessels, fov)
    _save(tmp_path / "stare-images" / "im0002.ppm.gz", _fundus(2)[0])  # unlabelled: skipped
    _check(load_stare(tmp_path), truth, fov_iou=0.9)
    _check(load_dataset("auto", tmp_path, observer="vk"), truth, fov_iou=0.9)


def test_load_hrf(tmp_path):
    truth = {}
    for name, suffix in (("01_dr", ".JPG"), ("01_g", ".jpg"), ("01_h", ".jpg")):
        image, vessels, fov = _fundus(len(truth))
        _save(tmp_path / "images" / f"{name}{suffix}", image)
        _save(tmp_path / "manual1" / f"{name}.tif", vessels)
        _save(tmp_path / "mask" / f"{name}_mask.tif", np.repeat(fov[..., None] * 255, 3, -1).astype(np.uint8))
        truth[name] = (image, vessels, fov)
    _check(load_hrf(tmp_path), truth, exact_image=False)
    _check(load_dataset("auto", tmp_path), truth, exact_image=False)


def test_load_folder(tmp_path):
    a, b = _fundus(7), _fundus(8)
    _save(tmp_path / "images" / "a.png", a[0])
    _save(tmp_path / "masks" / "a.png", a[1])
    _save(tmp_path / "images" / "b.bmp", b[0])
    _save(tmp_path / "masks" / "b_mask.png", b[1])
    _save(tmp_path / "fov" / "b.png", b[2])
    samples = load_folder(tmp_path)
    _check(samples[:1], {"a": a}, fov_iou=0.9)  # computed FOV
    _check(samples[1:], {"b": b})  # given FOV
    assert [s.name for s in load_dataset("auto", tmp_path)] == ["a", "b"]


def test_layout_errors(tmp_path):
    with pytest.raises(MeddistillError, match="DRIVE folder not found: .*nowhere"):
        load_drive(tmp_path / "nowhere")
    with pytest.raises(MeddistillError, match=r"no DRIVE images found under (.*) \(expected \1/training/images/\*_training.tif\)"):
        load_drive(tmp_path)
    expected = {load_chase: "CHASE_DB1 images", load_stare: "STARE labels", load_hrf: "HRF images", load_folder: "images"}
    for loader, name in expected.items():
        with pytest.raises(MeddistillError, match=f"no {name} found under"):
            loader(tmp_path)
    with pytest.raises(MeddistillError, match="cannot tell the dataset layout"):
        load_dataset("auto", tmp_path)
    with pytest.raises(MeddistillError, match="unknown dataset kind 'driev' \\(did you mean 'drive'\\?\\); choose from: drive, chase"):
        load_dataset("driev", tmp_path)

    image, vessels, _ = _fundus(0)
    _save(tmp_path / "images" / "a.png", image)
    with pytest.raises(MeddistillError, match="image .*a.png has no vessel mask"):
        load_folder(tmp_path)
    _save(tmp_path / "masks" / "a.png", vessels[:30])
    with pytest.raises(MeddistillError, match="mask .*a.png is 48x30 but image .*a.png is 48x40"):
        load_folder(tmp_path)


def test_split_samples_is_deterministic_and_groups():
    samples = [VesselSample(f"Image_{i:02d}{eye}", None, None, None) for i in range(1, 8) for eye in "LR"]
    train, val = split_samples(samples, 0.3, seed=1)
    assert len(val) == 4 and len(train) == 10
    assert {s.name for s in train}.isdisjoint(s.name for s in val)
    assert [s.name for s in split_samples(samples, 0.3, seed=1)[1]] == [s.name for s in val]
    assert any([s.name for s in split_samples(samples, 0.3, seed=s)[1]] != [x.name for x in val] for s in range(2, 6))
    train, val = split_samples(samples, 0.3, seed=1, group=lambda name: name[:-1])
    assert len(val) == 4  # two subjects, both eyes each
    assert {s.name[:-1] for s in train}.isdisjoint(s.name[:-1] for s in val)
    assert split_samples(samples, 0.0, seed=0) == (samples, [])
    with pytest.raises(MeddistillError, match="val_fraction"):
        split_samples(samples, 1.0, seed=0)


# --------------------------------------------------------------------------- FOV


def test_compute_fov_on_synthetic_disc():
    image, _, fov = _fundus(3, 160, 200)
    # A dim rim and a bright label in the black surround, as on real photos.
    yy, xx = np.mgrid[:160, :200]
    rim = np.sqrt((yy - 79.5) ** 2 + (xx - 99.5) ** 2) / 72
    image = (image * np.clip(1.3 - rim, 0.3, 1)[..., None]).astype(np.uint8)
    image[2:8, 2:30] = 255
    assert _iou(compute_fov(image), fov) > 0.95


# --------------------------------------------------------------------------- patches


def test_normalize_image_zscores_inside_fov():
    image, _, fov = _fundus(4)
    out = normalize_image(image, fov)
    assert out.shape == (3, H, W) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, fov].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, fov].std(axis=1), 1, atol=1e-4)
    assert not out[:, ~fov].any()
    with pytest.raises(MeddistillError, match="empty"):
        normalize_image(image, np.zeros_like(fov))


def test_equalize_contrast_raises_local_contrast_and_keeps_shape():
    rng = np.random.default_rng(0)
    faint = (120 + 6 * rng.random((64, 64, 3))).astype(np.uint8)  # a washed-out photo
    out = equalize_contrast(faint)
    assert out.shape == faint.shape and out.dtype == np.uint8
    assert out.std() > 2 * faint.std()
    assert equalize_contrast(faint[..., :1]).shape == (64, 64, 1)
    for bad in (faint.astype(np.float32), faint[..., :2], faint[None]):
        with pytest.raises(MeddistillError, match="contrast"):
            equalize_contrast(bad)


def test_normalize_image_with_clahe_zscores_the_equalised_photo():
    image, _, fov = _fundus(4)
    out = normalize_image(image, fov, clahe=True)
    np.testing.assert_allclose(out[:, fov].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(out, normalize_image(equalize_contrast(image), fov))
    assert not np.allclose(out, normalize_image(image, fov))


def test_preparation_rescales_then_normalises_as_the_checkpoint_records():
    image, vessels, fov = _fundus(4)
    preparation = Preparation.from_meta({"fov_diameter_px": 2 * fov_diameter(fov), "clahe": True})
    assert preparation == Preparation(2 * fov_diameter(fov), True)
    net_input, net_fov, (net_vessels,) = preparation(image, fov, (vessels,))
    assert net_input.shape == (3, 2 * H, 2 * W) and net_fov.shape == net_vessels.shape == (2 * H, 2 * W)
    big, big_fov, _ = rescale_to_fov_diameter(image, fov, 2 * fov_diameter(fov))
    np.testing.assert_allclose(net_input, normalize_image(big, big_fov, clahe=True))
    native, native_fov, _ = preparation.at_native_scale()(image, fov)
    np.testing.assert_allclose(native, normalize_image(image, fov, clahe=True))
    assert Preparation.from_meta({}) == Preparation()  # checkpoints from before either was recorded


def _aligned_sample() -> VesselSample:
    """Channel 0 encodes the label, so any misalignment after augmentation is visible."""
    rng = np.random.default_rng(0)
    _, _, fov = _fundus(0)
    label = fov & (rng.random((H, W)) < 0.3)
    image = rng.integers(60, 200, (H, W, 3)).astype(np.uint8)
    image[..., 0] = np.where(label, 220, 40)
    return VesselSample("aligned", image * fov[..., None], label, fov)


def test_patch_dataset_shapes_and_centres():
    sample = _aligned_sample()
    ds = PatchDataset([sample, sample], patch_size=9, patches_per_image=5, augment=False, seed=3)
    assert len(ds) == 10
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 9, 9) and item["image"].dtype == torch.float32
        assert item["label"].shape == (9, 9) and item["label"].dtype == torch.int64
        assert item["fov"].shape == (9, 9) and item["fov"].dtype == torch.bool
        assert item["fov"][4, 4]  # centred inside the FOV
        assert set(item["label"].unique().tolist()) <= {0, 1}
    big = PatchDataset([sample], patch_size=64, patches_per_image=1, augment=False)[0]
    assert big["image"].shape == (3, 64, 64) and big["fov"].sum() == sample.fov.sum()  # padded beyond the border


def test_patch_dataset_is_deterministic_per_seed_epoch_index():
    sample = _aligned_sample()
    a = PatchDataset([sample], patch_size=16, patches_per_image=6, seed=7)
    b = PatchDataset([sample], patch_size=16, patches_per_image=6, seed=7)
    for i in reversed(range(6)):  # order of access must not matter
        for key in ("image", "label", "fov"):
            assert torch.equal(a[i][key], b[i][key])
    first = [a[i]["image"] for i in range(6)]
    a.set_epoch(1)
    assert all(not torch.equal(x, a[i]["image"]) for i, x in enumerate(first))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i]["image"]) for i, x in enumerate(first))
    c = PatchDataset([sample], patch_size=16, patches_per_image=6, seed=8)
    assert not torch.equal(first[0], c[0]["image"])


def test_augmented_patches_are_plain_tensors_and_leave_monai_tracking_as_it_was():
    item = PatchDataset([_aligned_sample()], patch_size=16, patches_per_image=2, seed=1, rotate_degrees=30)[1]
    assert all(type(item[key]) is torch.Tensor for key in ("image", "label", "fov"))
    assert get_track_meta()  # MONAI's global default, restored after the augmentation


def test_patches_do_not_depend_on_the_number_of_loader_workers():
    dataset = PatchDataset([_aligned_sample()], patch_size=16, patches_per_image=6, seed=2, rotate_degrees=30)
    dataset.set_epoch(1)
    drawn = [torch.cat([b["image"] for b in DataLoader(dataset, batch_size=3, num_workers=w)]) for w in (0, 2)]
    assert torch.equal(*drawn)


def test_patch_dataset_keeps_labels_aligned_under_augmentation():
    sample = _aligned_sample()
    plain = PatchDataset([sample], patch_size=16, patches_per_image=12, augment=False, seed=1)
    augmented = PatchDataset([sample], patch_size=16, patches_per_image=12, augment=True, seed=1)
    moved = 0
    for i in range(len(plain)):
        item = augmented[i]
        fov, label, red = item["fov"], item["label"].bool(), item["image"][0]
        assert not item["image"][:, ~fov].any()
        assert (label & ~fov).sum() == 0
        if label[fov].any() and (~label[fov]).any():
            assert red[label & fov].min() > red[~label & fov].max()
        moved += not torch.equal(item["label"], plain[i]["label"])
    assert moved > 0  # spatial augmentation happened


def test_patch_dataset_rotation_and_zoom_keep_labels_aligned():
    sample = _aligned_sample()
    ds = PatchDataset([sample], patch_size=16, patches_per_image=12, seed=1, rotate_degrees=180, scale_range=0.2)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 16, 16) and item["label"].dtype == torch.int64 and item["fov"].dtype == torch.bool
        fov, label, red = item["fov"], item["label"].bool(), item["image"][0]
        assert not item["image"][:, ~fov].any() and (label & ~fov).sum() == 0
        if label[fov].any() and (~label[fov]).any():
            # bilinear image against nearest-neighbour label: only pixels on a vessel's edge may disagree
            assert red[label & fov].mean() > red[~label & fov].mean() + 1.0


def test_window_size_covers_the_rotated_and_zoomed_patch():
    from meddistill.data.patches import _window_size

    assert _window_size(100, 0, 0) == 100
    assert _window_size(100, 45, 0) == 142  # ceil(100 √2)
    assert _window_size(100, 180, 0.2) == 170  # ceil(120 √2): no angle needs more than 45°
    assert _window_size(100, 30, 0) == 137  # ceil(100 (cos 30° + sin 30°))
    assert _window_size(100, 10, 0, spatial_dims=3) == 156  # ceil(100 (cos 10° + sin 10°)³), three axes
    assert _window_size(100, 180, 0, spatial_dims=3) == 174  # ceil(100 √3): a cube's diagonal


def test_patch_dataset_rejects_bad_rotation_or_zoom():
    with pytest.raises(MeddistillError, match="scale_range"):
        PatchDataset([_aligned_sample()], patch_size=16, patches_per_image=1, scale_range=1.5)
    with pytest.raises(MeddistillError, match="rotate_degrees"):
        PatchDataset([_aligned_sample()], patch_size=16, patches_per_image=1, rotate_degrees=-5)


def test_hold_out_subjects_holds_out_exactly_those_subjects():
    ct = [VesselSample(f"chaos{p}_{k:03d}", None, None, None, str(p)) for p in (1, 2, 24, 25) for k in range(2)]
    train, val = hold_out_subjects(ct, [24, "25"])  # YAML gives patient numbers as integers
    assert [s.name for s in val] == ["chaos24_000", "chaos24_001", "chaos25_000", "chaos25_001"]
    assert [s.name for s in train] == ["chaos1_000", "chaos1_001", "chaos2_000", "chaos2_001"]
    drive = [VesselSample(f"{n}_training", None, None, None) for n in (21, 22, 23)]  # no subject: the image's name
    assert [s.name for s in hold_out_subjects(drive, ["23_training"])[1]] == ["23_training"]
    with pytest.raises(MeddistillError, match="no subject '26' in the dataset"):
        hold_out_subjects(ct, [26])


def test_random_subset_is_seeded_and_keeps_the_order():
    samples = [VesselSample(f"lits0_{k:03d}", None, None, None) for k in range(10)]
    picked = [s.name for s in random_subset(samples, 4, seed=3)]
    assert len(set(picked)) == 4 and picked == sorted(picked)
    assert picked == [s.name for s in random_subset(samples, 4, seed=3)]
    assert any([s.name for s in random_subset(samples, 4, seed=k)] != picked for k in range(4, 8))
    assert random_subset(samples, 0, seed=3) == samples
    with pytest.raises(MeddistillError, match="cannot draw 11 images from a dataset of 10"):
        random_subset(samples, 11, seed=0)


def test_val_subjects_fix_the_held_out_images():
    from meddistill.builders import build_samples
    from meddistill.config import DataConfig

    data = DataConfig(phantom_count=4, phantom_size=64, val_subjects=["phantom_0_002"])
    train, val = build_samples(data, 0)
    assert [s.name for s in val] == ["phantom_0_002"] and len(train) == 3


def test_split_seed_keeps_the_split_across_run_seeds():
    from meddistill.builders import build_samples
    from meddistill.config import DataConfig

    def held_out(seed: int, split_seed: int | None) -> list[str]:
        data = DataConfig(phantom_count=6, phantom_size=64, val_fraction=0.34, split_seed=split_seed)
        return [s.name for s in build_samples(data, seed)[1]]

    assert held_out(0, None) != held_out(1, None)  # the run's seed picks the images by default
    assert held_out(0, 0) == held_out(1, 0) == held_out(2, 0) == held_out(0, None)


def test_rescale_sample_resizes_photo_and_masks_together():
    sample = VesselSample("eye", *_fundus(0), subject="child")
    wide = rescale_sample(sample, 2 * fov_diameter(sample.fov))
    assert wide.name == "eye" and wide.subject == "child"
    assert wide.image.shape == (2 * H, 2 * W, 3) and wide.vessels.shape == wide.fov.shape == (2 * H, 2 * W)
    assert wide.vessels.dtype == bool and wide.fov.dtype == bool
    assert wide.vessels[::2, ::2].sum() == pytest.approx(sample.vessels.sum(), rel=0.05)  # nearest neighbour
    assert rescale_sample(sample, fov_diameter(sample.fov)).image is sample.image  # already at that size


def test_folds_hold_out_every_image_exactly_once():
    from meddistill.data import fold_split

    drive = [VesselSample(f"{n}_training", None, None, None) for n in range(21, 41)]
    held = [[s.name for s in fold_split(drive, 5, k, seed=0)[1]] for k in range(5)]
    assert sorted(sum(held, [])) == sorted(s.name for s in drive)
    assert [len(h) for h in held] == [4] * 5
    for k in range(5):
        train, val = fold_split(drive, 5, k, seed=0)
        assert len(train) == 16 and not {s.name for s in train} & {s.name for s in val}
    # fold 0 of 5 is the split val_fraction 0.2 draws with the same seed
    assert held[0] == [s.name for s in split_samples(drive, 0.2, seed=0)[1]]
    assert held != [[s.name for s in fold_split(drive, 5, k, seed=1)[1]] for k in range(5)]
    uneven = [[s.name for s in fold_split(drive[:7], 3, k, seed=0)[1]] for k in range(3)]
    assert sorted(len(h) for h in uneven) == [2, 2, 3] and len(set(sum(uneven, []))) == 7


def test_folds_keep_a_subjects_images_together():
    from meddistill.data import fold_split

    ct = [VesselSample(f"chaos{p}_{k:03d}", None, None, None, str(p)) for p in range(1, 7) for k in range(3)]
    for k in range(3):
        val = fold_split(ct, 3, k, seed=0)[1]
        assert len(val) == 6 and len({s.subject for s in val}) == 2


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [(1, 0, "data.folds must be 2 or more"), (5, 5, r"data.fold must be in 0..4"), (5, -1, r"data.fold must be in 0..4"),
     (21, 0, "cannot cut 20 image")],
)
def test_bad_folds_are_one_line_errors(folds, fold, message):
    from meddistill.data import fold_split

    drive = [VesselSample(f"{n}_training", None, None, None) for n in range(21, 41)]
    with pytest.raises(MeddistillError, match=message):
        fold_split(drive, folds, fold, seed=0)


def test_folds_and_val_subjects_are_exclusive():
    from meddistill.builders import build_samples
    from meddistill.config import DataConfig

    assert len(build_samples(DataConfig(phantom_count=6, phantom_size=64, folds=3, fold=2), 0)[1]) == 2
    with pytest.raises(MeddistillError, match="val_subjects and data.folds"):
        build_samples(DataConfig(phantom_count=4, phantom_size=64, folds=2, val_subjects=["phantom_0_002"]), 0)
