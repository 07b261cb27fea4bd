"""What a database's catalog says a statement touches beyond the tables its text names.

A statement's text hides what a view reads, what a trigger or a cascading foreign key writes, what a
function does and which rows a unique constraint ties together. Explore mode needs those facts to
call two statements independent, so this module reads them once per schema from the catalog
(``sqlite_master`` and PRAGMAs on SQLite, ``pg_catalog`` on PostgreSQL) into a :class:`Catalog`.

Whatever cannot be read with confidence (a body that does not parse, dynamic SQL, a C function, a
rule) is :data:`EVERYTHING`: it conflicts with every statement. Names are lower-case and
unqualified where the schema is ``main`` (SQLite) or on the search path (PostgreSQL); the qualified
spelling maps to the same name. This module depends on nothing above it: database handles are
recognised by their ``path`` or ``dsn`` attribute.

This module is the catalog's public face: :func:`read` and its cache. The parts live by role:
the values code names (:mod:`~pytest_racecheck.sql.code`), SQL tokens
(:mod:`~pytest_racecheck.sql.tokens`), reading bodies (:mod:`~pytest_racecheck.sql.bodies`), the
model and its closure (:mod:`~pytest_racecheck.sql.schema`), and the two readers
(:mod:`~pytest_racecheck.sql.catalog_sqlite`, :mod:`~pytest_racecheck.sql.catalog_postgres`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Final

from pytest_racecheck.sql import catalog_postgres, catalog_sqlite
from pytest_racecheck.sql.bodies import function_body, node_body, parse_body, plpgsql_body
from pytest_racecheck.sql.catalog_postgres import (
    postgres_fingerprint,
    read_postgres,
    read_postgres_connection,
)
from pytest_racecheck.sql.catalog_sqlite import (
    open_sqlite,
    read_sqlite,
    read_sqlite_connection,
    sqlite_fingerprint,
)
from pytest_racecheck.sql.code import EVENTS, EVERYTHING, Body, Code, Everything, merge
from pytest_racecheck.sql.schema import (
    MAX_DEPTH,
    NOTHING,
    Catalog,
    Effects,
    Footprint,
    ForeignKey,
    Function,
    Trigger,
    UniqueConstraint,
    View,
)
from pytest_racecheck.sql.tokens import split_statements

__all__ = [
    "CACHE_SIZE",
    "EVENTS",
    "EVERYTHING",
    "MAX_DEPTH",
    "NOTHING",
    "Body",
    "Catalog",
    "Code",
    "Effects",
    "Everything",
    "Footprint",
    "ForeignKey",
    "Function",
    "Trigger",
    "UniqueConstraint",
    "View",
    "clear_cache",
    "function_body",
    "merge",
    "node_body",
    "parse_body",
    "plpgsql_body",
    "read",
    "read_postgres",
    "read_sqlite",
    "split_statements",
]

CACHE_SIZE: Final = 16

# -- the per-database cache -------------------------------------------------------------------

_cache: OrderedDict[tuple[str, str], Catalog] = OrderedDict()
_cache_lock = threading.Lock()


def read(database: object, *, connection: Any = None) -> Catalog:
    """The catalog of a database handle (``.path``: SQLite, ``.dsn``: PostgreSQL), cached.

    The cached catalog is reused while the schema fingerprint stays the same (SQLite's
    ``schema_version``; on PostgreSQL one query over the user rows of the catalogs), so the cost
    of a look-up is one small query; after any DDL the catalog is read again. ``connection``, an
    open connection to that database (sqlite3 or psycopg 3, autocommit), saves connecting,
    which is most of a cached look-up's time on PostgreSQL.
    """
    dsn = getattr(database, "dsn", None)
    path = getattr(database, "path", None)
    if isinstance(dsn, str):
        key = ("postgres", dsn)
        if connection is not None:
            return _read_postgres_cached(key, connection)
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            return _read_postgres_cached(key, conn)
    if isinstance(path, (str, os.PathLike)):
        full = os.path.realpath(os.fspath(path))
        key = ("sqlite", full)
        conn = connection if connection is not None else open_sqlite(full)
        try:
            hit = _cached(key, sqlite_fingerprint(conn, full))
            return hit if hit is not None else _store(key, read_sqlite_connection(conn, full))
        finally:
            if connection is None:
                conn.close()
    raise TypeError(f"not a database handle (no .path or .dsn): {type(database).__name__}")


def _read_postgres_cached(key: tuple[str, str], conn: Any) -> Catalog:
    hit = _cached(key, postgres_fingerprint(conn))
    return hit if hit is not None else _store(key, read_postgres_connection(conn))


def _cached(key: tuple[str, str], fingerprint: str) -> Catalog | None:
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None or hit.fingerprint != fingerprint:
            return None
        _cache.move_to_end(key)
        return hit


def _store(key: tuple[str, str], catalog: Catalog) -> Catalog:
    with _cache_lock:
        _cache[key] = catalog
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return catalog


def clear_cache() -> None:
    """Forget every cached catalog and parsed body (tests, benchmarks)."""
    with _cache_lock:
        _cache.clear()
    parse_body.cache_clear()
    function_body.cache_clear()
    catalog_sqlite.clear_cache()
    catalog_postgres.clear_cache()
