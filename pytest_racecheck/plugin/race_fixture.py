"""The ``race`` fixture: a test's races, their settings, timeouts and summaries."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_racecheck.backends.address import handles_in
from pytest_racecheck.controller.blocking import AnyProbe, race_probe
from pytest_racecheck.controller.errors import RaceError, ServerDied
from pytest_racecheck.controller.isolation import Plan, applied, record
from pytest_racecheck.controller.loop import Controller
from pytest_racecheck.controller.settings import DEFAULTS
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.plugin.hookspecs import ConftestHooks
from pytest_racecheck.plugin.isolation import isolation_plan
from pytest_racecheck.plugin.options import (
    SOAK_ROUNDS_CAP,
    call_failed_key,
    marker_settings,
    probes_key,
    servers_key,
    settings_key,
    soak_key,
    soak_seconds_key,
    stop_early,
)
from pytest_racecheck.plugin.progress import Progress
from pytest_racecheck.results import report as race_report
from pytest_racecheck.results.result import RaceResult


class RaceResultNeverChecked(pytest.PytestWarning):
    """A race ran but its result was never asserted on or read: it checked nothing."""


OWN_INTERLEAVING = ("meet_at", "pause_after", "pause_before", "schedule")
"""Arguments with which a race picks its own interleaving."""


def choose_settings(
    defaults: dict[str, Any],
    given: dict[str, Any],
    own_interleaving: bool,
    soak: int = 1,
    soak_seconds: float | None = None,
) -> tuple[dict[str, Any], float | None]:
    """A race's settings from its test's defaults and its own arguments, and its time budget.

    ``defaults`` are the marker's over the command line's over the ini's over the built-in
    ones; ``given`` are the race() arguments that were passed, which win. Explore mode is
    decided here and only here:

    - ``explore`` that comes from the marker, the command line or the ini does not apply to a
      race that picks its own interleaving (``schedule=``, ``meet_at=``, ``pause_after=``,
      ``pause_before=``): that race keeps its mode. Only ``race(..., explore=N)`` itself
      conflicts with those arguments (RaceSpec says so).
    - In explore mode ``explore=N`` is the number of rounds, so a ``rounds`` setting is
      dropped, unless the race() call passed both (RaceSpec refuses that).
    - ``--racecheck-soak`` multiplies the rounds (explore mode: the interleavings) and the
      timeout; ``--racecheck-soak-seconds`` gives every race that many seconds (stress
      rounds up to a large cap, explore mode up to its N) and adds them to its timeout.
    """
    chosen = {**defaults, **given}
    if "explore" not in given and own_interleaving:
        chosen["explore"] = None
    if chosen["explore"] is not None and not ("explore" in given and "rounds" in given):
        chosen["rounds"] = DEFAULTS.rounds
    counted = "rounds" if chosen["explore"] is None else "explore"
    numbers_ok = isinstance(chosen[counted], int) and isinstance(chosen["timeout"], (int, float))
    if not numbers_ok:  # a bad value is reported by RaceSpec as it was given
        return chosen, None
    if soak > 1:
        chosen[counted] *= soak
        chosen["timeout"] *= soak
    if soak_seconds is not None:
        if counted == "rounds":
            chosen["rounds"] = SOAK_ROUNDS_CAP
        chosen["timeout"] += soak_seconds
    return chosen, soak_seconds


@dataclass
class _Raced:
    """A race this test ran, and what the plugin still has to do about it."""

    result: RaceResult
    status: str  # "ran", or "broke down" when race() raised
    where: tuple[str, int]
    recorded: bool = False


TIMEOUT_SHARE = 0.8
"""The share of a pytest-timeout limit a race may take, from the start of the test."""
MIN_CAPPED_TIMEOUT_S = 0.5


def _pytest_timeout(item: pytest.Item) -> float | None:
    """The test's pytest-timeout limit in seconds, where that plugin is active."""
    if not item.config.pluginmanager.hasplugin("timeout"):
        return None
    marker = item.get_closest_marker("timeout")
    value: Any = None
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if value is None:
        value = getattr(item.config, "_env_timeout", None)  # --timeout, ini, PYTEST_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


class Race:
    """The ``race`` fixture's value: call it to race a function across processes."""

    def __init__(self, request: pytest.FixtureRequest, matrix_level: str | None = None) -> None:
        self._request = request
        self._matrix_level = matrix_level
        """The level of this test item under ``--racecheck-isolation=all`` (or a list)."""
        self.results: list[RaceResult] = []
        self._raced: list[_Raced] = []
        self._created = time.monotonic()

    @property
    def settings(self) -> dict[str, Any]:
        """This test's defaults: marker over command line over ini over built-in."""
        node = self._request.node
        matrix = {} if self._matrix_level is None else {"isolation": self._matrix_level}
        return {**node.config.stash[settings_key].as_dict(), **matrix, **marker_settings(node)}

    def __call__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        processes: int | None = None,
        rounds: int | None = None,
        reset: Callable[[], Any] | None = None,
        check: Callable[[], Any] | None = None,
        timeout: float | None = None,
        start_method: str | None = None,
        explore: int | None = None,
        seed: int | None = None,
        clock: str | None = None,
        stall_timeout: float | None = None,
        fresh_racers: bool | None = None,
        isolation: str | None = None,
        replicas: int | None = None,
        meet_at: str | None = None,
        pause_after: str | None = None,
        pause_before: str | None = None,
        schedule: Sequence[str] | None = None,
        racer_setup: Callable[[], Any] | None = None,
        racer_teardown: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> RaceResult:
        """Run ``fn(*args, **kwargs)`` in every racer, every round; return what they did."""
        __tracebackhide__ = True
        caller = sys._getframe(1)
        where = (caller.f_code.co_filename, caller.f_lineno)
        settings = {
            "processes": processes,
            "rounds": rounds,
            "timeout": timeout,
            "start_method": start_method,
            "explore": explore,
            "seed": seed,
            "clock": clock,
            "stall_timeout": stall_timeout,
            "fresh_racers": fresh_racers,
            "isolation": isolation,
            "replicas": replicas,
        }
        given = {k: v for k, v in settings.items() if v is not None}
        spec, budget_s = self._spec(
            given,
            any((meet_at, pause_after, pause_before)) or schedule is not None,
            fn=fn,
            args=args,
            kwargs=kwargs,
            reset=reset,
            check=check,
            meet_at=meet_at,
            pause_after=pause_after,
            pause_before=pause_before,
            schedule=schedule,
            racer_setup=racer_setup,
            racer_teardown=racer_teardown,
        )
        level = isolation_plan(self._request, spec, given, self._matrix_level)
        return self._run(spec, budget_s, where, level)

    def _spec(
        self, given: dict[str, Any], own_interleaving: bool, **race_args: Any
    ) -> tuple[RaceSpec, float | None]:
        """The race as the controller takes it, and its time budget. A RaceSpec that refuses its
        input raises without the harness's frames: its message says all the test needs."""
        __tracebackhide__ = True
        config = self._request.config
        chosen, budget_s = choose_settings(
            self.settings,
            given,
            own_interleaving=own_interleaving,
            soak=config.stash[soak_key],
            soak_seconds=config.stash[soak_seconds_key],
        )
        self._fit_pytest_timeout(chosen)
        hooks = ConftestHooks.of(self._request.node)
        try:
            spec = RaceSpec(
                **race_args,
                conftest_setups=hooks.setups,
                conftest_teardowns=hooks.teardowns,
                stop_early=stop_early(config),
                budget_s=budget_s,
                on_round=_AfterRound(
                    Progress(config, self._request.node.nodeid, budget_s), self._check_servers
                ),
                **chosen,
            )
        except (TypeError, ValueError) as exc:
            raise exc.with_traceback(None) from None  # bad input: the message says it all
        return spec, budget_s

    def _fit_pytest_timeout(self, chosen: dict[str, Any]) -> None:
        """End the race, with its report naming the racers, before pytest-timeout ends the
        test with a stack dump that says nothing about them."""
        test_timeout = _pytest_timeout(self._request.node)
        if test_timeout is not None and isinstance(chosen["timeout"], (int, float)):
            left = TIMEOUT_SHARE * test_timeout - (time.monotonic() - self._created)
            chosen["timeout"] = max(min(chosen["timeout"], round(left, 1)), MIN_CAPPED_TIMEOUT_S)

    def _run(
        self, spec: RaceSpec, budget_s: float | None, where: tuple[str, int], level: Plan
    ) -> RaceResult:
        """Run the race at its isolation ``level`` and keep its result for the summary, a race
        that broke down too: its result tells how far it got. A dead server, or Ctrl-C, is told
        before anything else."""
        __tracebackhide__ = True
        try:
            probe, own_probes = self._probe(spec)
            controller = Controller(spec, probe)
            try:
                # The level is the database's default from before any racer starts (racers
                # open every connection they use after it) until the race has ended.
                with applied(level):
                    result = controller.run()
            except KeyboardInterrupt:
                self._interrupted(controller.result, budget_s)
                raise
            except Exception:
                self._check_servers(controller.result)  # a dead server is the cause to tell
                raise
            finally:
                own_probes.close()
            self._check_servers(result)
            record(result, level, spec.mode)
        except RaceError as exc:
            if exc.result is not None:
                exc.result.budget_s = budget_s
                self._raced.append(_Raced(exc.result, "broke down", where))
            # The report starts at the test's race() call: the harness's frames say nothing.
            raise exc.with_traceback(None) from None
        result.budget_s = budget_s
        result.reset_checked()  # what the controller and the progress lines read is no look
        self.results.append(result)
        self._raced.append(_Raced(result, "ran", where))
        return result

    def _check_servers(self, result: RaceResult) -> None:
        """Raise ServerDied when a database server of this test died during the race: what
        racers then raised, or a probe's lost connection, says less than that."""
        for died in self._request.node.stash.get(servers_key, []):
            why = died()
            if why is not None:
                raise ServerDied(
                    f"race of {result.fn_name}, after {result.rounds_run} complete round(s): {why}",
                    result,
                )

    def _interrupted(self, result: RaceResult, budget_s: float | None) -> None:
        """Ctrl-C ended this race: pytest makes no report for its test, so the summary table
        and the JSON report get the race here, as interrupted, with the rounds it ran."""
        result.budget_s = budget_s
        summary = result.summary()
        summary["status"] = "interrupted"
        table = self._request.config.pluginmanager.get_plugin("racecheck-summary")
        if table is not None:
            table.add_interrupted(self._request.node.nodeid, summary)

    def _probe(self, spec: RaceSpec) -> tuple[AnyProbe, AnyProbe]:
        """How to tell racers blocked on a lock: ask the databases the fixtures made, and those
        whose handles (``pytest_racecheck.database(...)``) the race hands its racers or its
        ``reset`` and ``check`` use; and watch for racers asleep outside any database. Returns
        the probe, and the part of it made for this race alone, to close afterwards."""
        # The handles racers get, and those reset and check use (a check that counts rows
        # in the project's database names it, even when the raced function finds it itself).
        handles = handles_in(spec.fn, spec.args, spec.kwargs)
        for hook in (spec.reset, spec.check):
            handles += [db for db in handles_in(hook, (), {}) if db not in handles]
        return race_probe(self._request.node.stash.get(probes_key, []), handles)

    def record(self, item: pytest.Item) -> list[dict[str, Any]]:
        """Put the summaries of races not yet reported into ``item.user_properties``: each as
        flat ``racecheck_*`` properties with plain values (JUnit XML), and the summary dict
        under "racecheck" (for the summary table and the report, also across pytest-xdist);
        return the dicts, which the caller takes out again once the report carries them.

        Done as a phase's report is made, not in race(), so that the summary knows what the
        test's assertions rejected."""
        added = []
        for number, raced in enumerate(self._raced, 1):
            if raced.recorded:
                continue
            raced.recorded = True
            summary = raced.result.summary()
            summary["status"] = raced.status
            item.user_properties.extend(race_report.flat_properties(summary, number))
            item.user_properties.append(("racecheck", summary))
            added.append(summary)
        return added

    def warn_unchecked(self) -> None:
        """Warn about every race whose result the test never looked at."""
        node = self._request.node
        if node.stash.get(call_failed_key, False):
            return  # the test failed anyway: the warning would only add noise
        for number, raced in enumerate(self._raced, 1):
            if raced.status != "ran" or raced.result.checked:
                continue
            filename, lineno = raced.where
            warnings.warn_explicit(
                RaceResultNeverChecked(
                    f"race result never checked: {node.nodeid} raced "
                    f"{raced.result.fn_name} (race #{number}, line {lineno}) and never called "
                    "an assert_* method or read its rounds, histogram() or counts(), so it "
                    "passes whatever the racers did"
                ),
                category=RaceResultNeverChecked,
                filename=filename,
                lineno=lineno,
            )


race_key = pytest.StashKey[Race]()
"""The test's Race, for the report hook in plugin.py."""


class _AfterRound:
    """After every round: has a server died (the race stops in the round it died, with
    ServerDied, not after its remaining rounds of failures), then the progress line."""

    def __init__(
        self, progress: Callable[[RaceResult], Any], check_servers: Callable[[RaceResult], Any]
    ) -> None:
        self._progress = progress
        self._check_servers = check_servers

    def __call__(self, result: RaceResult) -> None:
        self._check_servers(result)
        self._progress(result)


@pytest.fixture
def race(request: pytest.FixtureRequest, _racecheck_isolation: str | None) -> Iterator[Race]:
    """Race a function in several real OS processes against a shared database.

    ``race(fn, *args, processes=, rounds=, reset=, check=, timeout=, stall_timeout=,
    start_method=, explore=, seed=, clock=, fresh_racers=, isolation=, meet_at=, pause_after=,
    pause_before=, schedule=, racer_setup=, racer_teardown=, **kwargs)`` runs
    ``fn(*args, **kwargs)`` in every racer, every round, and returns a RaceResult to assert on
    (a result never checked gets a warning). Defaults come from @pytest.mark.race(...), then
    --racecheck-* options, then racecheck_* ini keys.
    """
    racer = Race(request, _racecheck_isolation)
    request.node.stash[race_key] = racer
    yield racer
    racer.warn_unchecked()
