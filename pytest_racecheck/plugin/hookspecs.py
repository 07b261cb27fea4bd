"""Hooks a conftest.py (or a plugin) may implement: per-racer set-up and tear-down.

They run in the racer processes, not in the pytest process: the plugin sends each
implementation that applies to the test (by its conftest's directory, as pytest does for
fixtures) to every racer, as it sends ``racer_setup=``. Implementations take no arguments;
``pytest_racecheck.current_racer()`` says which racer runs them. :class:`ConftestHooks`
gathers the implementations that apply to a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest


@pytest.hookspec
def pytest_racecheck_racer_setup() -> None:
    """Run once in every racer, before the raced function's module is loaded.

    For what every race of a project needs in each process: ``django.setup()``, an engine,
    settings. Outer conftests' set-ups run first, then inner ones', then the race's own
    ``racer_setup=``. One that raises fails the race before its first round, naming the
    racer and showing its traceback.
    """


@pytest.hookspec
def pytest_racecheck_racer_teardown() -> None:
    """Run once in every racer after its last round: the race's own ``racer_teardown=``
    first, then inner conftests', then outer ones'."""


@dataclass(frozen=True)
class ConftestHooks:
    """The ``pytest_racecheck_racer_setup`` / ``_teardown`` implementations that apply to a
    test, in the order pytest registered them: plugins, then conftests from the outside in."""

    setups: tuple[Callable[[], Any], ...]
    teardowns: tuple[Callable[[], Any], ...]

    @classmethod
    def of(cls, node: pytest.Item) -> ConftestHooks:
        ihook = node.ihook  # only the conftests on the test's path, as for fixtures
        return cls(
            tuple(i.function for i in ihook.pytest_racecheck_racer_setup.get_hookimpls()),
            tuple(i.function for i in ihook.pytest_racecheck_racer_teardown.get_hookimpls()),
        )
