"""The pytest face of pytest-racecheck: hooks, markers and the fixtures users see.

The parts live apart, one job each: :mod:`.options` (``--racecheck-*`` options, ini keys, the
marker), :mod:`.race_fixture` (the ``race`` fixture), :mod:`.progress` (a long race's
progress lines), :mod:`.db_fixtures` (databases per test, the overridable ``postgres_server``),
:mod:`.summary` (the end-of-session table and report), :mod:`.isolation_matrix`
(``--racecheck-isolation=all``: an item per level, the table) and :mod:`.hookspecs` (what a
conftest may implement). This module wires them into pytest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_racecheck.plugin import gateway_option
from pytest_racecheck.plugin import hookspecs as hooks
from pytest_racecheck.plugin.db_fixtures import (
    _racecheck_server,
    make_postgres_db,
    make_sqlite_db,
    postgres_db,
    postgres_server,
    race_db,
    sqlite_db,
)
from pytest_racecheck.plugin.isolation_matrix import MatrixTable, _racecheck_isolation, parametrize
from pytest_racecheck.plugin.options import (
    GITHUB_SUMMARY_ENV,
    add_options,
    call_failed_key,
    isolation_levels,
    run_settings,
    settings_key,
    soak_factor,
    soak_key,
    soak_seconds,
    soak_seconds_key,
    spare_groups,
    spares_key,
)
from pytest_racecheck.plugin.race_fixture import Race, RaceResultNeverChecked, race, race_key
from pytest_racecheck.plugin.report_paths import check_report_path
from pytest_racecheck.plugin.summary import SummaryTable, add_html_extras
from pytest_racecheck.processes import hosts, spares

__all__ = [  # the fixtures are found here by pytest; the names stay importable from here
    "Race",
    "RaceResultNeverChecked",
    "_racecheck_isolation",
    "_racecheck_server",
    "make_postgres_db",
    "make_sqlite_db",
    "postgres_db",
    "postgres_server",
    "race",
    "race_db",
    "sqlite_db",
]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    gateway_option.add_gateway_option(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "race(processes=, rounds=, timeout=, start_method=, explore=, seed=, stall_timeout=, "
        "fresh_racers=, isolation=, replicas=, host_paths=): "
        "defaults for the race fixture in this test",
    )
    config.addinivalue_line(
        "markers",
        "sqlite_db(journal_mode='wal', busy_timeout=5.0): how the sqlite_db fixture makes its "
        "database",
    )
    config.stash[settings_key] = run_settings(config)
    config.stash[spares_key] = spares.configure(spare_groups(config))
    gateway_option.configure(config)
    config.stash[soak_key] = soak_factor(config)
    config.stash[soak_seconds_key] = soak_seconds(config)
    if config.stash[soak_key] > 1 and config.stash[soak_seconds_key] is not None:
        raise pytest.UsageError(
            "--racecheck-soak multiplies rounds, --racecheck-soak-seconds replaces them by a "
            "time budget: use one of them"
        )
    levels = isolation_levels(config)
    if len(levels) > 1 and not hasattr(config, "workerinput"):
        config.pluginmanager.register(MatrixTable(levels), "racecheck-isolation-matrix")
    if not hasattr(config, "workerinput"):  # the table is printed where the terminal is
        config.pluginmanager.register(
            SummaryTable(
                check_report_path(config),
                os.environ.get(GITHUB_SUMMARY_ENV),
                check_report_path(config, "html"),
            ),
            "racecheck-summary",
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``--racecheck-isolation=all`` (or a comma list): a test that races runs once per level."""
    parametrize(metafunc, isolation_levels(metafunc.config))


def pytest_unconfigure(config: pytest.Config) -> None:
    # Hosts and spares never outlive the session (an in-process pytester run ends them too).
    hosts.end_all()
    spares.end_all()
    gateway_option.unconfigure(config)
    previous = config.stash.get(spares_key, None)
    if previous is not None:
        spares.configure(previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Each phase's report carries the summaries of the races run in it (and, with
    pytest-html, a failed test's timeline as an extra); a test whose call raised (failed, or
    xfailed) does not get the never-checked warning."""
    raced = item.stash.get(race_key, None)
    added = raced.record(item) if raced is not None else []
    if call.when == "call" and call.excinfo is not None:
        item.stash[call_failed_key] = True
    outcome = yield
    if added and item.config.pluginmanager.hasplugin("html"):
        add_html_extras(outcome.get_result(), added)
    # The report has its own copy; later reports (the teardown's, which JUnit XML reads)
    # keep only the flat properties.
    item.user_properties[:] = [
        p for p in item.user_properties if not any(p[1] is summary for summary in added)
    ]
