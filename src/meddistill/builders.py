"""Turn an :class:`ExperimentConfig` into samples, networks and a distiller."""

from __future__ import annotations

from torch import nn

from .config import DataConfig, ExperimentConfig, NetworkConfig
from .data import VesselSample, fold_split, hold_out_subjects, load_dataset, make_phantom_dataset, split_samples
from .errors import MeddistillError
from .zoo import build_network, load_model


def phantom_samples(count: int, size: int, seed: int) -> list[VesselSample]:
    """The embedded default data: procedural fundus phantoms with exact vessel masks."""
    return [
        VesselSample(name=f"phantom_{seed}_{i:03d}", image=p.image, vessels=p.vessels, fov=p.fov)
        for i, p in enumerate(make_phantom_dataset(count, size=size, seed=seed))
    ]


def build_samples(data: DataConfig, seed: int) -> tuple[list[VesselSample], list[VesselSample]]:
    """Training and validation samples: a deterministic split by image, by ``data.val_subjects``,
    or one fold of a cross-validation (``data.folds``, ``data.fold``).

    ``data.split_seed``, when set, replaces ``seed`` here, so that runs with other seeds
    (replicates) train and validate on the same images.
    """
    if data.split_seed is not None:
        seed = data.split_seed
    if data.dataset == "phantom":
        samples = phantom_samples(data.phantom_count, data.phantom_size, seed)
    else:
        if data.root is None:
            raise MeddistillError(f"data.root must be set for dataset '{data.dataset}'")
        samples = load_dataset(data.dataset, data.root)
    if data.val_subjects and data.folds:
        raise MeddistillError("data.val_subjects and data.folds both choose the held-out images; set one of them")
    if data.val_subjects:
        train, val = hold_out_subjects(samples, data.val_subjects)
    elif data.folds:
        train, val = fold_split(samples, data.folds, data.fold, seed)
    else:
        train, val = split_samples(samples, data.val_fraction, seed)
    if not train:
        raise MeddistillError("no training images left after the validation split")
    return train, val


def build_configured_network(cfg: NetworkConfig) -> nn.Module:
    """The network a config section names, with its weights when it names some."""
    return _configured_network(cfg)[0]


def _configured_network(cfg: NetworkConfig) -> tuple[nn.Module, dict]:
    if cfg.weights is None:
        return build_network(cfg.name, cfg.args), {}
    model, meta = load_model(cfg.weights, expect=cfg.name)
    if cfg.args and meta.get("args") != cfg.args:
        raise MeddistillError(
            f"weights {cfg.weights} were trained with args {meta.get('args')}, config says {cfg.args}"
        )
    return model, meta


def build_teacher(config: ExperimentConfig, task_meta: dict) -> nn.Module | None:
    """The trained teacher; it must have seen its inputs prepared as the student's task
    prepares them (``task_meta``), since both get the same batch."""
    if config.teacher is None:
        return None
    if config.teacher.weights is None:
        raise MeddistillError("teacher.weights must name a trained teacher (shipped name or checkpoint path)")
    teacher, meta = _configured_network(config.teacher)
    if meta.get("clahe", False) != task_meta.get("clahe", False):
        raise MeddistillError(
            f"teacher {config.teacher.weights} was trained {'with' if meta.get('clahe') else 'without'} CLAHE; "
            f"set task.args.clahe: {str(bool(meta.get('clahe'))).lower()} so the student sees the same inputs"
        )
    return teacher
