"""The plugin's settings from outside a race: ``--racecheck-*`` options, ini keys, the marker.

One table (:data:`SETTINGS`) names the race settings an option or ini key may set; the
readers here turn the command line, the ini file and ``@pytest.mark.race`` into values, and
bad values into a :class:`pytest.UsageError` naming where they were set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_racecheck.controller.settings import DEFAULTS, NAMES, RaceSettings, validate_settings
from pytest_racecheck.processes import spares
from pytest_racecheck.wire.isolation import parse_levels

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
    "clock": (
        str,
        "the racers' clock: real, or virtual (sleeps end at once; time jumps to the earliest "
        "wake-up when every racer waits)",
        f"default {DEFAULTS.clock}",
    ),
    "stall_timeout": (
        float,
        "seconds a race's start-up or round may go without progress (no racer message, "
        "statement or CPU) before it fails as hung",
        f"default {DEFAULTS.stall_timeout:g}",
    ),
    "fresh_racers": (
        bool,
        "spawn a fresh interpreter for every racer of every race (new hash seeds each race) "
        "instead of forking racers from the session's racer hosts; spawn only",
        "default off",
    ),
    "isolation": (
        str,
        "isolation level of the racers' transactions on the race's PostgreSQL database: "
        "'read committed', 'repeatable read' or 'serializable'; on the command line also "
        "all, or a comma list: every race test then runs once per level",
        "default the database's own",
    ),
    "replicas": (
        int,
        "spread every race's racers over N hosts, racer i on host i mod N: simulated hosts "
        "(Linux namespaces: each its own hostname, process IDs, /tmp, /var/tmp, /run, "
        "/dev/shm), or the first N --racecheck-replica-gateways; the databases stay shared",
        f"default {DEFAULTS.replicas}",
    ),
    "host_paths": (
        tuple,
        "more paths each simulated host has its own of (comma-separated absolute paths)",
        "default none",
    ),
}
"""The settings a race takes from outside its call: type, help, default as text."""
assert tuple(SETTINGS) == NAMES, "options.SETTINGS must follow settings.RaceSettings"
POSTGRES_ENV = "RACECHECK_POSTGRES_URL"
GITHUB_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
SOAK_ROUNDS_CAP = 1_000_000
"""Rounds a race may run under ``--racecheck-soak-seconds``: the time budget ends it first."""

settings_key = pytest.StashKey[RaceSettings]()
soak_key = pytest.StashKey[int]()
soak_seconds_key = pytest.StashKey["float | None"]()
probes_key = pytest.StashKey[list[Any]]()
spares_key = pytest.StashKey[int]()
call_failed_key = pytest.StashKey[bool]()
servers_key = pytest.StashKey[list[Callable[[], str | None]]]()
"""Per test: how to ask each server its databases are on whether it died (None: it runs)."""


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


def setting(config: pytest.Config, name: str) -> tuple[Any, str] | None:
    """The raw value of a setting and where it came from: command line over ini, or None."""
    cli = config.getoption(f"racecheck_{name}")
    if cli is not None:
        return cli, "--racecheck-" + name.replace("_", "-")
    ini = config.getini(f"racecheck_{name}")
    if ini not in (None, ""):
        return ini, f"ini racecheck_{name}"
    return None


def add_options(parser: pytest.Parser) -> None:
    """Every ``--racecheck-*`` option and its ini key, in the order ``--help`` lists them."""
    group = parser.getgroup("racecheck", "cross-process race checks (pytest-racecheck)")
    _add_race_settings(parser, group)
    _add_session_run_options(parser, group)
    _add_output_options(parser, group)
    _add_environment_options(parser, group)


def _add_race_settings(parser: pytest.Parser, group: Any) -> None:
    """The :data:`SETTINGS` table: defaults that a race's own arguments or marker override."""
    for name, (kind, text, default) in SETTINGS.items():
        if kind is bool:
            group.addoption(
                "--racecheck-" + name.replace("_", "-"),
                dest=f"racecheck_{name}",
                action="store_true",
                default=None,
                help=f"{text} (also ini racecheck_{name}: true or false)",
            )
            parser.addini(f"racecheck_{name}", text, default=None)
            continue
        _add_setting(
            parser,
            group,
            name,
            f"{text} ({default}); a race() argument or @pytest.mark.race overrides it",
            metavar="N"
            if name in ("explore", "seed", "replicas")
            else "PATHS"
            if name == "host_paths"
            else None,
        )


def _add_session_run_options(parser: pytest.Parser, group: Any) -> None:
    """How long and how far every race of the session runs, whatever the race itself says."""
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


def _add_output_options(parser: pytest.Parser, group: Any) -> None:
    """Files written for the whole session, merged across pytest-xdist workers."""
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
        "html",
        "write one self-contained HTML page of every race in the session to PATH: verdicts, "
        "histograms, timings, and each failing round as a timeline (merged across "
        "pytest-xdist workers)",
        metavar="PATH",
    )


def _add_environment_options(parser: pytest.Parser, group: Any) -> None:
    """What the races run against and with: the PostgreSQL server and spare racers."""
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
        f"for races of fresh racers (--racecheck-fresh-racers, forkserver): keep N groups "
        f"of spare racers started ahead per race size, used only once ready; 0 turns them "
        f"off (default {spares.DEFAULT_LIMIT})",
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


BOOLEANS = {"true": True, "yes": True, "on": True, "1": True}
BOOLEANS |= {"false": False, "no": False, "off": False, "0": False}


def _convert(name: str, raw: Any, source: str) -> Any:
    kind = SETTINGS[name][0]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).strip().lower() not in BOOLEANS:
            raise pytest.UsageError(f"{source} must be true or false, got {raw!r}")
        return BOOLEANS[str(raw).strip().lower()]
    if kind is tuple:
        return tuple(p.strip() for p in str(raw).replace("\n", ",").split(",") if p.strip())
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"{source} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None


def run_settings(config: pytest.Config) -> RaceSettings:
    """The run-wide settings: command line over ini over the built-in defaults."""
    found = {name: f for name in SETTINGS if (f := setting(config, name)) is not None}
    if "isolation" in found:  # one level, or several for the matrix: isolation_levels()
        levels = isolation_levels(config)
        if len(levels) == 1:
            found["isolation"] = (levels[0], found["isolation"][1])
        else:
            del found["isolation"]
    values = {name: _convert(name, *f) for name, f in found.items()}
    # Each value alone first, so the message names the option or ini key that set it.
    for name, value in values.items():
        raw, source = found[name]
        _validate(DEFAULTS.replace(**{name: value}), f"{source}={raw}")
    settings = DEFAULTS.replace(**values)
    _validate(settings, " and ".join(f"{source}={raw}" for raw, source in found.values()))
    return settings


def _validate(settings: RaceSettings, where: str) -> None:
    try:
        validate_settings(settings, where)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None


def isolation_levels(config: pytest.Config) -> tuple[str, ...]:
    """The levels ``--racecheck-isolation`` (ini ``racecheck_isolation``) asks for: none, one
    (every race runs at it), or several (every race test runs once per level)."""
    found = setting(config, "isolation")
    if found is None:
        return ()
    raw, source = found
    try:
        return parse_levels(raw, f"{source}={raw}")
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None


def soak_factor(config: pytest.Config) -> int:
    """The soak factor, 1 when nothing sets it."""
    found = setting(config, "soak")
    if found is None:
        return 1
    raw, source = found
    factor = int(raw) if str(raw).strip().isdigit() else 0
    if factor < 1:
        raise pytest.UsageError(f"{source} must be a whole number of at least 1, got {raw!r}")
    return factor


def soak_seconds(config: pytest.Config) -> float | None:
    """The time budget of every race, None when nothing sets it."""
    found = setting(config, "soak_seconds")
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


def spare_groups(config: pytest.Config) -> int:
    """Spare groups per race size, the default when nothing sets it."""
    found = setting(config, "spares")
    if found is None:
        return spares.DEFAULT_LIMIT
    raw, source = found
    if not str(raw).strip().isdigit():
        raise pytest.UsageError(
            f"{source} must be a whole number (0 turns spares off), got {raw!r}"
        )
    return int(raw)


def stop_early(config: pytest.Config) -> bool:
    cli = config.getoption("racecheck_stop_early")
    return bool(config.getini("racecheck_stop_early")) if cli is None else bool(cli)


def marker_settings(node: pytest.Item) -> dict[str, Any]:
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
    given = {k: v for k, v in marker.kwargs.items() if v is not None}
    try:
        validate_settings(
            DEFAULTS.replace(**given),
            f"@pytest.mark.race({', '.join(f'{k}={v!r}' for k, v in given.items())})",
        )
    except (TypeError, ValueError) as exc:
        pytest.fail(f"{node.nodeid}: {exc}", pytrace=False)
    return dict(marker.kwargs)
