"""Reading a SQLite database's catalog: ``sqlite_master`` and the PRAGMA table functions."""

from __future__ import annotations

import os
import sqlite3
from functools import lru_cache
from typing import Any, Final
from urllib.parse import quote

import sqlglot
from sqlglot import exp

from pytest_racecheck.sql.bodies import expression_body, node_body, parse_body
from pytest_racecheck.sql.code import EVENTS, EVERYTHING, Code, Everything, merge
from pytest_racecheck.sql.schema import Catalog, ForeignKey, Trigger, UniqueConstraint, View
from pytest_racecheck.sql.tokens import source_of, split_tokens, tokenize, word_of


@lru_cache(maxsize=1024)
def _sqlite_trigger(name: str, table: str, sql: str) -> Trigger:
    """A trigger from its CREATE TRIGGER text: header words, WHEN expression, body statements."""
    try:
        tokens = tokenize(sql, "sqlite")
        words = [word_of(t) for t in tokens]
        begin = words.index("BEGIN")
        end = len(words) - 1 - words[::-1].index("END")
    except Exception:
        return Trigger(name, table, "AFTER", frozenset(EVENTS), EVERYTHING)
    header = words[:begin]
    timing = "INSTEAD OF" if "INSTEAD" in header else "BEFORE" if "BEFORE" in header else "AFTER"
    events = frozenset(w for w in header if w in EVENTS) or frozenset(EVENTS)
    parts: list[Code] = []
    if "WHEN" in header:
        parts.append(
            expression_body(source_of(sql, tokens[header.index("WHEN") + 1 : begin]), "sqlite")
        )
    for segment in split_tokens(tokens[begin + 1 : end], plpgsql=False):
        parts.append(parse_body(source_of(sql, segment), "sqlite"))
    return Trigger(name, table, timing, events, merge(parts))


@lru_cache(maxsize=1024)
def _sqlite_index(sql: str | None) -> tuple[tuple[str, ...], str | None, frozenset[str]]:
    """Expressions, predicate and the columns they use, from a CREATE INDEX text."""
    if not sql:
        return (), None, frozenset()
    try:
        node = sqlglot.parse_one(sql, dialect="sqlite")
        params = node.find(exp.IndexParameters)
    except Exception:
        return (sql,), None, frozenset()
    if params is None:
        return (sql,), None, frozenset()
    expressions: list[str] = []
    used: set[str] = set()
    for column in params.args.get("columns") or []:
        inner = column.this if isinstance(column, exp.Ordered) else column
        if not isinstance(inner, exp.Column):
            expressions.append(inner.sql(dialect="sqlite"))
            used |= {c.name.lower() for c in inner.find_all(exp.Column)}
    where = params.args.get("where")
    predicate = where.this.sql(dialect="sqlite") if isinstance(where, exp.Where) else None
    return tuple(expressions), predicate, frozenset(used)


def sqlite_fingerprint(conn: sqlite3.Connection, path: str) -> str:
    """The file's inode and ``schema_version``: it changes with any DDL, or a new file."""
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    return f"{os.stat(path).st_ino}:{version}"


_SQLITE_ACTIONS: Final = {"NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"}
_SQLITE_KINDS: Final = {"pk": "primary key", "u": "unique", "c": "unique index"}

_SQLITE_MASTER: Final = (
    "SELECT type, lower(name), lower(tbl_name), sql FROM sqlite_master"
    " WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'"
)
_SQLITE_COLUMNS: Final = (
    "SELECT lower(m.name), lower(p.name), lower(p.type), p.pk"
    " FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p"
    " WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid"
)
_SQLITE_FOREIGN_KEYS: Final = (
    'SELECT lower(m.name), f.id, lower(f."table"), lower(f."from"), lower(f."to"),'
    " upper(f.on_update), upper(f.on_delete)"
    " FROM sqlite_master AS m JOIN pragma_foreign_key_list(m.name) AS f"
    " WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq"
)
_SQLITE_INDEXES: Final = (
    "SELECT lower(m.name), il.name, il.origin, ii.cid, lower(ii.name)"
    " FROM sqlite_master AS m JOIN pragma_index_list(m.name) AS il"
    " JOIN pragma_index_xinfo(il.name) AS ii"
    " WHERE m.type = 'table' AND il.\"unique\" AND ii.key ORDER BY m.name, il.name, ii.seqno"
)


def read_sqlite(path: str | os.PathLike[str]) -> Catalog:
    """The catalog of a SQLite file, opened read-only."""
    conn = open_sqlite(path)
    try:
        return read_sqlite_connection(conn, os.fspath(path))
    finally:
        conn.close()


def open_sqlite(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to the SQLite file, in autocommit."""
    uri = f"file:{quote(os.path.abspath(os.fspath(path)))}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def read_sqlite_connection(conn: sqlite3.Connection, path: str) -> Catalog:
    """The catalog of the SQLite file at ``path``, read through ``conn``."""
    fingerprint = sqlite_fingerprint(conn, path)
    master = conn.execute(_SQLITE_MASTER).fetchall()
    column_rows = conn.execute(_SQLITE_COLUMNS).fetchall()
    fk_rows = conn.execute(_SQLITE_FOREIGN_KEYS).fetchall()
    index_rows = conn.execute(_SQLITE_INDEXES).fetchall()

    tables = frozenset(name for kind, name, _, _ in master if kind == "table")
    columns: dict[str, dict[str, str]] = {}
    primary: dict[str, list[tuple[int, str]]] = {}
    for table, column, type_, pk in column_rows:
        columns.setdefault(table, {})[column] = type_ or ""
        if pk:
            primary.setdefault(table, []).append((pk, column))

    views: dict[str, View] = {}
    triggers: list[Trigger] = []
    index_sql: dict[str, str | None] = {}
    for kind, name, table, sql in master:
        if kind == "view":
            views[name] = _sqlite_view(name, sql)
        elif kind == "trigger":
            triggers.append(_sqlite_trigger(name, table, sql))
        elif kind == "index":
            index_sql[name] = sql

    relations = tables | views.keys()
    return Catalog(
        backend="sqlite",
        tables=tables,
        columns=columns,
        views=views,
        triggers=tuple(triggers),
        foreign_keys=_sqlite_foreign_keys(fk_rows),
        uniques=_sqlite_uniques(index_rows, index_sql, primary, tables),
        rules=frozenset(),
        functions={},
        aliases={f"main.{r}": r for r in relations},
        search_schemas=("main",),
        fingerprint=fingerprint,
    )


def _sqlite_foreign_keys(fk_rows: list[Any]) -> tuple[ForeignKey, ...]:
    """The foreign keys of ``pragma_foreign_key_list`` rows, one row per column."""
    fks: dict[tuple[str, int], list[Any]] = {}
    for child, fk_id, parent, from_col, to_col, on_update, on_delete in fk_rows:
        entry = fks.setdefault((child, fk_id), [child, [], parent, [], on_delete, on_update])
        entry[1].append(from_col)
        entry[3].append(to_col or "")  # NULL: the parent's primary key
    return tuple(
        ForeignKey(
            child,
            tuple(cols),
            parent,
            tuple(pcols),
            on_delete if on_delete in _SQLITE_ACTIONS else "NO ACTION",
            on_update if on_update in _SQLITE_ACTIONS else "NO ACTION",
        )
        for child, cols, parent, pcols, on_delete, on_update in fks.values()
    )


def _sqlite_uniques(
    index_rows: list[Any],
    index_sql: dict[str, str | None],
    primary: dict[str, list[tuple[int, str]]],
    tables: frozenset[str],
) -> tuple[UniqueConstraint, ...]:
    """Unique indexes (the primary key's too), and a rowid table's primary key without one."""
    grouped: dict[tuple[str, str], tuple[str, set[str]]] = {}
    for table, index, origin, cid, column in index_rows:
        _, cols = grouped.setdefault((table, index), (origin, set()))
        if cid >= 0 and column:
            cols.add(column)
    uniques: list[UniqueConstraint] = []
    for (table, index), (origin, cols) in grouped.items():
        expressions, predicate, used = _sqlite_index(index_sql.get(index.lower()))
        uniques.append(
            UniqueConstraint(
                index,
                table,
                frozenset(cols | used),
                _SQLITE_KINDS.get(origin, "unique index"),
                expressions,
                predicate,
            )
        )
    for table, keyed in primary.items():
        if table in tables and not any(
            u.table == table and u.kind == "primary key" for u in uniques
        ):
            cols = frozenset(c for _, c in sorted(keyed))
            uniques.append(UniqueConstraint(f"{table}.rowid", table, cols, "primary key"))
    return tuple(uniques)


@lru_cache(maxsize=1024)
def _sqlite_view(name: str, sql: str | None) -> View:
    try:
        node = sqlglot.parse_one(sql or "", dialect="sqlite")
        query = node.args.get("expression") if isinstance(node, exp.Create) else None
        body = node_body(query) if isinstance(query, (exp.Query, exp.Values)) else EVERYTHING
    except Exception:
        body = EVERYTHING
    if isinstance(body, Everything) or body.writes:
        return View(name, frozenset(), understood=False)
    relations = frozenset(r.removeprefix("main.") for r in body.reads)
    return View(name, relations, body.calls)


def clear_cache() -> None:
    """Forget the triggers, indexes and views parsed from their CREATE texts."""
    for cached in (_sqlite_trigger, _sqlite_index, _sqlite_view):
        cached.cache_clear()
