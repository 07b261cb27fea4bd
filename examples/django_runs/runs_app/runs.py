"""Starting a run, the ways a Django developer would write it.

- :func:`get_or_create_run` with :class:`~runs_app.models.Run`: Django's ``get_or_create`` is
  a SELECT, then (if nothing was found) an INSERT: a check-then-act. Two workers both find
  nothing and both insert.
- :func:`get_or_create_run` with :class:`~runs_app.models.UniqueRun`: the partial unique
  constraint refuses the second INSERT; ``get_or_create`` catches that ``IntegrityError`` and
  fetches the winner's row. One run, every other caller gets it with ``created=False``.
- :func:`start_run_guarded`: lock the guard row with ``select_for_update()`` in a transaction,
  then check, then create. PostgreSQL makes every other starter wait for the lock, so the
  check and the create are serialized. On SQLite Django drops ``FOR UPDATE`` (the backend has
  no ``select_for_update``): the guard locks nothing, and what happens is decided by SQLite's
  deferred transactions (see the test module).
"""

from __future__ import annotations

from django.db import transaction

from runs_app.models import Guard, Run, UniqueRun

CREATED = "created"
FOUND = "found"
REFUSED = "refused"

MODELS = {"plain": Run, "unique": UniqueRun}


def get_or_create_run(model: str) -> str:
    """``get_or_create`` a running run of ``MODELS[model]``; 'created' or 'found'."""
    _, created = MODELS[model].objects.get_or_create(status="running")
    return CREATED if created else FOUND


def start_run_guarded() -> str:
    """Lock the guard row, then check for a running run, then create one; 'created' or 'refused'."""
    with transaction.atomic():
        Guard.objects.select_for_update().get(pk=1)
        if Run.objects.filter(status="running").exists():
            return REFUSED
        Run.objects.create(status="running")
        return CREATED
