"""Retinal vessel data: image IO, dataset loaders, field-of-view masks, training patches and phantoms."""

from .datasets import (
    DATASET_LOADERS,
    VesselSample,
    detect_layout,
    fold_split,
    hold_out_subjects,
    load_chase,
    load_dataset,
    load_drive,
    load_folder,
    load_hrf,
    load_stare,
    random_subset,
    split_samples,
)
from .fov import compute_fov, fov_diameter, rescale_sample, rescale_to_fov_diameter, training_fov_diameter
from .io import IMAGE_SUFFIXES, read_mask, read_rgb, write_png
from .patches import PatchDataset, equalize_contrast, normalize_image
from .phantom import FundusPhantom, make_fundus_phantom, make_phantom_dataset
from .preparation import Preparation

__all__ = [
    "DATASET_LOADERS",
    "IMAGE_SUFFIXES",
    "FundusPhantom",
    "PatchDataset",
    "Preparation",
    "VesselSample",
    "compute_fov",
    "fov_diameter",
    "detect_layout",
    "fold_split",
    "hold_out_subjects",
    "load_chase",
    "load_dataset",
    "load_drive",
    "load_folder",
    "load_hrf",
    "load_stare",
    "make_fundus_phantom",
    "make_phantom_dataset",
    "equalize_contrast",
    "normalize_image",
    "read_mask",
    "random_subset",
    "read_rgb",
    "rescale_sample",
    "rescale_to_fov_diameter",
    "training_fov_diameter",
    "split_samples",
    "write_png",
]
