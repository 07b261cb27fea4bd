"""Racer hosts: each race's racers are new processes forked from hosts that no race's code has
touched, so nothing an earlier race left changes a verdict; ``fresh_racers`` spawns new
interpreters instead; nothing outlives the session.

Real processes only; nothing here is timed (the start-up figures are in docs/benchmarks.md,
from benchmarks/startup.py). Deadlines are generous bounds on "it ends", not measurements.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_gone

from pytest_racecheck import RacerDied
from pytest_racecheck.controller.errors import RaceError
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes import hosts


def pid_and_hash() -> tuple[int, int]:
    return os.getpid(), hash("x")


def _values(**kwargs: object) -> tuple[str, list[tuple[int, int]]]:
    result = run_race(RaceSpec(fn=pid_and_hash, rounds=1, **kwargs))  # type: ignore[arg-type]
    return result.racers, [o.value for o in result.rounds[0].outcomes]


def test_each_race_forks_new_racers_from_the_same_hosts() -> None:
    how, first = _values(processes=3)
    assert how == "hosted"
    started = hosts.pool.started
    _, second = _values(processes=3)
    assert hosts.pool.started == started  # no host started for the second race
    assert not {p for p, _ in first} & {p for p, _ in second}  # new processes
    wait_gone([p for p, _ in first + second], "racers outlived their race")
    # Racer i of every race has host i's hash seed; the racers of one race differ.
    assert [h for _, h in first] == [h for _, h in second]
    assert len({h for _, h in first}) == 3
    assert "PYTHONHASHSEED" not in os.environ and hash("x") not in {h for _, h in first}


def test_a_larger_race_starts_only_the_hosts_it_lacks() -> None:
    _values(processes=2)
    started = hosts.pool.started
    _values(processes=4)
    assert hosts.pool.started - started <= 2


def test_fresh_racers_are_new_interpreters_every_race() -> None:
    started = hosts.pool.started
    how, first = _values(processes=3, fresh_racers=True)
    _, second = _values(processes=3, fresh_racers=True)
    assert how == "fresh" and hosts.pool.started == started  # no host involved
    # Each racer of each race drew its own seed (64-bit hashes: no chance collision).
    hashes = {h for _, h in first} | {h for _, h in second}
    assert len(hashes) == 6


def test_other_start_methods_use_no_host() -> None:
    for method in ("fork", "forkserver"):
        assert _values(processes=2, start_method=method)[0] == "fresh"


def test_a_host_started_under_other_interpreter_variables_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _values(processes=2)
    before = hosts.pool.pids()
    monkeypatch.setenv("PYTHONHASHSEED", "7")  # a racer started now would have this seed
    _, values = _values(processes=2)
    wait_gone(before, "hosts of the old variables still alive")
    with_seed = {h for _, h in values}
    assert len(with_seed) == 1  # every racer now has seed 7
    monkeypatch.delenv("PYTHONHASHSEED")
    _values(processes=2)  # back to hosts with their own seeds
    assert len({h for _, h in _values(processes=2)[1]}) == 2


def test_a_racer_that_dies_is_reported_and_its_host_serves_the_next_race() -> None:
    def die() -> None:
        os._exit(9)

    _values(processes=2)
    before = hosts.pool.pids()
    with pytest.raises(RacerDied, match=r"racer \d \(pid \d+\) exited with status 9"):
        run_race(RaceSpec(fn=die, processes=2, rounds=1, timeout=30))
    assert _values(processes=2)[0] == "hosted"
    assert hosts.pool.pids() == before


def hang_after_saying(where: str) -> None:
    Path(where, str(os.getpid())).touch()
    time.sleep(3600)


def test_a_hung_racer_is_killed_and_its_host_serves_the_next_race(tmp_path: Path) -> None:
    _values(processes=2)
    before = hosts.pool.pids()
    # The racers sleep in their round, using no CPU: the race ends as stalled (or, on a
    # machine too loaded to start them within 30 s, as timed out, and the count below says).
    with pytest.raises(RaceError):
        run_race(
            RaceSpec(
                fn=hang_after_saying,
                args=(str(tmp_path),),
                processes=2,
                rounds=1,
                timeout=30,
                stall_timeout=2,
            )
        )
    hung = [int(p.name) for p in tmp_path.iterdir()]
    assert len(hung) == 2
    wait_gone(hung, "hung racers outlived their race")
    assert _values(processes=2)[0] == "hosted"
    assert hosts.pool.pids() == before


def test_a_killed_host_is_replaced() -> None:
    _values(processes=2)
    victim = hosts.pool.pids()[1]
    os.kill(victim, signal.SIGKILL)
    wait_gone([victim], "SIGKILL did not end the host")
    how, values = _values(processes=2)
    assert how == "hosted" and len(values) == 2
    assert victim not in hosts.pool.pids()


STATE = """
import helper

def attempt():
    return helper.bump()

def test_first(race):
    result = race(attempt, processes=2, rounds=2)
    # Within a race a racer keeps its module state: the second round sees the first's.
    assert [o.value for r in result.rounds for o in r.outcomes] == [1, 1, 2, 2]
    print("RACERS", result.racers)

def test_second(race):
    result = race(attempt, processes=2, rounds=1)
    # A racer carried over from test_first would return 3 here.
    assert [o.value for o in result.rounds[0].outcomes] == [1, 1]
    print("RACERS", result.racers)
"""

HELPER = """
calls = 0

def bump():
    global calls
    calls += 1
    return calls
"""


@pytest.mark.parametrize("option", [[], ["--racecheck-fresh-racers"]], ids=["hosted", "fresh"])
def test_a_race_sees_no_module_state_an_earlier_race_left(
    pytester: pytest.Pytester, run_tag: str, option: list[str]
) -> None:
    pytester.makepyfile(test_state=STATE, helper=HELPER)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *option)
    result.assert_outcomes(passed=2)
    how = "fresh" if option else "hosted"
    assert str(result.stdout).count(f"RACERS {how}") == 2


def test_fresh_racers_from_ini_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nracecheck_fresh_racers = true\n")
    pytester.makepyfile(
        """
        import pytest

        def one():
            return 1

        def test_ini(race):
            assert race(one, processes=2, rounds=1).racers == "fresh"

        @pytest.mark.race(fresh_racers=False)
        def test_marker(race):
            assert race(one, processes=2, rounds=1).racers == "hosted"

        def test_argument(race):
            assert race(one, processes=2, rounds=1, fresh_racers=False).racers == "hosted"
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_fresh_racers_refuses_what_is_not_a_truth_value(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nracecheck_fresh_racers = sometimes\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess()
    result.stderr.fnmatch_lines(["*racecheck_fresh_racers must be true or false*'sometimes'*"])


def test_hosts_end_with_the_session(pytester: pytest.Pytester, run_tag: str) -> None:
    pytester.makepyfile(
        """
        import pathlib
        from pytest_racecheck.processes import hosts

        def one():
            return 1

        def test_race(race):
            result = race(one, processes=2, rounds=1)
            assert [o.value for o in result.rounds[0].outcomes] == [1, 1]
            pathlib.Path("hosts.txt").write_text(" ".join(map(str, hosts.pool.pids())))
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert len((pytester.path / "hosts.txt").read_text().split()) == 2
    # run_tag fails the test if any process of the run, hosts included, is left.


def test_hosts_end_when_the_test_process_is_killed(pytester: pytest.Pytester, run_tag: str) -> None:
    script = pytester.makepyfile(
        """
        import time
        from pytest_racecheck.processes import hosts
        from pytest_racecheck.controller.loop import run_race
        from pytest_racecheck.controller.spec import RaceSpec

        def attempt():
            time.sleep(3600)

        if __name__ == "__main__":
            hosts.pool.take(2)
            print(" ".join(map(str, hosts.pool.pids())), flush=True)
            run_race(RaceSpec(fn=attempt, processes=2, rounds=1, timeout=3600, stall_timeout=3600))
        """
    )
    proc = pytester.popen([sys.executable, str(script)], stdout=-1, stderr=-1)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    pids = [int(p) for p in line.split()]
    # The racers are asleep in their round when the test process dies; killed before any
    # assertion, so a failure here can never hang the test.
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    assert len(pids) == 2, (line, proc.stderr.read() if proc.stderr else "")
    wait_gone(pids, "hosts outlived their killed test process")
    # run_tag checks that their racers are gone too.
