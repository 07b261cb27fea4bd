"""A run, with and without a database rule that at most one is running; a guard row."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Run(models.Model):
    """A run; nothing in the database stops two from running at once."""

    status = models.CharField(max_length=20)

    class Meta:
        app_label = "runs_app"
        db_table = "runs"


class UniqueRun(models.Model):
    """A run, with a partial unique constraint: at most one row with status 'running'."""

    status = models.CharField(max_length=20)

    class Meta:
        app_label = "runs_app"
        db_table = "unique_runs"
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="running"), name="one_running_run"
            )
        ]


class Guard(models.Model):
    """One row (pk=1) that a starter locks before it looks for a running run."""

    class Meta:
        app_label = "runs_app"
        db_table = "guard"
