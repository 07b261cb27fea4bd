"""What can go wrong with PostgreSQL, as the plugin tells it apart: a skip or an error.

Standard library only, like everything the watchdog imports.
"""

from __future__ import annotations

ENABLE_HINT = (
    "install PostgreSQL's server binaries (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql) and pass --racecheck-postgres-bin DIR if initdb is not on "
    "PATH, or point the tests at an existing server with --racecheck-postgres-url / ini "
    "racecheck_postgres_url / RACECHECK_POSTGRES_URL=postgresql://user:password@host:5432/dbname"
)
"""How to get a PostgreSQL to test against, for the messages of :class:`PostgresUnavailable`."""


class PostgresUnavailable(Exception):
    """There is no PostgreSQL to test against; the message says how to get one (a skip)."""


class PostgresSetupError(RuntimeError):
    """PostgreSQL was configured or found but could not be used (an error: a skip would hide it).

    Its message never holds a password: it is shown in CI logs, which are often public.
    """
