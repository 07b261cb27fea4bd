"""Racers send their messages with the standard library's pickler, dill only when it must.

dill's pure-Python pickler took about 0.5 ms of CPU per result on a busy machine, paid by every
racer every round while the others still ran their calls (issue 28: a pooled PostgreSQL race
ran at 0.4 to 0.8 of a hand-written harness's rounds per second).
"""

from __future__ import annotations

import pickle
from typing import Any

import multiprocess as _multiprocess

from pytest_racecheck.wire.messages import Result, send
from pytest_racecheck.wire.outcome import Outcome

multiprocess: Any = _multiprocess  # an untyped package


def test_a_plain_result_travels_as_a_standard_pickle() -> None:
    ours, theirs = multiprocess.Pipe()
    try:
        message = Result(3, Outcome(1, ("created", 7)), None)
        send(theirs, message)
        data = ours.recv_bytes()
        assert pickle.loads(data) == message  # no dill needed to read it
        send(theirs, message)
        assert ours.recv() == message  # and the controller's recv() reads it as before
    finally:
        ours.close()
        theirs.close()


def test_a_value_only_dill_can_send_still_arrives() -> None:
    ours, theirs = multiprocess.Pipe()
    try:

        class Local:  # a class made inside a function: the standard pickler refuses it
            def __init__(self) -> None:
                self.twice = lambda x: 2 * x

        send(theirs, Result(1, Outcome(0, Local()), None))
        got = ours.recv()
        assert got.outcome.value.twice(21) == 42
    finally:
        ours.close()
        theirs.close()
