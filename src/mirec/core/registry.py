"""Name -> component tables that fill themselves: each component registers under its
config name in its own module, and a registry imports every module of its package on the
first lookup, so adding a component touches only its own file (and its YAML config)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from mirec.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """The components of one package by name: ``what`` names them in errors ("extractor")."""

    def __init__(self, what: str, package: str) -> None:
        self.what = what
        self.package = package
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: file the decorated class or function (or any entry passed to the
        returned function) under ``name``."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def _discover(self) -> None:
        # importing a module runs its register() decorators; a module imported before is
        # not run again, so a failed discovery can be retried
        if self._discovered:
            return
        path = importlib.import_module(self.package).__path__
        for module in pkgutil.iter_modules(path):
            importlib.import_module(f"{self.package}.{module.name}")
        self._discovered = True

    def entries(self) -> dict[str, T]:
        """Every registered name and entry, sorted by name."""
        self._discover()
        return dict(sorted(self._entries.items()))

    def lookup(
        self,
        name: str,
        *,
        accept: Callable[[T], bool] | None = None,
        extra: Iterable[str] = (),
        what: str | None = None,
    ) -> T:
        """The entry registered as ``name``; a ConfigError listing the known names if there
        is none. ``accept`` keeps only the entries a caller can use (one task's), ``extra``
        adds names the caller handles itself to the list, ``what`` renames the component
        in the message."""
        usable = {n: e for n, e in self.entries().items() if accept is None or accept(e)}
        if name not in usable:
            known = ", ".join([*usable, *extra])
            raise ConfigError(f"unknown {what or self.what} {name!r}; known: {known}")
        return usable[name]
