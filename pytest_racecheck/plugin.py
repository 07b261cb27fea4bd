"""The pytest face of pytest-racecheck: options, the race marker, fixtures, the summary table."""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck import report as race_report
from pytest_racecheck import spares
from pytest_racecheck.backends.address import handles_in
from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.blocking import (
    AnyProbe,
    BackendProbe,
    IdleProbe,
    ServerProbe,
    SqliteLockProbe,
    lock_probe,
)
from pytest_racecheck.outcomes import RaceResult
from pytest_racecheck.race import RaceError, run_race
from pytest_racecheck.settings import DEFAULTS, NAMES, RaceSettings, validate_settings
from pytest_racecheck.spec import RaceSpec

SETTINGS: dict[str, tuple[type, str, str]] = {
    "processes": (int, "racer processes per race", f"default {DEFAULTS.processes}"),
    "rounds": (int, "rounds per race", f"default {DEFAULTS.rounds}"),
    "timeout": (
        float,
        "seconds a whole race may take before it fails",
        f"default {DEFAULTS.timeout:g}",
    ),
    "start_method": (
        str,
        "how racers start: spawn, fork or forkserver",
        f"default {DEFAULTS.start_method}",
    ),
    "explore": (
        int,
        "explore N interleavings of the racers' steps per race, one per round, instead of "
        "stress rounds; a race that passes schedule=, meet_at= or pause_*= keeps its own",
        "default off",
    ),
    "seed": (
        int,
        "seed of explore mode's random choices, to rerun a reported failure",
        "default a fresh one per race, reported",
    ),
}
"""The settings a race takes from outside its call: type, help, default as text."""
assert tuple(SETTINGS) == NAMES, "plugin.SETTINGS must follow settings.RaceSettings"
POSTGRES_ENV = "RACECHECK_POSTGRES_URL"
GITHUB_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
SOAK_ROUNDS_CAP = 1_000_000
"""Rounds a race may run under ``--racecheck-soak-seconds``: the time budget ends it first."""
PROGRESS_AFTER_S = 3.0
"""A race that runs longer than this prints progress lines..."""
PROGRESS_EVERY_S = 5.0
"""...at most this often."""

settings_key = pytest.StashKey[RaceSettings]()
soak_key = pytest.StashKey[int]()
soak_seconds_key = pytest.StashKey["float | None"]()
probes_key = pytest.StashKey[list[Any]]()
race_key = pytest.StashKey["Race"]()
spares_key = pytest.StashKey[int]()
call_failed_key = pytest.StashKey[bool]()


class RaceResultNeverChecked(pytest.PytestWarning):
    """A race ran but its result was never asserted on or read: it checked nothing."""


def _add_setting(
    parser: pytest.Parser, group: Any, name: str, help: str, metavar: str | None = None
) -> None:
    """``--racecheck-NAME`` and the ini key ``racecheck_NAME``, which it overrides."""
    group.addoption(
        "--racecheck-" + name.replace("_", "-"),
        dest=f"racecheck_{name}",
        default=None,
        metavar=metavar or name.upper(),
        help=f"{help} (also ini racecheck_{name})",
    )
    parser.addini(f"racecheck_{name}", help, default=None)


def _setting(config: pytest.Config, name: str) -> tuple[Any, str] | None:
    """The raw value of a setting and where it came from: command line over ini, or None."""
    cli = config.getoption(f"racecheck_{name}")
    if cli is not None:
        return cli, "--racecheck-" + name.replace("_", "-")
    ini = config.getini(f"racecheck_{name}")
    if ini not in (None, ""):
        return ini, f"ini racecheck_{name}"
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("racecheck", "cross-process race checks (pytest-racecheck)")
    for name, (_kind, text, default) in SETTINGS.items():
        _add_setting(
            parser,
            group,
            name,
            f"{text} ({default}); a race() argument or @pytest.mark.race overrides it",
            metavar="N" if name in ("explore", "seed") else None,
        )
    _add_setting(
        parser,
        group,
        "soak",
        "multiply every race's rounds and timeout by N, whatever set them (a CI soak run)",
        metavar="N",
    )
    _add_setting(
        parser,
        group,
        "soak_seconds",
        "run every race for S seconds, as many rounds as fit, instead of its rounds "
        "(a CI soak run with a time budget); its timeout grows by S",
        metavar="S",
    )
    group.addoption(
        "--racecheck-stop-early",
        dest="racecheck_stop_early",
        action="store_true",
        default=None,
        help="end a race at its first round where a racer raised or the check failed "
        "(also ini racecheck_stop_early)",
    )
    parser.addini(
        "racecheck_stop_early",
        "end a race at its first round where a racer raised or the check failed",
        type="bool",
        default=False,
    )
    _add_setting(
        parser,
        group,
        "report",
        "write a JSON report of every race in the session to PATH (merged across "
        "pytest-xdist workers; layout in docs/report.schema.json)",
        metavar="PATH",
    )
    _add_setting(
        parser,
        group,
        "postgres_url",
        f"use this PostgreSQL server instead of a throwaway one (also env {POSTGRES_ENV})",
        metavar="URL",
    )
    _add_setting(
        parser,
        group,
        "postgres_bin",
        "directory with PostgreSQL's initdb and pg_ctl for the throwaway server",
        metavar="DIR",
    )
    _add_setting(
        parser,
        group,
        "spares",
        f"keep N groups of spare racers started ahead per race size and start method "
        f"(spawn, forkserver), so races start without waiting for interpreters; 0 turns "
        f"them off (default {spares.DEFAULT_LIMIT})",
        metavar="N",
    )
    group.addoption(
        "--racecheck-require-postgres",
        dest="racecheck_require_postgres",
        action="store_true",
        default=False,
        help="fail, instead of skipping, tests that need PostgreSQL when none is "
        "available (for CI)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "race(processes=, rounds=, timeout=, start_method=, explore=, seed=): defaults for the "
        "race fixture in this test",
    )
    config.addinivalue_line(
        "markers",
        "sqlite_db(journal_mode='wal', busy_timeout=5.0): how the sqlite_db fixture makes its "
        "database",
    )
    config.stash[settings_key] = _run_settings(config)
    config.stash[spares_key] = spares.configure(_spares(config))
    config.stash[soak_key] = _soak(config)
    config.stash[soak_seconds_key] = _soak_seconds(config)
    if config.stash[soak_key] > 1 and config.stash[soak_seconds_key] is not None:
        raise pytest.UsageError(
            "--racecheck-soak multiplies rounds, --racecheck-soak-seconds replaces them by a "
            "time budget: use one of them"
        )
    if not hasattr(config, "workerinput"):  # the table is printed where the terminal is
        config.pluginmanager.register(
            SummaryTable(_report_path(config), os.environ.get(GITHUB_SUMMARY_ENV)),
            "racecheck-summary",
        )


def _convert(name: str, raw: Any, source: str) -> Any:
    kind = SETTINGS[name][0]
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"{source} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None


def _run_settings(config: pytest.Config) -> RaceSettings:
    """The run-wide settings: command line over ini over the built-in defaults."""
    found = {name: _setting(config, name) for name in SETTINGS}
    settings = DEFAULTS.replace(
        **{name: _convert(name, *f) for name, f in found.items() if f is not None}
    )
    try:
        validate_settings(settings)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"racecheck settings: {exc}") from None
    return settings


def _soak(config: pytest.Config) -> int:
    """The soak factor, 1 when nothing sets it."""
    found = _setting(config, "soak")
    if found is None:
        return 1
    raw, source = found
    factor = int(raw) if str(raw).strip().isdigit() else 0
    if factor < 1:
        raise pytest.UsageError(f"{source} must be a whole number of at least 1, got {raw!r}")
    return factor


def _soak_seconds(config: pytest.Config) -> float | None:
    """The time budget of every race, None when nothing sets it."""
    found = _setting(config, "soak_seconds")
    if found is None:
        return None
    raw, source = found
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise pytest.UsageError(f"{source} must be a number of seconds above 0, got {raw!r}")
    return seconds


def _spares(config: pytest.Config) -> int:
    """Spare groups per race size, the default when nothing sets it."""
    found = _setting(config, "spares")
    if found is None:
        return spares.DEFAULT_LIMIT
    raw, source = found
    if not str(raw).strip().isdigit():
        raise pytest.UsageError(
            f"{source} must be a whole number (0 turns spares off), got {raw!r}"
        )
    return int(raw)


def pytest_unconfigure(config: pytest.Config) -> None:
    # Spares never outlive the session (an in-process pytester run ends its own, too).
    spares.end_all()
    previous = config.stash.get(spares_key, None)
    if previous is not None:
        spares.configure(previous)


def _stop_early(config: pytest.Config) -> bool:
    cli = config.getoption("racecheck_stop_early")
    return bool(config.getini("racecheck_stop_early")) if cli is None else bool(cli)


def _report_path(config: pytest.Config) -> Path | None:
    """Where to write the JSON report: the option's path is taken from the directory pytest
    was started in, the ini key's from the ini file's directory (as pytest does for paths)."""
    cli = config.getoption("racecheck_report")
    if cli:
        return config.invocation_params.dir / cli
    ini = config.getini("racecheck_report")
    if ini:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return base / str(ini)
    return None


def _marker_settings(node: pytest.Item) -> dict[str, Any]:
    marker = node.get_closest_marker("race")
    if marker is None:
        return {}
    if marker.args:
        pytest.fail(
            f"{node.nodeid}: @pytest.mark.race takes keyword arguments only "
            f"({', '.join(SETTINGS)}), got {marker.args!r}",
            pytrace=False,
        )
    unknown = set(marker.kwargs) - set(SETTINGS)
    if unknown:
        pytest.fail(
            f"{node.nodeid}: @pytest.mark.race got unknown argument(s) {sorted(unknown)}; "
            f"it takes {', '.join(SETTINGS)}",
            pytrace=False,
        )
    return dict(marker.kwargs)


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

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.results: list[RaceResult] = []
        self._raced: list[_Raced] = []
        self._created = time.monotonic()

    @property
    def settings(self) -> dict[str, Any]:
        """This test's defaults: marker over command line over ini over built-in."""
        node = self._request.node
        return {**node.config.stash[settings_key].as_dict(), **_marker_settings(node)}

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
        arguments = {
            "processes": processes,
            "rounds": rounds,
            "timeout": timeout,
            "start_method": start_method,
            "explore": explore,
            "seed": seed,
        }
        config = self._request.config
        chosen, budget_s = choose_settings(
            self.settings,
            {k: v for k, v in arguments.items() if v is not None},
            own_interleaving=any((meet_at, pause_after, pause_before, schedule)),
            soak=config.stash[soak_key],
            soak_seconds=config.stash[soak_seconds_key],
        )
        test_timeout = _pytest_timeout(self._request.node)
        if test_timeout is not None and isinstance(chosen["timeout"], (int, float)):
            # End the race, with its report naming the racers, before pytest-timeout ends the
            # test with a stack dump that says nothing about them.
            left = TIMEOUT_SHARE * test_timeout - (time.monotonic() - self._created)
            chosen["timeout"] = max(min(chosen["timeout"], round(left, 1)), MIN_CAPPED_TIMEOUT_S)
        try:
            spec = RaceSpec(
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
                stop_early=_stop_early(config),
                budget_s=budget_s,
                on_round=_Progress(config, self._request.node.nodeid, budget_s),
                **chosen,
            )
        except (TypeError, ValueError) as exc:
            raise exc.with_traceback(None) from None  # bad input: the message says it all
        try:
            probe, own_probes = self._probe(spec)
            try:
                result = run_race(spec, probe=probe)
            finally:
                own_probes.close()
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

    def _probe(self, spec: RaceSpec) -> tuple[AnyProbe, AnyProbe]:
        """How to tell racers blocked on a lock: ask the databases the fixtures made, and those
        whose handles the race hands its racers (``pytest_racecheck.database(...)``); and watch
        for racers asleep outside any database. Returns the probe, and the part of it made for
        this race alone, to close afterwards."""
        registered = self._request.node.stash.get(probes_key, [])
        covered = {p.path for p in registered if isinstance(p, SqliteLockProbe)}
        server_known = any(isinstance(p, BackendProbe) for p in registered)
        own: list[Any] = []
        for db in handles_in(spec.fn, spec.args, spec.kwargs):
            if (db.backend == "sqlite" and getattr(db, "path", None) in covered) or (
                db.backend == "postgres" and server_known
            ):
                continue
            probe = lock_probe(db)
            if probe is not None:
                own.append(probe)
        return AnyProbe([*registered, *own, IdleProbe()]), AnyProbe(own)

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


class _Progress:
    """Progress lines for a long race: one after PROGRESS_AFTER_S, then one every
    PROGRESS_EVERY_S, with the rounds done and the failing rounds so far; none under -q."""

    def __init__(self, config: pytest.Config, nodeid: str, budget_s: float | None) -> None:
        self._config = config
        self._nodeid = nodeid
        self._budget_s = budget_s
        self._started = time.monotonic()
        self._next = self._started + PROGRESS_AFTER_S

    def __call__(self, result: RaceResult) -> None:
        now = time.monotonic()
        if now < self._next or self._config.get_verbosity() < 0:
            return
        self._next = now + PROGRESS_EVERY_S
        done, failing = result.rounds_run, result.failing_rounds_so_far()
        of = "" if self._budget_s else f"/{result.rounds_requested}"
        line = (
            f"racecheck: {self._nodeid}: {result.fn_name}: round {done}{of}, "
            f"{failing} failing so far, {now - self._started:.0f}s"
        )
        _write_live(self._config, line)


def _write_live(config: pytest.Config, line: str) -> None:
    """Write a line to the terminal while a test runs, as pytest's live logging does: past
    output capturing, through the terminal reporter; an xdist worker has no terminal of its
    own, so it writes to its real stderr, which the controller's terminal shows."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman is not None else nullcontext():
        worker = getattr(config, "workerinput", None)
        if worker is None and terminal is not None:
            terminal.write_line(line)
        elif sys.__stderr__ is not None:
            prefix = f"[{worker['workerid']}] " if worker is not None else ""
            sys.__stderr__.write(prefix + line + "\n")
            sys.__stderr__.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each phase's report carries the summaries of the races run in it; a test whose call
    raised (failed, or xfailed) does not get the never-checked warning."""
    raced = item.stash.get(race_key, None)
    added = raced.record(item) if raced is not None else []
    if call.when == "call" and call.excinfo is not None:
        item.stash[call_failed_key] = True
    yield
    # The report has its own copy; later reports (the teardown's, which JUnit XML reads)
    # keep only the flat properties.
    item.user_properties[:] = [
        p for p in item.user_properties if not any(p[1] is summary for summary in added)
    ]


@pytest.fixture
def race(request: pytest.FixtureRequest) -> Iterator[Race]:
    """Race a function in several real OS processes against a shared database.

    ``race(fn, *args, processes=, rounds=, reset=, check=, timeout=, start_method=, explore=,
    seed=, meet_at=, pause_after=, pause_before=, schedule=, racer_setup=, racer_teardown=,
    **kwargs)`` runs ``fn(*args, **kwargs)`` in every racer, every round, and returns a
    RaceResult to assert on (a result never checked gets a warning). Defaults come from
    @pytest.mark.race(...), then --racecheck-* options, then racecheck_* ini keys.
    """
    racer = Race(request)
    request.node.stash[race_key] = racer
    yield racer
    racer.warn_unchecked()


@pytest.fixture
def make_sqlite_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SqliteDatabase]]:
    """Make fresh SQLite databases; each is deleted after the test.

    Each database gets a directory of its own, removed whole afterwards: code under test may
    leave lock files, backups or journals beside the database, and nothing outside that
    directory is ever touched."""
    made: list[SqliteDatabase] = []
    lock_probes: list[SqliteLockProbe] = []

    def make(journal_mode: str = "wal", busy_timeout: float = 5.0) -> SqliteDatabase:
        directory = tmp_path_factory.mktemp("racecheck-sqlite")
        db = SqliteDatabase.create(
            directory / "race.sqlite3", journal_mode=journal_mode, busy_timeout=busy_timeout
        )
        made.append(db)
        lock_probes.append(SqliteLockProbe(db.path))
        request.node.stash.setdefault(probes_key, []).append(lock_probes[-1])
        return db

    yield make
    for probe in lock_probes:
        probe.close()
    for db in made:
        db.close()
        shutil.rmtree(Path(db.path).parent, ignore_errors=True)


@pytest.fixture
def sqlite_db(
    request: pytest.FixtureRequest, make_sqlite_db: Callable[..., SqliteDatabase]
) -> SqliteDatabase:
    """A fresh SQLite database file for this test, removed with its directory afterwards.

    WAL mode and a 5 s busy timeout by default; @pytest.mark.sqlite_db(journal_mode=...,
    busy_timeout=...) changes them. ``.path``, ``.url``, ``.connect()``, ``.execute()``,
    ``.executescript()``, ``.scalar()``; picklable, so racers can use it.
    """
    marker = request.node.get_closest_marker("sqlite_db")
    options = dict(marker.kwargs) if marker is not None else {}
    unknown = set(options) - {"journal_mode", "busy_timeout"}
    if unknown:
        pytest.fail(
            f"@pytest.mark.sqlite_db got unknown argument(s) {sorted(unknown)}; "
            "it takes journal_mode and busy_timeout",
            pytrace=False,
        )
    return make_sqlite_db(**options)


# PostgreSQL: the server is found or started once per session (per xdist worker, sharing one
# server between workers); each test gets a database of its own.


@dataclass
class _PostgresSource:
    provider: Any = None
    skip_reason: str = ""


def _postgres_setting(
    config: pytest.Config, name: str, env: str | None = None
) -> tuple[str, str] | None:
    """The setting's value and where it was set: command line, ini, then ``env``."""
    found = _setting(config, name)
    if found is not None and str(found[0]).strip():
        return str(found[0]), found[1]
    value = os.environ.get(env) if env is not None else None
    return (value, f"env {env}") if value and env is not None else None


@pytest.fixture(scope="session")
def _racecheck_postgres(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_PostgresSource]:
    # psycopg is imported lazily there: without it, throwaway() says how to install it, and an
    # explicit URL without it is an error rather than a skip.
    from pytest_racecheck.backends import postgres

    config = request.config
    url = _postgres_setting(config, "postgres_url", POSTGRES_ENV)
    if url is not None:
        # The URL may hold a password and CI logs are often public: the backend's messages
        # mask it, and the error goes out without traceback, whose frames would show the URL.
        provider, problem = None, ""
        try:
            provider = postgres.PostgresProvider.external(url[0], source=f"set by {url[1]}")
        except Exception as exc:
            problem = postgres.scrub(str(exc), postgres.secrets_in(url[0]))
        if provider is None:
            pytest.fail(f"PostgreSQL set-up failed: {problem}", pytrace=False)
    else:
        bin_setting = _postgres_setting(config, "postgres_bin")
        bindir = postgres.find_bindir(bin_setting[0] if bin_setting else None)
        if bindir is None:
            yield _PostgresSource(skip_reason=f"no PostgreSQL available: {postgres.ENABLE_HINT}")
            return
        base = tmp_path_factory.getbasetemp()
        shared = base.parent if hasattr(config, "workerinput") else base
        try:
            provider = postgres.PostgresProvider.throwaway(shared, bindir)
        except postgres.PostgresUnavailable as exc:
            yield _PostgresSource(skip_reason=f"PostgreSQL unavailable: {exc}")
            return
    try:
        yield _PostgresSource(provider=provider)
    finally:
        provider.close()


@pytest.fixture
def postgres_db(
    request: pytest.FixtureRequest, _racecheck_postgres: _PostgresSource
) -> Iterator[Database]:
    """A fresh PostgreSQL database for this test, dropped afterwards.

    On a throwaway server started once per run (initdb/pg_ctl found on PATH, in
    /usr/lib/postgresql/*/bin or by --racecheck-postgres-bin), or on the server of
    --racecheck-postgres-url / RACECHECK_POSTGRES_URL. Skips with the reason when neither is
    available; --racecheck-require-postgres makes that an error. ``.dsn``, ``.url``, and the
    same conveniences as sqlite_db.
    """
    source = _racecheck_postgres
    if source.provider is None:
        if request.config.getoption("racecheck_require_postgres"):
            pytest.fail(f"--racecheck-require-postgres: {source.skip_reason}", pytrace=False)
        pytest.skip(source.skip_reason)
    from pytest_racecheck.backends import postgres

    # As in _racecheck_postgres: errors without the frames, whose values hold the password.
    hidden = postgres.secrets_in(source.provider.admin_dsn)
    db, problem = None, ""
    try:
        db = source.provider.create_database()
    except Exception as exc:
        problem = postgres.scrub(f"{type(exc).__name__}: {exc}", hidden)
    if db is None:
        pytest.fail(f"could not create this test's PostgreSQL database: {problem}", pytrace=False)
    probes = request.node.stash.setdefault(probes_key, [])
    backend_probe = BackendProbe(db.connect)
    probes.extend([ServerProbe(source.provider.blocked_application_names), backend_probe])
    yield db
    backend_probe.close()
    try:
        source.provider.drop_database(db)
    except Exception as exc:
        problem = postgres.scrub(f"{type(exc).__name__}: {exc}", hidden)
    if problem:
        pytest.fail(f"could not drop this test's PostgreSQL database: {problem}", pytrace=False)


@pytest.fixture(params=["sqlite", "postgres"])
def race_db(request: pytest.FixtureRequest) -> Database:
    """The test runs twice: on a SQLite file and on a PostgreSQL database (ids sqlite, postgres).

    The postgres half skips like postgres_db when no PostgreSQL is available.
    """
    return request.getfixturevalue(f"{request.param}_db")


# The end-of-session table: one line per race, also across pytest-xdist workers.


class SummaryTable:
    """Collects every race's summary from the test reports (also those pytest-xdist workers
    send) and, at the end of the session, prints one table, writes the JSON report and
    appends the table to the GitHub Actions step summary."""

    def __init__(self, report_path: Path | None = None, github_summary: str | None = None) -> None:
        self.rows: list[race_report.Row] = []
        self.report_path = report_path
        self.github_summary = github_summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Each race's summary rides on the report of the phase it ran in, once.
        self.rows.extend(
            (report.nodeid, _verdict(report), p[1])
            for p in report.user_properties
            if p[0] == "racecheck" and isinstance(p[1], dict)
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        shared = race_report.shared_prefix([nodeid for nodeid, _, _ in self.rows])
        table = race_report.table_rows(self.rows, shared)
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
        terminalreporter.write_sep("=", f"racecheck summary {shared}".rstrip())
        for row in table:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
            terminalreporter.write_line("  ".join([*cells, row[-1]]))
        if self.report_path is not None:
            terminalreporter.write_line(f"racecheck report: {self.report_path}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.report_path is not None:
            race_report.write(self.report_path, race_report.build(self.rows))
        if self.github_summary and self.rows:
            with open(self.github_summary, "a", encoding="utf-8") as out:
                out.write(race_report.markdown(self.rows) + "\n")


def _verdict(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfail" if report.skipped else "XPASS"
    return report.outcome
