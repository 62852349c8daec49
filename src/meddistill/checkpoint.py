"""Checkpoints that never execute code when loaded.

A model checkpoint is two files side by side: ``<stem>.safetensors`` (weights) and
``<stem>.json`` (architecture name and arguments, config, code version, library versions,
metrics).
Resumable training state (optimiser, scheduler, RNG, epoch) goes to
``<stem>.state.pt`` and is read with ``torch.load(weights_only=True)``. Every file is
written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .errors import MeddistillError

FORMAT = "meddistill-model/1"


@functools.cache
def code_version() -> str:
    """Package version, plus the git commit when running from a checkout (read once: the
    running code does not change when the checkout does)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


# The libraries whose kernels or image operations decide a trained network's exact weights.
_NUMERIC_PACKAGES = ("torch", "monai", "numpy", "opencv-python-headless", "scikit-image")


@functools.cache
def environment() -> dict[str, str]:
    """What besides the code and the seed decides the exact weights a run trains: library
    versions and the CPU's vector instruction set, whose kernels round differently."""
    versions = {"python": platform.python_version()}
    for package in _NUMERIC_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    versions["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return versions


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give checkpoints the permissions any new file would get
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def checkpoint_paths(stem: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a checkpoint stem or either of its files."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_model(stem: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights and metadata atomically; ``meta`` must hold ``model`` and ``args``."""
    weights_path, meta_path = checkpoint_paths(stem)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    full_meta = {"format": FORMAT, "code_version": code_version(), "environment": environment(), **meta}
    # Metadata last: a checkpoint counts as complete only once its JSON exists.
    _atomic_write(weights_path, lambda tmp: save_file(state, tmp))
    _atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(full_meta, indent=2)))
    return weights_path


def read_meta(stem: str | Path) -> dict[str, Any]:
    weights_path, meta_path = checkpoint_paths(stem)
    if not weights_path.is_file():
        raise MeddistillError(f"checkpoint not found: {weights_path}")
    if not meta_path.is_file():
        raise MeddistillError(f"checkpoint {weights_path} has no metadata file {meta_path.name}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MeddistillError(f"checkpoint metadata {meta_path} is not valid JSON") from None
    if meta.get("format") != FORMAT or "model" not in meta:
        raise MeddistillError(f"{meta_path} is not a meddistill model checkpoint")
    return meta


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; a mismatch is a one-line user error naming ``source``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        detail = (missing or unexpected or wrong_shape)[0]
        raise MeddistillError(
            f"weights {source} do not fit a {type(model).__name__} with these arguments "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong_shape)} "
            f"mis-shaped tensors, e.g. '{detail}')"
        )
    model.load_state_dict(state)


def load_weights(model: nn.Module, stem: str | Path) -> None:
    """Load safetensors weights into ``model``."""
    weights_path, _ = checkpoint_paths(stem)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise MeddistillError(f"cannot read weights {weights_path}: {err}") from None
    load_state(model, state, str(weights_path))


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    _atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means an unusable file
        raise MeddistillError(f"cannot resume from {path}: {err}".splitlines()[0]) from None
