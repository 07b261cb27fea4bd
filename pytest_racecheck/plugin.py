"""The pytest face of pytest-racecheck: options, the race marker, fixtures, the summary table."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck.backends.base import Database
from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.blocking import AnyProbe, IdleProbe, ServerProbe, SqliteLockProbe
from pytest_racecheck.outcomes import RaceResult
from pytest_racecheck.race import RaceError, RaceSpec, run_race

DEFAULTS: dict[str, Any] = {"processes": 4, "rounds": 50, "timeout": 60.0, "start_method": "spawn"}
SETTINGS: dict[str, tuple[type, str]] = {
    "processes": (int, "racer processes per race"),
    "rounds": (int, "rounds per race"),
    "timeout": (float, "seconds a whole race may take before it fails"),
    "start_method": (str, "how racers start: spawn, fork or forkserver"),
}
POSTGRES_ENV = "RACECHECK_POSTGRES_URL"

settings_key = pytest.StashKey[dict[str, Any]]()
soak_key = pytest.StashKey[int]()
probes_key = pytest.StashKey[list[Any]]()


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
    for name, (_kind, text) in SETTINGS.items():
        _add_setting(
            parser,
            group,
            name,
            f"{text} (default {DEFAULTS[name]}); a race() argument or @pytest.mark.race "
            "overrides it",
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
        "race(processes=, rounds=, timeout=, start_method=): defaults for the race fixture "
        "in this test",
    )
    config.addinivalue_line(
        "markers",
        "sqlite_db(journal_mode='wal', busy_timeout=5.0): how the sqlite_db fixture makes its "
        "database",
    )
    config.stash[settings_key] = _run_settings(config)
    config.stash[soak_key] = _soak(config)
    if not hasattr(config, "workerinput"):  # the table is printed where the terminal is
        config.pluginmanager.register(SummaryTable(), "racecheck-summary")


def _convert(name: str, raw: Any, source: str) -> Any:
    kind = SETTINGS[name][0]
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"{source} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None


def _run_settings(config: pytest.Config) -> dict[str, Any]:
    """The run-wide settings: command line over ini over the built-in defaults."""
    settings = dict(DEFAULTS)
    for name in SETTINGS:
        found = _setting(config, name)
        if found is not None:
            settings[name] = _convert(name, *found)
    try:
        RaceSpec(fn=print, **{k: settings[k] for k in SETTINGS})
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


class Race:
    """The ``race`` fixture's value: call it to race a function across processes."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.results: list[RaceResult] = []

    @property
    def settings(self) -> dict[str, Any]:
        """This test's defaults: marker over command line over ini over built-in."""
        node = self._request.node
        return {**node.config.stash[settings_key], **_marker_settings(node)}

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
        meet_at: str | None = None,
        pause_after: str | None = None,
        pause_before: str | None = None,
        schedule: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> RaceResult:
        """Run ``fn(*args, **kwargs)`` in every racer, every round; return what they did."""
        __tracebackhide__ = True
        given = {
            "processes": processes,
            "rounds": rounds,
            "timeout": timeout,
            "start_method": start_method,
        }
        chosen = {**self.settings, **{k: v for k, v in given.items() if v is not None}}
        soak = self._request.config.stash[soak_key]
        if soak > 1 and isinstance(chosen["rounds"], int):  # a bad value is reported as given
            chosen["rounds"] *= soak
            chosen["timeout"] *= soak
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
                **chosen,
            )
        except (TypeError, ValueError) as exc:
            raise exc.with_traceback(None) from None  # bad input: the message says it all
        try:
            result = run_race(spec, probe=self._probe())
        except RaceError as exc:
            if exc.result is not None:
                self._record(exc.result, "broke down")
            # The report starts at the test's race() call: the harness's frames say nothing.
            raise exc.with_traceback(None) from None
        self._record(result, "ran")
        return result

    def _probe(self) -> AnyProbe:
        """How to tell racers blocked on a lock: ask the test's databases, or guess by sleep."""
        registered = self._request.node.stash.get(probes_key, [])
        return AnyProbe([*registered, IdleProbe()])

    def _record(self, result: RaceResult, status: str) -> None:
        self.results.append(result)
        summary = result.summary()
        summary["status"] = status
        self._request.node.user_properties.append(("racecheck", summary))


@pytest.fixture
def race(request: pytest.FixtureRequest) -> Race:
    """Race a function in several real OS processes against a shared database."""
    return Race(request)


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


@pytest.fixture
def make_sqlite_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SqliteDatabase]]:
    """Make fresh SQLite databases; each is deleted after the test."""
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
        _remove(db.files())
        Path(db.path).parent.rmdir()


@pytest.fixture
def sqlite_db(
    request: pytest.FixtureRequest, make_sqlite_db: Callable[..., SqliteDatabase]
) -> SqliteDatabase:
    """A fresh SQLite database file for this test (WAL, 5 s busy timeout by default)."""
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


def _postgres_setting(config: pytest.Config, name: str, env: str | None = None) -> str | None:
    found = _setting(config, name)
    if found is not None and str(found[0]).strip():
        return str(found[0])
    return (os.environ.get(env) or None) if env is not None else None


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
        provider = postgres.PostgresProvider.external(url)
    else:
        bindir = postgres.find_bindir(_postgres_setting(config, "postgres_bin"))
        if bindir is None:
            yield _PostgresSource(
                skip_reason=(
                    "no PostgreSQL available: install the server binaries (initdb, pg_ctl) or pass "
                    f"--racecheck-postgres-bin, or point {POSTGRES_ENV} / --racecheck-postgres-url "
                    "at a server"
                )
            )
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
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    source = _racecheck_postgres
    if source.provider is None:
        if request.config.getoption("racecheck_require_postgres"):
            pytest.fail(f"--racecheck-require-postgres: {source.skip_reason}", pytrace=False)
        pytest.skip(source.skip_reason)
    db = source.provider.create_database()
    probes = request.node.stash.setdefault(probes_key, [])
    probes.append(ServerProbe(source.provider.blocked_application_names))
    try:
        yield db
    finally:
        source.provider.drop_database(db)


@pytest.fixture(params=["sqlite", "postgres"])
def race_db(request: pytest.FixtureRequest) -> Database:
    """The test runs twice: on a SQLite file and on a PostgreSQL database."""
    return request.getfixturevalue(f"{request.param}_db")


# The end-of-session table: one line per race, also across pytest-xdist workers.


class SummaryTable:
    """Collects every race's summary from the test reports and prints one table at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict[str, Any]]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        races: list[dict[str, Any]] = [
            p[1] for p in report.user_properties if p[0] == "racecheck" and isinstance(p[1], dict)
        ]
        if not races or (report.when == "teardown" and report.passed):
            return
        if report.when == "call" or report.failed:
            self.rows.extend((report.nodeid, _verdict(report), race) for race in races)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        table = [("test", "verdict", "rounds", "racers", "time", "most frequent outcome")]
        # Node ids are not paths ("a/b.py::t[x/y]"): compare characters, then cut at a "/".
        shared = os.path.commonprefix([nodeid for nodeid, _, _ in self.rows])  # noqa: RUF071
        shared = shared[: shared.rfind("/", 0, max(shared.find("::"), 0) or None) + 1]
        for nodeid, verdict, race in self.rows:
            hist = race.get("histogram") or []
            top = f"{hist[0][0]}  ({hist[0][1]}x)" if hist else "-"
            rounds = f"{race['rounds']}/{race['rounds_requested']}"
            if race.get("status") == "broke down":
                verdict = f"{verdict} (race broke down)"
            table.append(
                (
                    nodeid[len(shared) :],
                    verdict,
                    rounds,
                    str(race["processes"]),
                    f"{race['elapsed_s']:.2f}s",
                    top,
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
        terminalreporter.write_sep("=", f"racecheck summary {shared}".rstrip())
        for row in table:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
            terminalreporter.write_line("  ".join([*cells, row[-1]]))


def _verdict(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfail" if report.skipped else "XPASS"
    return report.outcome
