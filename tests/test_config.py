"""Where a race's settings come from: race() argument > marker > command line > ini > default."""

from __future__ import annotations

import pytest

SHOW_SETTINGS = """
import pytest

def quick():
    from pytest_racecheck import point

    point("step")  # an explored racer must reach a point, or the race explored nothing
    return 1

{marker}
def test_settings(race):
    print("SETTINGS", race.settings)
    result = race(quick{args})
    print("RAN", result.processes, len(result.rounds))
    print("MODE", result.mode, result.rounds_requested, result.seed, result.budget_s)
"""


def run(
    pytester: pytest.Pytester, *cli: str, marker: str = "", args: str = "", ini: str = ""
) -> pytest.RunResult:
    if ini:
        pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider\n{ini}")
    pytester.makepyfile(SHOW_SETTINGS.format(marker=marker, args=args))
    return pytester.runpytest_inprocess("-s", *cli)


def test_built_in_defaults(pytester: pytest.Pytester) -> None:
    result = run(pytester)
    result.stdout.fnmatch_lines(
        [
            "*SETTINGS {'processes': 4, 'rounds': 50, 'timeout': 60.0, 'start_method': 'spawn', "
            "'explore': None, 'seed': None, 'clock': 'real', 'stall_timeout': 10.0, "
            "'fresh_racers': False, 'isolation': None, 'replicas': 1}",
            "RAN 4 50",
        ]
    )


def test_ini_over_default(pytester: pytest.Pytester) -> None:
    result = run(pytester, ini="racecheck_rounds = 7\nracecheck_processes = 3")
    result.stdout.fnmatch_lines(["RAN 3 7"])


def test_command_line_over_ini(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        "--racecheck-rounds=5",
        "--racecheck-processes=2",
        ini="racecheck_rounds = 7\nracecheck_processes = 3",
    )
    result.stdout.fnmatch_lines(["RAN 2 5"])


def test_marker_over_command_line(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        "--racecheck-rounds=5",
        "--racecheck-timeout=9",
        marker="@pytest.mark.race(rounds=4, processes=3)",
    )
    result.stdout.fnmatch_lines(
        [
            "*SETTINGS {'processes': 3, 'rounds': 4, 'timeout': 9.0, 'start_method': 'spawn', "
            "'explore': None, 'seed': None, 'clock': 'real', 'stall_timeout': 10.0, "
            "'fresh_racers': False, 'isolation': None, 'replicas': 1}",
            "RAN 3 4",
        ]
    )


def test_argument_over_marker(pytester: pytest.Pytester) -> None:
    result = run(
        pytester, marker="@pytest.mark.race(rounds=4, processes=3)", args=", rounds=2, processes=2"
    )
    result.stdout.fnmatch_lines(["RAN 2 2"])


def test_clock_from_the_marker(pytester: pytest.Pytester) -> None:
    result = run(pytester, marker="@pytest.mark.race(clock='virtual')", args=", rounds=2")
    result.stdout.fnmatch_lines(["*SETTINGS *'clock': 'virtual', *}", "RAN 4 2"])


def test_start_method_fork(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--racecheck-start-method=fork", args=", rounds=2")
    result.stdout.fnmatch_lines(["*SETTINGS *'start_method': 'fork'*", "RAN 4 2"])


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ("--racecheck-rounds=many", "*--racecheck-rounds must be an integer, got 'many'*"),
        ("--racecheck-processes=1", "ERROR: --racecheck-processes=1: processes must be at least*"),
        ("--racecheck-timeout=-3", "*timeout must be more than 0 seconds*"),
        ("--racecheck-start-method=threads", "*unknown start method 'threads'*"),
        ("--racecheck-clock=fast", "*unknown clock 'fast': use clock='virtual'*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, cli: str, message: str) -> None:
    result = run(pytester, cli)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run(pytester, ini="racecheck_rounds = lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini racecheck_rounds must be an integer, got 'lots'*"])


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    result = run(pytester, ini="racecheck_processes = 1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini racecheck_processes=1: processes must be at least 2*"])


def test_bad_marker_value_names_the_marker(pytester: pytest.Pytester) -> None:
    result = run(pytester, marker="@pytest.mark.race(processes=1)")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*test_settings: @pytest.mark.race(processes=1): processes must be at least 2*"]
    )
    assert "race(): processes" not in result.stdout.str()


def test_unknown_marker_argument_is_reported(pytester: pytest.Pytester) -> None:
    result = run(pytester, marker="@pytest.mark.race(round=3)")
    result.assert_outcomes(errors=0, failed=1)
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.race got unknown argument(s)*round*it takes processes, rounds*"]
    )


def test_sqlite_marker_sets_journal_mode_and_busy_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.sqlite_db(journal_mode="delete", busy_timeout=0.25)
        def test_db(sqlite_db):
            assert sqlite_db.scalar("PRAGMA journal_mode") == "delete"
            assert sqlite_db.busy_timeout == 0.25
            assert sqlite_db.url == "sqlite:///" + sqlite_db.path

        def test_default(sqlite_db):
            assert sqlite_db.scalar("PRAGMA journal_mode") == "wal"
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=2)


def test_sqlite_files_are_removed_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        seen = []

        def test_make(sqlite_db):
            sqlite_db.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            seen.append(sqlite_db.path)
            assert os.path.exists(sqlite_db.path)

        def test_gone():
            assert seen and not os.path.exists(seen[0])
            assert not os.path.exists(os.path.dirname(seen[0]))
        """
    )
    pytester.runpytest_inprocess("-p", "no:randomly").assert_outcomes(passed=2)


def test_suite_runs_under_xdist(pytester: pytest.Pytester, run_tag: str) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_race(race, sqlite_db, n):
            result = race(lambda: "ok", processes=2, rounds=3)
            result.assert_outcomes({"ok"})
        """
    )
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*racecheck summary*", "*::test_race?0?*passed*3/3*"])


def test_soak_multiplies_rounds_whatever_set_them(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--racecheck-soak=3", marker="@pytest.mark.race(rounds=4, processes=2)")
    result.stdout.fnmatch_lines(["RAN 2 12"])


def test_soak_from_ini_and_bad_soak(pytester: pytest.Pytester) -> None:
    result = run(pytester, args=", rounds=2, processes=2", ini="racecheck_soak = 2")
    result.stdout.fnmatch_lines(["RAN 2 4"])
    bad = run(pytester, "--racecheck-soak=0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--racecheck-soak must be a whole number of at least 1, got '0'*"])


def test_explore_and_seed_from_the_command_line(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--racecheck-explore=3", "--racecheck-seed=7", args=", processes=2")
    result.stdout.fnmatch_lines(
        [
            "*SETTINGS *'explore': 3, 'seed': 7, 'clock': 'real', 'stall_timeout': 10.0, *}",
            "MODE explore 3 7 None",
        ]
    )


def test_explore_from_ini_marker_and_argument(pytester: pytest.Pytester) -> None:
    ini = "racecheck_explore = 2\nracecheck_seed = 11"
    result = run(pytester, args=", processes=2", ini=ini)
    result.stdout.fnmatch_lines(["MODE explore 2 11 None"])
    result = run(
        pytester,
        "--racecheck-explore=3",
        marker="@pytest.mark.race(explore=4, seed=5)",
        args=", processes=2",
        ini=ini,
    )
    result.stdout.fnmatch_lines(["MODE explore 4 5 None"])
    result = run(
        pytester,
        marker="@pytest.mark.race(explore=4, seed=5)",
        args=", processes=2, explore=6, seed=1",
    )
    result.stdout.fnmatch_lines(["MODE explore 6 1 None"])


def test_run_wide_explore_replaces_rounds_from_marker_and_argument(
    pytester: pytest.Pytester,
) -> None:
    """explore=N is the number of rounds: a test's rounds= must not make it an error."""
    result = run(
        pytester,
        "--racecheck-explore=3",
        marker="@pytest.mark.race(rounds=4)",
        args=", processes=2, rounds=9",
    )
    result.stdout.fnmatch_lines(["MODE explore 3 * None"])
    result.assert_outcomes(passed=1)


def test_run_wide_explore_leaves_races_that_choose_their_interleaving(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from pytest_racecheck import point

        def visit():
            point("here")
            return "ok"

        def test_meet(race):
            result = race(visit, processes=2, rounds=2, meet_at="here")
            print("MODE", result.mode, len(result.rounds))
            result.assert_outcomes({"ok"})

        def test_stress(race):
            result = race(visit, processes=2)
            print("MODE", result.mode, result.rounds_requested)
            result.assert_outcomes({"ok"})
        """
    )
    result = pytester.runpytest_inprocess("-s", "--racecheck-explore=2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*MODE meet_at 2*", "*MODE explore 2*"])


def test_explore_argument_with_meet_at_is_still_refused(pytester: pytest.Pytester) -> None:
    result = run(pytester, args=", processes=2, explore=2, meet_at='here'")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*explore= chooses the interleaving itself*meet_at*"])


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ("--racecheck-explore=0", "*explore must be at least 1*"),
        ("--racecheck-explore=some", "*--racecheck-explore must be an integer, got 'some'*"),
        ("--racecheck-seed=x1", "*--racecheck-seed must be an integer, got 'x1'*"),
        ("--racecheck-soak-seconds=0", "*--racecheck-soak-seconds must be a number of seconds*"),
        ("--racecheck-soak-seconds=soon", "*--racecheck-soak-seconds must be a number*"),
    ],
)
def test_bad_new_options_are_usage_errors(
    pytester: pytest.Pytester, cli: str, message: str
) -> None:
    result = run(pytester, cli)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_soak_multiplies_explored_interleavings(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--racecheck-soak=2", "--racecheck-explore=3", args=", processes=2")
    result.stdout.fnmatch_lines(["MODE explore 6 *"])


def test_soak_seconds_is_a_time_budget(pytester: pytest.Pytester) -> None:
    """Rounds run until the budget is spent, whatever rounds= said."""
    from pytest_racecheck.plugin.options import SOAK_ROUNDS_CAP

    result = run(pytester, "--racecheck-soak-seconds=1.5", args=", processes=2, rounds=3")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"MODE stress {SOAK_ROUNDS_CAP} None 1.5"])
    ran = int(next(ln for ln in result.outlines if ln.startswith("RAN")).split()[2])
    assert 3 < ran < SOAK_ROUNDS_CAP
    result.stdout.fnmatch_lines(["*racecheck summary*", f"*passed*{ran} in 1.5s*"])


def test_soak_and_soak_seconds_together_are_refused(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--racecheck-soak=2", "--racecheck-soak-seconds=3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*use one of them*"])


ALWAYS_FAILS = """
def boom():
    raise RuntimeError("boom")

def test_boom(race):
    result = race(boom, processes=2, rounds=20)
    print("RAN", len(result.rounds))
"""


@pytest.mark.parametrize("how", ["option", "ini"])
def test_stop_early_ends_the_race_at_its_first_failing_round(
    pytester: pytest.Pytester, how: str
) -> None:
    pytester.makepyfile(ALWAYS_FAILS)
    if how == "ini":
        pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nracecheck_stop_early = true")
    result = pytester.runpytest_inprocess("-s", *(["--racecheck-stop-early"] * (how == "option")))
    result.stdout.fnmatch_lines(["*RAN 1"])
    plain = pytester.runpytest_inprocess("-s", "-o", "racecheck_stop_early=false")
    plain.stdout.fnmatch_lines(["*RAN 20"])


def test_choose_settings_rules() -> None:
    """The one place that decides explore, soak and budgets, without processes."""
    from pytest_racecheck.controller.settings import DEFAULTS
    from pytest_racecheck.plugin.options import SOAK_ROUNDS_CAP
    from pytest_racecheck.plugin.race_fixture import choose_settings

    base = {**DEFAULTS.as_dict(), "rounds": 7, "explore": 5}
    # Run-wide explore leaves a race that holds its own points, and drops rounds otherwise.
    assert choose_settings(base, {}, own_interleaving=True)[0]["explore"] is None
    assert choose_settings(base, {}, own_interleaving=True)[0]["rounds"] == 7
    chosen, _ = choose_settings(base, {"rounds": 3}, own_interleaving=False)
    assert (chosen["explore"], chosen["rounds"]) == (5, DEFAULTS.rounds)
    # explore and rounds both as arguments: kept, for RaceSpec to refuse.
    chosen, _ = choose_settings(base, {"explore": 2, "rounds": 3}, own_interleaving=True)
    assert (chosen["explore"], chosen["rounds"]) == (2, 3)
    # Soak multiplies what counts the rounds, and the timeout.
    chosen, _ = choose_settings(base, {}, own_interleaving=False, soak=3)
    assert (chosen["explore"], chosen["timeout"]) == (15, DEFAULTS.timeout * 3)
    stress = {**DEFAULTS.as_dict(), "rounds": 7}
    chosen, _ = choose_settings(stress, {}, own_interleaving=False, soak=3)
    assert chosen["rounds"] == 21
    # A time budget: stress rounds up to the cap, the timeout grows by the budget.
    chosen, budget = choose_settings(stress, {"timeout": 1}, False, soak_seconds=30.0)
    assert (chosen["rounds"], chosen["timeout"], budget) == (SOAK_ROUNDS_CAP, 31.0, 30.0)
    chosen, budget = choose_settings(base, {}, False, soak_seconds=30.0)
    assert (chosen["explore"], budget) == (5, 30.0)
