"""Finding PostgreSQL: the directory holding ``initdb`` and ``pg_ctl``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from pytest_racecheck.backends.postgres.errors import PostgresSetupError

_TOOLS = ("initdb", "pg_ctl")


def find_bindir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when there is none.

    Looks at ``explicit`` (a directory, or one of the programs in it), then ``pg_config
    --bindir``, then ``initdb`` on PATH, then the newest of the usual install places. An
    ``explicit`` place without the programs raises :class:`PostgresSetupError`: somebody asked
    for it, so quietly using another PostgreSQL would be wrong.
    """
    if explicit is not None and str(explicit).strip():
        path = Path(explicit).expanduser()
        if path.is_file():
            path = path.parent
        if has_server_tools(path):
            return path
        raise PostgresSetupError(
            f"--racecheck-postgres-bin {str(explicit)!r}: no initdb and pg_ctl there; "
            "give the directory that holds them (e.g. /usr/lib/postgresql/16/bin)"
        )
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and has_server_tools(Path(out)):
            return Path(out)
    initdb = shutil.which("initdb")
    if initdb is not None:
        path = Path(initdb).resolve().parent
        if has_server_tools(path):
            return path
    patterns = (
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
        "/usr/local/pgsql/bin",
    )
    found = [p for pattern in patterns for p in Path("/").glob(pattern.lstrip("/"))]
    for path in sorted(found, key=_version_key, reverse=True):
        if has_server_tools(path):
            return path
    return None


def has_server_tools(path: Path) -> bool:
    return all(os.access(path / tool, os.X_OK) and (path / tool).is_file() for tool in _TOOLS)


def _version_key(path: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/16/bin`` sorts after ``.../9.6/bin``."""
    return tuple(int(n) for n in re.findall(r"\d+", str(path)))
