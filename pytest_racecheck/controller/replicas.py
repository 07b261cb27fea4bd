"""Which paths a race's simulated hosts keep to themselves, which they share, and making them.

A host's private paths (:data:`~pytest_racecheck.processes.replicas.PRIVATE_PATHS` and the
race's ``host_paths``) start empty. What the racers need in order to run at all is shared
through them: the interpreter and ``sys.path``, the directory of every imported top-level
package (an editable install is found by a finder, not through ``sys.path``), the working
directory, the test's module, the
session's temporary directory (``tmp_path`` and the fixtures' databases), each database's
file or socket directory, and the virtual clock's file. A database that lies directly in a
private path cannot be shared that way, and is refused with a message that says where to
put it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys

from pytest_racecheck.backends.base import Database
from pytest_racecheck.controller.catalogs import race_databases
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes.replicas import (
    PRIVATE_PATHS,
    HostsUnavailable,
    SimulatedHosts,
    namespaces_possible,
)


def private_paths(spec: RaceSpec) -> list[str]:
    return [*PRIVATE_PATHS, *(os.path.abspath(p) for p in spec.host_paths)]


def _code_paths(spec: RaceSpec) -> list[str]:
    found = [os.getcwd(), sys.prefix, sys.base_prefix, sys.exec_prefix]
    found.append(os.path.dirname(os.path.realpath(sys.executable)))
    found += [p for p in sys.path if p and os.path.isabs(p)]
    # Packages imported from elsewhere than sys.path (an editable install's finder): a racer
    # imports their submodules later, from their directory.
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None) if "." not in name else None
        if isinstance(where, str) and os.path.isabs(where):
            found.append(os.path.dirname(where))
    with contextlib.suppress(TypeError, OSError):
        found.append(os.path.dirname(inspect.getfile(spec.fn)))
    return found


def _database_paths(db: Database) -> list[str]:
    """Where ``db`` lives on this machine, if anywhere: a SQLite file's directory, a
    PostgreSQL server's socket directory."""
    path = getattr(db, "path", None)
    if isinstance(path, str) and path not in ("", ":memory:"):
        return [os.path.dirname(os.path.abspath(path))]
    params = getattr(db, "params", None)
    host = params.get("host", "") if isinstance(params, dict) else ""
    return [h for h in host.split(",") if h.startswith("/")]


def shared_paths(spec: RaceSpec, private: list[str], extra: list[str]) -> list[str]:
    """Everything the hosts must share, or ValueError if one of them is a private path."""
    keep = [*_code_paths(spec), *spec.shared_paths, *extra]
    roots = [p.rstrip("/") or "/" for p in private]
    for db in race_databases(spec):
        for where in _database_paths(db):
            if os.path.realpath(where) in roots:
                raise ValueError(
                    f"race(): replicas={spec.replicas} gives every host its own {where}, so "
                    f"the database {db!r} there cannot be shared: put it in tmp_path (or "
                    f"another directory) instead"
                )
            keep.append(where)
    for path in keep:
        if os.path.realpath(path) in roots:
            raise ValueError(
                f"race(): replicas={spec.replicas} gives every host its own {path}, which the "
                f"racers need shared (their code or working directory is there): run from, "
                f"and keep the code in, another directory"
            )
    found = sorted({os.path.realpath(p) for p in keep if os.path.exists(p)})
    return [k for k in found if not _covered(k, found, roots)]


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _covered(path: str, kept: list[str], private: list[str]) -> bool:
    """Shared already: inside another kept path, with no private path in between."""
    return any(
        other != path
        and _within(path, other)
        and not any(_within(p, other) and p != other and _within(path, p) for p in private)
        for other in kept
    )


def make_hosts(spec: RaceSpec, extra_shared: list[str]) -> SimulatedHosts:
    """The race's hosts, named ``replica-0``, ``replica-1``, ... (HostsUnavailable where
    this machine cannot make them)."""
    why = namespaces_possible()
    if why is not None:
        raise HostsUnavailable(f"replicas={spec.replicas}: {why}")
    private = private_paths(spec)
    keep = shared_paths(spec, private, extra_shared)
    return SimulatedHosts(spec.replicas, [os.path.realpath(p) for p in private], keep, "replica")
