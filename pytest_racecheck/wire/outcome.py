"""What one racer's call did in one round, as the racer sends it to the controller.

Plain data: it is built in the racer, pickled over its pipe, and read in the controller.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_racecheck.wire.isolation import allows


def qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


@dataclass(frozen=True)
class RaisedError:
    """An exception a racer raised, carried by name: its class may not exist in the controller."""

    type_name: str
    message: str
    traceback: str
    mro: tuple[str, ...] = ()

    @classmethod
    def from_exception(cls, exc: BaseException) -> RaisedError:
        return cls(
            type_name=qualified_name(type(exc)),
            message=str(exc),
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            mro=tuple(qualified_name(c) for c in type(exc).__mro__),
        )

    @property
    def short_type(self) -> str:
        return self.type_name.rsplit(".", 1)[-1]

    def is_instance(self, types: Iterable[type[BaseException]]) -> bool:
        """isinstance() by qualified class name, across the process boundary; a refusal of
        the database (SerializationFailure etc.) by what the driver raised for it."""
        return any(qualified_name(t) in self.mro or allows(self, t) for t in types)

    def __str__(self) -> str:
        return f"{self.short_type}: {self.message}" if self.message else self.short_type


@dataclass(frozen=True)
class Step:
    """One point a racer reached in a round: a SQL statement (``sql`` set) or a user point.

    Times are ``time.monotonic_ns()``, one clock for every process of the machine, so the steps
    of several racers can be laid on one time axis. ``passed_ns - reached_ns`` is the time the
    racer was held there; the statement itself runs from ``passed_ns`` to the racer's next step
    (or its return).
    """

    name: str
    reached_ns: int
    passed_ns: int
    sql: str | None = None
    """The statement's text, parameters bound where the driver gives them; None for a point."""
    conn: int = 0
    """Which of the racer's connections sent it (0, 1, ... in the order they were first used)."""


MAX_STEPS = 200
"""Steps a racer records per round: enough for any interleaving worth drawing."""


@dataclass(frozen=True)
class Outcome:
    """What one racer's call did in one round."""

    racer: int
    value: Any = None
    error: RaisedError | None = None
    released_ns: int = 0
    ended_ns: int = 0
    last_point: str | None = None
    steps: tuple[Step, ...] = ()
    """The points and statements the racer passed, in order (at most :data:`MAX_STEPS`)."""
    reached: int = 0
    """How many points the racer's round thread reached (explore: 0 means nothing to order;
    kept when :attr:`steps` are dropped to keep a long race small)."""
    other_threads: tuple[str, ...] = ()
    """Points reached on the racer's other threads: let through, never held (the first 200)."""

    @property
    def raised(self) -> bool:
        return self.error is not None

    @property
    def label(self) -> str:
        """The outcome as it appears in a histogram: the value, or the exception's type."""
        if self.error is not None:
            return f"raised {self.error.short_type}"
        return self.value if isinstance(self.value, str) else repr(self.value)

    @property
    def duration_ns(self) -> int:
        return self.ended_ns - self.released_ns
