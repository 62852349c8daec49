"""Declarative experiment configuration: one YAML file per experiment, validated.

A config is a tree of dataclasses. :func:`load_config` reads YAML, rejects unknown
keys (naming the nearest valid one), checks types, and applies ``--set a.b=value``
overrides, so a typo can never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MeddistillError
from .registry import did_you_mean


@dataclass
class NetworkConfig:
    """A network from the model registry, optionally initialised from weights."""

    name: str = "enet"
    args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # shipped name or path to a .safetensors checkpoint


@dataclass
class DataConfig:
    """Where images come from and how training patches are drawn."""

    dataset: str = "phantom"  # phantom | drive | chase | stare | hrf | chaos | lits | folder | auto
    root: str | None = None
    val_fraction: float = 0.2
    # hold out exactly these subjects (CT patients, CHASE_DB1 children, image names) instead of
    # a val_fraction drawn at random: a paper's fixed split
    val_subjects: list[str | int] = field(default_factory=list)
    split_seed: int | None = None  # seed of the phantoms and the train/val split; None: the run's seed
    # >= 2: k-fold cross-validation instead of val_fraction: the images (or subjects) are
    # shuffled with the split seed and cut into this many folds; fold `fold` is held out
    folds: int = 0
    fold: int = 0
    phantom_count: int = 12
    phantom_size: int = 256
    patch_size: int = 128
    patches_per_image: int = 32
    augment: bool = True
    rotate_degrees: float = 0.0  # with augment: random rotation by up to this angle, besides the 90° turns
    scale_range: float = 0.0  # with augment: random zoom by a factor in [1 - scale_range, 1 + scale_range]
    num_workers: int = 0


@dataclass
class TaskConfig:
    """The kind of problem (see ``meddistill.tasks.TASKS``) and its arguments."""

    name: str = "vessel-segmentation"  # vessel-segmentation | retinal-keypoints
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """The distillation method and its arguments (see ``meddistill.distill.METHODS``)."""

    name: str = "none"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only


@dataclass
class ScheduleConfig:
    name: str = "poly"  # constant | poly | cosine | step
    power: float = 0.9  # poly
    step_size: int = 30  # step, in epochs
    gamma: float = 0.1  # step
    warmup_epochs: int = 0


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    loss: str = "dice_ce"  # ce | dice_ce: the segmentation task's supervised loss
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float | None = 1.0  # max global grad norm; null disables
    amp: str | bool = "auto"  # auto (on for CUDA only) | on | off: bfloat16 autocast (float16 on GPUs without bf16)
    val_every: int = 1  # epochs
    monitor: str = "f1"  # validation metric that picks the best checkpoint
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch intra-op threads on CPU; null keeps torch's default
    deterministic: bool = True
    # > 0: validate, save and ship an exponential moving average of the weights, updated every
    # step with this decay (it averages about the last 1 / (1 - decay) steps); 0 disables
    ema_decay: float = 0.0


@dataclass
class ExperimentConfig:
    """One experiment: data, the network being trained, its teacher and the method."""

    name: str = "experiment"
    seed: int = 0
    output: str = "runs"
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    student: NetworkConfig = field(default_factory=NetworkConfig)
    teacher: NetworkConfig | None = None
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output) / self.name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except MeddistillError as err:
                errors.append(str(err))
        raise MeddistillError(errors[0] if errors else f"{where}: must not be null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise MeddistillError(f"{where}: expected a mapping, got {value!r}")
        return build_dataclass(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise MeddistillError(f"{where}: expected a mapping, got {value!r}")
        value_type = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        return {k: _coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise MeddistillError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise MeddistillError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        if not isinstance(value, tp):
            raise MeddistillError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    return value


def build_dataclass(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Validate nested dicts against dataclass ``cls`` (unknown keys name the nearest valid one)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise MeddistillError(f"unknown config key '{path}'{did_you_mean(key, known)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from plain nested dicts."""
    if not isinstance(values, dict):
        raise MeddistillError("a config must be a YAML mapping at the top level")
    return build_dataclass(ExperimentConfig, values)


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to nested dicts in place."""
    for item in overrides:
        if "=" not in item:
            raise MeddistillError(f"override '{item}' must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        node = values
        keys = dotted.strip().split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise MeddistillError(f"override '{item}': '{key}' is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return values


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error is a one-line :class:`MeddistillError`."""
    path = Path(path)
    if not path.is_file():
        raise MeddistillError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise MeddistillError(f"config {path} is not valid YAML{line}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config, apply overrides and validate it."""
    return config_from_dict(apply_overrides(read_yaml(path), overrides or []))


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
