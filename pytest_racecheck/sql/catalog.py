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
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import quote

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.sqlite import SQLite

if TYPE_CHECKING:
    from sqlglot.tokenizer_core import Token
from sqlglot import TokenType

EVENTS: Final = ("INSERT", "UPDATE", "DELETE")
# Levels of expansion (a write, then its trigger's body: two per trigger hop) before an answer
# gives up and says EVERYTHING.
MAX_DEPTH: Final = 64
CACHE_SIZE: Final = 16


class Everything:
    """The answer when an effect cannot be known: it conflicts with every statement."""

    _instance: Everything | None = None

    def __new__(cls) -> Everything:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EVERYTHING"

    def __reduce__(self) -> tuple[type[Everything], tuple[()]]:
        return (Everything, ())  # stays the one sentinel across pickling


EVERYTHING: Final = Everything()


class Footprint(NamedTuple):
    """The tables a piece of work reads and writes, everything it sets off included."""

    reads: frozenset[str]
    writes: frozenset[str]


Effects = Footprint | Everything
NOTHING: Final = Footprint(frozenset(), frozenset())


@dataclass(frozen=True)
class Body:
    """What one piece of code names directly: before views, triggers and calls are followed.

    ``writes`` pairs a table with the event (INSERT, UPDATE, DELETE) that the triggers of that
    table will see; ``calls`` are function names, resolved against the catalog later (a name the
    catalog does not hold is a built-in, taken to touch no table).
    """

    reads: frozenset[str] = frozenset()
    writes: frozenset[tuple[str, str]] = frozenset()
    calls: frozenset[str] = frozenset()


Code = Body | Everything


def merge(parts: Iterable[Code]) -> Code:
    """The union of several bodies; one unknown part makes the whole unknown."""
    reads: set[str] = set()
    writes: set[tuple[str, str]] = set()
    calls: set[str] = set()
    for part in parts:
        if isinstance(part, Everything):
            return EVERYTHING
        reads |= part.reads
        writes |= part.writes
        calls |= part.calls
    return Body(frozenset(reads), frozenset(writes), frozenset(calls))


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


# -- reading SQL text ------------------------------------------------------------------------


class _PgTokenizer(Postgres.Tokenizer):
    """PostgreSQL tokens that do not swallow the rest of a statement after DECLARE or EXECUTE."""

    COMMANDS = set()


class _SqliteTokenizer(SQLite.Tokenizer):
    """SQLite tokens, same reason as :class:`_PgTokenizer`."""

    COMMANDS = set()


_NOT_WORDS: Final = frozenset(
    TokenType[n]
    for n in (
        "STRING",
        "HEREDOC_STRING",
        "IDENTIFIER",
        "NUMBER",
        "BYTE_STRING",
        "NATIONAL_STRING",
        "RAW_STRING",
        "BIT_STRING",
        "HEX_STRING",
        "UNICODE_STRING",
    )
    if n in TokenType.__members__
)
_STATEMENT_WORDS: Final = frozenset(
    {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"}
)


def _word(token: Token) -> str:
    return "" if token.token_type in _NOT_WORDS else token.text.upper()


def _tokenize(text: str, dialect: str) -> list[Token]:
    tokenizer = _PgTokenizer() if dialect == "postgres" else _SqliteTokenizer()
    return tokenizer.tokenize(text)


def _text(source: str, tokens: Sequence[Token]) -> str:
    """The source of ``tokens`` (comments between them dropped, adjacency kept)."""
    parts: list[str] = []
    previous_end = None
    for token in tokens:
        if previous_end is not None and token.start > previous_end + 1:
            parts.append(" ")
        parts.append(source[token.start : token.end + 1])
        previous_end = token.end
    return "".join(parts)


def _split(tokens: Sequence[Token], plpgsql: bool) -> list[list[Token]]:
    """Statements separated by ``;``; for PL/pgSQL also after the THEN and LOOP of control lines."""
    segments: list[list[Token]] = []
    current: list[Token] = []
    parens = 0
    cases = 0  # open SQL CASE expressions, whose THEN must not split
    at_start = True  # nothing but BEGIN, ELSE, ... so far: a CASE here is PL/pgSQL's statement
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON and parens == 0:
            if current:
                segments.append(current)
            current, cases, at_start = [], 0, True
            continue
        current.append(token)
        if token.token_type == TokenType.L_PAREN:
            parens += 1
        elif token.token_type == TokenType.R_PAREN:
            parens = max(0, parens - 1)
        if not plpgsql or parens:
            continue
        word = _word(token)
        if word == "CASE" and not at_start:
            cases += 1
        elif word == "END" and cases:
            cases -= 1
        elif word in ("THEN", "LOOP") and not cases:
            segments.append(current)
            current, at_start = [], True
            continue
        at_start = at_start and word in ("BEGIN", "ELSE", "ATOMIC", "DECLARE")
    if current:
        segments.append(current)
    return segments


def split_statements(sql: str, dialect: str) -> list[str]:
    """The statements of a script, split on ``;`` outside strings and parentheses."""
    try:
        tokens = _tokenize(sql, dialect)
    except Exception:
        return [sql]
    return [_text(sql, seg) for seg in _split(tokens, plpgsql=False)]


def _table_name(table: exp.Table) -> str:
    name = table.name.lower()
    return f"{table.db.lower()}.{name}" if table.db else name


_UNKNOWN_NODES: Final = (exp.Into, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.TruncateTable)


def node_body(node: exp.Expr) -> Code:
    """What one parsed statement names: DML anywhere in its tree, tables, function calls."""
    if not isinstance(node, (exp.Query, exp.Values, exp.Insert, exp.Update, exp.Delete, exp.Merge)):
        return EVERYTHING
    if any(isinstance(n, _UNKNOWN_NODES) for n in node.walk()):
        return EVERYTHING
    ctes = {cte.alias_or_name.lower() for cte in node.find_all(exp.CTE)}
    reads: set[str] = set()
    writes: set[tuple[str, str]] = set()
    calls: set[str] = set()
    for table in node.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function, seen below as a call
        name = _table_name(table)
        if not table.db and name in ctes:
            continue
        reads.add(name)
    for dml in node.find_all(exp.Insert, exp.Update, exp.Delete, exp.Merge):
        target = dml.this
        if isinstance(target, exp.Schema):
            target = target.this
        if not isinstance(target, exp.Table) or not isinstance(target.this, exp.Identifier):
            return EVERYTHING
        name = _table_name(target)
        reads.add(name)
        writes.update((name, event) for event in _events_of(dml))
    for call in node.find_all(exp.Anonymous):
        name = call.name.lower()
        parent = call.parent
        if isinstance(parent, exp.Dot) and parent.expression is call:
            name = f"{parent.this.name.lower()}.{name}"
        calls.add(name)
    return Body(frozenset(reads), frozenset(writes), frozenset(calls))


def _events_of(dml: exp.Expr) -> set[str]:
    if isinstance(dml, exp.Update):
        return {"UPDATE"}
    if isinstance(dml, exp.Delete):
        return {"DELETE"}
    if isinstance(dml, exp.Merge):
        return set(EVENTS)
    events = {"INSERT"}
    conflict = dml.args.get("conflict")
    if isinstance(conflict, exp.OnConflict) and conflict.args.get("expressions"):
        events.add("UPDATE")  # ON CONFLICT DO UPDATE
    if str(dml.args.get("alternative") or "").upper() == "REPLACE":
        events.add("DELETE")  # SQLite's INSERT OR REPLACE deletes the rows in the way
    return events


# Blanks, comments and opening parentheses, then the first word; no two branches overlap, so a
# statement that starts otherwise fails fast instead of backtracking.
_FIRST_WORD: Final = re.compile(r"(?:\s|--[^\n]*(?:\n|$)|/\*(?:[^*]|\*(?!/))*\*/|\()*([A-Za-z_]+)")


@lru_cache(maxsize=4096)  # bodies and statements repeat across reads of one schema
def parse_body(sql: str, dialect: str) -> Code:
    """One statement's text as a :class:`Body`; EVERYTHING if it does not parse or is not DML."""
    text = sql.strip()
    if not text:
        return Body()
    if text[:7].upper() == "REPLACE":  # SQLite's REPLACE INTO, which sqlglot reads as a Command
        text = "INSERT OR " + text
    first = _FIRST_WORD.match(text)
    if first is None or first.group(1).upper() not in _STATEMENT_WORDS:
        return EVERYTHING  # DDL, PRAGMA, LOCK, CALL, DO...: unknown, and sqlglot would warn
    try:
        node = sqlglot.parse_one(text, dialect=dialect)
    except Exception:
        return EVERYTHING
    return node_body(node)


def _expression_body(text: str, dialect: str) -> Code:
    if not text.strip():
        return Body()
    return parse_body("SELECT " + text, dialect)


# -- PL/pgSQL -------------------------------------------------------------------------------

_PL_SKIP: Final = frozenset(
    {"END", "NULL", "GET", "FETCH", "MOVE", "CLOSE", "COMMIT", "ROLLBACK", "LOOP", ""}
)
_PL_CONDITION: Final = frozenset({"IF", "ELSIF", "ELSEIF", "WHILE", "WHEN", "ASSERT"})


def plpgsql_body(source: str) -> Code:
    """What a PL/pgSQL (or BEGIN ATOMIC) body names, read one embedded statement at a time.

    The control lines (IF, ELSIF, WHILE, FOR ... LOOP, RETURN, PERFORM, assignments) become the
    SELECTs they evaluate; every embedded SQL statement is parsed with sqlglot. Dynamic SQL
    (EXECUTE), statements not understood and anything that fails to parse give EVERYTHING.
    """
    try:
        tokens = _tokenize(source, "postgres")
    except Exception:
        return EVERYTHING
    parts: list[Code] = []
    declaring = False
    in_handler = False
    for segment in _split(tokens, plpgsql=True):
        toks = list(segment)
        while toks:
            word = _word(toks[0])
            if word in ("BEGIN", "ATOMIC", "ELSE"):
                declaring = declaring and word != "BEGIN"
                toks.pop(0)
            elif word == "DECLARE":
                declaring = True
                toks.pop(0)
            elif (
                len(toks) >= 5
                and [t.token_type for t in toks[:2]] == [TokenType.LT, TokenType.LT]
                and toks[3].token_type == TokenType.GT
                and toks[4].token_type == TokenType.GT
            ):
                del toks[:5]  # <<label>>
            else:
                break
        if not toks:
            continue
        if declaring:
            parts.append(_declaration(source, toks))
            continue
        word = _word(toks[0])
        if word == "EXCEPTION":
            in_handler = True
            continue
        if word == "END":
            in_handler = False
            continue
        if word == "WHEN" and in_handler:
            continue  # a condition name such as unique_violation or SQLSTATE '23505'
        parts.append(_plpgsql_statement(source, toks))
        if isinstance(parts[-1], Everything):
            return EVERYTHING
    return merge(parts)


def _declaration(source: str, toks: list[Token]) -> Code:
    words = [_word(t) for t in toks]
    if "CURSOR" in words and "FOR" in words:
        return parse_body(_text(source, toks[words.index("FOR") + 1 :]), "postgres")
    for i, token in enumerate(toks):
        if token.token_type in (TokenType.COLON_EQ, TokenType.EQ) or words[i] == "DEFAULT":
            return _expression_body(_text(source, toks[i + 1 :]), "postgres")
    return Body()


def _without_trailing(toks: list[Token], *words: str) -> list[Token]:
    return toks[:-1] if toks and _word(toks[-1]) in words else toks


def _plpgsql_statement(source: str, toks: list[Token]) -> Code:
    words = [_word(t) for t in toks]
    first = words[0]
    if "EXECUTE" in words or first == "DO":
        return EVERYTHING  # dynamic SQL: the tables are known only when it runs
    if first in _PL_SKIP:
        return Body()
    if first == "RAISE":
        return EVERYTHING if "SELECT" in words else Body()
    if first in _PL_CONDITION:
        rest = _without_trailing(toks[1:], "THEN", "LOOP")
        if first == "ASSERT":
            rest = _until_comma(rest)
        return _expression_body(_text(source, rest), "postgres")
    if first == "CASE":
        rest = _without_trailing(toks[1:], "THEN")
        return _expression_body(_case_expressions(source, rest), "postgres")
    if first in ("EXIT", "CONTINUE"):
        if "WHEN" not in words:
            return Body()
        return _expression_body(_text(source, toks[words.index("WHEN") + 1 :]), "postgres")
    if first == "RETURN":
        rest = toks[1:]
        if rest and _word(rest[0]) in ("QUERY", "NEXT"):
            if _word(rest[0]) == "QUERY":
                return parse_body(_text(source, rest[1:]), "postgres")
            rest = rest[1:]
        return _expression_body(_text(source, rest), "postgres")
    if first == "PERFORM":
        return parse_body("SELECT " + _text(source, toks[1:]), "postgres")
    if first in ("FOR", "FOREACH"):
        return _for_loop(source, toks, words)
    if first == "OPEN":
        if "FOR" not in words:
            return Body()
        return parse_body(_text(source, toks[words.index("FOR") + 1 :]), "postgres")
    if first == "CALL":
        return _expression_body(_text(source, toks[1:]), "postgres")
    if first in _STATEMENT_WORDS or toks[0].token_type == TokenType.L_PAREN:
        return parse_body(_text(source, _strip_into(toks)), "postgres")
    for i, token in enumerate(toks):  # an assignment: target := expression
        if token.token_type in (TokenType.COLON_EQ, TokenType.EQ):
            return _expression_body(_text(source, toks[i + 1 :]), "postgres")
    return EVERYTHING


def _until_comma(toks: list[Token]) -> list[Token]:
    depth = 0
    for i, token in enumerate(toks):
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif token.token_type == TokenType.COMMA and depth == 0:
            return toks[:i]
    return toks


def _case_expressions(source: str, toks: list[Token]) -> str:
    """``CASE x WHEN v`` as the list of expressions ``x, v`` that the statement evaluates."""
    pieces: list[list[Token]] = [[]]
    for token in toks:
        if _word(token) == "WHEN":
            pieces.append([])
        else:
            pieces[-1].append(token)
    return ", ".join(_text(source, piece) for piece in pieces if piece)


def _for_loop(source: str, toks: list[Token], words: list[str]) -> Code:
    if "IN" not in words:
        return EVERYTHING
    rest = _without_trailing(toks[words.index("IN") + 1 :], "LOOP")
    while rest and _word(rest[0]) in ("REVERSE", "ARRAY"):
        rest = rest[1:]
    text = _text(source, rest)
    if rest and (_word(rest[0]) in _STATEMENT_WORDS or rest[0].token_type == TokenType.L_PAREN):
        return parse_body(text, "postgres")
    if ".." in text:  # an integer range: lower .. upper [BY step]
        lower, _, upper = text.partition("..")
        upper = upper.lstrip(".").replace(" BY ", ", ").replace(" by ", ", ")
        return _expression_body(f"{lower.rstrip('.')}, {upper}", "postgres")
    return _expression_body(text, "postgres")  # a bound cursor, or FOREACH's array


def _strip_into(toks: list[Token]) -> list[Token]:
    """A PL/pgSQL statement without its ``INTO [STRICT] variables`` (not INSERT's INTO)."""
    out: list[Token] = []
    i = 0
    depth = 0
    while i < len(toks):
        token = toks[i]
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        if (
            token.token_type != TokenType.INTO
            or depth
            or (out and _word(out[-1]) in ("INSERT", "MERGE"))
        ):
            out.append(token)
            i += 1
            continue
        i += 1
        if i < len(toks) and _word(toks[i]) == "STRICT":
            i += 1
        while i < len(toks):  # target[.field] [, target[.field] ...]
            i += 1
            while i + 1 < len(toks) and toks[i].token_type == TokenType.DOT:
                i += 2
            if i < len(toks) and toks[i].token_type == TokenType.COMMA:
                i += 1
                continue
            break
    return out


@lru_cache(maxsize=1024)
def function_body(language: str, source: str | None, sql_body: str | None) -> Code:
    """A PostgreSQL function's body by its language; EVERYTHING for C, internal and the rest."""
    language = language.lower()
    if sql_body:  # LANGUAGE sql with BEGIN ATOMIC ... END (PostgreSQL 14+)
        return plpgsql_body(sql_body)
    if source is None:
        return EVERYTHING
    if language == "plpgsql":
        return plpgsql_body(source)
    if language == "sql":
        return merge(parse_body(s, "postgres") for s in split_statements(source, "postgres"))
    return EVERYTHING


# -- SQLite -----------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _sqlite_trigger(name: str, table: str, sql: str) -> Trigger:
    """A trigger from its CREATE TRIGGER text: header words, WHEN expression, body statements."""
    try:
        tokens = _tokenize(sql, "sqlite")
        words = [_word(t) for t in tokens]
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
            _expression_body(_text(sql, tokens[header.index("WHEN") + 1 : begin]), "sqlite")
        )
    for segment in _split(tokens[begin + 1 : end], plpgsql=False):
        parts.append(parse_body(_text(sql, segment), "sqlite"))
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


def _sqlite_fingerprint(conn: sqlite3.Connection, path: str) -> str:
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    return f"{os.stat(path).st_ino}:{version}"


_SQLITE_ACTIONS: Final = {"NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"}


def read_sqlite(path: str | os.PathLike[str]) -> Catalog:
    """The catalog of a SQLite file, opened read-only."""
    conn = _open_sqlite(path)
    try:
        return _read_sqlite(conn, os.fspath(path))
    finally:
        conn.close()


def _open_sqlite(path: str | os.PathLike[str]) -> sqlite3.Connection:
    uri = f"file:{quote(os.path.abspath(os.fspath(path)))}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def _read_sqlite(conn: sqlite3.Connection, path: str) -> Catalog:
    fingerprint = _sqlite_fingerprint(conn, path)
    master = conn.execute(
        "SELECT type, lower(name), lower(tbl_name), sql FROM sqlite_master"
        " WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'"
    ).fetchall()
    column_rows = conn.execute(
        "SELECT lower(m.name), lower(p.name), lower(p.type), p.pk"
        " FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p"
        " WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid"
    ).fetchall()
    fk_rows = conn.execute(
        'SELECT lower(m.name), f.id, lower(f."table"), lower(f."from"), lower(f."to"),'
        " upper(f.on_update), upper(f.on_delete)"
        " FROM sqlite_master AS m JOIN pragma_foreign_key_list(m.name) AS f"
        " WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq"
    ).fetchall()
    index_rows = conn.execute(
        "SELECT lower(m.name), il.name, il.origin, ii.cid, lower(ii.name)"
        " FROM sqlite_master AS m JOIN pragma_index_list(m.name) AS il"
        " JOIN pragma_index_xinfo(il.name) AS ii"
        " WHERE m.type = 'table' AND il.\"unique\" AND ii.key ORDER BY m.name, il.name, ii.seqno"
    ).fetchall()

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

    fks: dict[tuple[str, int], list[Any]] = {}
    for child, fk_id, parent, from_col, to_col, on_update, on_delete in fk_rows:
        entry = fks.setdefault((child, fk_id), [child, [], parent, [], on_delete, on_update])
        entry[1].append(from_col)
        entry[3].append(to_col or "")  # NULL: the parent's primary key
    foreign_keys = tuple(
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

    grouped: dict[tuple[str, str], tuple[str, set[str]]] = {}
    for table, index, origin, cid, column in index_rows:
        _, cols = grouped.setdefault((table, index), (origin, set()))
        if cid >= 0 and column:
            cols.add(column)
    kinds = {"pk": "primary key", "u": "unique", "c": "unique index"}
    uniques: list[UniqueConstraint] = []
    for (table, index), (origin, cols) in grouped.items():
        expressions, predicate, used = _sqlite_index(index_sql.get(index.lower()))
        uniques.append(
            UniqueConstraint(
                index,
                table,
                frozenset(cols | used),
                kinds.get(origin, "unique index"),
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

    relations = tables | views.keys()
    return Catalog(
        backend="sqlite",
        tables=tables,
        columns=columns,
        views=views,
        triggers=tuple(triggers),
        foreign_keys=foreign_keys,
        uniques=tuple(uniques),
        rules=frozenset(),
        functions={},
        aliases={f"main.{r}": r for r in relations},
        search_schemas=("main",),
        fingerprint=fingerprint,
    )


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


# -- PostgreSQL -------------------------------------------------------------------------------

_USER = "{ns}.nspname NOT IN ('pg_catalog', 'information_schema') AND {ns}.nspname !~ '^pg_'"

_PG_FINGERPRINT = """
SELECT concat_ws('/',
  (SELECT oid FROM pg_database WHERE datname = current_database()),
  current_setting('search_path'),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_class WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_attribute WHERE attrelid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_trigger WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_proc WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_rewrite WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_constraint WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_index WHERE indexrelid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_namespace WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_inherits WHERE inhrelid >= 16384))
"""

_PG_SEARCH = "SELECT current_schemas(false)::text[]"

_PG_RELATIONS = f"""
SELECT n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER.format(ns="n")}
ORDER BY n.nspname, c.relname, a.attnum
"""

_PG_VIEWS = f"""
SELECT DISTINCT vn.nspname, v.relname, pg_relation_is_updatable(v.oid, false) > 0,
       rn.nspname, r.relname, fn.nspname, p.proname
FROM pg_class v
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_rewrite w ON w.ev_class = v.oid AND w.rulename = '_RETURN'
LEFT JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
     AND d.refobjid <> v.oid
LEFT JOIN pg_class r ON d.refclassid = 'pg_class'::regclass AND r.oid = d.refobjid
LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
LEFT JOIN pg_proc p ON d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid
LEFT JOIN pg_namespace fn ON fn.oid = p.pronamespace
WHERE v.relkind = 'v' AND {_USER.format(ns="vn")}
"""

_PG_TRIGGERS = f"""
SELECT n.nspname, c.relname, t.tgname, t.tgtype, l.lanname, p.prosrc, {{sqlbody}}
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_language l ON l.oid = p.prolang
WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND {_USER.format(ns="n")}
"""

# An extension's C functions (pgcrypto, uuid-ossp, btree_gist...) are left out: like built-ins,
# they are taken to touch no table. A user's own C function stays, and is EVERYTHING.
_PG_FUNCTIONS = f"""
SELECT n.nspname, p.proname, l.lanname, p.provolatile, p.prosrc, {{sqlbody}}
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE p.prokind IN ('f', 'p') AND {_USER.format(ns="n")}
  AND (l.lanname IN ('sql', 'plpgsql') OR NOT EXISTS (
    SELECT 1 FROM pg_depend e
    WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e'))
"""

_PG_FOREIGN_KEYS = f"""
SELECT cn.nspname, c.relname, pn.nspname, pc.relname, k.confdeltype, k.confupdtype,
  ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(n, i)
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
  ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS u(n, i)
        JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = k.confrelid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE k.contype = 'f' AND {_USER.format(ns="cn")}
"""

_PG_INDEXES = f"""
SELECT n.nspname, c.relname, i.relname, coalesce(k.contype::text, ''),
  ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS u(n, o)
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n
        WHERE u.o <= x.indnkeyatts ORDER BY u.o),
  pg_get_expr(x.indexprs, x.indrelid), pg_get_expr(x.indpred, x.indrelid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = x.indrelid
     AND k.contype IN ('p', 'u', 'x')
WHERE (x.indisunique OR x.indisexclusion) AND {_USER.format(ns="n")}
"""

_PG_RULES = f"""
SELECT n.nspname, c.relname
FROM pg_rewrite r
JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename <> '_RETURN' AND {_USER.format(ns="n")}
"""

_PG_CHILDREN = f"""
SELECT pn.nspname, p.relname, cn.nspname, c.relname
FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
WHERE p.relkind IN ('r', 'p', 'f') AND {_USER.format(ns="pn")}
"""

_PG_ACTIONS: Final = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}
_PG_KINDS: Final = {"p": "primary key", "u": "unique", "x": "exclusion", "": "unique index"}


def _pg_fingerprint(conn: Any) -> str:
    return str(conn.execute(_PG_FINGERPRINT).fetchone()[0])


def read_postgres(dsn: str) -> Catalog:
    """The catalog of a PostgreSQL database: one connection, one round trip of catalog queries."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return _read_postgres(conn)


def _read_postgres(conn: Any) -> Catalog:
    sqlbody = (
        "CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) END"
        if conn.info.server_version >= 140000
        else "NULL::text"
    )
    batch = [
        _PG_FINGERPRINT,
        _PG_SEARCH,
        _PG_RELATIONS,
        _PG_VIEWS,
        _PG_TRIGGERS.format(sqlbody=sqlbody),
        _PG_FUNCTIONS.format(sqlbody=sqlbody),
        _PG_FOREIGN_KEYS,
        _PG_INDEXES,
        _PG_RULES,
        _PG_CHILDREN,
    ]
    results = _run_batch(conn, batch)
    (
        fingerprint_rows,
        search_rows,
        relation_rows,
        view_rows,
        trigger_rows,
        function_rows,
        fk_rows,
        index_rows,
        rule_rows,
        child_rows,
    ) = results
    search = tuple(s.lower() for s in search_rows[0][0])

    def canonical(schema: str, name: str) -> str:
        schema, name = schema.lower(), name.lower()
        return name if schema in search else f"{schema}.{name}"

    tables: set[str] = set()
    columns: dict[str, dict[str, str]] = {}
    aliases: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for schema, relname, relkind, attname, type_ in sorted(
        relation_rows, key=lambda r: _search_rank(search, r[0])
    ):
        key = canonical(schema, relname)
        if kinds.setdefault(key, f"{schema}.{relname}") != f"{schema}.{relname}":
            continue  # shadowed by a relation of that name earlier on the search path
        aliases[f"{schema}.{relname}".lower()] = key
        if relkind != "v":
            tables.add(key)
        if attname is not None:
            columns.setdefault(key, {})[attname.lower()] = str(type_).lower()

    view_parts: dict[str, tuple[bool, set[str], set[str]]] = {}
    for vschema, vname, updatable, rschema, rname, fschema, fname in view_rows:
        _, rels, calls = view_parts.setdefault(
            canonical(vschema, vname), (bool(updatable), set(), set())
        )
        if rname is not None:
            rels.add(canonical(rschema, rname))
        if fname is not None and fschema not in ("pg_catalog", "information_schema"):
            calls.add(canonical(fschema, fname))
    views = {
        name: View(name, frozenset(rels), frozenset(calls), updatable)
        for name, (updatable, rels, calls) in view_parts.items()
    }

    bodies: dict[tuple[str, str | None, str | None], Code] = {}

    def body_of(language: str, source: str | None, sql_body: str | None) -> Code:
        key = (language, source, sql_body)
        if key not in bodies:
            bodies[key] = function_body(language, source, sql_body)
        return bodies[key]

    triggers: list[Trigger] = []
    for schema, relname, tgname, tgtype, language, source, sql_body in trigger_rows:
        timing = "INSTEAD OF" if tgtype & 64 else "BEFORE" if tgtype & 2 else "AFTER"
        events = frozenset(
            e for bit, e in ((4, "INSERT"), (16, "UPDATE"), (8, "DELETE")) if tgtype & bit
        )
        triggers.append(
            Trigger(
                tgname,
                canonical(schema, relname),
                timing,
                events,
                body_of(language, source, sql_body),
            )
        )

    functions: dict[str, list[Function]] = {}
    for schema, proname, language, volatility, source, sql_body in function_rows:
        name = canonical(schema, proname)
        function = Function(name, language, str(volatility), body_of(language, source, sql_body))
        functions.setdefault(name, []).append(function)

    foreign_keys = tuple(
        ForeignKey(
            canonical(cschema, cname),
            tuple(c.lower() for c in ccols),
            canonical(pschema, pname),
            tuple(c.lower() for c in pcols),
            _PG_ACTIONS.get(str(on_delete), "NO ACTION"),
            _PG_ACTIONS.get(str(on_update), "NO ACTION"),
        )
        for cschema, cname, pschema, pname, on_delete, on_update, ccols, pcols in fk_rows
    )

    uniques: list[UniqueConstraint] = []
    for schema, relname, index, contype, cols, exprs, predicate in index_rows:
        used = {c.lower() for c in cols}
        expressions: tuple[str, ...] = ()
        if exprs:
            expressions = (exprs,)
            used |= _columns_in(exprs)
        uniques.append(
            UniqueConstraint(
                index,
                canonical(schema, relname),
                frozenset(used),
                _PG_KINDS.get(str(contype), "unique index"),
                expressions,
                predicate,
            )
        )

    children: dict[str, set[str]] = {}
    for pschema, pname, cschema, cname in child_rows:
        children.setdefault(canonical(pschema, pname), set()).add(canonical(cschema, cname))

    return Catalog(
        backend="postgres",
        tables=frozenset(tables),
        columns=columns,
        views=views,
        triggers=tuple(triggers),
        foreign_keys=foreign_keys,
        uniques=tuple(uniques),
        rules=frozenset(canonical(s, r) for s, r in rule_rows),
        functions={k: tuple(v) for k, v in functions.items()},
        children={k: frozenset(v) for k, v in children.items()},
        aliases=aliases,
        search_schemas=search,
        fingerprint=str(fingerprint_rows[0][0]),
    )


def _run_batch(conn: Any, queries: Sequence[str]) -> list[list[tuple[Any, ...]]]:
    """All ``queries`` in one round trip: a pipeline (psycopg prepares what a connection repeats).

    Without pipeline support, one query at a time. A single multi-statement string would also be
    one round trip, but the simple protocol plans every query afresh: 4 times slower here.
    """
    import psycopg

    if not psycopg.Pipeline.is_supported():
        return [conn.execute(q).fetchall() for q in queries]
    with conn.pipeline():
        cursors = [conn.execute(q) for q in queries]
    return [cur.fetchall() for cur in cursors]


def _search_rank(search: tuple[str, ...], schema: str) -> int:
    return search.index(schema.lower()) if schema.lower() in search else len(search)


@lru_cache(maxsize=1024)
def _columns_in(expression: str) -> frozenset[str]:
    try:
        node = sqlglot.parse_one("SELECT " + expression, dialect="postgres")
    except Exception:
        return frozenset()
    return frozenset(c.name.lower() for c in node.find_all(exp.Column))


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
        conn = connection if connection is not None else _open_sqlite(full)
        try:
            hit = _cached(key, _sqlite_fingerprint(conn, full))
            return hit if hit is not None else _store(key, _read_sqlite(conn, full))
        finally:
            if connection is None:
                conn.close()
    raise TypeError(f"not a database handle (no .path or .dsn): {type(database).__name__}")


def _read_postgres_cached(key: tuple[str, str], conn: Any) -> Catalog:
    hit = _cached(key, _pg_fingerprint(conn))
    return hit if hit is not None else _store(key, _read_postgres(conn))


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
    for cached in (parse_body, function_body, _sqlite_trigger, _sqlite_index, _sqlite_view):
        cached.cache_clear()
    _columns_in.cache_clear()
