"""Name -> class registries whose keys are the implementing module's file name.

Keying by file name keeps one obvious place per plug-in: ``peftbench/methods/bitfit.py`` *is*
the ``bitfit`` implementation, and a second class claiming that key fails at import time. This is
the project's one extension mechanism for its own plug-ins (methods: ``method.impl``, regularizers:
``regularizer.impl``, task kinds: ``task.type``); ``_target_`` is left for other libraries' classes
that Hydra builds directly (docs/custom-methods.md says why).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """Classes registered under the file name of the module that defines them."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, type[T]] = {}
        self._discovered = False

    def register(self, cls: type[T]) -> type[T]:
        key = cls.__module__.rsplit(".", 1)[-1]
        if key in self._entries and self._entries[key] is not cls:
            raise RegistryError(
                f"duplicate {self.kind} '{key}': {self._entries[key].__qualname__} and {cls.__qualname__} "
                f"both live in a module named '{key}'"
            )
        self._entries[key] = cls
        return cls

    def _discover(self) -> None:
        # Import every module of the package once so their @register decorators run.
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def get(self, key: str) -> type[T]:
        self._discover()
        if key not in self._entries:
            raise RegistryError(f"unknown {self.kind} '{key}'; known: {', '.join(self.names())}")
        return self._entries[key]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)
