"""racer_setup and racer_teardown: once per racer process, around every round of the race."""

from __future__ import annotations

import pytest


def test_setup_runs_before_the_function_is_loaded(pytester: pytest.Pytester) -> None:
    """The raced function's module may need the set-up at import (Django models do)."""
    pytester.makepyfile(
        settings_mod="""
        configured = False

        def configure():
            global configured
            configured = True
        """,
        raced="""
        import settings_mod

        if not settings_mod.configured:
            raise RuntimeError("imported before configure()")

        def attempt():
            return "configured" if settings_mod.configured else "not configured"
        """,
        conftest="""
        import settings_mod

        settings_mod.configure()
        """,
        test_it="""
        import settings_mod
        from raced import attempt

        def test_it(race):
            result = race(attempt, processes=2, rounds=2, racer_setup=settings_mod.configure)
            result.assert_outcomes(["configured"])
        """,
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_a_failing_setup_names_the_racer_and_teardown_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        hooks="""
        import os
        from pathlib import Path

        from pytest_racecheck import current_racer

        def boom():
            raise ValueError("no settings here")

        def leave_mark(directory):
            Path(directory, f"torn-down-{current_racer()}").write_text(str(os.getpid()))
        """,
        test_it="""
        import functools

        import pytest
        import hooks
        from pytest_racecheck import RacerSetupFailed

        def attempt():
            return 1

        def test_setup_fails(race):
            expected = r"racer \\d .*racer_setup.*ValueError: no settings"
            with pytest.raises(RacerSetupFailed, match=expected):
                race(attempt, processes=2, rounds=1, racer_setup=hooks.boom)

        def test_teardown_runs(race, tmp_path):
            result = race(
                attempt, processes=2, rounds=1,
                racer_teardown=functools.partial(hooks.leave_mark, str(tmp_path)),
            )
            result.assert_outcomes([1])
            assert sorted(p.name for p in tmp_path.iterdir()) == ["torn-down-0", "torn-down-1"]
        """,
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=2)
