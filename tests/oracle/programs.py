"""Small racer programs for the differential oracle: a seeded generator, and their interpreter.

A *program* is plain data (frozen dataclasses of strings and tuples, so it pickles by value
into the racers): 2 or 3 racers, each a few *steps*, run in autocommit or in one explicit
transaction. A step is one SQL statement (with its values as literals, so the statement's
text names them) or one action on a marker file in the race's own directory. The racer
function :func:`run_racer` interprets its racer's steps and returns what every step saw (rows
read, rows changed, or the error's name): two orders that read differently return
differently. Database errors become outcomes (``IntegrityError``, ``SerializationFailure``),
never a crash; after an error inside a transaction the racer rolls back and stops.

Families (what the steps may touch; every family writes and reads the same database):

``plain``
    the table ``items`` only, by primary key or by a literal name: everything the statement
    text says is all it does.
``view``
    reads through ``items_v`` (a view over ``items``) and ``items_vv`` (a view over that
    view), against writes of ``items``.
``trigger``
    writes of ``bookings``, whose triggers keep the counter table ``booked``; reads of
    ``booked``.
``fk``
    ``parent`` and ``child`` (``ON DELETE CASCADE``): deleting a parent deletes its children,
    inserting a child checks its parent.
``unique``
    ``accounts.email`` is unique: two updates of different rows collide when they set one
    value.
``cte`` (PostgreSQL)
    writable CTEs (``WITH c AS (UPDATE items ... RETURNING ...) SELECT ... FROM c``) against
    plain reads and writes of ``items``.
``function`` (PostgreSQL)
    ``SELECT claim_item(id, name)``, a PL/pgSQL function that checks then inserts, and
    ``SELECT named_count(name)``, an SQL function that reads, against plain statements.
``file``
    the statements of ``plain`` with marker-file actions (create with ``O_EXCL``, remove,
    check) between them. A file action runs right after the statement before it (it is part
    of that statement's step: a racer is held only at statements), never first.

Shapes left out, and why (each would make the full enumeration's outcomes depend on timing,
so a mismatch could not be told from luck):

- statements that read and then write through a query of their own in autocommit on
  PostgreSQL (``INSERT ... SELECT ... WHERE NOT EXISTS``, an ``UPDATE`` with a subquery): the
  reduced search releases two of them together, which is timing-dependent unless held, so the
  race is never exhausted;
- a PostgreSQL transaction that writes two rows another transaction may write in the other
  order (a deadlock, resolved after ``deadlock_timeout`` by whichever backend checks first):
  a transaction writes at most one row of each table and the tables in one fixed order;
- file actions before a racer's first statement (they would be part of its start, which
  explore orders by audit events, not by the steps modelled here).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("plain", "view", "trigger", "fk", "unique", "cte", "function", "file")
POSTGRES_ONLY = frozenset({"cte", "function"})
MARKERS = ("m1", "m2")


def families(backend: str) -> tuple[str, ...]:
    """The families a backend has (SQLite has no writable CTE and no stored functions)."""
    return tuple(f for f in FAMILIES if backend == "postgres" or f not in POSTGRES_ONLY)


# -- the schema ------------------------------------------------------------------------------

_TABLES = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL DEFAULT 0);
CREATE VIEW items_v AS SELECT id, name, qty FROM items WHERE qty >= 0;
CREATE VIEW items_vv AS SELECT name, count(*) AS n FROM items_v GROUP BY name;
CREATE TABLE bookings (id INTEGER PRIMARY KEY, slot INTEGER NOT NULL);
CREATE TABLE booked (slot INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE parent (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parent (id) ON DELETE CASCADE,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
"""

SQLITE_SCHEMA = (
    _TABLES
    + """
CREATE TRIGGER bookings_in AFTER INSERT ON bookings
BEGIN UPDATE booked SET n = n + 1 WHERE slot = NEW.slot; END;
CREATE TRIGGER bookings_out AFTER DELETE ON bookings
BEGIN UPDATE booked SET n = n - 1 WHERE slot = OLD.slot; END;
"""
)

POSTGRES_SCHEMA = (
    _TABLES
    + """
CREATE FUNCTION bookings_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE booked SET n = n + 1 WHERE slot = NEW.slot;
        RETURN NEW;
    END IF;
    UPDATE booked SET n = n - 1 WHERE slot = OLD.slot;
    RETURN OLD;
END $$;
CREATE TRIGGER bookings_in AFTER INSERT ON bookings
    FOR EACH ROW EXECUTE FUNCTION bookings_count();
CREATE TRIGGER bookings_out AFTER DELETE ON bookings
    FOR EACH ROW EXECUTE FUNCTION bookings_count();
CREATE FUNCTION claim_item(p_id integer, p_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM items WHERE name = p_name) THEN
        RETURN 'taken';
    END IF;
    INSERT INTO items (id, name) VALUES (p_id, p_name);
    RETURN 'claimed';
END $$;
CREATE FUNCTION named_count(p_name text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM items WHERE name = p_name
$$;
"""
)

TABLES = ("items", "bookings", "booked", "parent", "child", "accounts")
"""Every table, in an order that deletes children before parents."""

RESET = """
DELETE FROM child;
DELETE FROM parent;
DELETE FROM items;
DELETE FROM bookings;
DELETE FROM booked;
DELETE FROM accounts;
INSERT INTO items (id, name, qty) VALUES (1, 'a', 0), (2, 'b', 0), (3, 'a', 1);
INSERT INTO booked (slot, n) VALUES (1, 0), (2, 0);
INSERT INTO bookings (id, slot) VALUES (1, 1), (2, 2);
INSERT INTO parent (id, label) VALUES (1, 'p1'), (2, 'p2');
INSERT INTO child (id, parent_id) VALUES (1, 1), (2, 2);
INSERT INTO accounts (id, email) VALUES (1, 'p'), (2, 'q');
"""
"""Every round starts from these rows (``booked`` counts ``bookings``: the triggers keep it)."""


def create_schema(db: Any) -> None:
    db.executescript(POSTGRES_SCHEMA if db.backend == "postgres" else SQLITE_SCHEMA)


def reset(db: Any, workdir: str) -> None:
    """Put the tables and the marker files back as every round starts (the test process).

    In one transaction: on SQLite a commit per statement would cost a sync each."""
    db.executescript(f"BEGIN;{RESET}COMMIT;")
    for marker in MARKERS:
        Path(workdir, marker).unlink(missing_ok=True)


def final_state(db: Any, workdir: str) -> tuple[Any, ...]:
    """Every table's rows, sorted, and the marker files that exist: what a round left."""
    tables = tuple(
        (table, tuple(sorted(tuple(map(str, row)) for row in db.execute(f"SELECT * FROM {table}"))))
        for table in TABLES
    )
    files = tuple(m for m in MARKERS if Path(workdir, m).exists())
    return (*tables, ("files", files))


# -- programs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One statement (``kind`` "sql") or one marker-file action (``kind`` "touch", "remove",
    "exists", ``text`` the marker's name)."""

    kind: str
    text: str

    def show(self) -> str:
        return self.text if self.kind == "sql" else f"[{self.kind} {self.text}]"


@dataclass(frozen=True)
class RacerProgram:
    """One racer's steps; ``begin`` is empty (autocommit) or the statement that opens the one
    transaction the steps run in (``COMMIT`` ends it)."""

    steps: tuple[Step, ...]
    begin: str = ""

    def points(self, backend: str, family: str) -> int:
        """The statements this racer sends when nothing fails: explore's points."""
        statements = sum(1 for s in self.steps if s.kind == "sql")
        pragma = int(backend == "sqlite" and family == "fk")
        return statements + pragma + (2 if self.begin else 0)


@dataclass(frozen=True)
class Program:
    family: str
    backend: str
    seed: int
    racers: tuple[RacerProgram, ...]

    def orders(self) -> int:
        """Interleavings of the racers' points, one racer at a time (when nothing fails)."""
        counts = [r.points(self.backend, self.family) for r in self.racers]
        return math.factorial(sum(counts)) // math.prod(math.factorial(c) for c in counts)

    def show(self) -> str:
        lines = [f"program {self.family}/{self.backend} seed {self.seed}:"]
        for i, racer in enumerate(self.racers):
            body = "; ".join(s.show() for s in racer.steps)
            lines.append(
                f"  racer {i}: " + (f"{racer.begin}; {body}; COMMIT" if racer.begin else body)
            )
        return "\n".join(lines)


def _sql(text: str) -> Step:
    return Step("sql", text)


# Statements by family: what they touch is in the docstring above. Writes use ids and values
# that two racers can collide on (the same id, the same email), reads return what they saw.
_PLAIN_READS = (
    "SELECT qty FROM items WHERE id = 1",
    "SELECT qty FROM items WHERE id = 2",
    "SELECT count(*) FROM items WHERE name = 'a'",
    "SELECT id FROM items WHERE name = 'c'",
)
_PLAIN_WRITES = (
    "UPDATE items SET qty = qty + 1 WHERE id = 1",
    "UPDATE items SET qty = qty * 2 WHERE id = 2",
    "INSERT INTO items (id, name) VALUES (10, 'c')",
    "INSERT INTO items (id, name) VALUES (11, 'a')",
    "DELETE FROM items WHERE id = 3",
    "UPDATE items SET name = 'c' WHERE id = 2",
)
_FAMILY_STEPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # (the statements whose effect the text does not show, the ones they race with)
    "plain": (_PLAIN_READS, _PLAIN_WRITES),
    "view": (
        (
            "SELECT count(*) FROM items_v WHERE name = 'a'",
            "SELECT n FROM items_vv WHERE name = 'c'",
            "SELECT qty FROM items_v WHERE id = 1",
        ),
        (
            "INSERT INTO items (id, name) VALUES (11, 'a')",
            "INSERT INTO items (id, name) VALUES (10, 'c')",
            "UPDATE items SET qty = qty + 1 WHERE id = 1",
            "UPDATE items SET qty = -1 WHERE id = 3",
            "DELETE FROM items WHERE id = 3",
        ),
    ),
    "trigger": (
        ("SELECT n FROM booked WHERE slot = 1", "SELECT sum(n) FROM booked"),
        (
            "INSERT INTO bookings (id, slot) VALUES (10, 1)",
            "INSERT INTO bookings (id, slot) VALUES (11, 1)",
            "DELETE FROM bookings WHERE id = 1",
            "SELECT count(*) FROM bookings WHERE slot = 1",
        ),
    ),
    "fk": (
        ("DELETE FROM parent WHERE id = 1", "SELECT label FROM parent WHERE id = 1"),
        (
            "SELECT count(*) FROM child WHERE parent_id = 1",
            "SELECT note FROM child WHERE id = 1",
            "INSERT INTO child (id, parent_id) VALUES (10, 1)",
            "UPDATE child SET note = 'x' WHERE id = 1",
        ),
    ),
    "unique": (
        (
            "UPDATE accounts SET email = 'x' WHERE id = 1",
            "UPDATE accounts SET email = 'p' WHERE id = 1",
        ),
        (
            "UPDATE accounts SET email = 'x' WHERE id = 2",
            "UPDATE accounts SET email = 'q' WHERE id = 2",
            "SELECT email FROM accounts WHERE id = 2",
        ),
    ),
    "cte": (
        (
            "WITH c AS (UPDATE items SET qty = qty + 1 WHERE id = 1 RETURNING qty) "
            "SELECT qty FROM c",
            "WITH c AS (DELETE FROM items WHERE id = 3 RETURNING id) SELECT count(*) FROM c",
        ),
        (
            "SELECT qty FROM items WHERE id = 1",
            "SELECT count(*) FROM items WHERE name = 'a'",
            "WITH c AS (UPDATE items SET qty = qty + 1 WHERE id = 1 RETURNING qty) "
            "SELECT qty FROM c",
            "UPDATE items SET qty = qty * 2 WHERE id = 1",
        ),
    ),
    "function": (
        ("SELECT claim_item(10, 'c')", "SELECT named_count('c')", "SELECT named_count('a')"),
        (
            "SELECT claim_item(11, 'c')",
            "INSERT INTO items (id, name) VALUES (12, 'c')",
            "SELECT id FROM items WHERE name = 'c'",
            "DELETE FROM items WHERE id = 3",
        ),
    ),
    "file": (_PLAIN_READS, _PLAIN_WRITES),
}
_FILE_ACTIONS = ("touch", "remove", "exists")


def _begins(backend: str) -> tuple[str, ...]:
    if backend == "sqlite":
        return ("BEGIN", "BEGIN IMMEDIATE")
    return ("BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ")


_V_A = "SELECT count(*) FROM items_v WHERE name = 'a'"
_V_C = "SELECT n FROM items_vv WHERE name = 'c'"
_V_1 = "SELECT qty FROM items_v WHERE id = 1"
_CTE_1 = "WITH c AS (UPDATE items SET qty = qty + 1 WHERE id = 1 RETURNING qty) SELECT qty FROM c"
_CTE_3 = "WITH c AS (DELETE FROM items WHERE id = 3 RETURNING id) SELECT count(*) FROM c"
_CHECK_C = "SELECT id FROM items WHERE name = 'c'"
_FOCUS: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = {
    # Per family, the cores a program is built around: racer 0's steps and racer 1's, in
    # their order, such that some interleaving gives what neither serial order gives (a read
    # between two writes, a write between two reads). "@touch m1" is a file action.
    "plain": (
        ((_CHECK_C, "INSERT INTO items (id, name) VALUES (10, 'c')"),
         (_CHECK_C, "INSERT INTO items (id, name) VALUES (11, 'c')")),
        (("SELECT qty FROM items WHERE id = 1", "UPDATE items SET qty = qty + 1 WHERE id = 1"),
         ("SELECT qty FROM items WHERE id = 1", "UPDATE items SET qty = qty + 1 WHERE id = 1")),
        (("SELECT count(*) FROM items WHERE name = 'a'",) * 2,
         ("INSERT INTO items (id, name) VALUES (11, 'a')",)),
    ),
    "view": (
        ((_V_A, _V_A), ("INSERT INTO items (id, name) VALUES (11, 'a')",)),
        ((_V_A, _V_A), ("UPDATE items SET qty = -1 WHERE id = 3",)),
        ((_V_C, _V_C), ("INSERT INTO items (id, name) VALUES (10, 'c')",)),
        ((_V_1, _V_1), ("UPDATE items SET qty = qty + 1 WHERE id = 1",)),
    ),
    "trigger": (
        (("SELECT n FROM booked WHERE slot = 1",) * 2,
         ("INSERT INTO bookings (id, slot) VALUES (10, 1)",)),
        (("SELECT sum(n) FROM booked",) * 2, ("DELETE FROM bookings WHERE id = 1",)),
    ),
    "fk": (
        (("DELETE FROM parent WHERE id = 1",),
         ("SELECT count(*) FROM child WHERE parent_id = 1",) * 2),
        (("DELETE FROM parent WHERE id = 1",), ("SELECT note FROM child WHERE id = 1",) * 2),
    ),
    "unique": (
        (("UPDATE accounts SET email = 'x' WHERE id = 1",
          "UPDATE accounts SET email = 'p' WHERE id = 1"),
         ("UPDATE accounts SET email = 'x' WHERE id = 2",)),
    ),
    "cte": (
        ((_CTE_1,), ("SELECT qty FROM items WHERE id = 1",) * 2),
        ((_CTE_1, _CTE_1), ("SELECT qty FROM items WHERE id = 1",)),
        ((_CTE_3,), ("SELECT count(*) FROM items WHERE name = 'a'",) * 2),
    ),
    "function": (
        (("SELECT claim_item(10, 'c')",), ("SELECT named_count('c')",) * 2),
        (("SELECT claim_item(10, 'c')",), ("SELECT claim_item(11, 'c')", _CHECK_C)),
    ),
    "file": (
        (("SELECT qty FROM items WHERE id = 1", "@touch m1", _CHECK_C, "@remove m1"),
         ("SELECT qty FROM items WHERE id = 2", "@exists m1")),
        (("SELECT qty FROM items WHERE id = 1", "@touch m1"),
         ("SELECT qty FROM items WHERE id = 2", "@touch m1")),
        (("SELECT qty FROM items WHERE id = 1", "@exists m1", _CHECK_C, "@exists m1"),
         ("SELECT qty FROM items WHERE id = 2", "@touch m1")),
    ),
}  # fmt: skip


def _step(text: str) -> Step:
    if text.startswith("@"):
        kind, marker = text[1:].split()
        return Step(kind, marker)
    return _sql(text)


def _racer(
    rng: random.Random, family: str, backend: str, core: tuple[str, ...], index: int
) -> RacerProgram:
    """One racer: its ``core`` steps in their order, with statements of the family drawn at
    random around them (2 to 5 steps in all; racer 0 mostly from the statements whose effect
    the text does not show, the others mostly from those they race with), in autocommit or in
    one transaction (three racers in ten; in the catalog families, three in twenty)."""
    shown, other = _FAMILY_STEPS[family]
    mine, theirs = (shown, other) if index == 0 else (other, shown)
    if family == "plain":
        mine = theirs = shown + other
    elif family == "file":  # mostly reads, which commute by their text (the files do not)
        mine, theirs = shown, other
    size = max(len(core), rng.choices((2, 3, 4, 5), weights=(4, 3, 2, 1))[0])
    steps = [_step(t) for t in core]
    while len(steps) < size:
        extra = _sql(rng.choice(mine if rng.random() < 0.8 else theirs))
        # after the first step: a file action stays after a statement
        steps.insert(
            rng.randint(1, len(steps)) if family == "file" else rng.randint(0, len(steps)), extra
        )
    # A transaction hides most catalog gaps (its COMMIT conflicts with everything): fewer there.
    chance = 0.3 if family in ("plain", "function", "file") else 0.15
    begin = rng.choice(_begins(backend)) if rng.random() < chance else ""
    return RacerProgram(tuple(steps), begin)


def _safe(program: Program) -> bool:
    """Shapes left out (see the module's docstring)."""
    if program.backend != "postgres":
        return True
    for racer in program.racers:
        if not racer.begin:
            continue
        # a PostgreSQL transaction writes a table's rows at most once and the tables in one
        # order: no two transactions wait for each other in a cycle
        written: list[str] = []
        for step in racer.steps:
            if step.kind != "sql":
                continue
            table = _written_table(step.text)
            if table is None:
                continue
            if table in written:
                return False
            written.append(table)
        order = [t for t in _LOCK_ORDER if t in written]
        if written != order:
            return False
    return True


_LOCK_ORDER = ("parent", "child", "items", "bookings", "accounts")


def _written_table(sql: str) -> str | None:
    words = sql.replace("(", " ").split()
    verb = words[0].upper()
    if verb == "UPDATE":
        return words[1]
    if verb in ("INSERT", "DELETE"):
        return words[2]
    if verb == "WITH":
        return words[words.index("AS") + 2] if "UPDATE" in words else "items"
    if "claim_item" in sql:
        return "items"
    return None


MAX_ORDERS = 90
"""At most this many interleavings (one racer at a time) a program: a full enumeration of one
is then a few seconds."""


def generate(family: str, backend: str, seed: int, max_orders: int = MAX_ORDERS) -> Program:
    """The program of ``seed``: the same arguments give the same program, on any machine.

    2 racers (3 in one program of five), 2 to 5 steps each (fewer more often), built around one
    of the family's cores (:data:`_FOCUS`; a third racer gets one side of another core), redrawn
    until its interleavings (one racer at a time) are at most ``max_orders``, so that their
    full enumeration is cheap.
    """
    if family not in families(backend):
        raise ValueError(f"{backend} has no family {family!r}")
    rng = random.Random(f"{family}/{backend}/{seed}")
    while True:
        count = 3 if rng.random() < 0.2 else 2
        first, second = rng.choice(_FOCUS[family])
        third = rng.choice(rng.choice(_FOCUS[family]))
        cores = (first, second, third)
        racers = tuple(_racer(rng, family, backend, cores[i], i) for i in range(count))
        program = Program(family, backend, seed, racers)
        if program.orders() <= max_orders and _safe(program):
            return program


def programs(
    family: str, backend: str, count: int, first_seed: int = 0, max_orders: int = MAX_ORDERS
) -> list[Program]:
    return [generate(family, backend, first_seed + i, max_orders) for i in range(count)]


# -- the racer -------------------------------------------------------------------------------


def _error_name(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f"({sqlstate})" if sqlstate else "")


def _file_action(kind: str, path: Path) -> str:
    if kind == "touch":
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return "created"
        except FileExistsError:
            return "existed"
    if kind == "remove":
        try:
            path.unlink()
            return "removed"
        except FileNotFoundError:
            return "absent"
    return "present" if path.exists() else "absent"


def _run(cursor_of: Any, sql: str) -> str:
    cur = cursor_of(sql)
    if cur.description is not None:
        return repr([tuple(row) for row in cur.fetchall()])
    return f"{cur.rowcount} row(s)"


def run_racer(db: Any, program: Program, workdir: str) -> tuple[str, ...]:
    """The raced function: run this racer's steps, return what each saw."""
    from pytest_racecheck import current_racer

    me = program.racers[current_racer() or 0]
    seen: list[str] = []
    conn = db.connect()  # SQLite: autocommit (isolation_level=None); psycopg: autocommit=True
    try:
        execute = conn.execute
        if program.backend == "sqlite" and program.family == "fk":
            execute("PRAGMA foreign_keys = ON")
        if me.begin:
            execute(me.begin)
        for step in me.steps:
            if step.kind != "sql":
                seen.append(_file_action(step.kind, Path(workdir, step.text)))
                continue
            try:
                seen.append(_run(execute, step.text))
            except Exception as exc:
                if not _is_database_error(exc):
                    raise
                seen.append(_error_name(exc))
                if me.begin:
                    execute("ROLLBACK")
                    return (*seen, "rolled back")
        if me.begin:
            try:
                execute("COMMIT")
                seen.append("committed")
            except Exception as exc:
                if not _is_database_error(exc):
                    raise
                seen.append(_error_name(exc))
                execute("ROLLBACK")
        return tuple(seen)
    finally:
        conn.close()


def _is_database_error(exc: BaseException) -> bool:
    import sqlite3

    if isinstance(exc, sqlite3.DatabaseError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite only
        return False
    return isinstance(exc, psycopg.DatabaseError)


def describe(programs: Sequence[Program]) -> str:
    return "\n".join(p.show() for p in programs)
