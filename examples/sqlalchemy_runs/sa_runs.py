"""Starting a run with SQLAlchemy's ORM: an engine per process, a guard row locked FOR UPDATE.

- :func:`start_run_unguarded`: a session looks for a running run and adds one if there is
  none. A check-then-act: two workers both find nothing and both insert.
- :func:`start_run_guarded`: the same, after ``SELECT ... FOR UPDATE`` on the guard row
  (``with_for_update()``), in one transaction. On PostgreSQL every other starter waits for the
  guard until the first commits, then sees its run: correct. On SQLite the same code races:
  SQLite has no ``FOR UPDATE`` and SQLAlchemy's SQLite dialect renders nothing for it, and
  Python's ``sqlite3`` driver (which SQLAlchemy leaves in charge of transactions) begins a
  transaction only before the INSERT, so both SELECTs run outside any transaction and lock
  nothing.

**An engine per process.** An engine owns a pool of open connections, and an open connection
must never cross a process boundary: a forked child that uses its parent's pooled connection
shares one server session (or one SQLite file descriptor and its locks) with the parent.
:func:`engine` keeps one engine per process id and database URL, created on first use in the
process that uses it, so a worker started by ``fork`` or ``spawn``, or a racer, gets its own;
a racer's ``racer_setup`` calls :func:`connect` to open it before the first round.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

CREATED = "created"
REFUSED = "refused"


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


class Guard(Base):
    """One row (id 1) that a starter locks before it looks for a running run."""

    __tablename__ = "guard"

    id: Mapped[int] = mapped_column(primary_key=True)


_engines: dict[tuple[int, str], Engine] = {}


def engine(url: str) -> Engine:
    """This process's engine for ``url``: created here, never inherited from a parent."""
    key = (os.getpid(), url)
    if key not in _engines:
        _engines[key] = create_engine(url)
    return _engines[key]


def connect(url: str) -> None:
    """Open this process's engine and its first pooled connection (a racer's set-up)."""
    with engine(url).connect():
        pass


def dispose() -> None:
    """Close this process's engines and their pooled connections (a racer's tear-down)."""
    for (pid, url), each in list(_engines.items()):
        if pid == os.getpid():
            each.dispose()
            del _engines[pid, url]


def create_tables(url: str) -> None:
    """Create the tables and the guard row, with an engine used once and disposed."""
    once = create_engine(url)
    try:
        Base.metadata.create_all(once)
        with Session(once) as session, session.begin():
            session.add(Guard(id=1))
    finally:
        once.dispose()


def _running(session: Session) -> int | None:
    return session.scalar(select(Run.id).where(Run.status == "running"))


def start_run_unguarded(url: str) -> str:
    """Check for a running run, then add one: nothing stops two sessions doing it at once."""
    with Session(engine(url)) as session, session.begin():
        if _running(session) is not None:
            return REFUSED
        session.add(Run(status="running"))
    return CREATED


def start_run_guarded(url: str) -> str:
    """Lock the guard row FOR UPDATE, then check, then add, in one transaction."""
    with Session(engine(url)) as session, session.begin():
        session.execute(select(Guard).where(Guard.id == 1).with_for_update()).scalar_one()
        if _running(session) is not None:
            return REFUSED
        session.add(Run(status="running"))
    return CREATED
