"""PostgreSQL for races: a throwaway server per test run, a fresh database per test.

Racers need a real server (SQLite's locking is not PostgreSQL's), and tests must not depend on a
developer's database, so by default a server is made for the run: ``initdb`` and ``pg_ctl`` into
a new directory under ``/tmp``, reachable through a unix socket only, with durability off. That
takes about a second; each test's database is then cloned from a template in milliseconds.

Who stops the server. Every process using it (pytest, or each pytest-xdist worker) registers as
an owner in the server directory's ``state.json``. The last owner's :meth:`PostgresServer.close`
stops it and removes the directory. For runs that cannot close (SIGKILL, a crash) a watchdog
process polls the owners and does the same once none is alive, and every later run sweeps
servers whose owners are all dead. One lock per server directory orders all of them.

One role per module:

- :mod:`.errors`: :class:`PostgresUnavailable` (a skip) and :class:`PostgresSetupError` (an error).
- :mod:`.handle`: :class:`PostgresDatabase`, connection strings and URLs, password masking.
- :mod:`.provider`: :class:`PostgresServer`, per-test databases on a throwaway or external
  server, and which sessions wait on a lock.
- :mod:`.binaries`: finding ``initdb`` and ``pg_ctl``.
- :mod:`.server`: starting, joining and leaving the throwaway server; reading its log for a
  crash.
- :mod:`.state`: the server directory's state and lock, tearing a server down, the sweep.
- :mod:`.watchdog`: the process that stops a server whose owners were all killed.
- :mod:`.watchdog_launch`: starting that process from pytest and learning its pid.

The package knows the database and the processes, never pytest: the plugin maps
:class:`PostgresUnavailable` to a skip and :class:`PostgresSetupError` to an error. Nothing here
imports psycopg or filelock before it is needed, so the watchdog can import the package.
"""

from pytest_racecheck.backends.postgres.binaries import find_bindir
from pytest_racecheck.backends.postgres.errors import (
    ENABLE_HINT,
    PostgresSetupError,
    PostgresUnavailable,
)
from pytest_racecheck.backends.postgres.handle import PostgresDatabase, mask, scrub, secrets_in
from pytest_racecheck.backends.postgres.provider import PostgresServer
from pytest_racecheck.backends.postgres.server import (
    SERVER_SETTINGS,
    SUPERUSER,
    SYSTEM_USER,
    TEMPLATE,
    ThrowawayServer,
)
from pytest_racecheck.backends.postgres.state import (
    SERVER_DIR_PREFIX,
    SHARED_LOCK_NAME,
    SHARED_STATE_NAME,
    WATCHDOG_INTERVAL,
    sweep_stale_servers,
)

__all__ = [
    "ENABLE_HINT",
    "SERVER_DIR_PREFIX",
    "SERVER_SETTINGS",
    "SHARED_LOCK_NAME",
    "SHARED_STATE_NAME",
    "SUPERUSER",
    "SYSTEM_USER",
    "TEMPLATE",
    "WATCHDOG_INTERVAL",
    "PostgresDatabase",
    "PostgresServer",
    "PostgresSetupError",
    "PostgresUnavailable",
    "ThrowawayServer",
    "find_bindir",
    "mask",
    "scrub",
    "secrets_in",
    "sweep_stale_servers",
]
