"""Forward hooks that tap intermediate features, so networks stay unmodified."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import MeddistillError


class FeatureTap:
    """Record the outputs of named submodules on every forward pass.

    ``points`` maps an alias to a dotted submodule name (``dict(model.named_modules())``).
    After ``model(x)``, ``tap.features[alias]`` holds that module's output tensor.
    """

    def __init__(self, model: nn.Module, points: dict[str, str]) -> None:
        modules = dict(model.named_modules())
        self.features: dict[str, Tensor] = {}
        self._handles = []
        for alias, name in points.items():
            if name not in modules:
                raise MeddistillError(
                    f"{type(model).__name__} has no submodule '{name}' to tap for '{alias}'"
                )
            self._handles.append(modules[name].register_forward_hook(self._recorder(alias)))

    def _recorder(self, alias: str):
        def hook(_module: nn.Module, _inputs, output: Tensor) -> None:
            self.features[alias] = output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def tap_points(model: nn.Module, names: list[str]) -> dict[str, str]:
    """Resolve semantic tap names (``stage1``, ``bottleneck``…) via ``model.feature_points``."""
    available = getattr(model, "feature_points", {})
    missing = [n for n in names if n not in available]
    if missing:
        raise MeddistillError(
            f"{type(model).__name__} has no feature point '{missing[0]}'; "
            f"it offers: {', '.join(sorted(available)) or 'none'}"
        )
    return {n: available[n] for n in names}
