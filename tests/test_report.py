"""What CI machines read: the JSON report, JUnit XML properties, the GitHub step summary, and
the summary table's outcome column for a failed race."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import PYTEST_ANSWERING_CTRL_C, interrupt

from pytest_racecheck.results import report

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "report.schema.json").read_text())

# Three races: one passes; one fails in round 3 of 5 only (each racer's third call returns
# "bad"), so its most frequent outcome is a passing one; one explores with a fixed seed.
SESSION = """
import pytest
from pytest_racecheck import point

def attempt(_calls=[]):
    _calls.append(1)
    return "bad" if len(_calls) == 3 else "ok"

def visit():
    return "ok"

def test_passes(race):
    race(visit, processes=2, rounds=3).assert_outcomes({"ok"})

def test_fails_once(race):
    race(attempt, processes=2, rounds=5).assert_outcomes({"ok"})

def visit_twice():
    point("a")
    point("b")
    return "ok"

def test_explores(race):
    race(visit_twice, processes=2, explore=2, seed=42).assert_outcomes({"ok"})
"""


def validate(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    return document


def races_by_test(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["test_id"].rsplit("::", 1)[-1]: r for r in document["races"]}


def test_the_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_report_file_validates_and_says_what_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_inprocess("--racecheck-report=out/racecheck.json")
    result.assert_outcomes(passed=2, failed=1)
    path = pytester.path / "out" / "racecheck.json"
    result.stdout.fnmatch_lines([f"racecheck report: {path}"])
    document = validate(path)
    assert document["format"] == "pytest-racecheck-report"
    assert document["verdicts"] == {"passed": 2, "failed": 1}
    races = races_by_test(document)
    assert races["test_passes"]["verdict"] == "passed"
    assert races["test_passes"]["first_failure"] is None
    assert races["test_passes"]["timings"]["release_skew_us"]["p99"] >= 0
    failed = races["test_fails_once"]
    assert failed["test_id"] == "test_session.py::test_fails_once"
    assert (failed["verdict"], failed["rounds_run"], failed["rounds_requested"]) == ("failed", 5, 5)
    assert (failed["racers"], failed["start_method"], failed["mode"]) == (2, "spawn", "stress")
    assert failed["histogram"][0] == {"outcome": "ok x2", "rounds": 4}
    assert failed["failing_histogram"] == [{"outcome": "bad x2", "rounds": 1}]
    first = failed["first_failure"]
    assert first["index"] == 3 and "racer 0: bad" in first["why"]
    assert [(r["racer"], r["value"]) for r in first["racers"]] == [(0, "bad"), (1, "bad")]
    explored = races["test_explores"]
    assert (explored["mode"], explored["seed"]) == ("explore", 42)
    assert explored["search"] in ("dpor", "pct")
    assert " after 2 interleavings" in explored["explored"]
    # 2 orders of two racers with two points each, of more: neither exhausted nor complete
    assert (explored["exhausted"], explored["every_order"]) == (False, False)
    assert explored["timing_dependent"] == 0  # the two serial orders come first
    result.stdout.fnmatch_lines(["*test_explores*passed*2/2 interleavings*seed 42*"])


@pytest.mark.parametrize(
    ("fields", "cell"),
    [
        ({"mode": "stress"}, "5/50"),
        ({"mode": "explore", "exhausted": True, "every_order": True}, "5 interleavings, exhausted"),
        (
            {"mode": "explore", "every_order": True, "timing_dependent": 3, "seed": 7},
            "5/50 interleavings, every order, 3 timing-dependent, seed 7",
        ),
        ({"mode": "explore", "seed": 7}, "5/50 interleavings, seed 7"),
    ],
)
def test_the_summary_line_says_what_an_exploration_covered(fields, cell) -> None:
    assert report.rounds_cell({"rounds": 5, "rounds_requested": 50, **fields}) == cell


def test_report_path_from_ini_is_beside_the_ini_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nracecheck_report = r.json")
    pytester.makepyfile(test_session=SESSION)
    monkeypatch.chdir(pytester.mkdir("elsewhere"))
    pytester.runpytest_inprocess("-c", str(ini), str(pytester.path / "test_session.py"))
    assert len(validate(pytester.path / "r.json")["races"]) == 3
    assert not (pytester.path / "elsewhere" / "r.json").exists()


def test_report_is_merged_across_xdist_workers(pytester: pytest.Pytester, run_tag: str) -> None:
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_subprocess("-n", "2", "--racecheck-report=report.json")
    result.assert_outcomes(passed=2, failed=1)
    document = validate(pytester.path / "report.json")
    races = races_by_test(document)
    assert sorted(races) == ["test_explores", "test_fails_once", "test_passes"]
    assert races["test_fails_once"]["first_failure"]["index"] == 3


def test_failed_race_shows_its_most_frequent_failing_outcome(pytester: pytest.Pytester) -> None:
    """Issue 9 item 7: the table used to show "ok x2 (4x)", a passing outcome, for this race."""
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_inprocess("-k", "fails_once")
    result.stdout.fnmatch_lines(
        ["*racecheck summary*", "*test_fails_once*failed*bad x2  (1x, fails)"]
    )
    result.stdout.no_fnmatch_line("*test_fails_once*ok x2*")


def test_junit_xml_gets_flat_plain_properties(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_session=SESSION
        + """
def test_two_races(race):
    race(visit, processes=2, rounds=2).assert_outcomes({"ok"})
    race(visit, processes=3, rounds=1).assert_outcomes({"ok"})
"""
    )
    result = pytester.runpytest_inprocess("--junitxml=junit.xml")
    result.assert_outcomes(passed=3, failed=1)
    tree = ET.parse(pytester.path / "junit.xml")
    props = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in tree.iter("testcase")
    }
    failed = props["test_fails_once"]
    assert "racecheck" not in failed  # no Python repr of a dict
    assert not any(v.startswith(("{", "(")) for v in failed.values())
    assert failed["racecheck_rounds"] == "5"
    assert failed["racecheck_racers"] == "2"
    assert failed["racecheck_mode"] == "stress"
    assert failed["racecheck_most_frequent_outcome"] == "ok x2"
    assert failed["racecheck_most_frequent_failing_outcome"] == "bad x2"
    assert props["test_explores"]["racecheck_seed"] == "42"
    two = props["test_two_races"]
    assert (two["racecheck_racers"], two["racecheck_2_racers"]) == ("2", "3")
    # The terminal table still has every race.
    result.stdout.fnmatch_lines(["*racecheck summary*"])
    assert sum("test_two_races" in line for line in result.outlines) >= 2


def test_github_step_summary_gets_a_markdown_table(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.makepyfile(test_session=SESSION)
    pytester.runpytest_inprocess().assert_outcomes(passed=2, failed=1)
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, as GitHub expects
    assert "### racecheck summary" in text
    assert "| test | verdict | rounds | racers | time | most frequent outcome |" in text
    assert "| `test_session.py::test_fails_once` | failed | 5/5 | 2 |" in text
    assert "bad x2  (1x, fails)" in text


def test_no_step_summary_without_the_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makepyfile(test_session=SESSION)
    pytester.runpytest_inprocess("-k", "passes").assert_outcomes(passed=1)
    assert not list(pytester.path.glob("*.md"))


def test_markdown_escapes_pipes() -> None:
    race = {
        "processes": 2,
        "rounds": 1,
        "rounds_requested": 1,
        "elapsed_s": 0.5,
        "histogram": [["a | b", 1]],
    }
    text = report.markdown([("t.py::test[x|y]", "passed", race)])
    assert "`t.py::test[x\\|y]`" in text and "a \\| b  (1x)" in text


def test_unwritable_report_path_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(SESSION)
    (pytester.path / "afile").write_text("not a directory")
    result = pytester.runpytest_inprocess("--racecheck-report=afile/report.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --racecheck-report=*afile/report.json: the report cannot be written there: "
            "*afile is not a directory; give a file path in a writable directory"
        ]
    )
    assert "passed" not in result.stdout.str()


def test_report_write_failing_at_the_end_is_one_line_and_keeps_the_verdict(
    pytester: pytest.Pytester,
) -> None:
    """The report's directory is checked at start; the test then replaces it by a file, so
    the write at the end fails: one line says so, the table stays, the run still passes."""
    pytester.makepyfile(
        """
        import shutil

        def visit():
            return "ok"

        def test_passes(race):
            race(visit, processes=2, rounds=2).assert_outcomes({"ok"})
            shutil.rmtree("out")
            open("out", "w").close()
        """
    )
    (pytester.path / "out").mkdir()
    result = pytester.runpytest_inprocess("--racecheck-report=out/report.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*racecheck summary*",
            "test_report_write_failing*::test_passes  passed*",
            "racecheck: could not write the report *out/report.json: File exists: *out",
            "*1 passed*",
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "racecheck report:" not in result.stdout.str()


def test_race_interrupted_by_ctrl_c_is_in_the_report(
    pytester: pytest.Pytester, run_tag: str, tmp_path: Path
) -> None:
    import time

    started = tmp_path / "started"
    pytester.makepyfile(
        f"""
        import time

        def visit():
            return "ok"

        def attempt():
            open({str(started)!r}, "a").close()
            time.sleep(3600)

        def test_a_passes(race):
            race(visit, processes=2, rounds=2).assert_outcomes({{"ok"}})

        def test_b_interrupted(race):
            race(attempt, processes=2, rounds=1, timeout=600, stall_timeout=600)  # until Ctrl-C
        """
    )
    with open(tmp_path / "out", "w") as out:
        proc = pytester.popen(
            [*PYTEST_ANSWERING_CTRL_C, "-p", "no:cacheprovider", "--racecheck-report=r.json"],
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline, "racers never started"
        assert proc.poll() is None, (tmp_path / "out").read_text()
        time.sleep(0.05)
    interrupt(proc, tmp_path / "out")
    output = (tmp_path / "out").read_text()
    data = json.loads((pytester.path / "r.json").read_text())
    jsonschema.validate(data, SCHEMA)
    races = {r["test_id"].rsplit("::", 1)[-1]: r for r in data["races"]}
    assert races["test_a_passes"]["verdict"] == "passed", output
    interrupted = races["test_b_interrupted"]
    assert (interrupted["verdict"], interrupted["status"], interrupted["rounds_run"]) == (
        "interrupted",
        "interrupted",
        0,
    )
    assert "test_b_interrupted  interrupted" in output
