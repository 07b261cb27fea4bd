"""What a driver's hooks replaced on its classes and modules, to be put back by ``uninstall``."""

from __future__ import annotations

from collections.abc import Callable
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
