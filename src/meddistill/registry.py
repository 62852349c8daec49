"""Name → factory registries for models and distillation methods."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import MeddistillError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_arguments(what: str, factory: Callable, args: Mapping[str, Any], passed: int = 0) -> None:
    """A one-line error for the first of ``args`` that ``factory`` takes no keyword for,
    naming the nearest one it does: a misspelt config argument never reaches a traceback.
    The first ``passed`` parameters are the caller's own (a distiller's networks), not the user's."""
    parameters = list(inspect.signature(factory).parameters.values())[passed:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    known = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in args:
        if key not in known:
            raise MeddistillError(f"{what} has no argument '{key}'{did_you_mean(key, known)}")


class Registry(Generic[T]):
    """A named collection of factories, filled with the :meth:`register` decorator.

    Example::

        MODELS = Registry("model")

        @MODELS.register("enet")
        class ENet(nn.Module): ...

        net = MODELS.build("enet", in_channels=3, out_channels=2)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._items:
            raise MeddistillError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"choose from: {', '.join(self.names())}"
            )
        return self._items[name]

    def build(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
