"""Liver CT loaders on tiny CHAOS (DICOM and PNG) and LiTS (NIfTI) folders the tests build."""

import csv

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from conftest import tiny_config_dict
from meddistill.cli import app

from meddistill.data import detect_layout, load_dataset, split_samples
from meddistill.data.ct import load_chaos, load_lits, window_ct
from meddistill.errors import MeddistillError


def _write_dicom(path, hu, z):
    """A CT slice stored as RescaleSlope 1, RescaleIntercept -1024 (how scanners store HU)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.ImagePositionPatient = [0, 0, z]
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _chaos(root, png=False):
    """Patient 1 with two 8×8 slices written in reverse z order; the liver is the top-left quarter."""
    patient = root / "1"
    (patient / "DICOM_anon").mkdir(parents=True)
    (patient / "Ground").mkdir()
    for k, (z, hu) in enumerate([(20.0, 240), (10.0, -160)]):  # file 0 is the higher slice
        slice_hu = np.full((8, 8), hu, np.int16)
        if png:
            Image.fromarray(window_ct(slice_hu)).save(patient / "DICOM_anon" / f"i{k:04d}.png")
        else:
            _write_dicom(patient / "DICOM_anon" / f"i{k:04d}.dcm", slice_hu, z)
    for k in range(2):
        mask = np.zeros((8, 8), np.uint8)
        mask[:4, :4] = 255
        Image.fromarray(mask).save(patient / "Ground" / f"liver_GT_{k:03d}.png")


def test_window_maps_the_liver_window_to_8_bits():
    assert window_ct(np.array([-1000, -160, 40, 240, 3000])).tolist() == [0, 0, 128, 255, 255]


def test_chaos_dicom_slices_are_ordered_by_position_and_windowed(tmp_path):
    _chaos(tmp_path)
    samples = load_dataset("auto", tmp_path)
    assert detect_layout(tmp_path) == "chaos" and [s.name for s in samples] == ["chaos1_000", "chaos1_001"]
    first, second = samples
    assert first.image.shape == (8, 8, 3) and first.image.dtype == np.uint8
    assert first.image.max() == 0 and second.image.min() == 255  # z = 10 (-160 HU) comes before z = 20 (240 HU)
    assert first.vessels[:4, :4].all() and not first.vessels[4:].any() and first.fov.all()
    assert {s.subject for s in samples} == {"1"}
    # the three channels are one grey plane, not three copies (LiTS holds thousands of slices)
    assert np.shares_memory(first.image[..., 0], first.image[..., 2]) and not first.image.flags.writeable


def test_chaos_png_slices(tmp_path):
    _chaos(tmp_path, png=True)
    samples = load_chaos(tmp_path)
    assert [s.image[0, 0, 0] for s in samples] == [255, 0]  # PNG slices keep their name order


def test_chaos_mismatched_masks_and_missing_layout_are_user_errors(tmp_path):
    _chaos(tmp_path)
    next((tmp_path / "1" / "Ground").glob("*.png")).unlink()
    with pytest.raises(MeddistillError, match="2 slices but 1 masks"):
        load_chaos(tmp_path)
    with pytest.raises(MeddistillError, match="no CHAOS patient folders"):
        load_chaos(tmp_path / "1" / "Ground")


def _lits(root, affine=np.eye(4)):
    """Case 0: 6×4×3 volume; slice z=1 has liver at voxel x=5 (the patient's right in RAS+), y=3 (anterior)."""
    volume = np.full((6, 4, 3), -1000, np.int16)
    volume[5, 3, 1] = 240
    labels = np.zeros((6, 4, 3), np.uint8)
    labels[5, 3, 1] = 2  # tumour counts as liver
    nib.save(nib.Nifti1Image(volume, affine), root / "volume-0.nii")
    nib.save(nib.Nifti1Image(labels, affine), root / "segmentation-0.nii.gz")


def test_lits_keeps_liver_slices_in_viewer_orientation(tmp_path):
    _lits(tmp_path)
    samples = load_dataset("auto", tmp_path)
    assert detect_layout(tmp_path) == "lits" and [s.name for s in samples] == ["lits0_001"]
    (sample,) = samples
    assert sample.vessels.shape == (4, 6)
    # anterior (max y) is the top row; the patient's right (max x in RAS+) is the image's left
    assert np.argwhere(sample.vessels).tolist() == [[0, 0]]
    assert sample.image[0, 0, 0] == 255 and sample.image[1, 1, 0] == 0
    assert len(load_lits(tmp_path, liver_slices_only=False)) == 3


def test_lits_is_reoriented_to_ras_first(tmp_path):
    flip_x = np.diag([-1.0, 1.0, 1.0, 1.0])  # stored left-right mirrored (LAS)
    _lits(tmp_path, flip_x)
    (sample,) = load_lits(tmp_path)
    assert np.argwhere(sample.vessels).tolist() == [[0, 5]]  # voxel x=5 of an LAS volume is on the patient's left


def test_lits_missing_segmentation_is_a_user_error(tmp_path):
    _lits(tmp_path)
    (tmp_path / "segmentation-0.nii.gz").unlink()
    with pytest.raises(MeddistillError, match="no segmentation-0"):
        load_lits(tmp_path)


def test_ct_slices_split_by_patient(tmp_path):
    _chaos(tmp_path)
    other = load_chaos(tmp_path)
    samples = other + [type(s)(s.name.replace("chaos1", "chaos2"), s.image, s.vessels, s.fov, "2") for s in other]
    train, val = split_samples(samples, 0.5, seed=0)
    assert len({s.subject for s in train}) == 1 and len({s.subject for s in val}) == 1


def test_train_on_chaos_and_evaluate_on_lits_from_the_cli(tmp_path):
    """The liver CT path end to end, as a user with both datasets would run it."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]

    def slice_and_liver():
        liver = ((yy - rng.uniform(16, 28)) / 12) ** 2 + ((xx - rng.uniform(12, 22)) / 14) ** 2 < 1
        return np.where(liver, 60, -100) + rng.normal(0, 20, liver.shape), liver

    for patient in ("1", "2"):
        folder = tmp_path / "chaos" / patient
        (folder / "DICOM_anon").mkdir(parents=True)
        (folder / "Ground").mkdir()
        for k in range(3):
            hu, liver = slice_and_liver()
            Image.fromarray(window_ct(hu)).save(folder / "DICOM_anon" / f"i{k:04d}.png")
            Image.fromarray(liver.astype(np.uint8) * 255).save(folder / "Ground" / f"liver_GT_{k:03d}.png")
    (tmp_path / "lits").mkdir()
    volume, labels = zip(*(slice_and_liver() for _ in range(2)))
    nib.save(nib.Nifti1Image(np.stack(volume, -1).astype(np.int16), np.eye(4)), tmp_path / "lits" / "volume-0.nii")
    nib.save(nib.Nifti1Image(np.stack(labels, -1).astype(np.uint8), np.eye(4)), tmp_path / "lits" / "segmentation-0.nii.gz")
    config = tiny_config_dict(tmp_path, "ct", train={"epochs": 1, "batch_size": 2},
                              data={"dataset": "chaos", "root": str(tmp_path / "chaos"), "patch_size": 32,
                                    "patches_per_image": 2, "val_fraction": 0.5})
    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(tmp_path / "ct.yaml"), "--no-progress"])
    assert trained.exit_code == 0, trained.output
    model = str(tmp_path / "runs" / "ct" / "best")
    evaluated = runner.invoke(app, ["evaluate", "segmentation", "--model", model, "--dataset", "lits",
                                    "--root", str(tmp_path / "lits"), "--per-image", str(tmp_path / "per_image.csv")])
    assert evaluated.exit_code == 0, evaluated.output
    with (tmp_path / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["lits0_000", "lits0_001"]  # every slice holds liver
    assert all(0.0 <= float(r["f1"]) <= 1.0 for r in rows)
    # one slice drawn at random, as the GKD paper draws 1,000 LiTS slices
    one = runner.invoke(app, ["evaluate", "segmentation", "--model", model, "--dataset", "lits", "--root", str(tmp_path / "lits"),
                              "--images", "1", "--seed", "3", "--per-image", str(tmp_path / "one.csv")])
    assert one.exit_code == 0, one.output
    with (tmp_path / "one.csv").open() as f:
        assert [r["image"] for r in csv.DictReader(f)] in (["lits0_000"], ["lits0_001"])
    too_many = runner.invoke(app, ["evaluate", "segmentation", "--model", model, "--dataset", "lits", "--root", str(tmp_path / "lits"), "--images", "3"])
    assert too_many.exit_code == 2 and "cannot draw 3 images from a dataset of 2" in too_many.output
