"""A Django project in one module: settings in code, the database from an argument or the env.

There is no ``manage.py`` and no settings module. :func:`configure` is what a worker's start-up
would call: it reads the database URL from its argument, or from the environment variable
``DJANGO_RUNS_DATABASE_URL``, configures Django for that one database and calls
``django.setup()``. Django is configured once per process, so each racer calls it once, in
its ``racer_setup``.

The test process serves several databases in one session (a SQLite file and a PostgreSQL
database per test), so it does not configure ``DATABASES`` at all: :func:`setup_models` only
loads the app, and :func:`create_tables` opens a connection of its own to the database at hand,
creates the tables with the schema editor and closes it: what ``migrate --run-syncdb`` would
do, without a migrations folder.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import django
from django.conf import settings

DATABASE_URL_VARIABLE = "DJANGO_RUNS_DATABASE_URL"
APP = "runs_app"


def database_settings(url: str) -> dict[str, Any]:
    """One ``DATABASES`` entry for a ``sqlite:///path`` or ``postgresql[+psycopg]://`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path[1:]),
            # sqlite3's busy timeout, in seconds: a writer waits for the write lock this long.
            "OPTIONS": {"timeout": 5},
        }
    if parts.scheme.split("+")[0] in ("postgres", "postgresql"):
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path[1:]),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            # A unix socket directory travels in the query (?host=/run/postgresql).
            "HOST": parts.hostname or query.get("host", ""),
            "PORT": str(parts.port or query.get("port", "")),
        }
    raise ValueError(f"not a sqlite or postgresql URL: {parts.scheme}://...")


def configure(url: str | None = None) -> None:
    """Configure Django for the database at ``url`` (or ``$DJANGO_RUNS_DATABASE_URL``), once."""
    url = url or os.environ[DATABASE_URL_VARIABLE]
    settings.configure(
        DATABASES={"default": database_settings(url)},
        INSTALLED_APPS=[APP],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def setup_models() -> None:
    """Load the app without choosing a database: for a process that serves several."""
    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=[APP],
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        )
        django.setup()


def create_tables(url: str) -> None:
    """Create every table of the app in the database at ``url``, with a connection of its own."""
    from django.apps import apps
    from django.db.utils import ConnectionHandler

    setup_models()
    handler = ConnectionHandler({"default": database_settings(url)})
    try:
        with handler["default"].schema_editor(atomic=False) as editor:
            for model in apps.get_app_config(APP).get_models():
                editor.create_model(model)
    finally:
        handler.close_all()
