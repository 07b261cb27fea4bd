"""Explore's reduced search: every order of the steps that matter, and no other.

Two interleavings that differ only in the order of *independent* steps (steps of different
racers whose footprints do not conflict, see :mod:`pytest_racecheck.sql.footprint`) reach the
same database state and the same outcomes: running both is a wasted round. :class:`DPOR` runs
one interleaving of each class, with the source-set dynamic partial-order reduction of

    P. Abdulla, S. Aronis, B. Jonsson and K. Sagonas, "Optimal dynamic partial order
    reduction", POPL 2014 (source sets with sleep sets), which refines C. Flanagan and
    P. Godefroid, "Dynamic partial-order reduction for model checking software", POPL 2005.

A round is one execution. At every decision the search looks, for each racer held at a point,
for the last step of another racer that its next statement conflicts with and that does not
already happen before it (vector clocks over the steps of the round); at the state before that
step, it adds the racer (or, where the racer was not held there, every held racer) to the
decisions still to try. Sleep sets keep a step that has been tried from a state, and that
nothing since has conflicted with, from being tried again below it. The tree of decisions is
walked depth first, one round per leaf, and the next round replays the prefix up to the
deepest decision with something left to try.

A step that releases two racers at once (how a race inside one statement is tried) is added
where two racers were held at the same time at conflicting statements that can race inside the
database (:func:`~pytest_racecheck.sql.conflict.may_overlap`); it is a step of both.

Footprints are read in context (:func:`~pytest_racecheck.sql.conflict.step_footprint`), widened
by the catalog of the racer's database, read again every round. A replay that finds a racer
at another statement than its tree says has strayed; when the racers' program changed under
the tree (state kept across rounds), the search drops it and starts again (:data:`MAX_RESTARTS`).

``reduce=False`` takes every pair of steps as conflicting: the same search then runs every
interleaving, the full enumeration that the soundness test compares against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pytest_racecheck.explore.count import count_interleavings
from pytest_racecheck.explore.search import Choice
from pytest_racecheck.explore.tree import _combined, _Node, _preempts
from pytest_racecheck.sql.catalog import Catalog
from pytest_racecheck.sql.conflict import may_overlap, step_footprint, transaction_effect
from pytest_racecheck.sql.footprint import EVERYTHING, INERT, OUTSIDE, Footprint, dependent
from pytest_racecheck.sql.shorten import short_sql
from pytest_racecheck.wire.messages import Statement

_UNREDUCED = Footprint(everything=True, overlaps=True)
"""Without the reduction every step conflicts with every other and may overlap it."""


_UNREDUCED_START = Footprint(everything=True)
"""Starts are let go one at a time, reduced or not: a start is no statement to overlap."""


MAX_RETRIES = 2
"""How often a choice is tried again when its round strayed from the tree (timing)."""

MAX_RESTARTS = 2
"""How often the search starts its tree again because the racers' program changed under it."""


def _depends(a: Footprint, b: Footprint, reduce: bool) -> bool:
    return dependent(a, b) if reduce else True


@dataclass
class DPOR:
    """Dynamic partial-order reduction with sleep sets (Flanagan and Godefroid, POPL 2005)."""

    reduce: bool = True
    name: str = "dpor"
    nodes: list[_Node] = field(default_factory=list)
    """The nodes of this round's path, from the root."""
    open_nodes: dict[int, _Node] = field(default_factory=dict)
    """The nodes that may have something left to try, by id."""
    target: int = -1
    """The depth where this round takes a new choice (-1: the first round)."""
    next_steps: dict[int, Footprint] = field(default_factory=dict)
    diverged: int = 0
    acts_outside: bool = False
    """A racer acted outside the database after its start in some round (a file written, a
    lock taken): every step is then taken to read what such acts change."""
    restarts: int = 0
    """Times the tree was dropped because a racer's statements changed between rounds."""
    _changed: bool = False
    sleep_blocked: int = 0
    rounds: int = 0
    most_steps: dict[int, int] = field(default_factory=dict)
    _depth: int = 0
    _dead: bool = False
    _finished: bool = False
    _events: list[tuple[Choice, Footprint]] = field(default_factory=list)
    _clocks: list[dict[int, int]] = field(default_factory=list)
    _last: dict[int, int] = field(default_factory=dict)
    _plan: list[Choice] = field(default_factory=list)
    _taken: list[Choice] = field(default_factory=list)
    _target_choice: Choice = ()
    _retry: bool = False
    _next_plan: list[Choice] = field(default_factory=list)
    _next_sql: dict[int, str] = field(default_factory=dict)
    _transaction: dict[int, str] = field(default_factory=dict)
    """Per racer: 'begun' (no statement since BEGIN yet), 'open', or absent."""
    _steps: dict[int, int] = field(default_factory=dict)
    _at_start: set[int] = field(default_factory=set)
    _unresolved: dict[int, int] = field(default_factory=dict)
    """Racers let go from their start whose effects are not told yet: their start's event."""
    _fresh: list[bool] = field(default_factory=list)
    _start_guess: dict[int, Footprint] = field(default_factory=dict)
    _joints_run: set[tuple[Choice, ...]] = field(default_factory=set)
    """Every way to a joint step that a round ran (the choices up to and with it): a joint
    step reached again by another way of the tree would repeat that round."""
    _on_tree: list[bool] = field(default_factory=list)
    catalogs: Mapping[str, Catalog] = field(default_factory=dict)
    """This round's catalogs by backend ('sqlite', 'postgres'): read again after DDL."""
    _catalog_source: Callable[[], Mapping[str, Catalog]] | None = None

    # -- what the explorer tells it -------------------------------------------------------

    def arrived(self, racer: int, statement: Statement | None, start: bool = False) -> None:
        """Racer ``racer`` is held before ``statement`` (None: a point of the user's), or at
        the round's start (``start``)."""
        if start:
            # What the start does is told once it is done (started); until then it may act
            # outside the racer, which conflicts with other such starts.
            guess = self._start_guess.get(racer, OUTSIDE)  # what it did last time
            self.next_steps[racer] = guess if self.reduce else _UNREDUCED_START
            self._next_sql[racer] = ""
            self._at_start.add(racer)
            return
        if statement is not None and statement.outside:
            self.next_steps[racer] = OUTSIDE if self.reduce else _UNREDUCED
            self._next_sql[racer] = statement.sql
            # What it acts on may have been checked just before, where no event shows (a
            # stat, os.path.exists): from now on every step may read what such acts write,
            # and a tree built without knowing it is rebuilt.
            self._changed = self._changed or not self.acts_outside
            self.acts_outside = True
            return
        sql = statement.sql if statement is not None else ""
        state = self._transaction.get(racer)
        told = statement.transaction if statement is not None else ""
        if told == "begin":  # the driver opens a transaction with this statement
            state = self._transaction[racer] = "begun"
        elif told == "open" and state is None:
            state = self._transaction[racer] = "open"
        database = statement.database if statement is not None else ""
        self.next_steps[racer] = (
            step_footprint(
                sql, database, state == "begun", state is not None, self.catalogs.get(database)
            )
            if self.reduce
            else _UNREDUCED
        )
        if self.acts_outside and self.reduce:
            self.next_steps[racer] = replace(self.next_steps[racer], peeks=True)
        self._next_sql[racer] = sql

    def use_catalog(self, catalogs: Callable[[], Mapping[str, Catalog]]) -> None:
        self._catalog_source = catalogs

    def begin(self) -> None:
        self.catalogs = self._catalog_source() if self._catalog_source is not None else {}
        self.rounds += 1
        self._depth, self._dead = 0, False
        self._events, self._clocks, self._last, self._steps = [], [], {}, {}
        self.next_steps, self._next_sql, self._transaction = {}, {}, {}
        self._plan, self._retry, self._taken = [], False, []
        self._at_start, self._unresolved, self._fresh, self._on_tree = set(), {}, [], []
        self._changed = False

    def started(self, racer: int, outside: bool) -> None:
        """Racer ``racer``, let go from its start, reached its first point; ``outside``: on
        the way it acted outside its process (a file, a lock, a connection)."""
        if racer in self._unresolved:
            self._resolve(racer, outside)

    def choose(self, enabled: Sequence[int], previous: int | None) -> Choice:
        unknown = EVERYTHING if self.reduce else _UNREDUCED
        pending = {r: self.next_steps.get(r, unknown) for r in enabled}
        depth = self._depth
        self._depth += 1
        fresh = False
        if self._dead:
            choice = _default(enabled, previous, {})
        elif depth < len(self.nodes):
            node = self.nodes[depth]
            fresh = depth == self.target
            if fresh:
                choice = self._target_choice
                self._plan = list(self._next_plan)
            else:
                choice = self.nodes[depth + 1].edge
            strayed = self._strayed(node, enabled)
            if set(node.pending) != set(enabled) or strayed:
                # the round did not repeat the tree (another racer was held, or none: a racer
                # judged blocked by timing; or a racer is at another statement: state it kept
                # from an earlier round, a connection's set-up done once, changed its program):
                # what it does below here is not a branch of it
                self.diverged += 1
                self._changed = self._changed or strayed
                self._dead, fresh = True, False
                self._retry = True
                choice = _default(enabled, previous, {})
        else:
            choice = self._new_node(pending, previous)
            fresh = not self._dead
        self._taken.append(choice)
        self._record(choice, pending, fresh)
        return choice

    def end(self) -> None:
        for racer in list(self._unresolved):  # never reached a point after its start: unknown
            self._resolve(racer, True)
        for i, choice in enumerate(self._taken[: len(self._on_tree)]):
            if not self._on_tree[i]:
                break
            if len(choice) > 1:
                self._joints_run.add(tuple(self._taken[: i + 1]))
        for racer, n in self._steps.items():
            self.most_steps[racer] = max(self.most_steps.get(racer, 0), n)
        if self._changed and self.restarts < MAX_RESTARTS:
            self._restart()
            return
        # a program that changed is no timing to retry: its strayed round stays counted
        if self._retry and not self._changed and 0 <= self.target < len(self.nodes):
            node = self.nodes[self.target]
            if node.retries < MAX_RETRIES:  # try the same choice again: timing may differ
                node.retries += 1
                self.diverged -= 1
                if self._next_plan:
                    node.planned -= 1
                else:
                    node.done.pop(self._target_choice, None)
                self.open_nodes[id(node)] = node
        self._next_target()

    def _next_target(self) -> None:
        """The cheapest choice left anywhere in the tree (fewest preemptions, then deepest):
        most bugs need one or two preemptions, so they come early, as in the unreduced
        search. The order in which a node's choices are taken does not change what is
        explored in the end, only when."""
        best: tuple[int, int] | None = None
        chosen: tuple[_Node, Choice, list[Choice]] | None = None
        for key_, node in list(self.open_nodes.items()):
            options = [(c, []) for c in node.left() if not self._joint_ran(node, (c,))]
            while node.planned < len(node.plans) and self._joint_ran(
                node, node.plans[node.planned]
            ):
                node.planned += 1
            if node.planned < len(node.plans):
                plan = node.plans[node.planned]
                options.append((plan[0], list(plan[1:])))
            if not options:
                del self.open_nodes[key_]  # until a race adds to it again
            for choice, rest in options:
                key = (node.cost + _preempts(node, choice) + len(rest), -node.depth)
                if best is None or key < best:
                    best, chosen = key, (node, choice, rest)
        if chosen is None:
            self._finished = True
            return
        node, choice, rest = chosen
        if rest:
            node.planned += 1
        else:
            node.done[choice] = node.step(choice)
        self.nodes = node.path()
        self.target = node.depth
        self._target_choice, self._next_plan = choice, rest

    def _joint_ran(self, node: _Node, choices: tuple[Choice, ...]) -> bool:
        """These choices from ``node`` end in a joint step that a round already ran."""
        if len(choices[-1]) < 2:
            return False
        path = tuple(n.edge for n in node.path()[1:]) + choices
        if path not in self._joints_run:
            return False
        if len(choices) == 1:  # a choice of the node itself: as good as tried
            node.done.setdefault(choices[0], node.step(choices[0]))
        return True

    def _strayed(self, node: _Node, enabled: Sequence[int]) -> bool:
        """A held racer is at another statement than when the tree was built."""
        return any(
            r in node.shapes and node.shapes[r] != short_sql(self._next_sql.get(r, ""))
            for r in enabled
        )

    def _restart(self) -> None:
        """Drop the tree: the racers' program is not the one it was built from. The next round
        is a first round again; what ran before counts for nothing (not for exhausted either)."""
        self.restarts += 1
        self.nodes, self.open_nodes, self.target = [], {}, -1
        self.diverged, self.sleep_blocked = 0, 0
        self._joints_run = set()
        self._finished = False
        self._target_choice, self._next_plan = (), []

    def done(self) -> bool:
        return self._finished

    def exhausted(self) -> bool:
        return self._finished and not self.diverged

    def without_reduction(self) -> int:
        """How many interleavings the unreduced search has for the steps seen (no waits)."""
        steps = tuple(self.most_steps.get(r, 0) for r in sorted(self.most_steps))
        return count_interleavings(steps)

    # -- inside ---------------------------------------------------------------------------

    def _new_node(self, pending: dict[int, Footprint], previous: int | None) -> Choice:
        depth = len(self.nodes)
        edge = self._taken[-1] if depth else ()
        if depth == 0 or len(edge) > 1:
            # Below a joint step nothing sleeps: a joint step is no transition of the theory's
            # (it is neither order of its two statements), so what its siblings explored does
            # not cover what follows it.
            sleep: dict[Choice, Footprint] = {}
        else:
            parent = self.nodes[-1]
            step = parent.step(edge)
            asleep = {**parent.sleep, **{c: f for c, f in parent.done.items() if c != edge}}
            sleep = {
                c: f
                for c, f in asleep.items()
                if not set(c) & set(edge) and not _depends(f, step, self.reduce)
            }
        choice = _default(list(pending), previous, sleep)
        if self._plan:  # the way to a joint step: taken even where asleep (the joint is new)
            planned = self._plan.pop(0)
            if set(planned) <= set(pending):
                choice = planned
            else:
                self._plan = []
        if not choice:  # every held racer is asleep: this execution repeats an explored one
            self.sleep_blocked += 1
            self._dead = True
            return _default(list(pending), previous, {})
        parent_node = self.nodes[-1] if depth else None
        cost = parent_node.cost + _preempts(parent_node, edge) if parent_node else 0
        node = _Node(dict(pending), sleep, previous, parent_node, edge, depth, cost)
        node.at_start = frozenset(r for r in pending if r in self._at_start)
        node.shapes = {r: short_sql(self._next_sql.get(r, "")) for r in pending}
        self.nodes.append(node)
        node.add(choice)
        node.done[choice] = node.step(choice)
        return choice

    def _happens_before(self, i: int, j: int) -> bool:
        """Event i happens before event j of this round (program order or a conflict chain)."""
        return i < j and any(self._clocks[j].get(r, 0) > i for r in self._events[i][0])

    def _races(self, choice: Choice, step: Footprint, upto: int | None = None) -> None:
        """The new event against every event it is in a race with (Abdulla et al.'s
        source-DPOR, Algorithm 1): each such race is reversed at the state before the
        earlier event, by a racer that can start the reversed order (an *initial*).
        ``upto``: the event is that one of this round, not a new one (a start told late)."""
        upto = len(self._events) if upto is None else upto
        racers = set(choice)
        dependents = [
            j
            for j, (c, f) in enumerate(self._events[:upto])
            if not racers & set(c) and _depends(f, step, self.reduce)
        ]
        own = [self._last_before(r, upto) for r in choice]
        before = dependents + [j for j in own if j >= 0]  # the new event's direct predecessors
        for e in dependents:
            if any(j != e and self._happens_before(e, j) for j in before):
                continue  # ordered through another event: not a race of its own
            self._reverse(e, choice, step, before, upto)

    def _last_before(self, racer: int, upto: int) -> int:
        """The racer's last event before event ``upto`` (-1: none)."""
        return next((j for j in range(upto - 1, -1, -1) if racer in self._events[j][0]), -1)

    def _reverse(
        self, e: int, choice: Choice, step: Footprint, before: list[int], upto: int
    ) -> None:
        node = self.nodes[e]
        later = [j for j in range(e + 1, upto) if not self._happens_before(e, j)]
        initials: list[int] = []
        for n, j in enumerate(later):
            if not any(self._happens_before(k, j) for k in later[:n]):
                initials += [r for r in self._events[j][0] if r not in initials]
        if not any(self._leads_to(k, before) for k in later):
            initials += [r for r in choice if r not in initials]
        held = [r for r in initials if r in node.pending]
        self._joint(e, choice, step, [k for k in later if self._leads_to(k, before)])
        if any((r,) in node.backtrack for r in held):
            pass
        elif held:
            node.add((next((r for r in held if r in choice), held[0]),))
            self.open_nodes[id(node)] = node
        else:
            for other in node.pending:
                node.add((other,))
            self.open_nodes[id(node)] = node

    def _leads_to(self, k: int, before: list[int]) -> bool:
        """Event k happens before the new event (whose direct predecessors are ``before``)."""
        return k in before or any(self._happens_before(k, b) for b in before)

    def _joint(self, e: int, choice: Choice, step: Footprint, way: list[int]) -> None:
        """Both racers of a race at once, where their statements can race inside the database.

        From the state before event e, the events of ``way`` (those the new event needs, none
        of which needs e) bring the new event's racer to its statement while e's racer still
        waits at its own: there the joint step is tried. With no way to go it is a choice of
        the node itself; else a plan that the round follows to it."""
        earlier, earlier_step = self._events[e]
        if len(earlier) != 1 or len(choice) != 1:
            return
        if self.reduce and not may_overlap(earlier_step, step):
            return
        joint = tuple(sorted((*earlier, *choice)))
        node = self.nodes[e]
        if not way:
            node.add(joint)
            self.open_nodes[id(node)] = node
            return
        plan = (*(self._events[k][0] for k in way), joint)
        if plan not in node.plans:
            node.plans.append(plan)
            self.open_nodes[id(node)] = node

    def _record(self, choice: Choice, pending: Mapping[int, Footprint], fresh: bool) -> None:
        step = _combined([pending.get(racer, EVERYTHING) for racer in choice])
        index = len(self._events)
        starts = [r for r in choice if r in self._at_start]
        if starts and self.reduce:  # its races are looked for once its effects are told
            self._unresolved.update(dict.fromkeys(starts, index))
        elif fresh:
            self._races(choice, step)
        self._at_start -= set(choice)
        for racer in choice:
            self._steps[racer] = self._steps.get(racer, 0) + 1
            self._last[racer] = index
            self.next_steps.pop(racer, None)
            self._moved(racer, self._next_sql.pop(racer, ""))
        self._events.append((choice, step))
        self._clocks.append(self._clock(index))
        self._fresh.append(fresh)
        self._on_tree.append(not self._dead and index < len(self.nodes))

    def _clock(self, index: int) -> dict[int, int]:
        """Event ``index``'s vector clock: its racers' earlier events and every earlier event
        it depends on happen before it."""
        choice, step = self._events[index]
        clock: dict[int, int] = {}
        for racer in choice:
            last = self._last_before(racer, index)
            if last >= 0:
                _merge(clock, self._clocks[last])
        for j, (_, earlier) in enumerate(self._events[:index]):
            if _depends(earlier, step, self.reduce):
                _merge(clock, self._clocks[j])
        for racer in choice:
            clock[racer] = index + 1
        return clock

    def _resolve(self, racer: int, outside: bool) -> None:
        """A start's effects are known: give its event its footprint, then look for its races.

        A start that acted outside its racer is tried in every order against the other racers
        still at their start there (their starts may want the same file lock: no order of the
        statements shows that); one that did not commutes with everything."""
        index = self._unresolved.pop(racer)
        choice, before = self._events[index]
        step = OUTSIDE if outside else INERT
        self._start_guess[racer] = step
        if step != before:
            self._events[index] = (choice, step)
            for j in range(index, len(self._events)):
                self._clocks[j] = self._clock(j)
            if self._on_tree[index]:  # what sleeps below its node sleeps on what it did
                node = self.nodes[index]
                node.pending[racer] = step
                if choice in node.done:
                    node.done[choice] = step
        if not self._fresh[index]:
            return
        self._races(choice, step, upto=index)
        if step != before:  # later events were looked at with the guess: look again
            for j in range(index + 1, len(self._events)):
                if self._fresh[j] and not set(self._events[j][0]) & self._unresolved.keys():
                    self._races(self._events[j][0], self._events[j][1], upto=j)
        if outside and index < len(self.nodes):
            node = self.nodes[index]
            for other in sorted(node.at_start - set(choice)):
                node.add((other,))
                self.open_nodes[id(node)] = node

    def _moved(self, racer: int, sql: str) -> None:
        """Follow the racer's transaction: which of its statements takes the snapshot."""
        effect = transaction_effect(sql) if sql else ""
        if effect == "begin":
            self._transaction[racer] = "begun"
        elif effect == "end":
            self._transaction.pop(racer, None)
        elif racer in self._transaction:
            self._transaction[racer] = "open"


def _merge(into: dict[int, int], other: Mapping[int, int]) -> None:
    for racer, n in other.items():
        if n > into.get(racer, 0):
            into[racer] = n


def _default(
    enabled: Sequence[int], previous: int | None, sleep: Mapping[Choice, Footprint]
) -> Choice:
    """The racer that just ran goes on if it can; else the lowest awake; () if all sleep."""
    awake = [r for r in enabled if (r,) not in sleep]
    if previous in awake:
        return (previous,)  # type: ignore[return-value]
    return (awake[0],) if awake else ()
