"""A race's isolation level as the ``race`` fixture sees it: who set it (``race()``, the
marker, the command line's matrix or level, the ini key), and which databases get it.

Setting it is :mod:`pytest_racecheck.controller.isolation`'s.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_racecheck.backends.address import handles_in
from pytest_racecheck.backends.base import Database
from pytest_racecheck.controller.isolation import Plan, SkipLevel, plan
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.plugin.options import marker_settings, setting
from pytest_racecheck.wire.isolation import level_name


def isolation_source(
    request: pytest.FixtureRequest, given: dict[str, Any], matrix_level: str | None
) -> str:
    """Who set the race's isolation level, for messages and the report: ``given`` are the
    race() arguments passed, ``matrix_level`` the test item's level under the matrix."""
    if "isolation" in given:
        return "race()"
    if marker_settings(request.node).get("isolation") is not None:
        return "@pytest.mark.race"
    if matrix_level is not None:
        return "--racecheck-isolation"
    found = setting(request.config, "isolation")
    return found[1] if found is not None else "race()"


def isolation_plan(
    request: pytest.FixtureRequest,
    spec: RaceSpec,
    given: dict[str, Any],
    matrix_level: str | None,
) -> Plan:
    """Where the race's isolation level goes, before any racer starts. A level that cannot
    apply raises without the harness's frames; a run-wide level SQLite cannot have skips the
    test, saying why."""
    __tracebackhide__ = True
    if spec.isolation is None:
        return Plan(None)
    source = isolation_source(request, given, matrix_level)
    hooks: list[Any] = []
    for hook in (spec.reset, spec.check):
        hooks += [db for db in handles_in(hook, (), {}) if db not in hooks]
    fixtures = [
        value
        for value in getattr(request.node, "funcargs", {}).values()
        if isinstance(value, Database)
    ]
    try:
        level = level_name(spec.isolation, source)
        return plan(level, source, handles_in(spec.fn, spec.args, spec.kwargs), hooks, fixtures)
    except (TypeError, ValueError) as exc:
        raise exc.with_traceback(None) from None  # bad input: the message says it all
    except SkipLevel as exc:
        pytest.skip(str(exc))
