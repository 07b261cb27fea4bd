"""Name the anomaly of a failing round from its statements, when it has a standard shape.

Input is the round as the reports hold it (:meth:`RaceResult.summary`'s ``first_failure``):
each racer's steps with their SQL and their times on one clock. From them: each racer's
transactions per connection (``BEGIN`` ... ``COMMIT``; a statement outside one commits alone),
what each statement reads and writes (:mod:`pytest_racecheck.sql.effects`: table, and
the rows where the ``WHERE`` clause names them), and when each write committed.

The shapes, in the words of Adya's taxonomy as Elle uses it (A. Adya, "Weak Consistency: A
Generalized Theory and Optimistic Implementations for Distributed Transactions", MIT PhD
thesis, 1999; K. Kingsbury and P. Alvaro, "Elle: Inferring Isolation Anomalies from
Experimental Observations", VLDB 2020) and of H. Berenson et al., "A Critique of ANSI SQL
Isolation Levels", SIGMOD 1995. A read *misses* a write when it ran before that write
committed (an anti-dependency, Adya's rw edge):

``phantom``
    Two racers each read a table and then inserted into it, each read missing the other's
    insert: a check-then-act that inserted twice (G2, an anti-dependency cycle through
    predicate reads).
``lost update``
    A racer read a row, another racer's write to that row committed, then the first racer
    wrote the row too, overwriting it unseen (P4 in Berenson et al.; in Elle, ``lost-update``).
``write skew``
    Two racers each read what the other then wrote, but wrote different rows (G2-item: a
    cycle of item anti-dependencies; A5B in Berenson et al.).
``stale read``
    A racer acted on a row (wrote elsewhere, or, if it writes nothing, returned) after another
    racer's write to that row had committed, having read it before (a single anti-dependency
    the racer acted on: G-single when the writer also depends on the reader, read skew
    otherwise).
``lock released before commit``
    A racer released a lock (a session advisory lock, or a lock row it inserted and deleted)
    before its own writes under that lock committed, and another racer took the lock and read
    those tables in between: the lock did not cover the commit. Not one of Adya's phenomena,
    but the implementation slip most often behind one.

Anything else is ``unclassified``: the name is given only when the statements show the shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_racecheck.results.hermitage import hermitage, hermitage_line
from pytest_racecheck.sql.effects import (
    BEGIN,
    COMMIT,
    DELETE,
    INSERT,
    LOCK,
    ROLLBACK,
    UNLOCK,
    UPDATE,
    Effect,
    effect,
    same_rows,
)

PHANTOM = "phantom"
LOST_UPDATE = "lost update"
WRITE_SKEW = "write skew"
STALE_READ = "stale read"
LOCK_RELEASED_EARLY = "lock released before commit"
UNCLASSIFIED = "unclassified"

ADYA = {
    PHANTOM: "Adya G2: an anti-dependency cycle through predicate reads",
    LOST_UPDATE: "Berenson P4, Elle lost-update",
    WRITE_SKEW: "Adya G2-item: an anti-dependency cycle on rows",
    STALE_READ: "Adya G-single or read skew: one anti-dependency acted on",
    LOCK_RELEASED_EARLY: "no Adya phenomenon of its own: the lock did not cover the commit",
    UNCLASSIFIED: None,
}


@dataclass
class _Txn:
    racer: int
    committed: bool = False
    commit_at: float | None = None
    commit_step: int | None = None


@dataclass
class _Op:
    racer: int
    step: int
    effect: Effect
    start: float
    end: float
    txn: _Txn = field(repr=False, default_factory=lambda: _Txn(-1))
    failed: bool = False

    @property
    def committed_at(self) -> float | None:
        if self.failed or not self.txn.committed:
            return None
        return self.txn.commit_at

    def ref(self) -> list[int]:
        return [self.racer, self.step]


def _ops(racer: dict[str, Any]) -> list[_Op]:
    """A racer's statements with their transactions, from its steps."""
    number = racer["racer"]
    ops: list[_Op] = []
    open_txns: dict[int, tuple[_Txn, bool, list[_Op]]] = {}  # conn: txn, explicit, its ops

    def close(
        conn: int, committed: bool, at: float | None, step: int | None, ended: bool = False
    ) -> None:
        txn, explicit, members = open_txns.pop(conn)
        # A COMMIT or ROLLBACK the racer sent ends a transaction, even one whose BEGIN the
        # driver sent unseen: a rollback (psycopg's, after an error) undoes its statements.
        if committed or explicit or ended:
            txn.committed, txn.commit_at, txn.commit_step = committed, at, step
            return
        for op in members:  # never committed nor begun: each statement committed alone
            op.txn = _Txn(number, True, op.end, op.step)

    for i, step in enumerate(racer.get("steps") or []):
        sql = step.get("sql")
        if not sql:
            continue
        start = step["at_ms"] + step["held_ms"]
        op = _Op(number, i, effect(sql), start, start + step["ran_ms"])
        conn = step.get("conn", 0)
        kind = op.effect.kind
        if kind == BEGIN:
            if conn in open_txns:
                close(conn, False, None, None)
            open_txns[conn] = (_Txn(number), True, [])
        elif kind in (COMMIT, ROLLBACK):
            if conn in open_txns:
                close(conn, kind == COMMIT, op.end, i, ended=True)
        else:
            if conn not in open_txns:
                open_txns[conn] = (_Txn(number), False, [])
            txn, _, members = open_txns[conn]
            op.txn = txn
            members.append(op)
        ops.append(op)
    for conn in list(open_txns):  # begun and never committed; or each statement alone
        close(conn, False, None, None)
    if racer.get("error"):  # the statement it raised in changed nothing
        last = next((op for op in reversed(ops)), None)
        if last is not None and (last.effect.writes or last.effect.kind == COMMIT):
            last.failed = True
            if last.effect.kind == COMMIT:
                last.txn.committed = False
            for op in ops:
                if op.txn is last.txn:
                    op.failed = True
    return ops


def _overlap(read: Effect, write: Effect) -> bool:
    """Could the write change what the read saw? Same table, and not rows known to differ; an
    insert adds rows no key names yet, so it meets any read of its table."""
    if read.table is None or read.table != write.table:
        return False
    if write.kind == INSERT:
        return True
    return same_rows(read.rows, write.rows) is not False


def _misses(read: _Op, write: _Op) -> bool:
    """The read ran before the other racer's write committed, and could have seen it."""
    at = write.committed_at
    return (
        read.racer != write.racer
        and at is not None
        and read.start < at
        and _overlap(read.effect, write.effect)
    )


def _writes_after(ops: Sequence[_Op], read: _Op) -> list[_Op]:
    return [
        op
        for op in ops
        if op.effect.writes and op.start >= read.start and op.committed_at is not None
    ]


def _result(
    name: str,
    why: str,
    refs: Iterable[list[int]],
    mark: list[int],
    ops: Sequence[_Op] = (),
) -> dict[str, Any]:
    """The named anomaly; ``ops`` are the statements that make it, to tell whether each
    racer's were in one transaction (an isolation level can then prevent it)."""
    txns: dict[int, set[int]] = {}
    for op in ops:
        txns.setdefault(op.racer, set()).add(id(op.txn))
    one_transaction = all(len(t) == 1 for t in txns.values())
    return {
        "name": name,
        "adya": ADYA[name],
        "why": why,
        "steps": sorted({tuple(r) for r in refs}),
        "marked": mark,
        **hermitage(name, one_transaction),
    }


def _describe(op: _Op) -> str:
    e = op.effect
    rows = "" if not e.rows else " where " + " and ".join(f"{c}={v}" for c, v in e.rows)
    return f"racer {op.racer} {e.kind} {e.table}{rows}"


def _lock_released_early(by_racer: dict[int, list[_Op]]) -> dict[str, Any] | None:
    def locks(ops: list[_Op]) -> tuple[list[tuple[str, _Op]], list[tuple[str, _Op]]]:
        """(key, op) of the locks a racer took and released; a lock row is a row of a table
        the racer inserted into and deleted from in the round."""
        taken, released = [], []
        inserted = {op.effect.table for op in ops if op.effect.kind == INSERT}
        deleted = {op.effect.table for op in ops if op.effect.kind == DELETE}
        rows = inserted & deleted
        for op in ops:
            e = op.effect
            if e.kind in (LOCK, UNLOCK):
                (taken if e.kind == LOCK else released).append((f"advisory {e.lock_key}", op))
            elif e.table in rows and e.kind in (INSERT, DELETE) and op.committed_at is not None:
                (taken if e.kind == INSERT else released).append((f"row of {e.table}", op))
        return taken, released

    def when(op: _Op) -> float:
        at = op.committed_at if op.effect.kind in (INSERT, DELETE) else op.end
        return op.end if at is None else at

    held = {r: locks(ops) for r, ops in by_racer.items()}
    for a, ops in by_racer.items():
        for key, release in held[a][1]:
            released_at = when(release)
            late = [
                op
                for op in ops
                if op.effect.writes
                and op.start < released_at
                and (op.committed_at or 0) > released_at
                and not key.endswith(f"of {op.effect.table}")
            ]
            for b, other_ops in by_racer.items():
                if b == a:
                    continue
                for other_key, take in held[b][0]:
                    taken_at = when(take)
                    if other_key != key:
                        continue
                    for write in late:
                        commit = write.committed_at or 0
                        if not released_at <= taken_at < commit:
                            continue
                        reads = [
                            op
                            for op in other_ops
                            if op.effect.reads
                            and taken_at <= op.start < commit
                            and _overlap(op.effect, write.effect)
                        ]
                        if reads:
                            assert write.txn.commit_step is not None
                            commit_ref = [a, write.txn.commit_step]
                            return _result(
                                LOCK_RELEASED_EARLY,
                                f"racer {a} released the lock ({key}) before its "
                                f"{write.effect.kind} into {write.effect.table} committed; "
                                f"racer {b} took the lock and read {write.effect.table} "
                                "in between",
                                [
                                    release.ref(),
                                    write.ref(),
                                    commit_ref,
                                    take.ref(),
                                    reads[0].ref(),
                                ],
                                commit_ref,
                            )
    return None


def _commit_ref(op: _Op) -> list[int]:
    step = op.txn.commit_step
    return [op.racer, op.step if step is None else step]


def classify(round_data: dict[str, Any]) -> dict[str, Any]:
    """The anomaly of a round (``first_failure`` of a race's summary): its name, Adya's
    phenomenon, why, the steps that make it ``[racer, step index]`` and the step to mark."""
    by_racer = {r["racer"]: _ops(r) for r in round_data.get("racers") or []}
    found = _lock_released_early(by_racer)
    if found is not None:
        return found
    candidates: list[tuple[int, dict[str, Any]]] = []
    order = [PHANTOM, LOST_UPDATE, WRITE_SKEW, STALE_READ]
    racers = {r["racer"]: r for r in round_data.get("racers") or []}
    for a, ops_a in by_racer.items():
        for read_a in (op for op in ops_a if op.effect.reads and not op.failed):
            mine = _writes_after(ops_a, read_a)
            for b, ops_b in by_racer.items():
                if b == a:
                    continue
                for write_b in (op for op in ops_b if op.effect.writes):
                    if not _misses(read_a, write_b):
                        continue
                    b_at = write_b.committed_at or 0
                    # lost update: a wrote the same row after b's write committed unseen
                    for write_a in mine:
                        same = same_rows(write_a.effect.rows, write_b.effect.rows)
                        if (
                            write_a.effect.kind in (UPDATE, DELETE)
                            and write_b.effect.kind in (UPDATE, DELETE)
                            and write_a.effect.table == write_b.effect.table
                            and same is not False
                            and _overlap(read_a.effect, write_a.effect)
                            and (write_a.committed_at or 0) > b_at
                        ):
                            candidates.append(
                                (
                                    order.index(LOST_UPDATE),
                                    _result(
                                        LOST_UPDATE,
                                        f"{_describe(read_a)}, then {_describe(write_b)} "
                                        f"committed, then racer {a} wrote the same row over it",
                                        [read_a.ref(), write_b.ref(), write_a.ref()],
                                        _commit_ref(write_a),
                                        [read_a, write_a],
                                    ),
                                )
                            )
                    # a cycle: b also read what a wrote, before a's write committed
                    for read_b in (op for op in ops_b if op.effect.reads and not op.failed):
                        if read_b.start > write_b.start:
                            continue
                        for write_a in mine:
                            if not _misses(read_b, write_a):
                                continue
                            inserts = write_a.effect.kind == write_b.effect.kind == INSERT
                            name = PHANTOM if inserts else WRITE_SKEW
                            if name == WRITE_SKEW and (
                                write_a.effect.table == write_b.effect.table
                                and same_rows(write_a.effect.rows, write_b.effect.rows) is not False
                            ):
                                continue  # same rows written: a lost update, found above
                            last = max((write_a, write_b), key=lambda op: op.committed_at or 0)
                            why = (
                                f"racers {min(a, b)} and {max(a, b)} each read "
                                f"{read_a.effect.table} before the other's insert committed, "
                                "and both inserted"
                                if inserts
                                else f"{_describe(read_a)} and {_describe(read_b)}, each "
                                "before the other's write committed; they wrote "
                                f"{_describe(write_a).split(' ', 2)[2]} and "
                                f"{_describe(write_b).split(' ', 2)[2]}"
                            )
                            candidates.append(
                                (
                                    order.index(name),
                                    _result(
                                        name,
                                        why,
                                        [read_a.ref(), read_b.ref(), write_a.ref(), write_b.ref()],
                                        _commit_ref(last),
                                        [read_a, read_b, write_a, write_b],
                                    ),
                                )
                            )
                    # stale read: a acted after b's commit, on what it read before it
                    if any(_overlap(read_a.effect, w.effect) for w in mine):
                        continue
                    acted = [w for w in mine if (w.committed_at or 0) > b_at]
                    outcome = racers[a]
                    end = outcome["released_ms"] + outcome["took_ms"]
                    reader = not any(op.effect.writes for op in ops_a)  # wrote nothing at all
                    if acted or (reader and not outcome.get("error") and end > b_at):
                        mark = _commit_ref(acted[0]) if acted else [a, len(racers[a]["steps"])]
                        what = f"then wrote {acted[0].effect.table}" if acted else "then returned"
                        candidates.append(
                            (
                                order.index(STALE_READ),
                                _result(
                                    STALE_READ,
                                    f"{_describe(read_a)}; {_describe(write_b)} committed; "
                                    f"racer {a} {what} on what it had read",
                                    [read_a.ref(), write_b.ref(), *(w.ref() for w in acted[:1])],
                                    mark,
                                    [read_a, *acted[:1], *_reads_of(ops_a, read_a, acted)],
                                ),
                            )
                        )
    if candidates:
        return min(candidates, key=lambda c: c[0])[1]
    none = {"name": UNCLASSIFIED, "adya": None, "why": None, "steps": [], "marked": None}
    return {**none, **hermitage(UNCLASSIFIED, one_transaction=False)}


def _reads_of(ops: Sequence[_Op], read: _Op, acted: Sequence[_Op]) -> list[_Op]:
    """A reader that wrote nothing (read skew): its other reads, which its stale read was
    combined with; they must share the stale read's transaction for a level to help."""
    if acted:
        return []
    return [op for op in ops if op.effect.reads and not op.failed and op is not read]


def summary_line(anomaly: dict[str, Any]) -> str:
    """One line for the terminal: the name, and why when it is named."""
    if anomaly["name"] == UNCLASSIFIED:
        return "anomaly: unclassified (the statements show none of the standard shapes)"
    line = f"anomaly: {anomaly['name']} ({anomaly['adya']}): {anomaly['why']}"
    return line + hermitage_line(anomaly)
