"""What reading a database's catalog costs, cold and cached, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/catalog_read.py   # 11 tables, 3 views, 3 triggers, 2 functions
    .venv/bin/python benchmarks/catalog_read.py --repeat 200
    .venv/bin/python benchmarks/catalog_read.py --wide 200 --repeat 20   # the hard case: a
        schema 200 tables wider, each with a view over it and a trigger that keeps a counter

Prints a markdown table of milliseconds (median and 90th percentile of ``--repeat`` tries).
PostgreSQL figures need the server binaries or RACECHECK_POSTGRES_URL; they are left out otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import postgres  # the throwaway server every benchmark uses

from pytest_racecheck.backends.sqlite import SqliteDatabase
from pytest_racecheck.sql import catalog

TABLES = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, price INTEGER);
CREATE UNIQUE INDEX products_sku ON products (lower(sku));
CREATE TABLE stock (product_id INTEGER PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
                    qty INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY,
                     customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
                     status TEXT NOT NULL);
CREATE UNIQUE INDEX one_open_order ON orders (customer_id) WHERE status = 'open';
CREATE TABLE order_lines (id INTEGER PRIMARY KEY,
                          order_id INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
                          product_id INTEGER NOT NULL REFERENCES products (id),
                          qty INTEGER NOT NULL);
CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders (id)
                       ON DELETE SET NULL, amount INTEGER);
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT NOT NULL);
CREATE UNIQUE INDEX one_running ON runs (status) WHERE status = 'running';
CREATE TABLE sync_lock (name TEXT PRIMARY KEY, token TEXT, taken_at TEXT);
CREATE VIEW open_orders AS SELECT o.id, c.email FROM orders o JOIN customers c
  ON c.id = o.customer_id WHERE o.status = 'open';
CREATE VIEW order_totals AS SELECT l.order_id, sum(l.qty * p.price) AS total
  FROM order_lines l JOIN products p ON p.id = l.product_id GROUP BY l.order_id;
CREATE VIEW open_totals AS SELECT o.email, t.total FROM open_orders o
  JOIN order_totals t ON t.order_id = o.id;
"""

SQLITE_TRIGGERS = """
CREATE TRIGGER line_stock AFTER INSERT ON order_lines BEGIN
  UPDATE stock SET qty = qty - NEW.qty WHERE product_id = NEW.product_id;
  INSERT INTO audit (what) VALUES ('line');
END;
CREATE TRIGGER audit_count AFTER INSERT ON audit BEGIN
  UPDATE counters SET n = n + 1 WHERE name = 'audit';
END;
CREATE TRIGGER order_done AFTER UPDATE OF status ON orders WHEN NEW.status = 'done' BEGIN
  INSERT INTO audit (what) VALUES ('done');
END;
"""

PG_TRIGGERS_AND_FUNCTIONS = """
CREATE FUNCTION line_stock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE stock SET qty = qty - NEW.qty WHERE product_id = NEW.product_id;
  INSERT INTO audit (what) VALUES ('line');
  RETURN NEW;
END $$;
CREATE TRIGGER line_stock AFTER INSERT ON order_lines
  FOR EACH ROW EXECUTE FUNCTION line_stock();
CREATE FUNCTION audit_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE counters SET n = n + 1 WHERE name = 'audit'; RETURN NULL; END $$;
CREATE TRIGGER audit_count AFTER INSERT ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION audit_count();
CREATE FUNCTION order_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'done' THEN INSERT INTO audit (what) VALUES ('done'); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER order_done AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION order_done();
CREATE FUNCTION start_run() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE new_id integer;
BEGIN
  IF EXISTS (SELECT 1 FROM runs WHERE status = 'running') THEN
    RAISE EXCEPTION 'busy';
  END IF;
  INSERT INTO runs (status) VALUES ('running') RETURNING id INTO new_id;
  RETURN new_id;
END $$;
CREATE FUNCTION active_runs() RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT count(*) FROM runs WHERE status = 'running'
$$;
"""

STATEMENT = (
    "WITH c AS (UPDATE orders SET status = 'done' WHERE id = 1 RETURNING id) "
    "SELECT * FROM open_totals"
)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and 90th percentile of ``repeat`` calls, in milliseconds."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


def measure(
    db: Any, read_now: Callable[[], catalog.Catalog], connect: Callable[[], Any], repeat: int
) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []

    def cold() -> None:
        catalog.clear_cache()  # and the parsed bodies: as in a fresh process
        read_now()

    rows.append(("read, cold: connect, catalog queries, parse every body", *timed(cold, repeat)))
    read_now()
    rows.append(("read again after DDL: bodies already parsed", *timed(read_now, repeat)))
    catalog.read(db)
    rows.append(
        ("read(handle), cached: connect, fingerprint", *timed(lambda: catalog.read(db), repeat))
    )
    conn = connect()
    rows.append(
        (
            "read(handle, connection=...), cached: fingerprint",
            *timed(lambda: catalog.read(db, connection=conn), repeat),
        )
    )
    conn.close()
    cat = catalog.read(db)
    fresh = iter([read_now() for _ in range(repeat)])
    rows.append(
        (
            "write_effects(order_lines, INSERT), first",
            *timed(lambda: next(fresh).write_effects("order_lines", "INSERT"), repeat),
        )
    )
    rows.append(
        (
            "write_effects(order_lines, INSERT), memoised",
            *timed(lambda: cat.write_effects("order_lines", "INSERT"), repeat),
        )
    )

    def statement() -> None:
        catalog.parse_body.cache_clear()
        cat._memo.clear()
        cat.statement_effects(STATEMENT)

    rows.append(
        ("statement_effects(writable CTE over 3 views), unparsed", *timed(statement, repeat))
    )
    return rows


def wide(n: int, backend: str) -> str:
    """``n`` more tables, each with a view and a trigger (a counter in a table of its own)."""
    key = "INTEGER PRIMARY KEY" if backend == "sqlite" else "serial PRIMARY KEY"
    parts = []
    for i in range(n):
        parts.append(
            f"CREATE TABLE w{i} (id {key}, v INTEGER);"
            f"CREATE TABLE w{i}_count (n INTEGER);"
            f"CREATE VIEW w{i}_v AS SELECT id FROM w{i} WHERE v > 0;"
        )
        if backend == "sqlite":
            parts.append(
                f"CREATE TRIGGER w{i}_t AFTER INSERT ON w{i}"
                f" BEGIN UPDATE w{i}_count SET n = n + 1; END;"
            )
        else:
            parts.append(
                f"CREATE FUNCTION w{i}_f() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN UPDATE w{i}_count SET n = n + 1; RETURN NEW; END $$;"
                f"CREATE TRIGGER w{i}_t AFTER INSERT ON w{i}"
                f" FOR EACH ROW EXECUTE FUNCTION w{i}_f();"
            )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument(
        "--wide", type=int, default=0, help="tables (with a view and a trigger each) added"
    )
    options = parser.parse_args()
    results: dict[str, list[tuple[str, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = SqliteDatabase.create(Path(tmp) / "catalog.sqlite3")
        db.executescript(TABLES + SQLITE_TRIGGERS + wide(options.wide, "sqlite"))
        results["sqlite"] = measure(
            db, lambda: catalog.read_sqlite(db.path), db.connect, options.repeat
        )
        db.close()
    with postgres() as provider:
        if provider is not None:
            pdb = provider.create_database()
            pdb.executescript(TABLES.replace("INTEGER PRIMARY KEY", "serial PRIMARY KEY"))
            pdb.executescript(PG_TRIGGERS_AND_FUNCTIONS)
            if options.wide:
                pdb.executescript(wide(options.wide, "postgres"))
            results["postgres"] = measure(
                pdb, lambda: catalog.read_postgres(pdb.dsn), pdb.connect, options.repeat
            )
            pdb.close()
            provider.drop_database(pdb)
    print(f"\n{options.repeat} tries each, milliseconds (median / 90th percentile)\n")
    backends = list(results)
    print("| what | " + " | ".join(backends) + " |")
    print("| --- | " + " | ".join("---:" for _ in backends) + " |")
    for i, row in enumerate(results[backends[0]]):
        cells = [f"{results[b][i][1]:.3f} / {results[b][i][2]:.3f}" for b in backends]
        print(f"| {row[0]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
