"""``--racecheck-replica-gateways``: the execnet gateways races with ``replicas=N`` run their
racers on (:mod:`pytest_racecheck.processes.gateways`; docs/replica-gateways.md)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_racecheck.processes import gateways

gateways_key = pytest.StashKey[list[str]]()
"""The gateway specs from before this session configured its own (to put back)."""


def add_gateway_option(parser: pytest.Parser) -> None:
    """The option (repeatable, as pytest-xdist's ``--tx``) and its ini key (one per line)."""
    group: Any = parser.getgroup("racecheck")
    group.addoption(
        "--racecheck-replica-gateways",
        dest="racecheck_replica_gateways",
        action="append",
        default=None,
        metavar="SPEC",
        help="an execnet gateway (popen//python=PYTHON, ssh=USER@HOST//python=PYTHON) to run "
        "racers on: a race with replicas=N runs racer i on gateway i mod N of the first N. "
        "Repeat the option for each gateway; N*SPEC is N alike. The plugin must be installed "
        "there (also ini racecheck_replica_gateways, one spec per line)",
    )
    parser.addini(
        "racecheck_replica_gateways",
        "execnet gateway specs to run the racers of races with replicas=N on, one per line",
        type="linelist",
        default=[],
    )


def replica_gateways(config: pytest.Config) -> list[str]:
    """The gateway specs: the option's (repeated) over the ini key's lines; a UsageError
    names a spec that is not one."""
    cli = config.getoption("racecheck_replica_gateways")
    if cli:
        values, source = list(cli), gateways.OPTION
    else:
        source = "ini racecheck_replica_gateways"
        values = config.getini("racecheck_replica_gateways")
    try:
        return gateways.parse_specs(values or [], source)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def configure(config: pytest.Config) -> None:
    """At ``pytest_configure``: the session's gateways (the earlier ones kept to put back)."""
    config.stash[gateways_key] = gateways.pool.configure(replica_gateways(config))


def unconfigure(config: pytest.Config) -> None:
    """At ``pytest_unconfigure``: every gateway ends; the earlier specs come back (an
    in-process pytester run inside a session)."""
    gateways.end_all()
    specs = config.stash.get(gateways_key, None)
    if specs is not None:
        gateways.pool.configure(specs)
