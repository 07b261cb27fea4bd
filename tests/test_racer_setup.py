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


def test_a_coroutine_function_runs_on_one_loop_per_racer(pytester: pytest.Pytester) -> None:
    """An ``async def`` is awaited in every round, on a loop the racer keeps for all rounds."""
    pytester.makepyfile(
        """
        import asyncio
        import os

        async def attempt(delay):
            await asyncio.sleep(delay)
            return (os.getpid(), id(asyncio.get_running_loop()))

        def test_async(race):
            result = race(attempt, 0.001, processes=2, rounds=4)
            per_racer = {}
            for rnd in result.rounds:
                for o in rnd.outcomes:
                    assert o.error is None, o.error
                    per_racer.setdefault(o.racer, set()).add(o.value)
            # every racer answered from one process and one loop in all four rounds
            assert sorted(len(v) for v in per_racer.values()) == [1, 1]
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_a_target_no_racer_reaches_fails_the_race_as_not_forced(pytester: pytest.Pytester) -> None:
    """A meeting nobody came to forced nothing: that is a failure, not a pass."""
    pytester.makepyfile(
        helpers="""
        def never_called():
            return None
        """,
        test_it="""
        import pytest
        from pytest_racecheck import RaceNotForced, point

        def attempt():
            point("checked")
            return 1

        @pytest.mark.parametrize("how", [
            {"meet_at": "chekced"},
            {"pause_after": "helpers:never_called"},
        ], ids=["meet_at", "pause_after"])
        def test_not_forced(race, how):
            with pytest.raises(RaceNotForced, match="never reached: this race was not forced"):
                race(attempt, processes=2, rounds=2, **how)

        def test_forced(race):
            result = race(attempt, processes=2, rounds=2, meet_at="checked")
            assert result.targets_reached == {"checked": 2}
        """,
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=3)


def test_conftest_hooks_run_in_every_racer_outer_first(pytester: pytest.Pytester) -> None:
    """``pytest_racecheck_racer_setup`` in conftests: outer, inner, then the race's own set-up;
    tear-downs the other way round. A conftest of a sibling directory does not apply."""
    log = pytester.path / "log"
    log.mkdir()
    hook = """
        import os
        from pathlib import Path
        from pytest_racecheck import current_racer

        def note(what):
            racer = current_racer()
            Path({log!r}, f"{{racer}}-{{os.getpid()}}").open("a").write(what + "\\n")

        def pytest_racecheck_racer_setup():
            note("setup {where}")

        def pytest_racecheck_racer_teardown():
            note("teardown {where}")
        """
    pytester.makeconftest(hook.format(log=str(log), where="outer"))
    for where in ("inner", "sibling"):
        pytester.mkpydir(where).joinpath("conftest.py").write_text(
            __import__("textwrap").dedent(hook.format(log=str(log), where=where))
        )
    pytester.path.joinpath("inner", "test_it.py").write_text(
        __import__("textwrap").dedent(
            """
            import functools
            from conftest import note

            def attempt():
                note("round")
                return 1

            def test_it(race):
                result = race(
                    attempt, processes=2, rounds=2,
                    racer_setup=functools.partial(note, "setup own"),
                    racer_teardown=functools.partial(note, "teardown own"),
                )
                result.assert_outcomes([1])
            """
        )
    )
    pytester.runpytest_subprocess("inner", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    files = sorted(log.iterdir())
    assert len(files) == 2, files  # one log per racer process
    expected = [
        "setup outer", "setup inner", "setup own", "round", "round",
        "teardown own", "teardown inner", "teardown outer",
    ]  # fmt: skip
    for path in files:
        assert path.read_text().split("\n")[:-1] == expected, path


def test_a_raising_conftest_setup_fails_the_race_naming_the_racer(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        def pytest_racecheck_racer_setup():
            raise LookupError("DJANGO_SETTINGS_MODULE is not set")
        """
    )
    pytester.makepyfile(
        """
        import pytest
        from pytest_racecheck import RacerSetupFailed

        def attempt():
            return 1

        def test_it(race):
            with pytest.raises(RacerSetupFailed) as info:
                race(attempt, processes=2, rounds=3)
            assert "racer 0" in str(info.value) or "racer 1" in str(info.value)
            assert "pytest_racecheck_racer_setup" in str(info.value)
            assert "LookupError: DJANGO_SETTINGS_MODULE is not set" in str(info.value)
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_hook_with_arguments_is_refused_by_pytest(pytester: pytest.Pytester) -> None:
    """The hooks take no arguments: pytest says so when it loads the conftest."""
    pytester.makeconftest(
        """
        def pytest_racecheck_racer_setup(racer):
            pass
        """
    )
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        ["*for hook 'pytest_racecheck_racer_setup'*", "*Argument(s) {'racer'} are declared*"]
    )


def test_an_async_setup_opens_what_the_async_racer_uses_every_round(
    pytester: pytest.Pytester,
) -> None:
    """``async def`` set-up and tear-down run on the racer's own loop, the one its rounds run
    on: an async PostgreSQL connection opened there serves every round."""
    pytest.importorskip("psycopg")
    pytester.makepyfile(
        app="""
        import os
        from pathlib import Path

        import psycopg
        from pytest_racecheck import current_racer

        conn = None

        async def connect(dsn):
            global conn
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

        async def backend():
            cur = await conn.execute("SELECT pg_backend_pid()")
            return (await cur.fetchone())[0]

        async def close(directory):
            pid = conn.info.backend_pid
            await conn.close()
            Path(directory, f"closed-{current_racer()}").write_text(str(pid))
        """,
        test_it="""
        import functools
        import app

        def test_it(race, postgres_db, tmp_path):
            result = race(
                app.backend, processes=2, rounds=4,
                racer_setup=functools.partial(app.connect, postgres_db.dsn),
                racer_teardown=functools.partial(app.close, str(tmp_path)),
            )
            per_racer = {}
            for rnd in result.rounds:
                for o in rnd.outcomes:
                    assert o.error is None, o.error
                    per_racer.setdefault(o.racer, set()).add(o.value)
            # one backend per racer, the same in all four rounds: the set-up's connection
            assert sorted(len(v) for v in per_racer.values()) == [1, 1]
            closed = {p.name: int(p.read_text()) for p in tmp_path.iterdir()}
            assert closed == {f"closed-{r}": v.pop() for r, v in per_racer.items()}
        """,
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
