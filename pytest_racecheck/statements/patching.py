"""How drivers' hooks go in: attributes replaced and put back (``Patches``), subclasses of C
types (``traced_subclass``), and patches applied when a driver is first imported
(``when_imported``)."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

_MISSING = object()


class Patches:
    """Attributes replaced, in order; :meth:`restore` puts every original back, last first.

    An attribute the owner only inherited (not in its own ``__dict__``) is deleted again, so
    the inherited one shows through as before.
    """

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, object]] = []

    def replace(self, owner: Any, attr: str, new: object) -> None:
        self._done.append((owner, attr, vars(owner).get(attr, _MISSING)))
        setattr(owner, attr, new)

    def restore(self) -> None:
        while self._done:
            owner, attr, original = self._done.pop()
            if original is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def traced_subclass(
    factory: Any, base: type, cache: dict[type, type], make: Callable[[type], type]
) -> Any:
    """The traced subclass ``make(factory)`` of a driver class a caller asked for, made once
    per class: for drivers whose classes are C types that cannot be patched, but may be
    subclassed (sqlite3's and psycopg2's connections and cursors). Anything else (not a
    subclass of ``base``, or already traced) is returned as it is. The subclass keeps the
    class's name."""
    if not isinstance(factory, type) or not issubclass(factory, base):
        return factory
    if getattr(factory, "_racecheck_traced", False):
        return factory
    traced = cache.get(factory)
    if traced is None:
        traced = make(factory)
        traced._racecheck_traced = True  # type: ignore[attr-defined]
        traced.__name__ = traced.__qualname__ = factory.__name__
        cache[factory] = traced
    return traced


# -- patching a driver when it is imported -------------------------------------------------

_waiting: dict[str, Callable[[ModuleType], None]] = {}


def when_imported(name: str, patch: Callable[[ModuleType], None]) -> None:
    """Call ``patch(module)`` on the top-level module ``name``: now if it is imported, else as
    soon as its first import has run it, before the importer gets it (so ``from name import
    x`` gets the patched ``x``). A racer then pays the import of only the drivers its code
    uses."""
    module = sys.modules.get(name)
    if module is not None:
        patch(module)
        return
    _waiting[name] = patch
    if not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


def forget(name: str) -> None:
    """Patch nothing when ``name`` is imported after all."""
    _waiting.pop(name, None)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds a waited-for module through the other finders and runs the patch after it."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        patch = _waiting.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, fullname, patch)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    """The real loader, and the patch once the module has run."""

    def __init__(self, loader: Any, name: str, patch: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._name = name
        self._patch = patch

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if _waiting.pop(self._name, None) is self._patch:
            self._patch(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)
