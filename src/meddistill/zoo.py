"""Networks by name or path: build from the registry, load shipped or user weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import checkpoint_paths, load_weights, read_meta
from .errors import MeddistillError
from .registry import check_arguments, did_you_mean

WEIGHTS_DIR = Path(__file__).parent / "weights"


def shipped_models() -> dict[str, dict[str, Any]]:
    """Metadata of the weights shipped inside the package, by name."""
    return {p.stem: read_meta(p) for p in sorted(WEIGHTS_DIR.glob("*.json"))}


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Path stem of a shipped model name or of a user checkpoint (either file of the pair)."""
    text = str(name_or_path)
    shipped = WEIGHTS_DIR / text
    if "/" not in text and shipped.with_suffix(".json").is_file():
        return shipped
    weights, meta = checkpoint_paths(text)
    if weights.is_file() or meta.is_file():
        return weights.with_suffix("")
    names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))
    raise MeddistillError(
        f"no shipped model or checkpoint named '{text}'{did_you_mean(text, names)}; "
        f"shipped: {', '.join(names) or 'none'} (see `meddistill models`)"
    )


def build_network(name: str, args: dict[str, Any] | None = None) -> nn.Module:
    from .models import MODELS

    check_arguments(f"model '{name}'", MODELS.get(name), args or {})
    try:
        return MODELS.build(name, **(args or {}))
    except TypeError as err:
        raise MeddistillError(f"model '{name}': {err}".replace("__init__() ", "")) from None


def load_model(
    name_or_path: str | Path, expect: str | None = None, task: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the network a checkpoint describes and load its weights (no code is run).

    ``expect`` names the architecture and ``task`` the kind of problem the caller needs;
    another one is a user error.
    """
    stem = resolve_checkpoint(name_or_path)
    meta = read_meta(stem)
    if task is not None and meta.get("task", "vessel-segmentation") != task:
        raise MeddistillError(f"{name_or_path} is a {meta.get('task', 'vessel-segmentation')} model, not a {task} one")
    if expect is not None and meta["model"] != expect:
        raise MeddistillError(
            f"checkpoint {stem} holds a '{meta['model']}' network, but this config expects '{expect}'"
        )
    model = build_network(meta["model"], meta.get("args", {}))
    load_weights(model, stem)
    return model.eval(), meta
