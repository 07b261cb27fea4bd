"""Where a race's settings come from: race() argument > marker > command line > ini > default."""

from __future__ import annotations

import pytest

SHOW_SETTINGS = """
import pytest

def quick():
    return 1

{marker}
def test_settings(race):
    print("SETTINGS", race.settings)
    result = race(quick{args})
    print("RAN", result.processes, len(result.rounds))
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
            "*SETTINGS {'processes': 4, 'rounds': 50, 'timeout': 60.0, 'start_method': 'spawn'}",
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
            "*SETTINGS {'processes': 3, 'rounds': 4, 'timeout': 9.0, 'start_method': 'spawn'}",
            "RAN 3 4",
        ]
    )


def test_argument_over_marker(pytester: pytest.Pytester) -> None:
    result = run(
        pytester, marker="@pytest.mark.race(rounds=4, processes=3)", args=", rounds=2, processes=2"
    )
    result.stdout.fnmatch_lines(["RAN 2 2"])


def test_start_method_fork(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--racecheck-start-method=fork", args=", rounds=2")
    result.stdout.fnmatch_lines(["*SETTINGS *'start_method': 'fork'*", "RAN 4 2"])


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ("--racecheck-rounds=many", "*--racecheck-rounds must be an integer, got 'many'*"),
        ("--racecheck-processes=1", "*racecheck settings: race(): processes must be at least 2*"),
        ("--racecheck-timeout=-3", "*timeout must be more than 0 seconds*"),
        ("--racecheck-start-method=threads", "*unknown start method 'threads'*"),
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
