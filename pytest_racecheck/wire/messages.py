"""The messages between the controller and its racers, in one place.

Each message is a small frozen dataclass; its ``kind`` names the handler that receives it
(``racer_<kind>`` on the controller, in the style of pytest-xdist's ``worker_<name>``). They
travel over one ``multiprocess`` pipe per racer, pickled with dill, or by a racer with the
standard library when it can (:func:`send`).

Controller to racer: :class:`Setup` once, then :class:`Pass` for each held point and
:class:`Wake` for each virtual sleep.
Racer to controller: :class:`Ready` (or :class:`SetupError`), :class:`Warm`, then per round any
number of :class:`At`, :class:`Sleep` and :class:`BackendPid`, and one :class:`Result`.

:func:`send` pickles a message with the standard library's C pickler when it can: dill's
pure-Python pickler took about 0.5 ms of CPU per result on a busy machine (22 us with
``pickle``), which every racer paid every round while the others still ran. The receiving end is
unchanged: dill loads any standard pickle.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pytest_racecheck.wire.outcome import Outcome, RaisedError


@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = ""


def send(channel: Any, message: Any) -> None:
    """Send ``message`` on a ``multiprocess`` connection: pickled by the standard library
    when it can be (the messages, and most return values and exceptions), else by dill, as
    ``channel.send`` does (a value holding a lambda or a class made inside a function)."""
    try:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception:
        channel.send(message)
        return
    channel.send_bytes(data)


# Controller to racer.


@dataclass(frozen=True)
class Setup(Message):
    """What a racer needs before the first round."""

    kind: ClassVar[str] = "setup"
    call: bytes  # dill pickle of (fn, args, kwargs)
    hooks: bytes = b""  # dill pickle of (set-ups, tear-downs) in calling order, loaded first
    held_points: dict[str, int] = field(default_factory=dict)
    hold_all: bool = False
    """Hold the racer at every point it reaches (explore mode)."""
    statements: bool = False
    """Make every SQL statement a point (explore, schedules, meetings)."""
    pause_after: tuple[str, ...] = ()
    pause_before: tuple[str, ...] = ()
    app_name: str = ""
    clock_path: str = ""
    """The race's shared virtual clock (``clock="virtual"``); empty: the real clock."""


@dataclass(frozen=True)
class Pass(Message):
    """The held racer may go on past the point ``name``."""

    kind: ClassVar[str] = "pass"
    name: str


@dataclass(frozen=True)
class Wake(Message):
    """The racer's virtual sleep is over: the clock has reached its wake-up."""

    kind: ClassVar[str] = "wake"


# Racer to controller.


@dataclass(frozen=True)
class Statement:
    """A SQL statement at its point: what explore's search needs to tell which conflict."""

    sql: str
    database: str = ""
    """'sqlite' or 'postgres'."""
    transaction: str = ""
    """What the driver knows of the connection's transaction: 'begin' (this statement opens one
    implicitly, as psycopg does outside autocommit), 'open' (it runs inside one), or ''."""
    outside: bool = False
    """Not SQL: the racer is about to act outside its process (write or create a file, rename,
    remove, take a file lock): it conflicts with every other such step."""


@dataclass(frozen=True)
class Waiting(Message):
    """A racer started ahead of its race (a spare) imported what it preloads and waits."""

    kind: ClassVar[str] = "waiting"


@dataclass(frozen=True)
class Ready(Message):
    """The function is loaded and the racer's set-up ran."""

    kind: ClassVar[str] = "ready"
    pid: int


@dataclass(frozen=True)
class SetupError(Message):
    """The racer could not load the function or run its set-up."""

    kind: ClassVar[str] = "setup_error"
    error: RaisedError
    doing: str = "load"


@dataclass(frozen=True)
class Warm(Message):
    """The racer passed the gate once (generation 0) and waits for the first round."""

    kind: ClassVar[str] = "warm"


@dataclass(frozen=True)
class At(Message):
    """The racer reached a held point and waits for :class:`Pass`."""

    kind: ClassVar[str] = "at"
    name: str
    statement: Statement | None = None
    """What the statement is, when the point is one (explore's search reads what it touches)."""
    start: bool = False
    """The point is the round's start (explore holds every racer there first)."""
    after_start: tuple[str, ...] | None = None
    """The first point after the round's start (explore): the audit events by which the start
    acted outside the racer (see :mod:`pytest_racecheck.instrument.start_effects`), empty if
    none."""


@dataclass(frozen=True)
class BackendPid(Message):
    """The racer talks to a PostgreSQL backend with this pid (for lock-wait probes)."""

    kind: ClassVar[str] = "backend_pid"
    pid: int


@dataclass(frozen=True)
class Connecting(Message):
    """The racer starts a PostgreSQL connection: until its :class:`BackendPid` comes, it waits
    for the server, not for another racer."""

    kind: ClassVar[str] = "connecting"


@dataclass(frozen=True)
class Sleep(Message):
    """The racer sleeps ``seconds`` of virtual time and waits for :class:`Wake`; ``held``: the
    race holds this sleep at a point (explore, a schedule that names ``sleep``)."""

    kind: ClassVar[str] = "sleep"
    seconds: float
    held: bool = False


@dataclass(frozen=True)
class Result(Message):
    """The racer's call in round ``round`` is over."""

    kind: ClassVar[str] = "result"
    round: int
    outcome: Outcome
    after_start: tuple[str, ...] | None = None
    """As :attr:`At.after_start`, for a racer that returned before any point after its start."""


def is_message(obj: Any) -> bool:
    return isinstance(obj, Message) and bool(type(obj).kind)
