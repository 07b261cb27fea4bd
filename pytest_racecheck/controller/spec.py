"""One race, described and checked before any process starts.

:class:`RaceSpec` gathers what ``race()`` was given, with the defaults of
:mod:`~pytest_racecheck.controller.settings`; :func:`validate` refuses bad input with a message
that says how to fix it; :func:`pickle_call` turns the function and the racer hooks into what the
controller sends its racers.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_racecheck.clock.control import is_time_step
from pytest_racecheck.controller.settings import DEFAULTS, NAMES, RaceSettings, validate_settings
from pytest_racecheck.policies.choose import make_coordinator
from pytest_racecheck.policies.coordinator import Coordinator
from pytest_racecheck.results.result import RaceResult
from pytest_racecheck.wire import pickling


@dataclass
class RaceSpec:
    """One race, validated: everything the controller needs before it starts a process."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    processes: int = DEFAULTS.processes
    rounds: int = DEFAULTS.rounds
    timeout: float = DEFAULTS.timeout
    start_method: str = DEFAULTS.start_method
    explore: int | None = DEFAULTS.explore
    seed: int | None = DEFAULTS.seed
    clock: str = DEFAULTS.clock
    stall_timeout: float = DEFAULTS.stall_timeout
    fresh_racers: bool = DEFAULTS.fresh_racers
    isolation: str | None = DEFAULTS.isolation
    replicas: int = DEFAULTS.replicas
    reset: Callable[[], Any] | None = None
    check: Callable[[], Any] | None = None
    meet_at: str | None = None
    pause_after: str | None = None
    pause_before: str | None = None
    schedule: Sequence[str] | None = None
    racer_setup: Callable[[], Any] | None = None
    racer_teardown: Callable[[], Any] | None = None
    conftest_setups: tuple[Callable[[], Any], ...] = ()
    """``pytest_racecheck_racer_setup`` implementations, outer conftest first."""
    conftest_teardowns: tuple[Callable[[], Any], ...] = ()
    """``pytest_racecheck_racer_teardown`` implementations, outer conftest first."""
    stop_early: bool = False
    """Stop at the first round where a racer raised or the check failed."""
    budget_s: float | None = None
    """Stop starting rounds after this many seconds; ``rounds`` is then a cap."""
    on_round: Callable[[RaceResult], Any] | None = None
    """Called in the test process after every round (progress lines)."""

    def __post_init__(self) -> None:
        validate(self)

    @property
    def settings(self) -> RaceSettings:
        return RaceSettings(**{name: getattr(self, name) for name in NAMES})

    def coordinator(self) -> Coordinator:
        """The sync point policy these arguments ask for (raises ValueError if they conflict)."""
        return make_coordinator(
            self.processes,
            self.meet_at,
            self.pause_after,
            self.pause_before,
            self.schedule,
            explore=self.explore,
            seed=self.seed_used,
        )

    @property
    def mode(self) -> str:
        if self.explore is not None:
            return "explore"
        if self.schedule is not None:
            return "schedule"
        for name in ("meet_at", "pause_after", "pause_before"):
            if getattr(self, name):
                return name
        return "stress"

    @property
    def seed_used(self) -> int:
        """The explorer's seed: the one given, or one drawn once per spec and reported."""
        if self.seed is not None:
            return self.seed
        if self._drawn_seed is None:
            self._drawn_seed = int.from_bytes(os.urandom(4), "big")
        return self._drawn_seed

    _drawn_seed: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def fn_name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


def validate(spec: RaceSpec) -> None:
    """Refuse bad input before any process starts, saying what was wrong and how to fix it."""
    if not callable(spec.fn):
        raise TypeError(f"race() needs a callable to run in every racer, got {spec.fn!r}")
    validate_settings(spec.settings)
    if spec.explore is not None and spec.rounds != DEFAULTS.rounds:
        raise ValueError(
            f"race(): explore={spec.explore} is the number of rounds (one interleaving each); "
            f"do not also pass rounds={spec.rounds}"
        )
    for name in ("reset", "check", "racer_setup", "racer_teardown", "on_round"):
        value = getattr(spec, name)
        if value is not None and not callable(value):
            raise TypeError(f"race(): {name} must be a callable or None, got {value!r}")
    if spec.budget_s is not None and not (
        isinstance(spec.budget_s, (int, float)) and spec.budget_s > 0
    ):
        raise ValueError(f"race(): budget_s must be a positive number, got {spec.budget_s!r}")
    _check_signature(spec)
    if spec.clock != "virtual" and spec.schedule and not isinstance(spec.schedule, str):
        moves = [s for s in spec.schedule if is_time_step(s)]
        if moves:
            raise ValueError(
                f"race(): schedule step {moves[0]!r} moves the virtual clock: pass "
                "clock='virtual' (the real clock cannot be moved)"
            )
    spec.coordinator()


def _check_signature(spec: RaceSpec) -> None:
    """Arguments ``fn`` cannot take are refused here, not in every racer of every round."""
    try:
        signature = inspect.signature(spec.fn)
    except (TypeError, ValueError):
        return  # some builtins have no signature: let the racers find out
    try:
        signature.bind(*spec.args, **spec.kwargs)
    except TypeError as exc:
        given = ", ".join(
            [*(repr(a) for a in spec.args), *(f"{k}={v!r}" for k, v in spec.kwargs.items())]
        )
        raise TypeError(
            f"race(): {spec.fn_name}{signature} cannot be called with ({given}): {exc}. "
            "race() passes its extra arguments to the function; check their names."
        ) from None


def pickle_call(spec: RaceSpec) -> tuple[bytes, bytes]:
    """The function with its arguments, and the racer's set-up and tear-down, apart.

    Modules the racers can import by name go by name (:mod:`~pytest_racecheck.wire.pickling`).
    Apart, because loading the function imports its module, which may need the set-up first
    (a test module that imports Django models needs ``django.setup()``).
    """
    try:
        call = pickling.dumps((spec.fn, spec.args, spec.kwargs))
    except Exception as exc:
        raise TypeError(
            f"race(): cannot send {spec.fn_name} and its arguments to the racer processes "
            f"({type(exc).__name__}: {exc}). Racers are separate processes: pass database "
            "handles or paths, and open connections inside the function."
        ) from exc
    # Set-ups outer conftest first, the race's own last; tear-downs the other way round.
    setups = (*spec.conftest_setups, spec.racer_setup)
    teardowns = (spec.racer_teardown, *reversed(spec.conftest_teardowns))
    try:
        hooks = pickling.dumps(
            tuple(tuple(h for h in hs if h is not None) for hs in (setups, teardowns))
        )
    except Exception as exc:
        raise TypeError(
            f"race(): cannot send racer_setup / racer_teardown to the racer processes "
            f"({type(exc).__name__}: {exc}). Pass module-level functions, or "
            "functools.partial of one, with picklable arguments."
        ) from exc
    return call, hooks
