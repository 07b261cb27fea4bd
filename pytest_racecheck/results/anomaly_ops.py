"""The statements anomaly names read: each racer's operations and their transactions.

From a racer's steps as the reports hold them (its SQL and its times on one clock): what each
statement reads and writes (:mod:`pytest_racecheck.sql.effects`), the transaction it ran in
per connection (``BEGIN`` ... ``COMMIT``; a statement outside one commits alone), and when
that transaction committed. :mod:`pytest_racecheck.results.anomaly` finds the shapes in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_racecheck.sql.effects import (
    BEGIN,
    COMMIT,
    INSERT,
    ROLLBACK,
    Effect,
    effect,
    same_rows,
)


@dataclass
class Txn:
    racer: int
    committed: bool = False
    commit_at: float | None = None
    commit_step: int | None = None


@dataclass
class Op:
    racer: int
    step: int
    effect: Effect
    start: float
    end: float
    txn: Txn = field(repr=False, default_factory=lambda: Txn(-1))
    failed: bool = False

    @property
    def committed_at(self) -> float | None:
        if self.failed or not self.txn.committed:
            return None
        return self.txn.commit_at

    def ref(self) -> list[int]:
        return [self.racer, self.step]


def racer_ops(racer: dict[str, Any]) -> list[Op]:
    """A racer's statements with their transactions, from its steps."""
    number = racer["racer"]
    ops: list[Op] = []
    open_txns: dict[int, tuple[Txn, bool, list[Op]]] = {}  # conn: txn, explicit, its ops

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
            op.txn = Txn(number, True, op.end, op.step)

    for i, step in enumerate(racer.get("steps") or []):
        sql = step.get("sql")
        if not sql:
            continue
        start = step["at_ms"] + step["held_ms"]
        op = Op(number, i, effect(sql), start, start + step["ran_ms"])
        conn = step.get("conn", 0)
        kind = op.effect.kind
        if kind == BEGIN:
            if conn in open_txns:
                close(conn, False, None, None)
            open_txns[conn] = (Txn(number), True, [])
        elif kind in (COMMIT, ROLLBACK):
            if conn in open_txns:
                close(conn, kind == COMMIT, op.end, i, ended=True)
        else:
            if conn not in open_txns:
                open_txns[conn] = (Txn(number), False, [])
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


def overlap(read: Effect, write: Effect) -> bool:
    """Could the write change what the read saw? Same table, and not rows known to differ; an
    insert adds rows no key names yet, so it meets any read of its table."""
    if read.table is None or read.table != write.table:
        return False
    if write.kind == INSERT:
        return True
    return same_rows(read.rows, write.rows) is not False


def misses(read: Op, write: Op) -> bool:
    """The read ran before the other racer's write committed, and could have seen it."""
    at = write.committed_at
    return (
        read.racer != write.racer
        and at is not None
        and read.start < at
        and overlap(read.effect, write.effect)
    )


def writes_after(ops: Sequence[Op], read: Op) -> list[Op]:
    return [
        op
        for op in ops
        if op.effect.writes and op.start >= read.start and op.committed_at is not None
    ]


def describe(op: Op) -> str:
    e = op.effect
    rows = "" if not e.rows else " where " + " and ".join(f"{c}={v}" for c, v in e.rows)
    return f"racer {op.racer} {e.kind} {e.table}{rows}"


def commit_ref(op: Op) -> list[int]:
    step = op.txn.commit_step
    return [op.racer, op.step if step is None else step]
