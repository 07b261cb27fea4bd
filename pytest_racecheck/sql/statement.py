"""The one reader of SQL text: what a statement names, parsed once by sqlglot and cached.

sqlglot is a maintained parser that reads both SQLite's and PostgreSQL's dialects. Explore's
footprints (:mod:`.conflict`), the anomaly names of a failing round (:mod:`.effects`) and the
catalog's bodies all read statements through here, so they agree on what a statement touches.

What the text cannot tell is :data:`~.footprint.EVERYTHING`: transaction control, locking
reads (``FOR UPDATE``/``FOR SHARE``, ``SKIP LOCKED``, ``NOWAIT``), advisory locks, SQLite's
``BEGIN IMMEDIATE``/``EXCLUSIVE``, ``LOCK TABLE``, DDL, ``SELECT ... INTO``, ``PRAGMA``s that
change the database, a user's own ``point()`` (no SQL), and any text the parser does not
understand. A function that is not a known built-in is named in ``calls``: the catalog may know
its body, and without one it conflicts with everything. Writes are found anywhere in the tree
(a writable CTE's ``UPDATE ... RETURNING``), not only at its top. Session-only settings
(``SET``, ``SHOW``, ``PRAGMA busy_timeout``) touch nothing shared: :data:`~.footprint.LOCAL`.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp

from pytest_racecheck.sql.footprint import EVERYTHING, LOCAL, Footprint, Item, Key
from pytest_racecheck.sql.shorten import short_sql

# Verbs (as short_sql gives them) that control transactions or locks, or change the schema.
_CONTROL = frozenset(
    {
        "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ROLLBACK TO", "ABORT", "SAVEPOINT",
        "RELEASE", "LOCK", "PREPARE", "CREATE", "DROP", "ALTER", "TRUNCATE", "VACUUM", "ANALYZE",
        "REINDEX", "CLUSTER", "ATTACH", "DETACH", "GRANT", "REVOKE", "COPY", "CALL", "DO",
        "LISTEN", "NOTIFY", "UNLISTEN", "DISCARD", "REFRESH", "COMMENT", "SECURITY",
    }
)  # fmt: skip


_SESSION = frozenset({"SET", "SHOW", "RESET"})


# Begins that take no lock and no snapshot (short_sql's forms): the first statement does.
_QUIET_BEGINS = frozenset(
    {
        "BEGIN", "BEGIN DEFERRED", "BEGIN READ COMMITTED", "BEGIN REPEATABLE READ",
        "BEGIN SERIALIZABLE", "BEGIN READ UNCOMMITTED",
    }
)  # fmt: skip


# PRAGMAs that only change the connection that runs them.
_SESSION_PRAGMAS = frozenset(
    {
        "busy_timeout", "foreign_keys", "cache_size", "temp_store", "synchronous",
        "recursive_triggers", "query_only", "case_sensitive_like", "cache_spill",
        "automatic_index", "defer_foreign_keys", "mmap_size", "threads", "table_info",
        "table_xinfo", "index_list", "index_info", "foreign_key_list", "compile_options",
        "database_list", "data_version", "user_version", "schema_version", "encoding",
    }
)  # fmt: skip


# Functions that have no effect outside the statement (sqlglot names the others Anonymous).
_PURE_FUNCTIONS = frozenset(
    {
        "julianday", "strftime", "datetime", "date", "time", "unixepoch", "clock_timestamp",
        "statement_timestamp", "transaction_timestamp", "timeofday", "hashtext", "md5",
        "gen_random_uuid", "uuid_generate_v4", "random", "randomblob", "hex", "printf",
        "format", "ifnull", "iif", "nullif", "json_extract", "json_build_object", "to_char",
        "to_timestamp", "make_interval", "date_trunc", "char_length", "octet_length",
        "instr", "changes", "last_insert_rowid", "total_changes", "typeof", "quote", "glob",
        "like", "zeroblob", "likelihood", "unlikely", "string_agg", "group_concat",
    }
)  # fmt: skip


_LOCKING_FUNCTION_PREFIXES = ("pg_advisory", "pg_try_advisory")
# PRAGMAs read freely that write the database file when given a value.
_FILE_PRAGMAS = frozenset({"user_version", "schema_version", "application_id"})
_ASSIGNS = re.compile(r"=|\(")


logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to Command" is not news


@lru_cache(maxsize=4096)
def footprint(sql: str) -> Footprint:
    """The footprint of one statement's text (cached: the same text recurs every round).

    An empty text is a user's ``point()`` or the start of a round: it conflicts with everything.
    A plain ``BEGIN`` (deferred; on PostgreSQL with any isolation level) takes no lock and no
    snapshot: the transaction's first statement does (see :func:`step_footprint`).
    """
    if not sql.strip():
        return EVERYTHING
    short = short_sql(sql)
    verb = short.split(" ", 1)[0]
    if short in _QUIET_BEGINS:
        return LOCAL
    if short == "ROLLBACK TO" or verb in _CONTROL:
        return EVERYTHING
    if verb in _SESSION:
        return LOCAL
    if verb == "PRAGMA":
        name = short.split(" ", 1)[1].split(".")[-1].lower() if " " in short else ""
        if name in _FILE_PRAGMAS and _ASSIGNS.search(sql):
            return EVERYTHING  # PRAGMA user_version = 5 writes the database file's header
        return LOCAL if name in _SESSION_PRAGMAS else EVERYTHING
    parsed = _parse(sql)
    if not parsed:
        return EVERYTHING
    result = LOCAL
    for statement in parsed:
        result = result.union(_statement_footprint(statement))
        if result.everything:
            break
    return result


def _parse(sql: str) -> list[Any]:
    for dialect in ("postgres", "sqlite"):
        try:
            statements = sqlglot.parse(sql, read=dialect)
        except Exception:  # any parser failure: try the other dialect, else conflict
            continue
        if statements and all(s is not None for s in statements):
            return [s for s in statements if s is not None]
    return []


def _merge_footprint(node: Any) -> Footprint:
    """A MERGE reads its source and its target (the join decides matched or not) and may
    update, delete or insert any row of the target: whole tables, and the shape of a race
    inside one statement (it acts on what it read)."""
    target = node.args.get("this")
    name = _table_name(target) if isinstance(target, exp.Table) else ""
    if not name:
        return EVERYTHING
    named = {_table_name(t) for t in node.find_all(exp.Table)} - {""}
    return Footprint(
        frozenset((t, frozenset()) for t in named | {name}),
        frozenset({(name, frozenset())}),
        frozenset({name}),
        reads_then_writes=True,
    )


def _statement_footprint(node: Any) -> Footprint:
    if isinstance(node, exp.Merge):
        return _merge_footprint(node)
    if not isinstance(node, (exp.Select, exp.Union, exp.Insert, exp.Update, exp.Delete)):
        return EVERYTHING  # Command (unparsed), DDL, anything not plainly a query
    if node.find(exp.Lock) is not None or node.find(exp.Into) is not None:
        return EVERYTHING  # FOR UPDATE / FOR SHARE (any form); SELECT ... INTO makes a table
    calls: set[str] = set()
    for function in node.find_all(exp.Anonymous):
        name = str(function.name).lower()
        if name.startswith(_LOCKING_FUNCTION_PREFIXES):
            return EVERYTHING
        if name not in _PURE_FUNCTIONS:
            calls.add(name)
    reads: set[Item] = set()
    for select in node.find_all(exp.Select):
        reads |= _select_reads(select)
    writes = Footprint()
    nested = False
    for dml in node.find_all(exp.Insert, exp.Update, exp.Delete, exp.Merge):
        part = _merge_footprint(dml) if isinstance(dml, exp.Merge) else _write_footprint(dml)
        if part.everything:
            return EVERYTHING
        writes = writes.union(part)
        nested = nested or dml is not node
    # every table named anywhere is read at least (a join, a subquery, a CTE's source)
    named = {_table_name(t) for t in node.find_all(exp.Table)}
    reads |= writes.reads
    covered = {t for t, _ in reads | writes.writes}
    reads |= {(t, frozenset()) for t in named - covered if t}
    queries = (
        nested
        or any(True for _ in node.find_all(exp.Select))
        or any(node.args.get(arg) for arg in ("from", "from_", "using"))
    )
    return Footprint(
        frozenset(reads),
        writes.writes,
        writes.inserts,
        reads_then_writes=(bool(writes.writes) and queries) or writes.reads_then_writes,
        events=writes.events,
        changes=writes.changes,
        calls=frozenset(calls),
    )


def _write_footprint(node: Any) -> Footprint:
    """What one INSERT, UPDATE or DELETE (at the top, or inside a CTE) writes."""
    if isinstance(node, exp.Insert):
        table = node.find(exp.Table)
        if table is None or node.args.get("conflict") is not None or node.args.get("alternative"):
            # an upsert or INSERT OR REPLACE changes rows other than the new one
            key: Key = frozenset()
        else:
            key = _inserted_key(node)
        name = _table_name(table) if table is not None else ""
        if not name:
            return EVERYTHING
        return Footprint(
            frozenset({(name, frozenset())}),  # uniqueness checks read the table
            frozenset({(name, key)}),
            frozenset({name}),
            events=frozenset({(name, "INSERT")}),
        )
    target = node.args.get("this")
    if not isinstance(target, exp.Table):
        return EVERYTHING
    name = _table_name(target)
    joined = bool(node.args.get("from") or node.args.get("from_") or node.args.get("using"))
    key = frozenset() if joined else _where_key(node.args.get("where"))
    changes: frozenset[tuple[str, str]] = frozenset()
    if isinstance(node, exp.Update):
        changed = {
            str(e.this.name).lower()
            for e in node.expressions
            if isinstance(e, exp.EQ) and isinstance(e.this, exp.Column)
        }
        if len(changed) != len(node.expressions) or changed & {c for c, _ in key}:
            key = frozenset()  # the rows move: any row of the table
        changes = frozenset((name, c) for c in changed)
    event = "UPDATE" if isinstance(node, exp.Update) else "DELETE"
    return Footprint(
        frozenset({(name, key)}),
        frozenset({(name, key)}),
        events=frozenset({(name, event)}),
        changes=changes,
    )


def _table_name(table: exp.Table) -> str:
    return str(table.name).lower()


def _select_reads(select: exp.Select) -> set[Item]:
    """The table a simple SELECT reads, with the rows its WHERE names; its joins whole."""
    source = select.args.get("from") or select.args.get("from_")
    tables = [t for t in (source.find_all(exp.Table) if source is not None else ())]
    joins = select.args.get("joins") or []
    if len(tables) == 1 and not joins and tables[0].parent is source:
        return {(_table_name(tables[0]), _where_key(select.args.get("where")))}
    items = {(_table_name(t), frozenset()) for t in tables}
    for join in joins:
        items |= {(_table_name(t), frozenset()) for t in join.find_all(exp.Table)}
    return items


def _literal(node: Any) -> str | None:
    if isinstance(node, exp.Literal):
        return same_value(str(node.this))
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return same_value(f"-{node.this.this}")
    return None


def same_value(text: str) -> str:
    """One spelling for the values that may name one row: ``'1'``, ``1`` and ``1.0`` (a
    column's type affinity may compare them equal), ``'Ann'`` and ``'ann'`` (a case-blind
    collation may). Values spelled apart here are different rows; when unsure, the same."""
    try:
        number = float(text)
    except ValueError:
        return text.strip().lower()
    return str(int(number)) if number.is_integer() else repr(number)


def _where_key(where: Any) -> Key:
    """``col = literal`` terms of a WHERE's top-level AND."""
    if not isinstance(where, exp.Where):
        return frozenset()
    key: set[tuple[str, str]] = set()
    stack = [where.this]
    while stack:
        term = stack.pop()
        if isinstance(term, exp.And):
            stack += [term.this, term.expression]
        elif isinstance(term, exp.Paren):
            stack.append(term.this)
        elif isinstance(term, exp.EQ):
            for column, value in ((term.this, term.expression), (term.expression, term.this)):
                literal = _literal(value)
                if isinstance(column, exp.Column) and literal is not None:
                    key.add((str(column.name).lower(), literal))
    columns = [c for c, _ in key]
    if len(columns) != len(set(columns)):  # a = 1 AND a = 2: no row; say nothing rather
        return frozenset()
    return frozenset(key)


def _inserted_key(insert: exp.Insert) -> Key:
    """The new row's literal values, for a one-row ``INSERT ... (cols) VALUES (...)``."""
    schema = insert.this
    values = insert.expression
    if not isinstance(schema, exp.Schema) or not isinstance(values, exp.Values):
        return frozenset()
    rows = values.expressions
    if len(rows) != 1 or not isinstance(rows[0], exp.Tuple):
        return frozenset()
    columns = [str(c.name).lower() for c in schema.expressions]
    cells = rows[0].expressions
    if len(columns) != len(cells):
        return frozenset()
    return frozenset(
        (c, lit)
        for c, cell in zip(columns, cells, strict=True)
        if (lit := _literal(cell)) is not None
    )


def rows_named(sql: str) -> tuple[tuple[str, str], ...] | None:
    """The rows a statement's main table is named by (``WHERE id = 1``), as column-value pairs;
    None when the text does not tell (a predicate, the whole table, a statement it cannot
    read). What the anomaly names read: the same parse as the search's footprints."""
    found = footprint(sql)
    items = found.writes or found.reads
    keys = [key for _, key in items if key]
    if len(items) != 1 or not keys:
        return None
    return tuple(sorted(keys[0]))
