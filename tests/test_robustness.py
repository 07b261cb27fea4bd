"""A race never hangs, never leaks a process, and says which racer broke it and how.

Each misbehaving racer here misbehaves deterministically (it is chosen by its number), so
these tests do not depend on timing; the timeouts are far above what a healthy race needs.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import multiprocess
import pytest
from conftest import PYTEST_ANSWERING_CTRL_C, interrupt

from pytest_racecheck import RacerDied, RaceTimeout
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes import hosts


def _no_racers_left() -> None:
    """No racer of this process runs: none spawned, and none forked by a racer host (the
    hosts themselves stay for the session)."""
    assert [p for p in multiprocess.active_children() if p.name.startswith("racecheck-")] == []
    for pid in hosts.pool.pids():
        assert Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == [], pid


def returns_one() -> int:
    return 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"processes": 1}, "processes must be at least 2"),
        ({"processes": "4"}, "processes must be an int"),
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"timeout": -1}, "timeout must be more than 0 seconds"),
        ({"timeout": 0}, "timeout must be more than 0 seconds"),
        ({"start_method": "thread"}, "unknown start method 'thread': use one of spawn"),
        ({"fn": 42}, "race() needs a callable"),
        ({"reset": "DELETE FROM runs"}, "reset must be a callable or None"),
        ({"check": 1}, "check must be a callable or None"),
        ({"meet_at": "a", "schedule": ["0:a"]}, "use one of meet_at, pause_after"),
        ({"schedule": ["zero:a"]}, "schedule step 'zero:a' is not 'racer:point'"),
        ({"schedule": ["5:a"]}, "names racer 5, but racers are numbered 0 to 3"),
        ({"pause_after": "no_colon_here"}, "name the function as 'package.module:function'"),
    ],
)
def test_bad_arguments_fail_before_any_process_starts(
    kwargs: dict[str, object], message: str
) -> None:
    spec = {"fn": returns_one, "processes": 4, **kwargs}
    with pytest.raises(
        (TypeError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        run_race(RaceSpec(**spec))  # type: ignore[arg-type]
    _no_racers_left()


def test_unpicklable_function_is_refused_before_start(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite3")

    def uses_open_connection() -> object:
        return conn.execute("SELECT 1").fetchone()

    with pytest.raises(TypeError, match=r"cannot send .*uses_open_connection.* open connections"):
        run_race(RaceSpec(fn=uses_open_connection, processes=2, rounds=1))
    _no_racers_left()
    conn.close()


def test_racer_that_raises_is_an_outcome_naming_the_racer(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_racecheck import current_racer

        def attempt():
            if current_racer() == 2:
                raise KeyError("racer two broke")
            return "ok"

        def test_raises(race):
            result = race(attempt, processes=3, rounds=2)
            assert result.histogram() == [("ok x2, raised KeyError x1", 2)]
            result.assert_exactly_one("ok")
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*2 racers returned 'ok'; racer 2 raised KeyError: 'racer two broke'*",
            "*racer 2 traceback:*",
            "*KeyError: 'racer two broke'*",
        ]
    )


def test_allowed_exceptions_do_not_fail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_racecheck import current_racer

        class Refused(Exception):
            pass

        def attempt():
            if current_racer() != 0:
                raise Refused()
            return "created"

        def test_allowed(race):
            race(attempt, processes=3, rounds=2).assert_exactly_one("created", allowed=[Refused])
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


DIE_IN_ROUND_TWO = """
import os, signal
from pytest_racecheck import current_racer

def attempt(marker):
    if current_racer() == 1 and os.path.exists(marker):
        {how}
    open(marker, "a").close()
    return "ok"

def test_dies(race, tmp_path):
    race(attempt, str(tmp_path / "marker"), processes=3, rounds=5, timeout=60)
"""


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("os._exit(3)", "*racer 1 (pid *) exited with status 3 while running attempt in round *"),
        (
            "os.kill(os.getpid(), signal.SIGKILL)",
            "*racer 1 (pid *) was killed by SIGKILL while running attempt in round *",
        ),
    ],
    ids=["exit", "killed"],
)
def test_racer_that_dies_fails_the_test_naming_it(
    pytester: pytest.Pytester, run_tag: str, how: str, expected: str
) -> None:
    pytester.makepyfile(DIE_IN_ROUND_TWO.format(how=how))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"E   *RacerDied: {expected}",
            "*racecheck summary*",
            "*test_dies*failed (race broke down)*",
        ]
    )


def test_hanging_racer_times_out_naming_it(pytester: pytest.Pytester, run_tag: str) -> None:
    pytester.makepyfile(
        """
        import time
        from pytest_racecheck import current_racer

        def attempt():
            if current_racer() == 0:
                time.sleep(3600)
            return "ok"

        def test_hangs(race):
            race(attempt, processes=2, rounds=3, timeout=3)
        """
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess()
    assert time.monotonic() - started < 60  # a generous bound: the point is "it ends"
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *RaceTimeout: race of attempt timed out after 3 s in round 1:",
            "E  *racer 0 (pid *) had not returned from attempt",
        ]
    )


def test_racer_that_cannot_load_the_function_names_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_racecheck import RacerSetupFailed

        class Unloadable:
            def __reduce__(self):
                return (_explode, ())

        def _explode():
            raise RuntimeError("cannot be rebuilt here")

        def attempt(arg):
            return "ok"

        def test_unloadable(race):
            expected = r"racer \\d .*could not load attempt: RuntimeError: cannot be rebuilt"
            with pytest.raises(RacerSetupFailed, match=expected):
                race(attempt, Unloadable(), processes=2, rounds=1)
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_unsendable_return_value_is_an_outcome(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading

        def attempt():
            return (i for i in range(3))  # generators cannot be pickled

        def test_unsendable(race):
            result = race(attempt, processes=2, rounds=1)
            assert result.histogram() == [("raised ReturnValueNotSendable x2", 1)]
        """
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_ctrl_c_stops_racers(pytester: pytest.Pytester, run_tag: str, tmp_path) -> None:
    started = tmp_path / "started"
    pytester.makepyfile(
        f"""
        import time

        def attempt():
            open({str(started)!r}, "a").close()
            time.sleep(3600)

        def test_interrupted(race):
            # hangs on purpose until Ctrl-C: no no-progress bound, which on a loaded machine
            # could end the race before the signal comes
            race(attempt, processes=3, rounds=1, timeout=600, stall_timeout=600)
        """
    )
    with open(tmp_path / "out", "w") as out:
        proc = pytester.popen(
            [*PYTEST_ANSWERING_CTRL_C, "-p", "no:cacheprovider"], stdout=out, stderr=out
        )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "racers never started"
        assert proc.poll() is None, (tmp_path / "out").read_text()
        time.sleep(0.05)
    code = interrupt(proc, tmp_path / "out")
    assert code != 0
    assert "KeyboardInterrupt" in (tmp_path / "out").read_text()


def test_run_race_leaves_no_children_after_failure() -> None:
    def hang() -> None:
        time.sleep(3600)

    with pytest.raises(RaceTimeout):
        run_race(RaceSpec(fn=hang, processes=2, rounds=1, timeout=2))
    _no_racers_left()


def test_racer_died_exception_carries_partial_result() -> None:
    def die() -> None:
        os._exit(9)

    with pytest.raises(RacerDied) as info:
        run_race(RaceSpec(fn=die, processes=2, rounds=3, timeout=30))
    assert info.value.result is not None and info.value.result.rounds == []
    _no_racers_left()


def test_false_check_fails_every_assertion_helper(pytester: pytest.Pytester) -> None:
    """A judge that accepts everything cannot overrule check(): the database's word."""
    pytester.makepyfile(
        """
        import pytest

        def attempt():
            return "ok"

        @pytest.mark.parametrize("helper", ["each_round", "exactly_one", "outcomes"])
        def test_check_false(race, helper):
            result = race(attempt, processes=2, rounds=2, check=lambda: False)
            if helper == "each_round":
                result.assert_each_round("anything goes", lambda rnd: None)
            elif helper == "exactly_one":
                result.assert_exactly_one("ok")
            else:
                result.assert_outcomes(["ok"])
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*first failing round, #1: *check() returned False*"])
    assert "passed" not in result.stdout.str().split("racecheck summary")[-1]


def test_leftovers_of_earlier_rounds_suggest_reset(pytester: pytest.Pytester) -> None:
    """Without reset=, round 2 finds round 1's row: the failure says a reset may be missing."""
    pytester.makepyfile(
        """
        import sqlite3

        def insert(path):
            with sqlite3.connect(path, timeout=30) as conn:
                conn.execute("INSERT INTO runs VALUES (1)")
            return "ok"

        def test_no_reset(race, tmp_path):
            path = str(tmp_path / "db")
            with sqlite3.connect(path) as conn:
                conn.execute("CREATE TABLE runs (n)")

            def one_row_per_racer():
                with sqlite3.connect(path) as conn:
                    return conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2

            race(insert, path, processes=2, rounds=3, check=one_row_per_racer).assert_outcomes(
                ["ok"]
            )
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*first failing round, #2: check() returned False*",
            "*hint: round 1 passed and this race has no reset=: round 2 may have seen what "
            "earlier rounds left in the database*",
        ]
    )


STARTS_PROCESSES = """
import os, subprocess, time

def start_processes(record, then_hang=False):
    # a child in a session of its own (out of the racer's process group)
    daemon = subprocess.Popen(["sleep", "600"], start_new_session=True)
    child = os.fork()
    if child == 0:
        # a double fork: the grandchild is orphaned at once, and holds every inherited fd
        # (with fork, multiprocess's resource tracker's pipe)
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(600)
            os._exit(0)
        with open(record, "a") as f:
            f.write(f"{grandchild}\\n")
        os._exit(0)
    os.waitpid(child, 0)
    with open(record, "a") as f:
        f.write(f"{daemon.pid}\\n")
    if then_hang:
        open(record + ".started", "a").close()
        time.sleep(3600)
    return "ok"

def gone(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"
"""


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_processes_a_racer_starts_end_with_the_race(
    pytester: pytest.Pytester, run_tag: str, start_method: str
) -> None:
    """A child in its own session and an orphaned grandchild, each round: all gone when race()
    returns (the pids are checked right then), and nothing tagged is left after the run (the
    run_tag fixture, multiprocess's resource tracker included)."""
    pytester.makepyfile(
        STARTS_PROCESSES
        + f"""
def test_leaves_nothing(race, tmp_path):
    record = str(tmp_path / "pids")
    result = race(start_processes, record, processes=2, rounds=2, start_method={start_method!r})
    result.assert_outcomes(["ok"])
    pids = [int(line) for line in open(record).read().split()]
    assert len(pids) == 8
    assert [p for p in pids if not gone(p)] == []
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_processes_racers_started_end_after_sigkill_of_pytest(
    pytester: pytest.Pytester, run_tag: str, tmp_path
) -> None:
    """pytest killed mid-race: its racers see their controller gone and end what they
    started; the run_tag fixture finds nothing tagged left (it waits for the racers' 0.2 s
    watchdog and the kernel)."""
    record = tmp_path / "pids"
    pytester.makepyfile(
        STARTS_PROCESSES
        + f"""
def test_killed(race):
    race(start_processes, {str(record)!r}, then_hang=True, processes=2, rounds=1, timeout=600,
         stall_timeout=600, start_method="fork")  # hangs until pytest is killed
"""
    )
    with open(tmp_path / "out", "w") as out:
        proc = pytester.popen(
            [*pytester._getpytestargs(), "-p", "no:cacheprovider"], stdout=out, stderr=out
        )
    deadline = time.monotonic() + 120
    while not os.path.exists(f"{record}.started"):
        assert time.monotonic() < deadline, "racers never started"
        assert proc.poll() is None, (tmp_path / "out").read_text()
        time.sleep(0.05)
    time.sleep(0.5)  # both racers have started their processes (one marker may be first)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert len(record.read_text().split()) == 4


STALLS = """
import time
import pytest
from pytest_racecheck import RaceStalled, RaceTimeout

def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def attempt(how):
    if how == "hangs":
        time.sleep(3600)
    if how == "slow":
        burn(1.5)
    return "ok"

def test_round_hangs(race):
    with pytest.raises(RaceStalled) as info:
        race(attempt, "hangs", processes=2, rounds=2, timeout=600, stall_timeout=2)
    print("MESSAGE", str(info.value).replace("\\n", " | "))

def test_round_slow(race):
    # 1.5 s of CPU per racer, more than the no-progress bound: slow, not hung
    race(attempt, "slow", processes=2, rounds=1, timeout=600, stall_timeout=1).assert_outcomes(
        ["ok"]
    )

def test_start_up_hangs(race):
    with pytest.raises(RaceStalled) as info:
        race(attempt, "fine", processes=2, rounds=1, timeout=600, stall_timeout=2,
             racer_setup=lambda: time.sleep(3600))
    print("MESSAGE", str(info.value).replace("\\n", " | "))

def test_start_up_slow(race):
    race(attempt, "fine", processes=2, rounds=1, timeout=600, stall_timeout=1,
         racer_setup=lambda: burn(1.5)).assert_outcomes(["ok"])

@pytest.mark.race(stall_timeout=30)
def test_outer_bound(race):
    with pytest.raises(RaceTimeout) as info:
        race(attempt, "hangs", processes=2, rounds=1, timeout=4)
    assert not isinstance(info.value, RaceStalled)
    print("MESSAGE", str(info.value).replace("\\n", " | "))
"""


def test_a_hang_is_told_from_a_slow_machine(pytester: pytest.Pytester, run_tag: str) -> None:
    """Racers that sleep (no message, no CPU) fail at the 2 s no-progress bound, in start-up
    and in a round, long before the 600 s timeout; racers that compute for 1.5 s, more
    than the bound, pass (each racer is given a full look's CPU share even on a loaded machine:
    2 ms per half second, where a busy 2-core machine at a load of 40 still gives about 25 ms
    per second). The outer bound's message says it is the outer bound."""
    pytester.makepyfile(STALLS)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-s")
    assert time.monotonic() - started < 1200  # the point: far from 5 x 600 s
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines_random(
        [
            "*MESSAGE race of attempt made no progress for 2 s while round 1 (stall_timeout=2, "
            "the no-progress bound; the race's timeout=600 was not reached)*racer 0 (pid *) "
            "had not returned from attempt*raise stall_timeout=*",
            "*MESSAGE race of attempt made no progress for 2 s while starting up (stall_timeout=2*"
            "racer 0 (pid *) was still starting up*",
            # in round 1, or still starting up on a loaded machine: either way the outer bound
            "*MESSAGE race of attempt timed out after 4 s *the race's timeout=4 (its outer "
            "bound) was reached*",
        ]
    )
