"""Racers on execnet gateways (``--racecheck-replica-gateways``, ``replicas=N``): two ``popen``
gateways on this machine stand for two machines.

Real processes only: real gateways, remote racer hosts, racers and databases. The verdict
tests run the reference strategies and the groomer's lease as a user runs them (pytester, a
subprocess pytest with the options) and compare with one host; every racer of a gateway race
is checked to have run on a gateway. Nothing is timed here; deadlines are bounds on "it ends".
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tagged_processes, wait_gone

from pytest_racecheck import point
from pytest_racecheck.controller.errors import RaceError, RacerDied, RaceStalled
from pytest_racecheck.controller.loop import run_race
from pytest_racecheck.controller.spec import RaceSpec
from pytest_racecheck.processes import gateways

ROOT = Path(__file__).resolve().parent.parent
POPEN = f"popen//python={sys.executable}"
OPTION = f"--racecheck-replica-gateways=2*{POPEN}"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


@pytest.fixture
def two_gateways() -> Iterator[gateways.GatewayPool]:
    """This test process's gateway pool on two popen gateways, ended afterwards."""
    previous = gateways.pool.configure([POPEN, POPEN])
    yield gateways.pool
    gateways.pool.end_all()
    gateways.pool.configure(previous)


# --- where racers run --------------------------------------------------------------------------


def where() -> tuple[int, int]:
    """The racer's pid and its host's parent: the gateway's interpreter."""
    host = os.getppid()
    stat = Path(f"/proc/{host}/stat").read_text()
    return os.getpid(), int(stat[stat.rindex(")") + 2 :].split()[1])


def test_racer_i_runs_on_gateway_i_mod_n(two_gateways: gateways.GatewayPool) -> None:
    """Reliable: pids and parents are facts of the process tree, not timing."""
    result = run_race(RaceSpec(fn=where, processes=4, rounds=2, replicas=2))
    assert result.racers == "gateways"
    values = [o.value for o in result.rounds[0].outcomes]
    gateway_of = [g for _, g in values]
    assert gateway_of[0] == gateway_of[2] != gateway_of[1] == gateway_of[3]
    assert os.getpid() not in gateway_of  # not this process's own racer hosts
    wait_gone([p for p, _ in values], "racers outlived their race")
    again = run_race(RaceSpec(fn=where, processes=2, rounds=1, replicas=2))
    assert [g for _, g in (o.value for o in again.rounds[0].outcomes)] == gateway_of[:2]


def die_in_racer_1() -> None:
    from pytest_racecheck import current_racer

    if current_racer() == 1:
        os._exit(3)


def test_a_racer_that_dies_is_named(two_gateways: gateways.GatewayPool) -> None:
    """Reliable: racer 1 exits in every round it runs; the race cannot pass."""
    with pytest.raises(RacerDied) as caught:
        run_race(RaceSpec(fn=die_in_racer_1, processes=2, rounds=3, replicas=2))
    text = str(caught.value)
    assert "racer 1 (pid" in text and "gateway 1" in text, text
    assert "3" in text, text


# --- refusals ----------------------------------------------------------------------------------


def nothing() -> None:
    pass


def test_refusals_say_why(two_gateways: gateways.GatewayPool, sqlite_db: object) -> None:
    """Each is refused before a racer starts (no gateway is even made)."""
    cases = [
        (dict(replicas=3, processes=3), "names 2"),
        (dict(replicas=2, clock="virtual"), "memory-mapped file"),
        (dict(replicas=2, args=(sqlite_db,), meet_at="x", fn=lambda db: None), "SQLite's lock"),
    ]
    for kwargs, expected in cases:
        spec = RaceSpec(**{"fn": nothing, **kwargs})  # type: ignore[arg-type]
        with pytest.raises(RaceError, match=expected):
            run_race(spec)
    assert gateways.pool.hosts == []
    with pytest.raises(ValueError, match="fresh_racers=False"):
        RaceSpec(fn=nothing, replicas=2, fresh_racers=True)  # refused as on simulated hosts
    assert gateways.parse_specs(["2*popen", "ssh=a@b"]) == ["popen", "popen", "ssh=a@b"]
    with pytest.raises(ValueError, match="popen//python=PYTHON"):
        gateways.parse_specs(["socket=1.2.3.4:8888"])
    assert "another machine" in (
        gateways_refusal(sqlite_db, ["ssh=user@box//python=python3"]) or ""
    )


def gateways_refusal(db: object, specs: list[str]) -> str | None:
    from pytest_racecheck.controller.replica_gateways import refusal

    return refusal(RaceSpec(fn=lambda db: None, args=(db,), replicas=2), specs)


def test_without_gateways_replicas_are_simulated_hosts() -> None:
    previous = gateways.pool.configure([])
    try:
        result = run_race(RaceSpec(fn=nothing, processes=2, rounds=1, replicas=2))
    finally:
        gateways.pool.configure(previous)
    assert result.racers == "hosted" and result.hosts == ("replica-0", "replica-1")


def hold_a_file_lock(path: str) -> None:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # the second racer sleeps here, outside any database
        point("locked")


def test_a_wait_outside_the_database_is_explained(
    two_gateways: gateways.GatewayPool, tmp_path: Path
) -> None:
    """Reliable: the racer that does not hold the lock sleeps in flock until the holder, held
    at "locked" by the meeting, returns; the controller cannot see that sleep on another
    machine, so the meeting never completes and the no-progress bound must fire. Start-up is
    not taken for a hang on a busy machine: the gateways' remote hosts report their racers'
    CPU."""
    spec = RaceSpec(
        fn=hold_a_file_lock,
        args=(str(tmp_path / "lock"),),
        replicas=2,
        processes=2,
        rounds=1,
        meet_at="locked",
        stall_timeout=3,
    )
    with pytest.raises(RaceStalled, match="racers on gateways run on other machines"):
        run_race(spec)


# --- verdicts as a user gets them --------------------------------------------------------------

STRATEGIES = """
import pytest
from pytest_racecheck import runs

BROKEN = pytest.mark.xfail(strict=True, raises=AssertionError, reason="check-then-act")
CASES = [
    ("naive", runs.naive, {}, False, ("sqlite", "postgres"), True),
    ("A-catch", runs.A, {"form": "catch"}, True, ("sqlite", "postgres"), False),
    ("A-upsert", runs.A, {"form": "upsert"}, True, ("postgres",), False),
    ("B-immediate", runs.B, {"form": "immediate"}, False, ("sqlite",), False),
    ("B-advisory", runs.B, {"form": "advisory"}, False, ("postgres",), False),
    ("B-lock_table", runs.B, {"form": "lock_table"}, False, ("postgres",), False),
    ("C", runs.C, {}, False, ("sqlite", "postgres"), False),
    ("lease", runs.lease, {}, False, ("sqlite", "postgres"), False),
]
PARAMS = [
    pytest.param(backend, strategy, kwargs, unique, replicas,
                 id=f"{name}-{backend}-r{replicas}", marks=[BROKEN] if broken else [])
    for name, strategy, kwargs, unique, backends, broken in CASES
    for backend in backends
    for replicas in (1, 2)
]

@pytest.mark.race(processes=8, rounds=30)
@pytest.mark.parametrize(("backend", "strategy", "kwargs", "unique", "replicas"), PARAMS)
def test_start_one_run(race, request, backend, strategy, kwargs, unique, replicas):
    db = request.getfixturevalue(f"{backend}_db")
    runs.create_schema(db, unique_active=unique)
    result = race(strategy, db, reset=lambda: runs.reset(db),
                  check=lambda: runs.active_count(db) == 1, replicas=replicas, **kwargs)
    with open("racers.txt", "a") as f:
        f.write(f"{request.node.name} {result.racers}\\n")
    result.assert_exactly_one(runs.CREATED)
"""


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, str]]:
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-rA", *args, timeout=900)
    racers = dict(line.split() for line in (pytester.path / "racers.txt").read_text().splitlines())
    return result, racers


def test_reference_strategies_same_verdicts_on_two_gateways(
    pytester: pytest.Pytester, postgres_server: object, run_tag: str
) -> None:
    """Reliable both ways: the fixes (A, B, C, the lease) are correct whatever the timing, on
    one host or two; the broken ``naive`` (the negative control) makes 8 racers create more
    than one run in most rounds, so 30 rounds are never all clean, on either. Every race of
    replicas=2 is checked to have run on the gateways, and the run leaves no process."""
    pytester.makepyfile(test_strategies=STRATEGIES)
    dsn = postgres_server.admin_dsn  # type: ignore[attr-defined]
    result, racers = _run(pytester, OPTION, f"--racecheck-postgres-url={dsn}")
    result.assert_outcomes(passed=20, xfailed=4)
    assert len(racers) == 24
    for name, how in racers.items():
        assert how == ("gateways" if name.endswith("-r2]") else "hosted"), (name, how)


def test_groomers_lease_same_verdicts_on_two_gateways(
    pytester: pytest.Pytester, postgres_server: object, run_tag: str
) -> None:
    """The groomer example as it stands, with --racecheck-replicas=2, on PostgreSQL: meet_at,
    schedules and explore through gateways. Reliable as the example is on one host: its
    schedules force the broken interleavings, the corrected lock holds for reasons that do not
    depend on timing (its docstrings). Its SQLite races use points and its clock races the
    virtual clock, both refused on gateways (tested above), so they are deselected; the lease
    on SQLite is raced in the strategies test."""
    for name in ("groomer.py", "test_groomer.py"):
        shutil.copy(ROOT / "examples" / "groomer_lock" / name, pytester.path / name)
    pytester.makeconftest(
        """
        import pytest
        from pytest_racecheck.plugin.race_fixture import race_key

        @pytest.fixture(autouse=True)
        def _where(request):
            yield
            raced = request.node.stash.get(race_key, None)
            with open("racers.txt", "a") as f:
                for i, result in enumerate(raced.results if raced else []):
                    f.write(f"{request.node.name}-{i} {result.racers}\\n")
        """
    )
    dsn = postgres_server.admin_dsn  # type: ignore[attr-defined]
    # test_many_groomers_at_once names its own replicas: its two-replica half only.
    select = "postgres and not clock and not past_its_lease and not one_host"
    args = ("-k", select, f"--racecheck-postgres-url={dsn}")
    on_one, _ = _run(pytester, *args)
    (pytester.path / "racers.txt").unlink()
    on_two, racers = _run(pytester, *args, "--racecheck-replicas=2", OPTION)
    one, two = on_one.parseoutcomes(), on_two.parseoutcomes()
    assert one == two and one["passed"] == 6 and one["xfailed"] == 6, (one, two)
    assert len(racers) >= 12 and set(racers.values()) == {"gateways"}, racers


def test_killed_test_process_leaves_nothing(
    pytester: pytest.Pytester, tmp_path: Path, run_tag: str
) -> None:
    """SIGKILL pytest while its racers run on two gateways: the remote hosts see their
    channels close, the hosts and racers their parents go; run_tag fails the test if any
    process of the run is left."""
    started = tmp_path / "started"
    pytester.makepyfile(
        test_sleep=f"""
        import time
        from pathlib import Path

        def sleep():
            Path({str(started)!r}).touch()
            time.sleep(300)

        def test_sleep(race):
            race(sleep, processes=4, replicas=2, rounds=1, timeout=600, stall_timeout=600)
        """
    )
    out = tmp_path / "out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", OPTION, "test_sleep.py"],
            cwd=pytester.path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.05)
    assert len(tagged_processes(run_tag)) >= 4 + 2 + 2 + 1  # racers, hosts, gateways, pytest
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


def test_bad_specs_and_too_few_gateways_as_a_user_sees_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_two="""
        def nothing():
            pass

        def test_two(race):
            race(nothing, processes=2, replicas=2, rounds=1)
        """
    )
    bad = pytester.runpytest_subprocess("--racecheck-replica-gateways=socket=1.2.3.4:1")
    bad.stderr.fnmatch_lines(["*--racecheck-replica-gateways=socket=1.2.3.4:1: not an execnet*"])
    few = pytester.runpytest_subprocess(f"--racecheck-replica-gateways={POPEN}")
    few.stdout.fnmatch_lines(["*replicas=2 runs racers on 2 gateways, but*names 1*"])
    none = pytester.runpytest_subprocess()  # no gateways: simulated hosts of this machine
    none.assert_outcomes(passed=1)
    pytester.makeini(f"[pytest]\nracecheck_replica_gateways =\n    {POPEN}\n    {POPEN}\n")
    ini = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    ini.assert_outcomes(passed=1)


def sleep_after_telling(path: str) -> None:
    from pytest_racecheck import current_racer

    if current_racer() == 1:
        Path(path).write_text(str(where()[1]))  # its gateway's interpreter
    time.sleep(60)


def test_a_gateway_that_dies_fails_the_race_and_the_next_race_runs(
    two_gateways: gateways.GatewayPool, tmp_path: Path
) -> None:
    """SIGKILL gateway 1's interpreter while its racer sleeps: the race fails at once naming
    the racer on that gateway (not at its timeout of 120 s), nothing of that gateway is left,
    and the next race starts a new gateway. Reliable: the kill comes after the racer said
    where it runs, whatever the timing."""
    told = tmp_path / "gateway"
    killed: list[int] = []

    def kill_when_told() -> None:
        deadline = time.monotonic() + 60
        while not told.exists() or not told.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        killed.append(int(told.read_text()))
        os.kill(killed[0], signal.SIGKILL)

    import threading

    killer = threading.Thread(target=kill_when_told)
    killer.start()
    began = time.monotonic()
    with pytest.raises(RacerDied, match=r"racer 1 \(pid \d+ on gateway 1 .*killed by SIGKILL"):
        run_race(
            RaceSpec(
                fn=sleep_after_telling,
                args=(str(told),),
                processes=2,
                rounds=1,
                replicas=2,
                timeout=120,
                stall_timeout=120,
            )
        )
    killer.join()
    assert killed and time.monotonic() - began < 60
    wait_gone(killed, "the killed gateway")
    result = run_race(RaceSpec(fn=where, processes=2, rounds=1, replicas=2))
    assert killed[0] not in [g for _, g in (o.value for o in result.rounds[0].outcomes)]


def burn_cpu() -> None:
    end = time.process_time() + 3
    while time.process_time() < end:
        pass


def test_a_busy_start_up_on_gateways_is_progress(two_gateways: gateways.GatewayPool) -> None:
    """Each racer's set-up uses 3 s of CPU and sends nothing meanwhile: with stall_timeout=1.5
    the race passes only if the gateways' remote hosts report that CPU (the controller cannot
    read their racers' /proc). Reliable: 3 s of CPU time takes at least 3 s, twice the bound."""
    result = run_race(
        RaceSpec(
            fn=nothing, racer_setup=burn_cpu, processes=2, rounds=1, replicas=2, stall_timeout=1.5
        )
    )
    assert result.racers == "gateways" and result.rounds_run == 1
