"""Liver CT loaders: CHAOS (DICOM or PNG slices with PNG masks) and LiTS (NIfTI volumes).

Each axial slice becomes one :class:`~meddistill.data.datasets.VesselSample` so the whole
segmentation stack (patches, training, metrics, the experiment grid) serves CT unchanged:
``image`` is the slice in a soft-tissue window as 8-bit grey repeated over three channels,
``vessels`` holds the liver mask (the foreground class), and ``fov`` is the whole slice.
Slices are shown as a radiology viewer shows them: anterior up, the patient's right on the
image's left.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import MeddistillError
from .datasets import VesselSample, _check_root
from .io import read_grey, read_mask

__all__ = ["load_chaos", "load_lits", "window_ct"]

# Liver window: level 40 HU, width 400 HU.
LIVER_WINDOW = (-160.0, 240.0)


def window_ct(hounsfield: np.ndarray, window: tuple[float, float] = LIVER_WINDOW) -> np.ndarray:
    """Clip Hounsfield units to ``window`` (low, high) and scale to uint8 ``(H, W)``."""
    low, high = window
    scaled = (np.clip(hounsfield.astype(np.float32), low, high) - low) / (high - low)
    return np.round(scaled * 255).astype(np.uint8)


def _slice_sample(name: str, subject: str, grey: np.ndarray, liver: np.ndarray) -> VesselSample:
    if grey.shape != liver.shape:
        raise MeddistillError(f"{name}: slice {grey.shape} and mask {liver.shape} differ in size")
    # Read-only views, not copies: the three grey channels and the all-true field of view
    # cost no memory, so a LiTS-sized set of slices needs 2.5 times less.
    rgb = np.broadcast_to(grey[..., None], (*grey.shape, 3))
    return VesselSample(name, rgb, liver.astype(bool), np.broadcast_to(np.True_, grey.shape), subject)


def _read_dicom_hu(path: Path) -> tuple[float, np.ndarray]:
    """(slice position along the patient axis, pixels in Hounsfield units) of one DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except (InvalidDicomError, AttributeError, ValueError, OSError) as err:
        raise MeddistillError(f"cannot read DICOM slice {path}: {err}") from None
    hu = pixels * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
    position = getattr(ds, "ImagePositionPatient", None)
    order = float(position[2]) if position is not None else float(getattr(ds, "InstanceNumber", 0))
    return order, hu


def load_chaos(root: str | Path, window: tuple[float, float] = LIVER_WINDOW) -> list[VesselSample]:
    """Load CHAOS CT: ``<patient>/DICOM_anon/*.dcm`` (or ``*.png`` slices) with ``<patient>/Ground/*.png``.

    ``root`` is the ``CT`` folder of ``CHAOS_Train_Sets/Train_Sets`` (or any folder of patient
    folders). DICOM slices are ordered by their position along the patient axis and windowed;
    PNG slices are taken as already windowed. Masks pair with slices in sorted name order.
    """
    root = _check_root(root, "CHAOS")
    patients = sorted(p for p in root.iterdir() if (p / "DICOM_anon").is_dir())
    if not patients:
        raise MeddistillError(f"no CHAOS patient folders (<id>/DICOM_anon) in {root}")
    samples = []
    for patient in patients:
        masks = sorted((patient / "Ground").glob("*.png"))
        dicoms = sorted((patient / "DICOM_anon").glob("*.dcm"))
        if dicoms:
            slices = [window_ct(hu, window) for _, hu in sorted((_read_dicom_hu(p) for p in dicoms), key=lambda s: s[0])]
        else:
            slices = [read_grey(p) for p in sorted((patient / "DICOM_anon").glob("*.png"))]
        if len(slices) != len(masks) or not slices:
            raise MeddistillError(f"CHAOS patient {patient.name}: {len(slices)} slices but {len(masks)} masks in Ground/")
        for k, (grey, mask_path) in enumerate(zip(slices, masks)):
            samples.append(_slice_sample(f"chaos{patient.name}_{k:03d}", patient.name, grey, read_mask(mask_path)))
    return samples


def _display(axial: np.ndarray) -> np.ndarray:
    """An axial ``(x, y)`` slice of a RAS volume as a viewer shows it: anterior up, patient's right on the left."""
    return np.ascontiguousarray(np.fliplr(np.rot90(axial)))


def load_lits(
    root: str | Path, window: tuple[float, float] = LIVER_WINDOW, liver_slices_only: bool = True
) -> list[VesselSample]:
    """Load LiTS: ``volume-<n>.nii[.gz]`` with ``segmentation-<n>.nii[.gz]`` (liver 1 and tumour 2 merged).

    Volumes are reoriented to RAS; with ``liver_slices_only`` only axial slices that contain
    liver are kept, as in the GKD paper's LiTS test set.
    """
    root = _check_root(root, "LiTS")
    volumes = sorted(root.glob("volume-*.nii*"))
    if not volumes:
        raise MeddistillError(f"no LiTS volumes (volume-<n>.nii[.gz]) in {root}")
    samples = []
    for volume_path in volumes:
        case = volume_path.name.split(".")[0].removeprefix("volume-")
        candidates = sorted(root.glob(f"segmentation-{case}.nii*"))
        if not candidates:
            raise MeddistillError(f"LiTS case {case}: no segmentation-{case}.nii[.gz] next to {volume_path.name}")
        try:
            volume = nib.as_closest_canonical(nib.load(volume_path))
            labels = nib.as_closest_canonical(nib.load(candidates[0]))
            hu, liver = np.asarray(volume.dataobj, np.float32), np.asarray(labels.dataobj) > 0
        except (OSError, nib.filebasedimages.ImageFileError, EOFError) as err:
            raise MeddistillError(f"cannot read LiTS case {case}: {err}") from None
        if hu.shape != liver.shape or hu.ndim != 3:
            raise MeddistillError(f"LiTS case {case}: volume {hu.shape} and segmentation {liver.shape} differ")
        for k in range(hu.shape[2]):
            if liver_slices_only and not liver[:, :, k].any():
                continue
            grey, mask = window_ct(_display(hu[:, :, k]), window), _display(liver[:, :, k])
            samples.append(_slice_sample(f"lits{case}_{k:03d}", f"lits{case}", grey, mask))
    return samples
