"""Spare racers: started ahead for races of fresh racers, each serves one race, used only
when ready, never outlives the test process.

Real processes only; nothing here is timed (the start-up figures are in docs/benchmarks.md,
from benchmarks/startup.py). Deadlines are generous bounds on "it ends", not measurements.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tagged_processes, wait_gone

from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.linux import procfs
from pytest_racecheck.processes import spares


def pid_and_hash() -> tuple[int, int]:
    return os.getpid(), hash("x")


def env_value() -> str | None:
    return os.environ.get("RACECHECK_SPARE_PROBE")


@pytest.fixture
def pool() -> Iterator[spares.SparePool]:
    previous = spares.configure(1)
    spares.end_all()
    spares.pool.stats = spares.PoolStats()
    yield spares.pool
    spares.end_all()
    spares.configure(previous)


READY_S = 60.0
"""A bound on a spare group's start-up, however loaded the machine."""


def _race(
    n: int = 2, start_method: str = "spawn", fn=pid_and_hash, ready: bool = True
) -> list[tuple[int, int]]:
    """A fresh racers' race, after the spares of its size (if any) are ready: a race does not
    wait for spares still starting, and these tests are about the spares being used."""
    if ready and spares.pool.pids(start_method, n):
        assert spares.pool.wait_ready(start_method, n, READY_S)
    spec = RaceSpec(fn=fn, processes=n, rounds=2, start_method=start_method, fresh_racers=True)
    result = run_race(spec)
    assert len(result.rounds) == 2
    values = [o.value for o in result.rounds[0].outcomes]
    assert values == [o.value for o in result.rounds[1].outcomes]  # one process per racer
    return values


def test_no_spare_before_a_race_asks(pool: spares.SparePool) -> None:
    assert pool.pids() == []
    assert pool.stats.started == 0


def test_second_race_runs_on_the_spares_the_first_left(pool: spares.SparePool) -> None:
    first = _race(3)
    waiting = pool.pids("spawn", 3)
    assert len(waiting) == 3  # started when the first race ended, for its size
    assert not set(waiting) & {pid for pid, _ in first}
    second = _race(3)
    assert [pid for pid, _ in second] == waiting
    assert pool.stats.used == 1


def test_spares_still_starting_are_not_waited_for(pool: spares.SparePool) -> None:
    _race(2)
    starting = pool.pids("spawn", 2)
    assert len(starting) == 2
    # Asked for right after they were launched: an interpreter takes tens of milliseconds to
    # start before it can import anything, so the group cannot be ready yet, and the race
    # starts its own racers rather than wait.
    pids = [pid for pid, _ in _race(2, ready=False)]
    assert not set(pids) & set(starting)
    assert pool.stats.used == 0 and pool.stats.discarded == 1
    wait_gone(starting, "spares ended unused still alive")


def test_race_right_after_a_race_launches_no_spare(
    pool: spares.SparePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delay is made long so that "right after" holds however loaded the machine: the
    # second race comes within it, as a test that follows another at once does.
    monkeypatch.setattr(spares, "FILL_DELAY_S", 60.0)
    _race(2)
    _race(2, ready=False)
    assert pool.stats.started == 0 and pool.stats.discarded == 0
    assert pool._filling is not None  # the second race asked for a group when it ended
    pool.end_all()  # cancels it: nothing was launched
    assert pool.stats.started == 0 and pool.pids() == []


class _SetAfter(threading.Event):
    """Not set for the first ``looks`` looks, set from then on: a race that comes while a
    group is being launched, at a chosen point of the launch (no timing involved)."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self.looks = looks

    def is_set(self) -> bool:
        self.looks -= 1
        return self.looks < 0


def _spawned_children() -> set[int]:
    """This process's children started by spawn (the resource tracker is left out)."""
    me = os.getpid()
    return {
        pid
        for pid, (ppid, _, _) in procfs.process_table().items()
        if ppid == me and "spawn_main" in " ".join(procfs.cmdline(pid))
    }


def test_launch_stopped_by_a_race_leaves_no_spare() -> None:
    before = _spawned_children()
    # Two spares launched, then the race comes: the group is not made, the two are killed
    # and reaped before start_group returns.
    assert spares.start_group("spawn", 3, _SetAfter(2)) is None
    assert _spawned_children() <= before


def test_each_spare_serves_one_race_and_ends(pool: spares.SparePool) -> None:
    seen: list[int] = []
    for _ in range(4):
        seen += [pid for pid, _ in _race(2)]
    assert len(seen) == len(set(seen)) == 8
    assert pool.stats.used == 3
    wait_gone(seen, "racers still alive after their race")  # reaped by the race's shutdown


def test_spares_have_their_own_hash_seeds(pool: spares.SparePool) -> None:
    _race(4)
    hashes = [h for _, h in _race(4)]
    assert pool.stats.used == 1
    # PYTHONHASHSEED unset: each spawned interpreter draws its own seed.
    assert "PYTHONHASHSEED" not in os.environ
    assert len(set(hashes)) == 4
    assert hash("x") not in hashes


def test_spare_sees_the_environment_of_race_time(
    pool: spares.SparePool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _race(2)
    assert len(pool.pids("spawn", 2)) == 2
    monkeypatch.setenv("RACECHECK_SPARE_PROBE", "set after the spares started")
    values = _race(2, fn=env_value)
    assert pool.stats.used == 1
    assert values == ["set after the spares started"] * 2


def test_group_started_under_other_interpreter_variables_is_not_used(
    pool: spares.SparePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _race(2)
    stale = pool.pids("spawn", 2)
    assert pool.wait_ready("spawn", 2, READY_S)  # ready, so only the variable stops its use
    monkeypatch.setenv("PYTHONHASHSEED", "7")  # a racer started now would have this seed
    pids = [pid for pid, _ in _race(2, ready=False)]
    assert not set(pids) & set(stale)
    assert pool.stats.used == 0 and pool.stats.discarded == 1
    wait_gone(stale, "discarded spares still alive")


def test_killed_spare_is_never_handed_out(pool: spares.SparePool) -> None:
    _race(2)
    victims = pool.pids("spawn", 2)
    assert pool.wait_ready("spawn", 2, READY_S)  # ready, so only the death stops its use
    os.kill(victims[0], signal.SIGKILL)
    wait_gone(victims[:1], "SIGKILL did not end the spare")
    pids = [pid for pid, _ in _race(2, ready=False)]
    assert not set(pids) & set(victims)
    assert pool.stats.discarded == 1 and pool.stats.fallbacks == 0
    wait_gone(victims, "the killed spare's partner still alive")


def test_spare_that_dies_while_taken_falls_back_to_fresh_racers(
    pool: spares.SparePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _race(2)
    victims = pool.pids("spawn", 2)
    os.kill(victims[1], signal.SIGKILL)
    # As if it died between the pool's look and the race's Setup.
    monkeypatch.setattr(spares.SpareGroup, "usable", lambda self: True)
    pids = [pid for pid, _ in _race(2)]
    assert not set(pids) & set(victims)
    assert pool.stats.used == 1 and pool.stats.fallbacks == 1
    wait_gone(victims, "spares of the failed group still alive")


def test_fork_races_use_no_spare(pool: spares.SparePool) -> None:
    _race(2, start_method="fork")
    _race(2, start_method="fork")
    assert pool.pids() == []
    assert pool.stats.started == 0 and pool.stats.used == 0


def test_forkserver_races_use_spares(pool: spares.SparePool) -> None:
    _race(2, start_method="forkserver")
    waiting = pool.pids("forkserver", 2)
    assert len(waiting) == 2
    assert [pid for pid, _ in _race(2, start_method="forkserver")] == waiting


def test_limit_zero_ends_spares_and_starts_none(pool: spares.SparePool) -> None:
    _race(2)
    waiting = pool.pids()
    assert len(waiting) == 2
    spares.configure(0)
    wait_gone(waiting, "spares still alive after they were turned off")
    _race(2)
    assert pool.pids() == []


SESSION = """
import os, pathlib
from pytest_racecheck.linux import procfs
from pytest_racecheck.processes import spares

def attempt():
    return os.getpid()

def test_one(race):
    race(attempt, processes=2, rounds=1, fresh_racers=True)
    pathlib.Path("spares.txt").write_text(" ".join(map(str, spares.pool.pids())))

def test_two(race):
    assert spares.pool.wait_ready("spawn", 2, 60)
    result = race(attempt, processes=2, rounds=1, fresh_racers=True)
    used = {o.value for o in result.rounds[0].outcomes}
    before = set(map(int, pathlib.Path("spares.txt").read_text().split()))
    assert used == before, (used, before)
"""


def test_session_end_ends_the_spares(pytester: pytest.Pytester, run_tag: str) -> None:
    pytester.makepyfile(SESSION)
    pytester.runpytest_subprocess("--racecheck-spares=1").assert_outcomes(passed=2)
    assert len((pytester.path / "spares.txt").read_text().split()) == 2
    # run_tag fails the test if any process of the run, spares included, is left.


@pytest.mark.parametrize("option", [[], ["--racecheck-spares=0"]], ids=["default", "zero"])
def test_no_spare_unless_asked_for(
    pytester: pytest.Pytester, run_tag: str, option: list[str]
) -> None:
    pytester.makepyfile(
        """
        from pytest_racecheck.linux import procfs
        from pytest_racecheck.processes import spares

        def attempt():
            return 1

        def test_none(race):
            started = spares.pool.stats.started
            race(attempt, processes=2, rounds=1)
            race(attempt, processes=2, rounds=1)
            assert spares.pool.pids() == [] and spares.pool.stats.started == started
        """
    )
    pytester.runpytest_subprocess(*option).assert_outcomes(passed=1)


def test_option_refuses_what_is_not_a_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--racecheck-spares=many")
    result.stderr.fnmatch_lines(["*--racecheck-spares must be a whole number*'many'*"])


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_spares_end_when_the_test_process_is_killed(
    pytester: pytest.Pytester, run_tag: str, start_method: str
) -> None:
    script = pytester.makepyfile(
        f"""
        import os, sys, time
        from pytest_racecheck.linux import procfs
        from pytest_racecheck.processes import spares
        from pytest_racecheck.controller.loop import run_race
        from pytest_racecheck.controller.spec import RaceSpec

        def attempt():
            return 1

        if __name__ == "__main__":
            spares.configure(1)
            run_race(
                RaceSpec(
                    fn=attempt,
                    processes=2,
                    rounds=1,
                    start_method={start_method!r},
                    fresh_racers=True,
                )
            )
            spares.pool._settle()
            print(" ".join(map(str, spares.pool.pids())), flush=True)
            time.sleep(3600)
        """
    )
    proc = pytester.popen([sys.executable, str(script)], stdout=-1, stderr=-1)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    pids = [int(p) for p in line.split()]
    # Killed before any assertion: the script sleeps for an hour, and its stderr is read only
    # once it is gone, so a failure here can never hang the test.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    assert len(pids) == 2, (line, proc.stderr.read() if proc.stderr else "")
    wait_gone(pids, "spares outlived their killed test process")
    # The fork server (forkserver) ends too, when it sees its parent's pipe close.
    helpers = [p for p, cmd in tagged_processes(run_tag) if "forkserver" in cmd]
    wait_gone(helpers, "the fork server outlived its killed test process")
