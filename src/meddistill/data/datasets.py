"""Loaders for the public 2D retinal vessel datasets, each in its official folder layout.

Where users get the data (research use; cite the papers):

* DRIVE (Staal et al., IEEE TMI 2004): https://drive.grand-challenge.org
* CHASE_DB1 (Fraz et al., IEEE TBME 2012): https://researchdata.kingston.ac.uk/96/
* STARE (Hoover et al., IEEE TMI 2000): https://cecas.clemson.edu/~ahoover/stare/probing/
  (``stare-images.tar``, ``labels-ah.tar``, ``labels-vk.tar``; unpack each into its folder)
* HRF (Budai et al., IJBI 2013): https://www5.cs.fau.de/research/data/fundus-images/

Any other data fits :func:`load_folder`: ``images/`` with one photo per file and ``masks/``
with the vessel mask of the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MeddistillError
from ..registry import did_you_mean
from .fov import compute_fov
from .io import IMAGE_SUFFIXES, read_mask, read_rgb

__all__ = [
    "DATASET_LOADERS",
    "VesselSample",
    "detect_layout",
    "load_chase",
    "load_dataset",
    "load_drive",
    "load_folder",
    "load_hrf",
    "load_stare",
    "fold_split",
    "hold_out_subjects",
    "random_subset",
    "split_samples",
]


@dataclass
class VesselSample:
    """One fundus photo with its vessel and field-of-view masks, all of the same (H, W)."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    vessels: np.ndarray  # (H, W) bool: the foreground class (the liver, for CT slices)
    fov: np.ndarray  # (H, W) bool
    subject: str = ""  # images of one subject stay on one side of a split; "" = the image alone


_SUFFIXES = IMAGE_SUFFIXES + tuple(s + ".gz" for s in IMAGE_SUFFIXES)


def _stem(path: Path) -> str:
    """File name without its image suffix (``im0001.ppm.gz`` -> ``im0001``)."""
    name = path.name
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _images(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files in ``folder`` matching ``pattern``, any case of suffix, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.name.lower().endswith(_SUFFIXES))


def _find(folder: Path, *stems: str) -> Path | None:
    """The first image file in ``folder`` named like one of ``stems`` with any image suffix."""
    by_stem = {}
    for path in _images(folder):
        by_stem.setdefault(_stem(path), path)
    return next((by_stem[s] for s in stems if s in by_stem), None)


def _check_root(root: str | Path, dataset: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise MeddistillError(f"{dataset} folder not found: {root}")
    return root


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise MeddistillError(
            f"unknown {what} '{value}'{did_you_mean(value, choices)}; choose from: {', '.join(choices)}"
        )


def _sample(name: str, image_path: Path, vessels_path: Path | None, fov_path: Path | None) -> VesselSample:
    """Read one sample; the FOV is computed from the photo when ``fov_path`` is None."""
    if vessels_path is None:
        raise MeddistillError(f"image {image_path} has no vessel mask")
    image = read_rgb(image_path)
    vessels = read_mask(vessels_path, like_shape=image.shape, like_path=image_path)
    if fov_path is None:
        fov = compute_fov(image)
    else:
        fov = read_mask(fov_path, like_shape=image.shape, like_path=image_path)
    return VesselSample(name=name, image=image, vessels=vessels, fov=fov)


def load_drive(root: str | Path, split: str = "training") -> list[VesselSample]:
    """Load DRIVE: ``<split>/images/21_training.tif``, ``1st_manual/21_manual1.gif``, ``mask/21_training_mask.gif``.

    Args:
        root: the DRIVE folder holding ``training/`` and ``test/``, or a split folder itself.
        split: ``"training"`` or ``"test"``.
    """
    _check_choice(split, ("training", "test"), "DRIVE split")
    root = _check_root(root, "DRIVE")
    folder = root / split if (root / split / "images").is_dir() else root
    pattern = f"*_{split}.*"
    paths = _images(folder / "images", pattern)
    if not paths:
        raise MeddistillError(
            f"no DRIVE images found under {root} (expected {root}/{split}/images/{pattern.replace('.*', '.tif')})"
        )
    samples = []
    for path in paths:
        stem = _stem(path)
        number = stem.split("_")[0]
        fov_path = _find(folder / "mask", f"{stem}_mask")
        if fov_path is None:
            raise MeddistillError(f"image {path} has no field-of-view mask {folder}/mask/{stem}_mask.gif")
        samples.append(_sample(stem, path, _find(folder / "1st_manual", f"{number}_manual1"), fov_path))
    return samples


def load_chase(root: str | Path, observer: str = "1stHO") -> list[VesselSample]:
    """Load CHASE_DB1: ``Image_01L.jpg`` with ``Image_01L_1stHO.png`` in one folder; FOV computed.

    The two eyes of a child share a ``subject`` (``Image_01``), so splits keep them together.

    Args:
        root: the CHASE_DB1 folder.
        observer: ``"1stHO"`` or ``"2ndHO"``, whose annotation to use.
    """
    _check_choice(observer, ("1stHO", "2ndHO"), "CHASE_DB1 observer")
    root = _check_root(root, "CHASE_DB1")
    paths = [p for p in _images(root, "Image_*") if "_" not in _stem(p).removeprefix("Image_")]
    if not paths:
        raise MeddistillError(f"no CHASE_DB1 images found under {root} (expected {root}/Image_01L.jpg)")
    samples = [_sample(_stem(p), p, _find(root, f"{_stem(p)}_{observer}"), None) for p in paths]
    for sample in samples:
        sample.subject = sample.name[:-1]  # Image_01L and Image_01R: one child
    return samples


def load_stare(root: str | Path, observer: str = "ah") -> list[VesselSample]:
    """Load STARE: ``stare-images/im0001.ppm[.gz]`` with ``labels-ah/im0001.ah.ppm[.gz]``; FOV computed.

    Only the images that the observer labelled are loaded, so the full 400-image STARE
    collection may sit in ``stare-images/``.

    Args:
        root: the folder holding ``stare-images/`` and ``labels-<observer>/``.
        observer: ``"ah"`` (Hoover) or ``"vk"`` (Kouznetsova).
    """
    _check_choice(observer, ("ah", "vk"), "STARE observer")
    root = _check_root(root, "STARE")
    labels = _images(root / f"labels-{observer}", f"*.{observer}.*")
    if not labels:
        raise MeddistillError(
            f"no STARE labels found under {root} (expected {root}/labels-{observer}/im0001.{observer}.ppm.gz)"
        )
    samples = []
    for label in labels:
        name = _stem(label).removesuffix(f".{observer}")
        image = _find(root / "stare-images", name)
        if image is None:
            raise MeddistillError(f"label {label} has no image {root}/stare-images/{name}.ppm.gz")
        samples.append(_sample(name, image, label, None))
    return samples


def load_hrf(root: str | Path) -> list[VesselSample]:
    """Load HRF: ``images/01_h.jpg``, ``manual1/01_h.tif``, ``mask/01_h_mask.tif`` (h, g and dr photos)."""
    root = _check_root(root, "HRF")
    paths = _images(root / "images")
    if not paths:
        raise MeddistillError(f"no HRF images found under {root} (expected {root}/images/01_h.jpg)")
    samples = []
    for path in paths:
        stem = _stem(path)
        fov_path = _find(root / "mask", f"{stem}_mask")
        if fov_path is None:
            raise MeddistillError(f"image {path} has no field-of-view mask {root}/mask/{stem}_mask.tif")
        samples.append(_sample(stem, path, _find(root / "manual1", stem), fov_path))
    return samples


def load_folder(root: str | Path) -> list[VesselSample]:
    """Load a generic layout: ``images/<stem>.*`` with ``masks/<stem>.*`` (or ``masks/<stem>_mask.*``).

    A field-of-view mask ``fov/<stem>.*`` is used when present, else it is computed.
    """
    root = _check_root(root, "dataset")
    paths = _images(root / "images")
    if not paths:
        raise MeddistillError(
            f"no images found under {root} (expected {root}/images/<name>.png and {root}/masks/<name>.png)"
        )
    samples = []
    for path in paths:
        stem = _stem(path)
        masks = _find(root / "masks", stem, f"{stem}_mask")
        samples.append(_sample(stem, path, masks, _find(root / "fov", stem, f"{stem}_fov")))
    return samples


DATASET_LOADERS: dict[str, Callable[..., list[VesselSample]]] = {
    "drive": load_drive,
    "chase": load_chase,
    "stare": load_stare,
    "hrf": load_hrf,
    "folder": load_folder,
}


def _register_ct_loaders() -> None:
    # ct.py builds on this module, so its loaders join the table once both exist.
    from .ct import load_chaos, load_lits

    DATASET_LOADERS.update(chaos=load_chaos, lits=load_lits)


_register_ct_loaders()


def detect_layout(root: str | Path) -> str:
    """Name the :data:`DATASET_LOADERS` entry whose layout the files in ``root`` follow."""
    root = _check_root(root, "dataset")
    for folder in (root, root / "training", root / "test"):
        if _images(folder / "images", "*_training.*") or _images(folder / "images", "*_test.*"):
            return "drive"
    if (root / "stare-images").is_dir():
        return "stare"
    if (root / "manual1").is_dir() and (root / "images").is_dir():
        return "hrf"
    if (root / "masks").is_dir() and (root / "images").is_dir():
        return "folder"
    if _images(root, "Image_*_1stHO.*"):
        return "chase"
    if any((p / "DICOM_anon").is_dir() for p in root.iterdir() if p.is_dir()):
        return "chaos"
    if list(root.glob("volume-*.nii*")):
        return "lits"
    raise MeddistillError(
        f"cannot tell the dataset layout of {root}: expected DRIVE (training/images/), STARE (stare-images/), "
        "HRF (images/ + manual1/), CHASE_DB1 (Image_01L.jpg + Image_01L_1stHO.png), CHAOS CT "
        "(<patient>/DICOM_anon/), LiTS (volume-<n>.nii) or images/ + masks/"
    )


def load_dataset(kind: str, root: str | Path, **kwargs) -> list[VesselSample]:
    """Load a dataset with the loader named ``kind``; ``"auto"`` detects it from the files in ``root``."""
    if kind == "auto":
        kind = detect_layout(root)
    if kind not in DATASET_LOADERS:
        names = list(DATASET_LOADERS) + ["auto"]
        raise MeddistillError(
            f"unknown dataset kind '{kind}'{did_you_mean(kind, names)}; choose from: {', '.join(names)}"
        )
    return DATASET_LOADERS[kind](root, **kwargs)


def _shuffled_groups(
    samples: Sequence[VesselSample], seed: int, group: Callable[[str], str] | None
) -> tuple[list[str], list[str]]:
    """Each sample's group key, and the distinct groups in the seeded random order splits draw from."""
    keys = [group(s.name) if group else (s.subject or s.name) for s in samples]
    return keys, np.random.default_rng(seed).permutation(sorted(set(keys))).tolist()


def _hold_out(samples: Sequence[VesselSample], keys: list[str], held: set[str]) -> tuple[list[VesselSample], list[VesselSample]]:
    return [s for s, k in zip(samples, keys) if k not in held], [s for s, k in zip(samples, keys) if k in held]


def split_samples(
    samples: Sequence[VesselSample],
    val_fraction: float,
    seed: int,
    group: Callable[[str], str] | None = None,
) -> tuple[list[VesselSample], list[VesselSample]]:
    """Split samples into (train, validation) by image, reproducibly for a given seed.

    Args:
        samples: the samples to split; each keeps its original order within its part.
        val_fraction: fraction of images (or groups) for validation, in [0, 1).
        seed: seed of the shuffle.
        group: maps a sample name to a group kept on one side, e.g. the subject, so the two
            eyes of a CHASE_DB1 child (``Image_01L``, ``Image_01R``) do not straddle the split:
            ``group=lambda name: name[:-1]``. Default: the sample's ``subject`` (slices of one
            CT patient), else the image alone.
    """
    if not 0 <= val_fraction < 1:
        raise MeddistillError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys, groups = _shuffled_groups(samples, seed, group)
    n_val = round(len(groups) * val_fraction)
    if val_fraction > 0:
        if len(groups) < 2:
            raise MeddistillError(f"cannot split {len(groups)} image(s) into training and validation parts")
        n_val = min(max(n_val, 1), len(groups) - 1)
    return _hold_out(samples, keys, set(groups[:n_val]))


def fold_split(
    samples: Sequence[VesselSample], folds: int, fold: int, seed: int
) -> tuple[list[VesselSample], list[VesselSample]]:
    """(train, validation) of fold ``fold`` of a ``folds``-fold cross-validation, by image or subject.

    The groups are shuffled as :func:`split_samples` shuffles them and cut into ``folds``
    contiguous parts of near-equal size, so every image is held out by exactly one fold, and
    fold 0 of 5 holds out what ``val_fraction: 0.2`` holds out with the same seed.
    """
    if folds < 2:
        raise MeddistillError(f"data.folds must be 2 or more for cross-validation, got {folds}")
    if not 0 <= fold < folds:
        raise MeddistillError(f"data.fold must be in 0..{folds - 1}, got {fold}")
    keys, groups = _shuffled_groups(samples, seed, None)
    if len(groups) < folds:
        raise MeddistillError(f"cannot cut {len(groups)} image(s) or subject(s) into {folds} folds")
    start, stop = (round(len(groups) * k / folds) for k in (fold, fold + 1))
    return _hold_out(samples, keys, set(groups[start:stop]))


def hold_out_subjects(samples: Sequence[VesselSample], subjects: Sequence[str | int]) -> tuple[list[VesselSample], list[VesselSample]]:
    """Split samples into (train, validation) with exactly the samples of ``subjects`` held out.

    A subject is a CT patient (``24``), a CHASE_DB1 child (``Image_11``) or, for an image
    without one, the image's name (``21_training``); a split fixed by a paper is given so.
    A subject the samples lack is an error.
    """
    keys = [s.subject or s.name for s in samples]
    known = list(dict.fromkeys(keys))
    for subject in map(str, subjects):
        if subject not in known:
            raise MeddistillError(f"val_subjects: no subject '{subject}' in the dataset{did_you_mean(subject, known)}")
    return _hold_out(samples, keys, {str(subject) for subject in subjects})


def random_subset(samples: Sequence[VesselSample], count: int, seed: int) -> list[VesselSample]:
    """``count`` samples drawn at random with ``seed``, kept in their original order; all of them when ``count`` is 0."""
    if not 0 <= count <= len(samples):
        raise MeddistillError(f"cannot draw {count} images from a dataset of {len(samples)}")
    if count == 0:
        return list(samples)
    chosen = np.random.default_rng(seed).choice(len(samples), size=count, replace=False)
    return [samples[i] for i in sorted(chosen)]
