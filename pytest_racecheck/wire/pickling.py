"""What the controller sends its racers: dill, with every module a racer can import by name
sent by name.

dill sends a module by value (its whole namespace, to be laid over the racer's import of it)
unless it lives under ``sys.prefix`` or ``site-packages``. The user's own modules, in the
test's rootdir or an editable install, are neither; by value, one holding a lock, a
``struct.Struct`` or an engine cannot be sent at all, and a closure that says ``import
myservice; myservice.start()`` failed where ``from myservice import start`` worked. A racer
has the controller's ``sys.path``, working directory and import hooks
(:mod:`~pytest_racecheck.wire.assignment`), so a module that the controller's import system
finds by its name, at the file it was loaded from, is what the racer's ``import`` gets: it goes
by name. Only ``__main__`` and modules that cannot be found by name (made at run time, loaded
from a path under another name) still go by value.
"""

from __future__ import annotations

import io
import os
import sys
from types import ModuleType
from typing import Any

import dill
from dill._dill import _import_module  # pyright: ignore[reportPrivateUsage]


def dumps(obj: Any) -> bytes:
    """``dill.dumps(obj, recurse=True)``, sending importable modules by name."""
    out = io.BytesIO()
    _Pickler(out, dill.settings["protocol"], recurse=True).dump(obj)
    return out.getvalue()


_DillPickler: Any = dill.Pickler  # pickle's pure-Python Pickler, extended; its stubs are thin


class _Pickler(_DillPickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_name: dict[int, bool] = {}

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, ModuleType) and id(obj) not in self.memo:
            known = self._by_name.get(id(obj))
            if known is None:
                known = self._by_name[id(obj)] = importable_by_name(obj)
            if known:
                self.save_reduce(_import_module, (obj.__name__,), obj=obj)
                return
        super().save(obj, save_persistent_id)


def importable_by_name(module: ModuleType) -> bool:
    """Whether ``import <module.__name__>`` in a process with this one's ``sys.path`` and import
    hooks loads the same file: the module is ``sys.modules``' entry for its name, and the import
    system, asked afresh, finds it where it was loaded from."""
    name = getattr(module, "__name__", None)
    if not isinstance(name, str) or name == "__main__" or sys.modules.get(name) is not module:
        return False
    spec = getattr(module, "__spec__", None)
    if spec is None or spec.name != name:
        return False
    parent, _, _ = name.rpartition(".")
    path = None
    if parent:
        package = sys.modules.get(parent)
        if package is None or not importable_by_name(package):
            return False
        path = getattr(package, "__path__", None)
        if path is None:
            return False
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            found = find_spec(name, path)
        except Exception:
            continue
        if found is not None:
            return _same_place(found, spec)
    return False


def _same_place(found: Any, spec: Any) -> bool:
    if found.origin is not None or spec.origin is not None:
        if found.origin is None or spec.origin is None:
            return False
        if found.origin == spec.origin:
            return True
        return os.path.realpath(found.origin) == os.path.realpath(spec.origin)
    # namespace packages: no file, only where their submodules are searched for
    return list(found.submodule_search_locations or ()) == list(
        spec.submodule_search_locations or ()
    )
