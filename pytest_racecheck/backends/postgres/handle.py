"""One PostgreSQL database as racers and tests see it, and the connection strings that reach it.

Connection strings carry passwords, and what this module shows (reprs, error messages) goes to
terminals and CI logs: :func:`mask` and :func:`describe` are the only ways a string reaches a
message, and they hide the password.

psycopg is imported only when a connection string is parsed or a connection opened, so importing
this module (as the watchdog does through the package) needs nothing but the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote, urlencode

from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.postgres.errors import PostgresSetupError, PostgresUnavailable

if TYPE_CHECKING:
    import psycopg

URL_SOURCE = "set by --racecheck-postgres-url, ini racecheck_postgres_url or RACECHECK_POSTGRES_URL"
URL_EXAMPLE = "postgresql://user:password@host:5432/dbname"
HIDDEN = "***"


@dataclass(frozen=True, repr=False)
class PostgresDatabase(Database):
    """One database on a PostgreSQL server, addressed by a libpq connection string.

    Only the string travels: the handle pickles into racers and each opens its own connections.
    psycopg takes ``%s`` placeholders. Its repr hides the password.
    """

    dsn: str
    name: str

    backend: ClassVar[str] = "postgres"

    @property
    def params(self) -> dict[str, str]:
        """The connection parameters of ``dsn`` (host, port, user, dbname, ...)."""
        return parse_conninfo(self.dsn)

    @property
    def url(self) -> str:
        """SQLAlchemy URL for psycopg 3: ``postgresql+psycopg://user@/name?host=/socket/dir``."""
        return make_url(self.params, "postgresql+psycopg")

    @property
    def uri(self) -> str:
        """Plain libpq URI, ``postgresql://...``, for psql, Prisma, node-postgres and friends."""
        return make_url(self.params, "postgresql")

    def with_params(self, **params: str | int) -> PostgresDatabase:
        """The same database with more connection parameters (``application_name``, say)."""
        return PostgresDatabase(dsn=make_conninfo(self.dsn, **params), name=self.name)

    def connect(self, **params: Any) -> psycopg.Connection[tuple[Any, ...]]:
        """A new autocommit connection; ``params`` are added to the connection string."""
        require_psycopg()
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, **params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """As the base class; without parameters the SQL goes as is, so ``'a%'`` needs no ``%%``."""
        cur = self.shared_connection().execute(sql, params or None)
        rows = cur.fetchall() if cur.description is not None else []
        return [tuple(row) for row in rows]

    def executescript(self, sql: str) -> None:
        """Several statements in one string (psycopg sends a query without parameters as is)."""
        self.shared_connection().execute(sql)

    def __repr__(self) -> str:
        # Tracebacks show fixture values (``-l``, and arguments in long tracebacks).
        return f"PostgresDatabase(name={self.name!r}, dsn={mask(self.dsn)!r})"


# --- connection strings -----------------------------------------------------------------------


def require_psycopg() -> None:
    """Raise :class:`PostgresUnavailable`, saying how to install it, when psycopg 3 is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable(
            f"PostgreSQL tests need psycopg 3 ({exc}): pip install 'pytest-racecheck[postgres]'"
        ) from exc


def parse_conninfo(dsn: str) -> dict[str, str]:
    """The parameters of a libpq connection string or URI."""
    from psycopg.conninfo import conninfo_to_dict

    return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}


def make_conninfo(dsn: str, **params: Any) -> str:
    """``dsn`` with ``params`` added (or replaced)."""
    from psycopg.conninfo import make_conninfo as _make

    return _make(dsn, **{k: str(v) for k, v in params.items()})


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def parse_server_url(url: str, source: str = URL_SOURCE) -> dict[str, str]:
    """Parse and check a server URL (SQLAlchemy's ``+driver`` is accepted and dropped).

    Every error message shows the URL masked and says where it came from (``source``); none
    chains the parser's own exception, whose message may quote the URL whole.
    """
    import psycopg

    text = (url or "").strip()
    shown = mask(text)
    source = f"({source})"
    if not text:
        raise PostgresSetupError(f"the PostgreSQL URL is empty {source}: use {URL_EXAMPLE}")
    match = _SCHEME.match(text)
    if match is not None:
        scheme = match.group(1).lower().partition("+")[0]
        if scheme not in ("postgresql", "postgres"):
            raise PostgresSetupError(
                f"{shown!r} is not a PostgreSQL URL {source}: use {URL_EXAMPLE}"
            )
        text = "postgresql" + text[match.end(1) :]
    elif "=" not in text:
        raise PostgresSetupError(
            f"{shown!r} is neither a PostgreSQL URL nor a libpq connection string {source}: "
            f"use {URL_EXAMPLE}"
        )
    try:
        return parse_conninfo(text)
    except psycopg.Error as exc:
        reason = scrub(str(exc).strip(), secrets_in(text))
        problem = f"invalid PostgreSQL URL {shown!r} {source}: {reason}; use {URL_EXAMPLE}"
    raise PostgresSetupError(problem)


_URL_PASSWORD = re.compile(r"(://[^:/@?#]*:)([^/?#]*)@")
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def mask(text: str) -> str:
    """``text`` (a URL, a connection string, or a message quoting one) with passwords hidden."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + HIDDEN + "@", text)
    return _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + HIDDEN, text)


def secrets_in(text: str) -> set[str]:
    """The passwords ``text`` may hold, as written and decoded, to remove them from messages
    that quote them in forms :func:`mask` cannot recognize."""
    found: set[str] = set()
    for match in _URL_PASSWORD.finditer(text):
        found.add(match.group(2))
    for match in _CONNINFO_PASSWORD.finditer(text):
        found.add(match.group(2).strip("'"))
    found |= {unquote(s) for s in found}
    return {s for s in found if s and s != HIDDEN}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` masked, with every one of ``secrets`` replaced too (longest first)."""
    text = mask(text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def describe(params: Mapping[str, str]) -> str:
    """``host H, port P, user U, database D``: where a connection goes, for messages."""
    host = params.get("host") or params.get("hostaddr") or "(libpq default: local socket)"
    parts = [
        f"host {host}",
        f"port {params.get('port') or '5432 (default)'}",
        f"user {params.get('user') or '(libpq default: the OS user)'!s}",
        f"database {params.get('dbname') or '(same as the user)'}",
    ]
    if params.get("password"):
        parts.append(f"password {HIDDEN}")
    return ", ".join(parts)


def display(params: Mapping[str, str]) -> str:
    """A URL for ``params`` with the password hidden."""
    shown = dict(params)
    if "password" in shown:
        shown["password"] = HIDDEN
    return make_url(shown, "postgresql")


def make_url(params: Mapping[str, str], scheme: str) -> str:
    """A URL for ``params``; a socket directory goes in the query, as SQLAlchemy wants it."""
    rest = dict(params)
    user, password = rest.pop("user", ""), rest.pop("password", "")
    host, port, dbname = rest.pop("host", ""), rest.pop("port", ""), rest.pop("dbname", "")
    netloc = ""
    if user:
        netloc = quote(user, safe="")
        if password:
            netloc += ":" + quote(password, safe="*")  # sub-delims may stay; *** reads better
        netloc += "@"
    query: dict[str, str] = {}
    if host.startswith("/") or host.startswith("@") or "," in host:
        query["host"] = host
        if port:
            query["port"] = port
    elif host:
        netloc += f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    query.update(sorted(rest.items()))
    path = "/" + quote(dbname, safe="") if dbname else "/"
    return f"{scheme}://{netloc}{path}" + ("?" + urlencode(query, safe="/") if query else "")
