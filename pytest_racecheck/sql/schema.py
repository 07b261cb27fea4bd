"""A database's catalog as explore's footprints need it, and what a statement reaches through it.

:class:`Catalog` holds the views, triggers, foreign keys, unique constraints, rules and functions
that :mod:`pytest_racecheck.sql.catalog_sqlite` and :mod:`pytest_racecheck.sql.catalog_postgres`
read; its closure follows reads, writes and calls through them to a :class:`Footprint`, or
:data:`EVERYTHING` when something on the way cannot be known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from pytest_racecheck.sql.bodies import parse_body
from pytest_racecheck.sql.code import EVENTS, EVERYTHING, Code, Everything, merge
from pytest_racecheck.sql.tokens import split_statements

# Levels of expansion (a write, then its trigger's body: two per trigger hop) before an answer
# gives up and says EVERYTHING.
MAX_DEPTH: Final = 64


class Footprint(NamedTuple):
    """The tables a piece of work reads and writes, everything it sets off included."""

    reads: frozenset[str]
    writes: frozenset[str]


Effects = Footprint | Everything
NOTHING: Final = Footprint(frozenset(), frozenset())


@dataclass(frozen=True)
class View:
    """A view: the relations and functions its query names (``understood``: it parsed)."""

    name: str
    relations: frozenset[str]
    calls: frozenset[str] = frozenset()
    updatable: bool = False  # PostgreSQL's automatically updatable views; SQLite has none
    understood: bool = True


@dataclass(frozen=True)
class Trigger:
    """A trigger: when it fires and what its body does (EVERYTHING when the body is unknown)."""

    name: str
    table: str
    timing: str  # BEFORE, AFTER or INSTEAD OF
    events: frozenset[str]
    body: Code


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key; actions are spelled as in SQL (CASCADE, SET NULL, NO ACTION, ...)."""

    child: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: str
    on_update: str


@dataclass(frozen=True)
class UniqueConstraint:
    """A uniqueness rule: two writes of these columns collide whatever rows they name.

    ``kind`` is "primary key", "unique", "unique index" or "exclusion" (PostgreSQL's EXCLUDE);
    ``expressions`` hold indexed expressions as text (their columns are in ``columns`` too);
    ``predicate`` is a partial index's WHERE, as text.
    """

    name: str
    table: str
    columns: frozenset[str]
    kind: str
    expressions: tuple[str, ...] = ()
    predicate: str | None = None


@dataclass(frozen=True)
class Function:
    """One user-defined function or procedure (one overload of a name)."""

    name: str
    language: str
    volatility: str  # PostgreSQL's provolatile: "i", "s" or "v"
    body: Code


# A closure work item: ("read", name), ("write", table, event), ("call", name) or ("body", Body).
_Item = tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class Catalog:
    """One database's schema as explore's footprints need it.

    Built by :func:`read_sqlite`, :func:`read_postgres` or :func:`read`; immutable except for a
    private memo of answers already computed. Compared by identity: the cache hands out the same
    object while the schema stays the same.
    """

    backend: str  # "sqlite" or "postgres"
    tables: frozenset[str]
    columns: Mapping[str, Mapping[str, str]]
    views: Mapping[str, View]
    triggers: tuple[Trigger, ...]
    foreign_keys: tuple[ForeignKey, ...]
    uniques: tuple[UniqueConstraint, ...]
    rules: frozenset[str]
    functions: Mapping[str, tuple[Function, ...]]
    # PostgreSQL partitions and inheritance children: reading or writing the parent reaches them
    children: Mapping[str, frozenset[str]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    search_schemas: tuple[str, ...] = ()
    fingerprint: str = ""
    _memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    # -- names -------------------------------------------------------------------------------

    def name(self, raw: str) -> str:
        """The catalog's spelling of a table or view name as a statement wrote it."""
        lowered = raw.replace('"', "").replace("`", "").strip().lower()
        return self.aliases.get(lowered, lowered)

    def function_name(self, raw: str) -> str:
        """The catalog's spelling of a function name (schema dropped when on the search path)."""
        lowered = raw.replace('"', "").strip().lower()
        schema, dot, base = lowered.rpartition(".")
        if dot and schema in self.search_schemas:
            return base
        return lowered

    # -- views -------------------------------------------------------------------------------

    def view_reads(self, name: str) -> frozenset[str]:
        """The base tables a view reads, through views over views; every table if not understood."""
        view = self.views.get(self.name(name))
        if view is None:
            return frozenset()
        effects = self.read_effects(view.name)
        if isinstance(effects, Everything):
            return self.tables
        return frozenset(r for r in effects.reads if r not in self.views)

    def view_writes(self, name: str) -> frozenset[str]:
        """The base tables a write through a view writes (auto-updatable or INSTEAD OF triggers).

        Empty when the view cannot be written (the statement fails); every table when a trigger
        on the way is unknown.
        """
        key = self.name(name)
        if key not in self.views:
            return frozenset()
        written: set[str] = set()
        for event in EVENTS:
            effects = self.write_effects(key, event)
            if isinstance(effects, Everything):
                return self.tables
            written |= effects.writes
        return frozenset(w for w in written if w not in self.views)

    def read_effects(self, name: str) -> Effects:
        """What reading a table or view touches: a view's tables and the functions it calls."""
        return self._closure((("read", self.name(name)),))

    # -- writes, triggers, foreign keys ------------------------------------------------------

    def write_effects(self, table: str, event: str) -> Effects:
        """Everything one INSERT, UPDATE or DELETE on ``table`` reads and writes.

        The table itself (or, for a view, what the write reaches), its triggers and theirs,
        foreign-key checks and cascades; EVERYTHING when a rule or an unknown body is on the way.
        """
        return self._closure((("write", self.name(table), event.upper()),))

    def trigger_effects(self, table: str, event: str) -> Effects:
        """What the triggers that ``event`` on ``table`` fires read and write, cascades included.

        The statement's own write of ``table`` is not part of it; no trigger gives NOTHING.
        """
        bodies = [("body", t.body) for t in self._triggers_on(self.name(table), event.upper())]
        return self._closure(bodies)

    def fk_neighbours(self, table: str) -> frozenset[str]:
        """The tables tied to ``table`` by a foreign key, as parent or child."""
        key = self.name(table)
        found = {fk.parent for fk in self.foreign_keys if fk.child == key}
        found |= {fk.child for fk in self.foreign_keys if fk.parent == key}
        return frozenset(found)

    def fk_cascades(self, table: str, event: str) -> frozenset[str]:
        """The tables a DELETE or UPDATE of ``table`` writes through ON DELETE/UPDATE actions."""
        written: set[str] = set()
        frontier = [(self.name(table), event.upper())]
        seen: set[tuple[str, str]] = set()
        while frontier:
            item = frontier.pop()
            if item in seen:
                continue
            seen.add(item)
            for child, child_event in self._cascades(*item):
                written.add(child)
                frontier.append((child, child_event))
        return frozenset(written)

    # -- constraints, rules, columns ---------------------------------------------------------

    def unique_constraints(self, table: str) -> tuple[UniqueConstraint, ...]:
        """The table's primary key, unique constraints, unique indexes and exclusion constraints."""
        key = self.name(table)
        return tuple(u for u in self.uniques if u.table == key)

    def unique_columns(self, table: str) -> tuple[frozenset[str], ...]:
        """The column sets of :meth:`unique_constraints`, partial ones included."""
        return tuple(u.columns for u in self.unique_constraints(table))

    def has_rule(self, name: str) -> bool:
        """True when a PostgreSQL rule rewrites statements on this table or view."""
        return self.name(name) in self.rules

    def column_type(self, table: str, column: str) -> str | None:
        """The column's declared type, lower case ("" if SQLite declares none); None if unknown."""
        return self.columns.get(self.name(table), {}).get(column.replace('"', "").lower())

    # -- functions and statements ------------------------------------------------------------

    def function_effects(self, name: str) -> Effects:
        """What calling a user-defined function touches; EVERYTHING for names the catalog lacks."""
        key = self.function_name(name)
        if key not in self.functions:
            return EVERYTHING
        return self._closure((("call", key),))

    def function_is_read_only(self, name: str) -> bool:
        """True when the function's body (and all it calls) is known and writes no table.

        PostgreSQL refuses DML in STABLE and IMMUTABLE SQL and PL/pgSQL functions, but one of
        them may still call a VOLATILE function that writes, so ``provolatile`` alone decides
        nothing here: the parsed body does.
        """
        effects = self.function_effects(name)
        return isinstance(effects, Footprint) and not effects.writes

    def statement_effects(self, sql: str) -> Effects:
        """What one SQL statement (of this backend's dialect) touches, through this catalog."""
        dialect = "postgres" if self.backend == "postgres" else "sqlite"
        body = merge(
            parse_body(segment, dialect) for segment in split_statements(sql, dialect) if segment
        )
        if isinstance(body, Everything):
            return EVERYTHING
        return self._closure(
            (("body", body),), memo=False
        )  # statements are many: parsing is cached

    # -- the closure -------------------------------------------------------------------------

    def _triggers_on(self, table: str, event: str, instead: bool | None = None) -> list[Trigger]:
        return [
            t
            for t in self.triggers
            if t.table == table
            and event in t.events
            and (instead is None or (t.timing == "INSTEAD OF") == instead)
        ]

    def _cascades(self, table: str, event: str) -> list[tuple[str, str]]:
        """The (child, event) writes that foreign-key actions make when ``table`` is written."""
        out: list[tuple[str, str]] = []
        if event not in ("DELETE", "UPDATE"):
            return out
        for fk in self.foreign_keys:
            if fk.parent != table:
                continue
            action = fk.on_delete if event == "DELETE" else fk.on_update
            if action == "CASCADE":
                out.append((fk.child, event))
            elif action in ("SET NULL", "SET DEFAULT"):
                out.append((fk.child, "UPDATE"))
        return out

    def _closure(self, start: Iterable[_Item], memo: bool = True) -> Effects:
        """Follow reads, writes and calls level by level until nothing new appears."""
        start = tuple(start)
        cached = self._memo.get(start) if memo else None
        if cached is not None:
            return cached
        reads: set[str] = set()
        writes: set[str] = set()
        seen: set[_Item] = set()
        frontier: list[_Item] = list(start)
        result: Effects | None = None
        depth = 0
        while frontier and result is None:
            if depth > MAX_DEPTH:
                result = EVERYTHING
                break
            following: list[_Item] = []
            for item in frontier:
                if item in seen:
                    continue
                seen.add(item)
                more = self._expand(item, reads, writes)
                if isinstance(more, Everything):
                    result = EVERYTHING
                    break
                following.extend(more)
            frontier = following
            depth += 1
        if result is None:
            result = Footprint(frozenset(reads), frozenset(writes))
        if memo:
            self._memo[start] = result
        return result

    def _expand(self, item: _Item, reads: set[str], writes: set[str]) -> list[_Item] | Everything:
        kind = item[0]
        if kind == "body":
            body: Code = item[1]
            if isinstance(body, Everything):
                return EVERYTHING
            return [
                *(("read", self.name(r)) for r in body.reads),
                *(("write", self.name(t), e) for t, e in body.writes),
                *(("call", self.function_name(c)) for c in body.calls),
            ]
        if kind == "call":
            overloads = self.functions.get(item[1])
            if overloads is None:
                return []  # a built-in
            return [("body", f.body) for f in overloads]
        if kind == "read":
            name = item[1]
            reads.add(name)
            view = self.views.get(name)
            if view is None:
                return [("read", c) for c in self.children.get(name, ())]
            if not view.understood:
                return EVERYTHING
            return [
                *(("read", self.name(r)) for r in view.relations),
                *(("call", self.function_name(c)) for c in view.calls),
            ]
        _, table, event = item
        if table in self.rules:
            return EVERYTHING
        reads.add(table)
        writes.add(table)
        view = self.views.get(table)
        if view is not None:
            instead = self._triggers_on(table, event, instead=True)
            if instead:
                return [("body", t.body) for t in instead]
            if view.updatable:
                return [("write", self.name(r), event) for r in view.relations]
            return []  # not writable: the statement fails
        following: list[_Item] = [
            ("body", t.body) for t in self._triggers_on(table, event, instead=False)
        ]
        for fk in self.foreign_keys:
            if fk.child == table and event in ("INSERT", "UPDATE"):
                following.append(("read", fk.parent))
            if fk.parent == table and event in ("DELETE", "UPDATE"):
                following.append(("read", fk.child))
        following.extend(("write", child, ev) for child, ev in self._cascades(table, event))
        following.extend(("write", child, event) for child in self.children.get(table, ()))
        return following
