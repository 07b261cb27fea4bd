"""pytest-django interop: race a project's Django code on pytest-django's own test database.

Each test writes a small Django project that already uses pytest-django (a settings module
named by the ini's ``DJANGO_SETTINGS_MODULE``, an app ``shop``, tests marked ``django_db``) and
runs it with ``pytester.runpytest_subprocess``, on SQLite (a file test database) and on
PostgreSQL (``test_<NAME>``, made by pytest-django on the server of this test's
``postgres_db``). The inner tests are the recipe of docs/orms.md, "With pytest-django":

- ``@pytest.mark.django_db(transaction=True)``: racers are other processes, and a plain
  ``django_db`` test runs in a transaction they cannot see into: what the test creates is not
  there for them, what its ``reset`` deletes still is (PostgreSQL), and on SQLite its first
  write keeps the write lock until the test ends, so the race waits for its timeout;
- ``racer_setup=functools.partial(racing.use_test_database, connection.settings_dict["NAME"])``:
  each racer calls ``django.setup()`` (``DJANGO_SETTINGS_MODULE`` is inherited from the test
  process, where pytest-django set it) after pointing the default database at the name
  pytest-django gave the test database; the settings module alone names the project's own;
- ``racing.current_database()``, a ``pytest_racecheck.database(...)`` handle on that test
  database, handed to the race as an argument of the raced function, so the race asks that
  database which racers wait on its locks.

Why no verdict here can vary is said in each test's docstring.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pytest_racecheck import PostgresDatabase

SETTINGS = """
    \"\"\"The shop's settings: SQLite unless SHOP_PG_NAME names a PostgreSQL database.\"\"\"

    import os
    from pathlib import Path

    BASE_DIR = Path(__file__).resolve().parent
    INSTALLED_APPS = ["shop"]
    USE_TZ = True
    DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

    if os.environ.get("SHOP_PG_NAME"):
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": os.environ["SHOP_PG_NAME"],  # pytest-django tests on test_<NAME>
                "HOST": os.environ["SHOP_PG_HOST"],
                "PORT": os.environ["SHOP_PG_PORT"],
                "USER": os.environ["SHOP_PG_USER"],
                "PASSWORD": os.environ["SHOP_PG_PASSWORD"],
            }
        }
    else:
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(BASE_DIR / "shop.sqlite3"),
                "OPTIONS": {
                    # Longer than a racer may wait for the write lock while others are held.
                    "timeout": 20,
                    # atomic() takes the write lock at BEGIN: what select_for_update() does
                    # on PostgreSQL, which SQLite ignores.
                    "transaction_mode": "IMMEDIATE",
                },
                # A file: the default test database is in memory, private to one process.
                "TEST": {"NAME": str(BASE_DIR / "test_shop.sqlite3")},
            }
        }
"""

MODELS = """
    from django.db import models


    class Customer(models.Model):
        \"\"\"Nothing in the database stops two customers with one email.\"\"\"

        email = models.CharField(max_length=100)


    class UniqueCustomer(models.Model):
        \"\"\"At most one customer per email: a unique constraint.\"\"\"

        email = models.CharField(max_length=100, unique=True)


    class Shop(models.Model):
        \"\"\"The shop's one row (pk=1): a sign-up locks it first.\"\"\"
"""

SIGNUP = """
    \"\"\"Signing a customer up, as the shop's views would.\"\"\"

    from django.db import transaction

    from shop.models import Customer, Shop, UniqueCustomer

    MODELS = {"plain": Customer, "unique": UniqueCustomer}


    def sign_up(model, email):
        \"\"\"get_or_create: a SELECT, then an INSERT if nothing was found.\"\"\"
        _, created = MODELS[model].objects.get_or_create(email=email)
        return "created" if created else "found"


    def sign_up_locked(email):
        \"\"\"Lock the shop's row, then check, then create: one sign-up at a time.\"\"\"
        with transaction.atomic():
            Shop.objects.select_for_update().get(pk=1)
            if Customer.objects.filter(email=email).exists():
                return "found"
            Customer.objects.create(email=email)
            return "created"
"""

RACING = """
    \"\"\"pytest-racecheck on pytest-django's test database: the racers' set-up and a handle.

    Racers load this module before Django is set up: it imports nothing of the project.
    \"\"\"

    import django

    import pytest_racecheck


    def use_test_database(name):
        \"\"\"racer_setup: configure Django in this racer, on the test database ``name``.

        DJANGO_SETTINGS_MODULE comes from the test process's environment (pytest-django put
        it there); the settings name the project's database, pytest-django renamed it in the
        test process only.
        \"\"\"
        from django.conf import settings

        settings.DATABASES["default"]["NAME"] = name
        django.setup()
        from django.db import connection

        connection.ensure_connection()  # connect now, not in the first round


    def current_database():
        \"\"\"A pytest_racecheck handle on the database Django's connection uses now.\"\"\"
        from django.db import connection

        params = connection.settings_dict
        if connection.vendor == "sqlite":
            return pytest_racecheck.database(params["NAME"])
        from psycopg.conninfo import make_conninfo

        keys = {"dbname": "NAME", "host": "HOST", "port": "PORT", "user": "USER",
                "password": "PASSWORD"}
        given = {key: str(params[name]) for key, name in keys.items() if params.get(name)}
        return pytest_racecheck.database(make_conninfo(**given))
"""

TESTS = """
    import functools

    import pytest
    from django.db import connection, connections

    import racing
    from shop.models import Customer, Shop, UniqueCustomer
    from shop.signup import sign_up, sign_up_locked

    EMAIL = "ada@example.com"
    TABLES = {"plain": Customer, "unique": UniqueCustomer}
    HOW = {
        "stress": {"processes": 8, "rounds": 30},
        # every racer has looked (get_or_create's QuerySet.get) before any inserts
        "paused": {"processes": 4, "rounds": 3,
                   "pause_after": "django.db.models.query:QuerySet.get"},
    }


    def attempt(db, model):
        \"\"\"One racer's sign-up; ``db`` is for the race, which watches its locks.\"\"\"
        return sign_up(model, EMAIL)


    def attempt_locked(db):
        return sign_up_locked(EMAIL)


    def on_test_database():
        return functools.partial(racing.use_test_database, connection.settings_dict["NAME"])


    @pytest.mark.django_db(transaction=True)
    @pytest.mark.parametrize("how", HOW)
    @pytest.mark.parametrize("model", TABLES)
    def test_get_or_create(race, model, how):
        table = TABLES[model]
        result = race(
            attempt,
            racing.current_database(),
            model,
            reset=lambda: table.objects.all().delete(),
            check=lambda: table.objects.filter(email=EMAIL).count() == 1,
            racer_setup=on_test_database(),
            timeout=120,  # the outer bound: a hang ends at the 10 s no-progress bound
            **HOW[how],
        )
        result.assert_exactly_one("created")


    @pytest.mark.django_db(transaction=True)
    @pytest.mark.parametrize("start_method", ["spawn", "fork"])
    def test_locked_sign_up_meets(race, start_method):
        Shop.objects.create(pk=1)
        db = racing.current_database()
        setup = on_test_database()
        if start_method == "fork":
            connections.close_all()  # nothing open for a forked racer to inherit
        result = race(
            attempt_locked,
            db,
            processes=4,
            rounds=3,
            start_method=start_method,
            # the holder of the lock is held after its check; the others wait on the lock
            pause_after="django.db.models.query:QuerySet.exists",
            reset=lambda: Customer.objects.all().delete(),
            check=lambda: Customer.objects.filter(email=EMAIL).count() == 1,
            racer_setup=setup,
            timeout=120,  # the outer bound: a hang ends at the 10 s no-progress bound
        )
        result.assert_exactly_one("created")
        assert all(r.waited_on_lock for r in result.rounds)
"""

HOOK_CONFTEST = """
    \"\"\"Every race of this directory: racers on the test database, without racer_setup=.\"\"\"

    import os

    import pytest

    import racing

    TEST_DATABASE = "SHOP_TEST_DATABASE"


    @pytest.fixture(scope="session")
    def django_db_setup(django_db_setup):
        \"\"\"pytest-django's; then racers, started later, find the name in the environment.\"\"\"
        from django.db import connection

        os.environ[TEST_DATABASE] = connection.settings_dict["NAME"]


    def pytest_racecheck_racer_setup():
        racing.use_test_database(os.environ[TEST_DATABASE])
"""

HOOK_TESTS = """
    import pytest

    import racing
    from shop.models import Customer, Shop
    from shop.signup import sign_up_locked


    def attempt(db):
        return sign_up_locked("ada@example.com")


    @pytest.mark.django_db(transaction=True)
    def test_locked_sign_up_with_the_hook(race):
        Shop.objects.create(pk=1)
        result = race(
            attempt,
            racing.current_database(),
            processes=4,
            rounds=3,
            pause_after="django.db.models.query:QuerySet.exists",
            reset=lambda: Customer.objects.all().delete(),
            check=lambda: Customer.objects.count() == 1,
            timeout=120,  # the outer bound: a hang ends at the 10 s no-progress bound
        )
        result.assert_exactly_one("created")
"""

INNER_RUN_TIMEOUT_S = 400
"""The inner pytest run, whole: Django, racers and a 120 s race timeout at most (a race that
hangs ends at its 10 s no-progress bound; a loaded machine may need minutes to start racers)."""


@pytest.fixture(params=["sqlite", "postgres"])
def shop(
    request: pytest.FixtureRequest,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[pytest.Pytester]:
    """The inner project, on SQLite, or on PostgreSQL (skipped where there is none).

    ``run_tag`` (no process of the inner run may survive it) is asked for after
    ``postgres_db``: the server that fixture may start is the outer session's, and outlives it.
    """
    pytester.makeini(
        """
        [pytest]
        addopts = -p no:cacheprovider
        DJANGO_SETTINGS_MODULE = shop_settings
        """
    )
    pytester.mkpydir("shop")
    pytester.makepyfile(
        shop_settings=SETTINGS,
        racing=RACING,
        test_shop=TESTS,
        **{"shop/models": MODELS, "shop/signup": SIGNUP},
    )
    if request.param == "sqlite":
        monkeypatch.delenv("SHOP_PG_NAME", raising=False)
        request.getfixturevalue("run_tag")
        yield pytester
        return
    server: PostgresDatabase = request.getfixturevalue("postgres_db")  # skips without one
    request.getfixturevalue("run_tag")
    params = server.params
    # pytest-django makes test_<NAME> on this server: this test's own database name makes it
    # unique among the tests that run at the same time.
    name = server.name
    monkeypatch.setenv("SHOP_PG_NAME", name)
    monkeypatch.setenv("SHOP_PG_HOST", params.get("host", ""))
    monkeypatch.setenv("SHOP_PG_PORT", params.get("port", ""))
    monkeypatch.setenv("SHOP_PG_USER", params.get("user", ""))
    monkeypatch.setenv("SHOP_PG_PASSWORD", params.get("password", ""))
    try:
        yield pytester
    finally:
        # pytest-django drops it at the end of its session; not if the inner run was killed.
        with server.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)')


def run_inner(shop: pytest.Pytester, test: str) -> pytest.RunResult:
    return shop.runpytest_subprocess(f"test_shop.py::{test}", timeout=INNER_RUN_TIMEOUT_S)


def summary_line(result: pytest.RunResult, test: str) -> str:
    """The inner run's racecheck summary line for ``test``."""
    lines = [line for line in result.outlines if line.startswith(f"test_shop.py::{test} ")]
    assert len(lines) == 1, result.stdout.str()
    return lines[0]


@pytest.mark.parametrize("how", ["stress", "paused"])
def test_get_or_create_without_a_constraint_fails(shop: pytest.Pytester, how: str) -> None:
    """The negative control: two sign-ups both find no customer and both insert one.

    Why the failure cannot vary: ``paused`` holds every racer after get_or_create's
    ``QuerySet.get`` until all 4 have looked, so all 4 create a customer in every one of the 3
    rounds. ``stress`` (8 racers, 30 rounds) relies on timing: measured in 15 runs on each
    database on a 2-core machine (10 at a load average of 10 to 16, 5 in repeated runs of this
    file), 12 to 30 of 30 rounds broke the rule on SQLite and 18 to 30 on PostgreSQL. The race
    fails if one round does; 30 clean rounds in a row at the lowest rate seen (0.4 per round)
    have a chance of 0.6 ** 30, about 2e-7.
    """
    test = f"test_get_or_create[plain-{how}]"
    result = run_inner(shop, test)
    result.assert_outcomes(failed=1)
    # The report names the duplicates: a round in which several racers created a customer.
    result.stdout.re_match_lines([r"E\s+created x[2-8]\b.*check=False\s+\d+ rounds?\s+<-- fails"])
    assert re.search(r"\bfailed\b", summary_line(result, test))


@pytest.mark.parametrize("how", ["stress", "paused"])
def test_get_or_create_with_a_unique_constraint_passes(shop: pytest.Pytester, how: str) -> None:
    """The unique constraint refuses every INSERT but the first; get_or_create catches the
    IntegrityError and returns the winner's row: one "created", the rest "found".

    Why the pass cannot vary: the constraint decides, not the order. ``paused`` has every racer
    look before any inserts, so every racer tries its INSERT and all but one go through
    get_or_create's IntegrityError path in every round, which stress rounds reach only when
    racers overlap.
    """
    test = f"test_get_or_create[unique-{how}]"
    result = run_inner(shop, test)
    result.assert_outcomes(passed=1)
    racers = 8 if how == "stress" else 4
    assert f"created x1, found x{racers - 1} | check=True" in summary_line(result, test)


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_locked_sign_up_holds_a_meeting_without_the_timeout(
    shop: pytest.Pytester, start_method: str
) -> None:
    """select_for_update() on the shop's row (PostgreSQL), BEGIN IMMEDIATE (SQLite): a racer
    held at the meeting after its check keeps the lock, and the others wait on it.

    Why the verdict cannot vary: a racer waiting on a lock counts as arrived at the meeting.
    The race is handed the test database's handle, so it asks that database who waits
    (PostgreSQL: pg_blocking_pids of the racers' sessions; SQLite: whether the write lock's byte
    is held while a racer sleeps in its busy handler); the meeting opens in every round instead
    of failing at the race's no-progress bound (10 s without a racer moving: a meeting that
    waits for a racer asleep on a lock is a hang), and the lock makes exactly one racer create
    the customer whatever the order. The inner test asserts that every round saw racers wait on
    the lock. ``fork``: racers start as copies of the test process, which closed its Django
    connections first; without that, on PostgreSQL, they share its session and hang.
    """
    test = f"test_locked_sign_up_meets[{start_method}]"
    result = run_inner(shop, test)
    result.assert_outcomes(passed=1)
    line = summary_line(result, test)
    assert "created x1, found x3 | check=True  (3x)" in line


def test_a_conftest_hook_points_every_racer_at_the_test_database(shop: pytest.Pytester) -> None:
    """The other way to set racers up: ``pytest_racecheck_racer_setup`` in a conftest. It takes
    no arguments, so the test database's name reaches it through the environment, which a
    session fixture wrapping pytest-django's ``django_db_setup`` fills in before any racer
    starts. The race passes no ``racer_setup=``.

    Why the verdict cannot vary: as the meeting above; and a racer on any other database than
    the test's would fail the check (the customer must be in the test database) or raise.
    """
    shop.makeconftest(HOOK_CONFTEST)
    shop.makepyfile(test_shop_hook=HOOK_TESTS)
    result = shop.runpytest_subprocess("test_shop_hook.py", timeout=INNER_RUN_TIMEOUT_S)
    result.assert_outcomes(passed=1)
    line = [x for x in result.outlines if x.startswith("test_shop_hook.py::")]
    assert len(line) == 1 and "created x1, found x3 | check=True  (3x)" in line[0], line
