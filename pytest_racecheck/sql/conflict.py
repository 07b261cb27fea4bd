"""A statement's footprint in its context: its text, widened by what the catalog says the
database does beyond it, and where it stands in its transaction.

The text (:mod:`.statement`) names tables; the catalog (:mod:`.catalog`) says what reading or
writing them sets off: a view's base tables, a trigger's reads and writes, a cascading foreign
key's children, a function's body, a unique constraint that ties different rows together, a
rule that rewrites the statement. A step whose effects cannot be known conflicts with everything
and, on PostgreSQL outside a transaction, may race inside the database with another write
(:data:`~.footprint.UNKNOWN_BODY`): explore then releases the two together rather than call
the race exhausted on the strength of an order that cannot show the bug.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from pytest_racecheck.sql.catalog import Catalog, Everything
from pytest_racecheck.sql.footprint import (
    ALL_TABLES,
    SQLITE_WRITE_LOCK,
    UNKNOWN_BODY,
    Footprint,
    Item,
    touches,
)
from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.sql.statement import footprint

RULES = ("views", "triggers", "foreign_keys", "uniques", "functions", "rules")
"""The catalog's rules, each of which :func:`switched_off` can turn off (the oracle's test)."""

_OFF: set[str] = set()


def switched_off(*rules: str) -> None:
    """Turn catalog rules off (none given: all back on). An internal switch for the
    differential oracle, which must find a mismatch with any one of them off."""
    unknown = set(rules) - set(RULES)
    if unknown:
        raise ValueError(f"no catalog rule {sorted(unknown)}; the rules are {RULES}")
    _OFF.clear()
    _OFF.update(rules)
    step_footprint.cache_clear()


def transaction_effect(sql: str) -> str:
    """'begin' for a statement that opens a transaction, 'end' for one that closes it, else ''."""
    short = short_sql(sql)
    if short.startswith("BEGIN"):
        return "begin"
    if short in ("COMMIT", "ROLLBACK"):
        return "end"
    return ""


def _whole(tables: frozenset[str] | set[str]) -> set[Item]:
    return {(t, frozenset()) for t in tables}


def widen(found: Footprint, catalog: Catalog | None) -> Footprint:
    """``found`` (from the text) with what the database does beyond the text, as ``catalog``
    tells it; without a catalog, a call of a function that is not a known built-in is
    :data:`~.footprint.UNKNOWN_BODY`."""
    if found.everything or found.outside or found.inert:
        return found
    if catalog is None:
        return UNKNOWN_BODY if found.calls else found
    reads, writes = set(found.reads), set(found.writes)
    checks = found.reads_then_writes
    named = {t for t, _ in found.reads | found.writes}
    if "rules" not in _OFF and any(catalog.has_rule(t) for t in named):
        return UNKNOWN_BODY
    if "views" not in _OFF:
        for table, _ in found.reads:
            seen = catalog.read_effects(table)
            if isinstance(seen, Everything):
                return UNKNOWN_BODY
            reads |= _whole(seen.reads - {table})
    for table, event in found.events:
        if "triggers" not in _OFF:
            fired = catalog.trigger_effects(table, event)
            if isinstance(fired, Everything):
                return UNKNOWN_BODY
            reads |= _whole(fired.reads)
            writes |= _whole(fired.writes)
            checks = checks or bool(fired.reads or fired.writes)
        if "views" not in _OFF and table in catalog.views:
            writes |= _whole(catalog.view_writes(table))
            checks = True
        if "foreign_keys" not in _OFF:
            writes |= _whole(catalog.fk_cascades(table, event))
            reads |= _whole(catalog.fk_neighbours(table))
    if "uniques" not in _OFF:
        tied = {
            table
            for table, column in found.changes
            if any(column in columns for columns in catalog.unique_columns(table))
        }
        writes = {(t, frozenset() if t in tied else key) for t, key in writes}
    for name in found.calls:
        if "functions" in _OFF:
            continue
        body = catalog.function_effects(name)
        if isinstance(body, Everything):
            return UNKNOWN_BODY
        reads |= _whole(body.reads)
        writes |= _whole(body.writes)
        checks = checks or bool(body.writes)
    return replace(
        found, reads=frozenset(reads), writes=frozenset(writes), reads_then_writes=checks
    )


@lru_cache(maxsize=4096)
def step_footprint(
    sql: str,
    database: str = "",
    snapshot: bool = False,
    in_transaction: bool = False,
    catalog: Catalog | None = None,
) -> Footprint:
    """A statement's footprint in its context (``catalog``: its database's, if known).

    ``snapshot``: it is the first statement of a transaction, which takes the snapshot that the
    transaction's later reads see (SQLite, and PostgreSQL's REPEATABLE READ / SERIALIZABLE): as
    of this statement the transaction reads every table, so it conflicts with every write of
    another racer. On SQLite every write also takes the database's one write lock.

    Two statements released together can race inside the database only where neither order
    explains the result: on PostgreSQL (or an unknown database), outside an explicit
    transaction (inside one, its writes show only at COMMIT, which is ordered), and not on
    SQLite, which runs one writer at a time and gives each reader one snapshot.
    """
    result = widen(footprint(sql), catalog)
    inside_db = database != "sqlite" and not in_transaction
    if result.everything:
        return replace(result, overlaps=True) if inside_db and result.reads_then_writes else result
    if inside_db and (result.reads or result.writes):
        result = replace(result, overlaps=True)
    if snapshot:
        result = replace(result, reads=result.reads | {(ALL_TABLES, frozenset())})
    if database == "sqlite" and result.writes:
        result = replace(result, writes=result.writes | {(SQLITE_WRITE_LOCK, frozenset())})
    return result


def may_overlap(a: Footprint, b: Footprint) -> bool:
    """Whether releasing both steps at once can give what neither order gives: one checks and
    then writes inside its statement, and the other writes what it checks (a step of unknown
    effects checks everything)."""
    return a.overlaps and b.overlaps and (_checks_what(a, b) or _checks_what(b, a))


def _checks_what(checker: Footprint, writer: Footprint) -> bool:
    if not checker.reads_then_writes:
        return False
    if checker.everything:
        return writer.everything or bool(writer.writes)
    return writer.everything or touches(writer.writes, checker.reads)
