"""Which statements can affect each other: a read set and a write set per SQL statement.

Explore's search (:mod:`pytest_racecheck.explore.dpor`) needs to know when two steps of different
racers *commute*: running them in either order leaves the database and both racers in the same
state. That holds when neither writes anything the other reads or writes. Each statement gets a
:class:`Footprint`: the tables it reads and writes, narrowed to rows where an equality predicate
on a literal names them (``WHERE name = 'start_run'``), parsed by sqlglot, a maintained parser
that reads both SQLite's and PostgreSQL's dialects.

Where the text alone cannot tell, the footprint is :data:`EVERYTHING` (it conflicts with every
other step): transaction control (``BEGIN``, ``COMMIT``, ``ROLLBACK``, savepoints: a ``COMMIT``
publishes all of its transaction's writes at once and releases its locks, which can wake any
waiter), locking reads (``FOR UPDATE``/``FOR SHARE``, ``SKIP LOCKED``, ``NOWAIT``), advisory
locks and any other function the parser does not know to be free of side effects, SQLite's
``BEGIN IMMEDIATE``/``EXCLUSIVE``, ``LOCK TABLE``, DDL, ``PRAGMA``s that change the database,
a user's own ``point()`` (no SQL), and any text the parser does not understand. Session-only
settings (``SET``, ``SHOW``, ``PRAGMA busy_timeout``) touch nothing shared: :data:`LOCAL`.

What conflict means when the database decides visibility is written down in docs/explore.md
("Which steps commute"): in short, a write and a read of the same rows conflict even when the
write's transaction has not committed yet, because the order can still decide what waits for
what and which snapshot sees what.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp

from pytest_racecheck.sql.shorten import short_sql

Key = frozenset[tuple[str, str]]
"""Known column values of the rows touched: ``{("name", "'start_run'")}``; empty: any row."""

Item = tuple[str, Key]
"""A table and the rows of it that a statement touches."""


@dataclass(frozen=True)
class Footprint:
    """What one step reads and writes; ``everything`` conflicts with every other step."""

    reads: frozenset[Item] = frozenset()
    writes: frozenset[Item] = frozenset()
    inserts: frozenset[str] = frozenset()
    """Tables the step inserts into: two inserts into one table never commute (ids, uniques)."""
    everything: bool = False
    reads_then_writes: bool = False
    """It writes after reading rows it does not write through a query of its own (``INSERT ...
    SELECT ... WHERE NOT EXISTS``, an ``UPDATE`` with a subquery): the shape of a race inside
    one statement. A plain ``INSERT``, an upsert or an ``UPDATE ... WHERE`` on the rows it
    writes waits for a conflicting row's lock and then sees it: as if in some order."""
    overlaps: bool = False
    """It can race with another statement *inside* the database, so releasing both at once can
    give what no order of the two gives: a PostgreSQL statement outside an explicit transaction
    (see :func:`step_footprint`)."""
    outside: bool = False
    """A racer's start (from its release to its first point) that acted outside its process:
    opened a file, took a file lock, connected (see
    :mod:`pytest_racecheck.instrument.start_effects`). Two such starts never commute: they may want
    the same lock or file."""
    inert: bool = False
    """A racer's start that did nothing outside its process: it commutes with every step, even
    one that conflicts with everything."""

    def union(self, other: Footprint) -> Footprint:
        return Footprint(
            self.reads | other.reads,
            self.writes | other.writes,
            self.inserts | other.inserts,
            self.everything or other.everything,
            self.reads_then_writes or other.reads_then_writes,
            self.overlaps and other.overlaps,
            self.outside or other.outside,
            self.inert and other.inert,
        )

    def describe(self) -> str:
        if self.everything:
            return "conflicts with everything"
        if self.outside:
            return "acts outside the racer (a file, a lock, a connection)"

        def show(items: frozenset[Item]) -> str:
            return ", ".join(sorted(t + _show_key(k) for t, k in items)) or "-"

        return f"reads {show(self.reads)}; writes {show(self.writes)}"


EVERYTHING = Footprint(everything=True)
LOCAL = Footprint()
OUTSIDE = Footprint(outside=True)
"""A racer's start that acted outside its process, or whose effects are not known yet."""
INERT = Footprint(inert=True)
"""A racer's start that did nothing outside its process."""


def _show_key(key: Key) -> str:
    return "[" + ", ".join(f"{c}={v}" for c, v in sorted(key)) + "]" if key else ""


def _rows_overlap(a: Key, b: Key) -> bool:
    """Rows known by ``a`` and by ``b`` can be the same rows unless a column differs."""
    known = dict(a)
    return all(known.get(column, value) == value for column, value in b)


ALL_TABLES = "*"
"""A read of every table: the statement that takes a transaction's snapshot."""
SQLITE_WRITE_LOCK = "<sqlite write lock>"
"""Written by every SQLite statement that writes: SQLite has one writer at a time."""


def _touches(writes: frozenset[Item], items: frozenset[Item]) -> bool:
    return any(
        (t == u or u == ALL_TABLES) and _rows_overlap(k, m) for t, k in writes for u, m in items
    )


@lru_cache(maxsize=1 << 16)  # asked for every pair of a round's steps, every round
def dependent(a: Footprint, b: Footprint) -> bool:
    """Whether two steps of different racers may not commute."""
    if a.inert or b.inert:
        return False
    if a.everything or b.everything:
        return True
    if a.inserts & b.inserts or (a.outside and b.outside):
        return True
    return _touches(a.writes, b.reads | b.writes) or _touches(b.writes, a.reads)


# -- from SQL text to a footprint ------------------------------------------------------------

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

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to Command" is not news


def transaction_effect(sql: str) -> str:
    """'begin' for a statement that opens a transaction, 'end' for one that closes it, else ''."""
    short = short_sql(sql)
    if short.startswith("BEGIN"):
        return "begin"
    if short in ("COMMIT", "ROLLBACK"):
        return "end"
    return ""


@lru_cache(maxsize=4096)
def step_footprint(
    sql: str, database: str = "", snapshot: bool = False, in_transaction: bool = False
) -> Footprint:
    """A statement's footprint in its context.

    ``snapshot``: it is the first statement of a transaction, which takes the snapshot that the
    transaction's later reads see (SQLite, and PostgreSQL's REPEATABLE READ / SERIALIZABLE): as
    of this statement the transaction reads every table, so it conflicts with every write of
    another racer. On SQLite every write also takes the database's one write lock.

    Two statements released together can race inside the database only where neither order
    explains the result: on PostgreSQL (or an unknown database), outside an explicit
    transaction (inside one, its writes show only at COMMIT, which is ordered), and not on
    SQLite, which runs one writer at a time and gives each reader one snapshot.
    """
    result = footprint(sql)
    if result.everything:
        return result
    if database != "sqlite" and not in_transaction and (result.reads or result.writes):
        result = replace(result, overlaps=True)
    if snapshot:
        result = replace(result, reads=result.reads | {(ALL_TABLES, frozenset())})
    if database == "sqlite" and result.writes:
        result = replace(result, writes=result.writes | {(SQLITE_WRITE_LOCK, frozenset())})
    return result


def may_overlap(a: Footprint, b: Footprint) -> bool:
    """Whether releasing both steps at once can give what neither order gives."""
    return (
        a.overlaps
        and b.overlaps
        and (
            (a.reads_then_writes and _touches(b.writes, a.reads))
            or (b.reads_then_writes and _touches(a.writes, b.reads))
        )
    )


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
    if any(True for _ in node.find_all(exp.Lock)):
        return EVERYTHING  # FOR UPDATE / FOR SHARE, with or without NOWAIT / SKIP LOCKED
    for function in node.find_all(exp.Anonymous):
        name = str(function.name).lower()
        if name.startswith(_LOCKING_FUNCTION_PREFIXES) or name not in _PURE_FUNCTIONS:
            return EVERYTHING
    reads: set[Item] = set()
    for select in node.find_all(exp.Select):
        reads |= _select_reads(select)
    writes: set[Item] = set()
    inserts: set[str] = set()
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
        writes.add((name, key))
        reads.add((name, frozenset()))  # uniqueness checks read the table
        inserts.add(name)
    else:
        target = node.args.get("this") if isinstance(node, (exp.Update, exp.Delete)) else None
        if isinstance(target, exp.Table):
            name = _table_name(target)
            joined = bool(node.args.get("from") or node.args.get("from_") or node.args.get("using"))
            key = frozenset() if joined else _where_key(node.args.get("where"))
            if isinstance(node, exp.Update):
                changed = {
                    str(e.this.name).lower()
                    for e in node.expressions
                    if isinstance(e, exp.EQ) and isinstance(e.this, exp.Column)
                }
                if len(changed) != len(node.expressions) or changed & {c for c, _ in key}:
                    key = frozenset()  # the rows move: any row of the table
            writes.add((name, key))
            reads.add((name, key))
    # every table named anywhere is read at least (a join, a subquery, a CTE's source)
    named = {_table_name(t) for t in node.find_all(exp.Table)}
    covered = {t for t, _ in reads | writes}
    reads |= {(t, frozenset()) for t in named - covered if t}
    queries = any(True for _ in node.find_all(exp.Select)) or any(
        node.args.get(arg) for arg in ("from", "from_", "using")
    )
    return Footprint(
        frozenset(reads),
        frozenset(writes),
        frozenset(inserts),
        reads_then_writes=bool(writes) and queries,
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
        return f"'{node.this}'" if node.is_string else str(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return f"-{node.this.this}"
    return None


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
