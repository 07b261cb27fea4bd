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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_racecheck.results.anomaly_ops import (
    Op,
    commit_ref,
    describe,
    misses,
    overlap,
    racer_ops,
    writes_after,
)
from pytest_racecheck.results.hermitage import hermitage, hermitage_line
from pytest_racecheck.sql.effects import DELETE, INSERT, LOCK, UNLOCK, UPDATE, same_rows

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

ORDER = [PHANTOM, LOST_UPDATE, WRITE_SKEW, STALE_READ]
"""The name a round gets when its statements show more than one of these shapes: the first
here. A lock released before commit is looked for before any of them."""


def _result(
    name: str,
    why: str,
    refs: Iterable[list[int]],
    mark: list[int],
    ops: Sequence[Op] = (),
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


def _locks(ops: list[Op]) -> tuple[list[tuple[str, Op]], list[tuple[str, Op]]]:
    """(key, op) of the locks a racer took and released; a lock row is a row of a table the
    racer inserted into and deleted from in the round."""
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


def _lock_moment(op: Op) -> float:
    """When a lock was taken or released: a lock row's insert or delete when it committed."""
    at = op.committed_at if op.effect.kind in (INSERT, DELETE) else op.end
    return op.end if at is None else at


def _uncovered(ops: list[Op], key: str, released_at: float) -> list[Op]:
    """A racer's writes begun before it released the lock and committed after it (the lock
    row's own table aside): the lock did not cover their commit."""
    return [
        op
        for op in ops
        if op.effect.writes
        and op.start < released_at
        and (op.committed_at or 0) > released_at
        and not key.endswith(f"of {op.effect.table}")
    ]


def _read_in_between(
    key: str, release: Op, uncovered: list[Op], take: Op, taker_ops: list[Op]
) -> dict[str, Any] | None:
    """The other racer took the lock after it was released and before an uncovered write
    committed, and read what that write changed in between: the first such write and read."""
    released_at, taken_at = _lock_moment(release), _lock_moment(take)
    for write in uncovered:
        commit = write.committed_at or 0
        if not released_at <= taken_at < commit:
            continue
        reads = [
            op
            for op in taker_ops
            if op.effect.reads
            and taken_at <= op.start < commit
            and overlap(op.effect, write.effect)
        ]
        if reads:
            return _lock_result(key, release, write, take, reads[0])
    return None


def _lock_result(key: str, release: Op, write: Op, take: Op, read: Op) -> dict[str, Any]:
    a, b = release.racer, take.racer
    assert write.txn.commit_step is not None
    committed = [a, write.txn.commit_step]
    return _result(
        LOCK_RELEASED_EARLY,
        f"racer {a} released the lock ({key}) before its "
        f"{write.effect.kind} into {write.effect.table} committed; "
        f"racer {b} took the lock and read {write.effect.table} "
        "in between",
        [release.ref(), write.ref(), committed, take.ref(), read.ref()],
        committed,
    )


def _lock_released_early(by_racer: dict[int, list[Op]]) -> dict[str, Any] | None:
    """A lock one racer released before its writes under it committed, which another racer
    took and then read what those writes changed before they committed."""
    held = {r: _locks(ops) for r, ops in by_racer.items()}
    for a, ops in by_racer.items():
        for key, release in held[a][1]:
            uncovered = _uncovered(ops, key, _lock_moment(release))
            for b, taker_ops in by_racer.items():
                if b == a:
                    continue
                for taken_key, take in held[b][0]:
                    if taken_key != key:
                        continue
                    found = _read_in_between(key, release, uncovered, take, taker_ops)
                    if found is not None:
                        return found
    return None


@dataclass(frozen=True)
class _Missed:
    """A read of racer a that ran before racer b's write to what it read committed."""

    read: Op  # a's read
    write: Op  # b's write, committed after the read began
    mine: list[Op]  # a's writes from the read on, committed
    ops_a: list[Op]
    ops_b: list[Op]


def _missed_writes(by_racer: dict[int, list[Op]]) -> Iterator[_Missed]:
    """Every read of one racer paired with each other racer's write it missed (an
    anti-dependency), reads and writes in the order the racers ran them."""
    for a, ops_a in by_racer.items():
        for read_a in (op for op in ops_a if op.effect.reads and not op.failed):
            mine = writes_after(ops_a, read_a)
            for b, ops_b in by_racer.items():
                if b == a:
                    continue
                for write_b in (op for op in ops_b if op.effect.writes):
                    if misses(read_a, write_b):
                        yield _Missed(read_a, write_b, mine, ops_a, ops_b)


def _lost_updates(m: _Missed) -> Iterator[dict[str, Any]]:
    """Racer a read a row, b's write to it committed unseen, then a updated or deleted that
    row too, committing after b: it wrote over b's write (P4)."""
    read_a, write_b = m.read, m.write
    b_at = write_b.committed_at or 0
    for write_a in m.mine:
        same = same_rows(write_a.effect.rows, write_b.effect.rows)
        if (
            write_a.effect.kind in (UPDATE, DELETE)
            and write_b.effect.kind in (UPDATE, DELETE)
            and write_a.effect.table == write_b.effect.table
            and same is not False
            and overlap(read_a.effect, write_a.effect)
            and (write_a.committed_at or 0) > b_at
        ):
            yield _result(
                LOST_UPDATE,
                f"{describe(read_a)}, then {describe(write_b)} "
                f"committed, then racer {read_a.racer} wrote the same row over it",
                [read_a.ref(), write_b.ref(), write_a.ref()],
                commit_ref(write_a),
                [read_a, write_a],
            )


def _read_write_cycles(m: _Missed) -> Iterator[dict[str, Any]]:
    """Racer b also read, before its write, what a then wrote, before a's write committed: a
    cycle of anti-dependencies, a phantom when both inserted, else a write skew."""
    read_a, write_b, a = m.read, m.write, m.read.racer
    for read_b in (op for op in m.ops_b if op.effect.reads and not op.failed):
        if read_b.start > write_b.start:
            continue
        b = read_b.racer
        for write_a in m.mine:
            if not misses(read_b, write_a):
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
                else f"{describe(read_a)} and {describe(read_b)}, each "
                "before the other's write committed; they wrote "
                f"{describe(write_a).split(' ', 2)[2]} and "
                f"{describe(write_b).split(' ', 2)[2]}"
            )
            yield _result(
                name,
                why,
                [read_a.ref(), read_b.ref(), write_a.ref(), write_b.ref()],
                commit_ref(last),
                [read_a, read_b, write_a, write_b],
            )


def _stale_reads(m: _Missed, outcome: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Racer a acted after b's commit on what it had read before it, writing other rows or,
    if it writes nothing at all, returning (``outcome`` is a's, as the round holds it)."""
    read_a, write_b, mine, a = m.read, m.write, m.mine, m.read.racer
    if any(overlap(read_a.effect, w.effect) for w in mine):
        return  # it wrote what it read: no stale read
    b_at = write_b.committed_at or 0
    acted = [w for w in mine if (w.committed_at or 0) > b_at]
    end = outcome["released_ms"] + outcome["took_ms"]
    reader = not any(op.effect.writes for op in m.ops_a)  # wrote nothing at all
    if acted or (reader and not outcome.get("error") and end > b_at):
        mark = commit_ref(acted[0]) if acted else [a, len(outcome["steps"])]
        what = f"then wrote {acted[0].effect.table}" if acted else "then returned"
        yield _result(
            STALE_READ,
            f"{describe(read_a)}; {describe(write_b)} committed; "
            f"racer {a} {what} on what it had read",
            [read_a.ref(), write_b.ref(), *(w.ref() for w in acted[:1])],
            mark,
            [read_a, *acted[:1], *_reads_of(m.ops_a, read_a, acted)],
        )


def _reads_of(ops: Sequence[Op], read: Op, acted: Sequence[Op]) -> list[Op]:
    """A reader that wrote nothing (read skew): its other reads, which its stale read was
    combined with; they must share the stale read's transaction for a level to help."""
    if acted:
        return []
    return [op for op in ops if op.effect.reads and not op.failed and op is not read]


def classify(round_data: dict[str, Any]) -> dict[str, Any]:
    """The anomaly of a round (``first_failure`` of a race's summary): its name, Adya's
    phenomenon, why, the steps that make it ``[racer, step index]`` and the step to mark."""
    by_racer = {r["racer"]: racer_ops(r) for r in round_data.get("racers") or []}
    found = _lock_released_early(by_racer)
    if found is not None:
        return found
    racers = {r["racer"]: r for r in round_data.get("racers") or []}
    candidates: list[dict[str, Any]] = []
    for m in _missed_writes(by_racer):
        candidates.extend(_lost_updates(m))
        candidates.extend(_read_write_cycles(m))
        candidates.extend(_stale_reads(m, racers[m.read.racer]))
    if candidates:
        return min(candidates, key=lambda c: ORDER.index(c["name"]))
    none = {"name": UNCLASSIFIED, "adya": None, "why": None, "steps": [], "marked": None}
    return {**none, **hermitage(UNCLASSIFIED, one_transaction=False)}


def summary_line(anomaly: dict[str, Any]) -> str:
    """One line for the terminal: the name, and why when it is named."""
    if anomaly["name"] == UNCLASSIFIED:
        return "anomaly: unclassified (the statements show none of the standard shapes)"
    line = f"anomaly: {anomaly['name']} ({anomaly['adya']}): {anomaly['why']}"
    return line + hermitage_line(anomaly)
