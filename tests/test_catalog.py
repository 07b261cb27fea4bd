"""The catalog reader against real SQLite and PostgreSQL databases.

Each test builds a schema whose hidden effects (a view over a view, a trigger's writes, a cascade, a
partial unique index, a function body) the statement text alone would miss, and checks that the
catalog names them, and that what it cannot know comes back as EVERYTHING.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_racecheck.sql import catalog
from pytest_racecheck.sql.catalog import EVERYTHING, NOTHING, Footprint, plpgsql_body


def writes(effects: catalog.Effects) -> frozenset[str]:
    assert isinstance(effects, Footprint), effects
    return effects.writes


def reads(effects: catalog.Effects) -> frozenset[str]:
    assert isinstance(effects, Footprint), effects
    return effects.reads


def is_pg(db: Any) -> bool:
    return db.backend == "postgres"


VIEWS = """
CREATE TABLE a (id INTEGER PRIMARY KEY, x INTEGER);
CREATE TABLE b (id INTEGER PRIMARY KEY, y INTEGER);
CREATE TABLE c (id INTEGER PRIMARY KEY, z INTEGER);
CREATE TABLE unused (id INTEGER PRIMARY KEY);
CREATE VIEW v1 AS SELECT a.id, a.x, b.y FROM a JOIN b ON a.id = b.id;
CREATE VIEW v2 AS WITH q AS (SELECT * FROM v1) SELECT q.id, c.z FROM q JOIN c ON c.id = q.id;
CREATE VIEW v3 AS SELECT id FROM v2 WHERE id IN (SELECT id FROM unused);
"""


def test_views_over_views_read_their_base_tables(race_db):
    race_db.executescript(VIEWS)
    cat = catalog.read(race_db)
    assert cat.view_reads("v1") == {"a", "b"}
    assert cat.view_reads("v2") == {"a", "b", "c"}  # the CTE q is not a table
    assert cat.view_reads("V3") == {"a", "b", "c", "unused"}
    qualified = "public.v2" if is_pg(race_db) else "main.v2"
    assert cat.view_reads(qualified) == {"a", "b", "c"}
    assert cat.view_reads("a") == frozenset()  # a table is no view
    assert reads(cat.read_effects("v2")) == {"a", "b", "c", "v1", "v2"}
    assert reads(cat.read_effects("a")) == {"a"}
    # a statement that names only the view reads the tables under it
    assert reads(cat.statement_effects("SELECT * FROM v3 WHERE id = 1")) >= {"a", "b", "c"}


SQLITE_TRIGGERS = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, n INTEGER);
CREATE TABLE audit (id INTEGER PRIMARY KEY, order_id INTEGER);
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER);
CREATE TABLE limits (cap INTEGER);
CREATE TRIGGER orders_audit AFTER INSERT ON orders
WHEN NEW.n > (SELECT cap FROM limits)
BEGIN
  INSERT INTO audit (order_id) VALUES (NEW.id);
  SELECT RAISE(ABORT, 'never') WHERE NEW.n < 0;
END;
CREATE TRIGGER audit_count AFTER INSERT ON audit BEGIN
  UPDATE counters SET n = n + 1 WHERE name = 'audit';
END;
"""

PG_TRIGGERS = """
CREATE TABLE orders (id serial PRIMARY KEY, n integer);
CREATE TABLE audit (id serial PRIMARY KEY, order_id integer);
CREATE TABLE counters (name text PRIMARY KEY, n integer);
CREATE TABLE limits (cap integer);
CREATE FUNCTION orders_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.n > (SELECT cap FROM limits) THEN
    INSERT INTO audit (order_id) VALUES (NEW.id);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_audit();
CREATE FUNCTION audit_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE counters SET n = n + 1 WHERE name = 'audit';
  RETURN NULL;
END $$;
CREATE TRIGGER audit_count AFTER INSERT ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_count();
"""


def test_a_trigger_that_writes_a_table_fires_that_tables_trigger(race_db):
    race_db.executescript(PG_TRIGGERS if is_pg(race_db) else SQLITE_TRIGGERS)
    cat = catalog.read(race_db)
    effects = cat.trigger_effects("orders", "INSERT")
    assert writes(effects) == {"audit", "counters"}
    assert "limits" in reads(effects)  # the WHEN clause, or the IF in the function
    assert writes(cat.write_effects("orders", "insert")) == {"orders", "audit", "counters"}
    assert writes(cat.trigger_effects("audit", "INSERT")) == {"counters"}
    assert cat.trigger_effects("orders", "DELETE") == NOTHING
    assert writes(cat.write_effects("orders", "DELETE")) == {"orders"}
    assert writes(cat.statement_effects("INSERT INTO orders (n) VALUES (5)")) == {
        "orders",
        "audit",
        "counters",
    }


def test_triggers_that_write_each_other_end_in_a_closure(race_db):
    if is_pg(race_db):
        race_db.executescript("""
            CREATE TABLE ping (n integer); CREATE TABLE pong (n integer);
            CREATE FUNCTION to_pong() RETURNS trigger LANGUAGE plpgsql AS
              $$ BEGIN INSERT INTO pong VALUES (NEW.n - 1); RETURN NULL; END $$;
            CREATE FUNCTION to_ping() RETURNS trigger LANGUAGE plpgsql AS
              $$ BEGIN
                   IF NEW.n > 0 THEN INSERT INTO ping VALUES (NEW.n); END IF; RETURN NULL;
                 END $$;
            CREATE TRIGGER a AFTER INSERT ON ping FOR EACH ROW EXECUTE FUNCTION to_pong();
            CREATE TRIGGER b AFTER INSERT ON pong FOR EACH ROW EXECUTE FUNCTION to_ping();
        """)
    else:
        race_db.executescript("""
            CREATE TABLE ping (n INTEGER); CREATE TABLE pong (n INTEGER);
            CREATE TRIGGER a AFTER INSERT ON ping BEGIN INSERT INTO pong VALUES (NEW.n - 1); END;
            CREATE TRIGGER b AFTER INSERT ON pong WHEN NEW.n > 0
              BEGIN INSERT INTO ping VALUES (NEW.n); END;
        """)
    cat = catalog.read(race_db)
    assert writes(cat.write_effects("ping", "INSERT")) == {"ping", "pong"}


def test_a_trigger_chain_deeper_than_the_guard_is_everything(sqlite_db):
    hops = catalog.MAX_DEPTH // 2 + 2
    sqlite_db.executescript(
        "".join(f"CREATE TABLE t{i} (n INTEGER);" for i in range(hops + 1))
        + "".join(
            f"CREATE TRIGGER g{i} AFTER INSERT ON t{i} BEGIN INSERT INTO t{i + 1} VALUES (1); END;"
            for i in range(hops)
        )
    )
    cat = catalog.read(sqlite_db)
    assert cat.write_effects("t0", "INSERT") is EVERYTHING
    assert writes(cat.write_effects(f"t{hops - 5}", "INSERT")) == {
        f"t{i}" for i in range(hops - 5, hops + 1)
    }


FKS = """
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (
  id INTEGER PRIMARY KEY,
  parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE);
CREATE TABLE grandchild (
  id INTEGER PRIMARY KEY,
  child_id INTEGER REFERENCES child (id) ON DELETE SET NULL);
CREATE TABLE pinned (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id));
CREATE TABLE loose (id INTEGER PRIMARY KEY);
"""


def test_foreign_key_cascades_are_written_through(race_db):
    race_db.executescript(FKS)
    cat = catalog.read(race_db)
    assert cat.fk_neighbours("parent") == {"child", "pinned"}
    assert cat.fk_neighbours("child") == {"parent", "grandchild"}
    assert cat.fk_neighbours("loose") == frozenset()
    assert cat.fk_cascades("parent", "DELETE") == {"child", "grandchild"}
    # ON UPDATE CASCADE reaches child; grandchild's key has no ON UPDATE action
    assert cat.fk_cascades("parent", "UPDATE") == {"child"}
    assert cat.fk_cascades("child", "DELETE") == {"grandchild"}
    assert cat.fk_cascades("pinned", "DELETE") == frozenset()
    effects = cat.write_effects("parent", "DELETE")
    assert writes(effects) == {"parent", "child", "grandchild"}
    assert "pinned" in reads(effects)  # NO ACTION: the delete checks pinned, writes nothing there
    assert "parent" in reads(cat.write_effects("pinned", "INSERT"))  # the key check
    assert "loose" not in reads(effects)
    (fk,) = [fk for fk in cat.foreign_keys if fk.child == "grandchild"]
    assert (fk.parent, fk.columns, fk.on_delete, fk.on_update) == (
        "child",
        ("child_id",),
        "SET NULL",
        "NO ACTION",
    )
    cte = "WITH gone AS (DELETE FROM parent WHERE id = 1 RETURNING id) SELECT * FROM gone"
    if is_pg(race_db):  # a writable CTE writes through the cascade too
        assert writes(cat.statement_effects(cte)) == {"parent", "child", "grandchild"}


UNIQUES = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, name TEXT, k INTEGER,
                   UNIQUE (name, k));
CREATE UNIQUE INDEX one_running ON runs (status) WHERE status = 'running';
CREATE UNIQUE INDEX name_ci ON runs (lower(name));
CREATE INDEX not_unique ON runs (k);
"""


def test_unique_constraints_and_partial_unique_indexes(race_db):
    race_db.executescript(UNIQUES)
    cat = catalog.read(race_db)
    sets = cat.unique_columns("runs")
    assert sorted(sorted(s) for s in sets) == [["id"], ["k", "name"], ["name"], ["status"]]
    by_columns = {u.columns: u for u in cat.unique_constraints("runs")}
    partial = by_columns[frozenset({"status"})]
    assert partial.predicate is not None and "running" in partial.predicate
    assert "status" in partial.predicate
    assert by_columns[frozenset({"id"})].kind == "primary key"
    assert by_columns[frozenset({"id"})].predicate is None
    assert by_columns[frozenset({"name", "k"})].kind == "unique"
    expression = by_columns[frozenset({"name"})]
    assert expression.kind == "unique index"
    assert len(expression.expressions) == 1 and "lower" in expression.expressions[0].lower()
    assert cat.unique_columns("public.runs" if is_pg(race_db) else "main.runs") == sets


def test_column_types(race_db):
    race_db.executescript(UNIQUES)
    cat = catalog.read(race_db)
    assert cat.column_type("runs", "status") == "text"
    assert cat.column_type("runs", "K") == "integer"
    assert cat.column_type("runs", "missing") is None
    assert cat.column_type("missing", "k") is None


def test_exclusion_constraint(postgres_db):
    postgres_db.executescript("""
        CREATE TABLE booking (room integer, during tsrange,
                              EXCLUDE USING gist (during WITH &&));
    """)
    cat = catalog.read(postgres_db)
    (exclusion,) = cat.unique_constraints("booking")
    assert exclusion.kind == "exclusion"
    assert exclusion.columns == {"during"}


def test_sqlite_view_is_written_only_through_instead_of_triggers(sqlite_db):
    sqlite_db.executescript("""
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE item_log (id INTEGER PRIMARY KEY, name TEXT);
        CREATE VIEW plain AS SELECT * FROM items;
        CREATE VIEW logged AS SELECT * FROM items;
        CREATE TRIGGER logged_insert INSTEAD OF INSERT ON logged BEGIN
          INSERT INTO items (name) VALUES (NEW.name);
          INSERT INTO item_log (name) VALUES (NEW.name);
        END;
    """)
    cat = catalog.read(sqlite_db)
    assert cat.view_writes("plain") == frozenset()
    assert cat.view_writes("logged") == {"items", "item_log"}
    assert writes(cat.write_effects("logged", "INSERT")) >= {"items", "item_log"}
    assert writes(cat.write_effects("logged", "DELETE")) == {"logged"}  # fails: no trigger
    (trigger,) = cat.triggers
    assert (trigger.timing, trigger.events) == ("INSTEAD OF", {"INSERT"})


def test_postgres_updatable_views_and_instead_of_triggers(postgres_db):
    postgres_db.executescript("""
        CREATE TABLE items (id serial PRIMARY KEY, name text);
        CREATE TABLE item_log (id serial PRIMARY KEY, name text);
        CREATE VIEW simple AS SELECT id, name FROM items WHERE name <> '';
        CREATE VIEW simple2 AS SELECT id FROM simple;
        CREATE VIEW counted AS SELECT count(*) AS n FROM items;
        CREATE VIEW logged AS SELECT i.id, i.name FROM items i JOIN item_log l ON l.id = i.id;
        CREATE FUNCTION logged_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO item_log (name) VALUES (NEW.name); RETURN NEW; END $$;
        CREATE TRIGGER logged_insert INSTEAD OF INSERT ON logged
          FOR EACH ROW EXECUTE FUNCTION logged_insert();
    """)
    cat = catalog.read(postgres_db)
    assert cat.view_writes("simple") == {"items"}
    assert cat.view_writes("simple2") == {"items"}  # through an updatable view
    assert cat.view_writes("counted") == frozenset()  # an aggregate is not updatable
    assert cat.view_writes("logged") == {"item_log"}
    assert writes(cat.write_effects("simple2", "UPDATE")) == {"simple2", "simple", "items"}


PLPGSQL = """
CREATE TABLE runs (id serial PRIMARY KEY, status text);
CREATE TABLE run_log (run_id integer);
CREATE TABLE seen (n integer);
CREATE FUNCTION log_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO run_log VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER log_run AFTER INSERT ON runs FOR EACH ROW EXECUTE FUNCTION log_run();

CREATE FUNCTION start_run() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  new_id integer;
BEGIN
  IF EXISTS (SELECT 1 FROM runs WHERE status = 'running') THEN
    RAISE EXCEPTION 'a run is already active';
  END IF;
  INSERT INTO runs (status) VALUES ('running') RETURNING id INTO new_id;
  RETURN new_id;
END $$;

CREATE FUNCTION active_count() RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT count(*) FROM runs WHERE status = 'running'
$$;
CREATE FUNCTION seen_count() RETURNS bigint LANGUAGE sql STABLE
BEGIN ATOMIC
  SELECT count(*) FROM seen;
END;
CREATE FUNCTION calls_start() RETURNS integer LANGUAGE sql AS $$ SELECT start_run() $$;

CREATE FUNCTION insert_into(tbl text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('INSERT INTO %I VALUES (1)', tbl);
END $$;
CREATE FUNCTION count_plus() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN (SELECT count(*) FROM seen) + active_count();
END $$;
"""


def test_plpgsql_function_with_if_exists_and_insert(postgres_db):
    postgres_db.executescript(PLPGSQL)
    cat = catalog.read(postgres_db)
    effects = cat.function_effects("start_run")
    assert writes(effects) == {"runs", "run_log"}  # the INSERT, and the trigger it fires
    assert "runs" in reads(effects)  # IF EXISTS (SELECT ... FROM runs)
    assert "new_id" not in reads(effects) | writes(effects)  # RETURNING ... INTO a variable
    assert not cat.function_is_read_only("start_run")
    assert cat.function_effects("public.start_run") == effects
    assert cat.function_effects("calls_start") == effects  # a call inside a SQL function
    assert writes(cat.statement_effects("SELECT start_run()")) == {"runs", "run_log"}


def test_read_only_sql_functions(postgres_db):
    postgres_db.executescript(PLPGSQL)
    cat = catalog.read(postgres_db)
    assert cat.function_effects("active_count") == Footprint(frozenset({"runs"}), frozenset())
    assert cat.function_is_read_only("active_count")
    assert cat.function_effects("seen_count") == Footprint(frozenset({"seen"}), frozenset())
    assert cat.function_is_read_only("seen_count")  # BEGIN ATOMIC body
    assert cat.function_effects("count_plus") == Footprint(frozenset({"seen", "runs"}), frozenset())
    assert cat.function_is_read_only("count_plus")


def test_dynamic_sql_and_unknown_functions_conflict_with_everything(postgres_db):
    postgres_db.executescript(PLPGSQL)
    postgres_db.executescript("""
        CREATE TABLE t (n integer);
        CREATE FUNCTION t_dynamic() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN EXECUTE 'DELETE FROM ' || TG_ARGV[0]; RETURN NEW; END $$;
        CREATE TRIGGER t_dynamic AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION t_dynamic('runs');
        CREATE FUNCTION dyn_count(tbl text) RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE n bigint;
        BEGIN EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n; RETURN n; END $$;
        CREATE VIEW calls_dynamic AS SELECT dyn_count('t') AS x;
    """)
    cat = catalog.read(postgres_db)
    assert cat.function_effects("insert_into") is EVERYTHING
    assert not cat.function_is_read_only("insert_into")
    assert cat.function_effects("no_such_function") is EVERYTHING
    assert not cat.function_is_read_only("no_such_function")
    assert cat.write_effects("t", "UPDATE") is EVERYTHING
    assert cat.trigger_effects("t", "UPDATE") is EVERYTHING
    assert writes(cat.write_effects("t", "INSERT")) == {"t"}  # no trigger on INSERT
    assert cat.read_effects("calls_dynamic") is EVERYTHING
    assert cat.view_reads("calls_dynamic") == cat.tables  # unknown: every table
    assert cat.statement_effects("SELECT insert_into('runs')") is EVERYTHING
    assert cat.statement_effects("CALL something()") is EVERYTHING


def test_a_function_in_another_language_is_everything(postgres_db):
    import psycopg

    try:
        postgres_db.executescript(
            "CREATE FUNCTION my_now() RETURNS timestamptz LANGUAGE internal STABLE AS 'now'"
        )
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip("LANGUAGE internal needs a superuser")
    cat = catalog.read(postgres_db)
    (function,) = cat.functions["my_now"]
    assert (function.language, function.volatility) == ("internal", "s")
    assert cat.function_effects("my_now") is EVERYTHING
    assert not cat.function_is_read_only("my_now")
    assert cat.statement_effects("SELECT my_now()") is EVERYTHING


def test_extension_c_functions_count_as_built_ins(postgres_db):
    postgres_db.executescript("""
        CREATE EXTENSION pgcrypto;
        CREATE TABLE tokens (t bytea);
    """)
    cat = catalog.read(postgres_db)
    assert "gen_random_bytes" not in cat.functions
    effects = cat.statement_effects("INSERT INTO tokens VALUES (gen_random_bytes(8))")
    assert effects == Footprint(frozenset({"tokens"}), frozenset({"tokens"}))


def test_a_rule_conflicts_with_everything(postgres_db):
    postgres_db.executescript("""
        CREATE TABLE events (n integer);
        CREATE TABLE shadow (n integer);
        CREATE TABLE quiet (n integer);
        CREATE RULE copy_events AS ON INSERT TO events DO ALSO INSERT INTO shadow VALUES (NEW.n);
        CREATE VIEW v AS SELECT n FROM quiet;
    """)
    cat = catalog.read(postgres_db)
    assert cat.has_rule("events")
    assert cat.has_rule("public.events")
    assert not cat.has_rule("v")  # a view's own _RETURN rule is not a rule that rewrites
    assert cat.write_effects("events", "INSERT") is EVERYTHING
    assert cat.write_effects("events", "DELETE") is EVERYTHING
    assert writes(cat.write_effects("quiet", "INSERT")) == {"quiet"}


def test_postgres_schemas_off_the_search_path_keep_their_qualifier(postgres_db):
    postgres_db.executescript("""
        CREATE SCHEMA other;
        CREATE TABLE other.things (id integer PRIMARY KEY, owner text);
        CREATE TABLE things (id integer PRIMARY KEY);
        CREATE VIEW both_things AS SELECT t.id FROM things t JOIN other.things o USING (id);
    """)
    cat = catalog.read(postgres_db)
    assert cat.tables >= {"things", "other.things"}
    assert cat.view_reads("both_things") == {"things", "other.things"}
    assert cat.column_type("other.things", "owner") == "text"
    assert cat.column_type("things", "owner") is None


def test_partitions_are_read_and_written_through_their_parent(postgres_db):
    postgres_db.executescript("""
        CREATE TABLE m (at date NOT NULL, v integer) PARTITION BY RANGE (at);
        CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE m_2026 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE TABLE m_log (v integer);
        CREATE FUNCTION m_log() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO m_log VALUES (NEW.v); RETURN NEW; END $$;
        CREATE TRIGGER m_log AFTER INSERT ON m FOR EACH ROW EXECUTE FUNCTION m_log();
    """)
    cat = catalog.read(postgres_db)
    assert reads(cat.read_effects("m")) == {"m", "m_2025", "m_2026"}
    # a row trigger on the parent is cloned onto each partition, which the insert reaches
    assert writes(cat.write_effects("m", "INSERT")) == {"m", "m_2025", "m_2026", "m_log"}
    assert writes(cat.write_effects("m_2026", "INSERT")) == {"m_2026", "m_log"}


def test_the_cache_is_read_again_after_ddl_only(race_db):
    race_db.executescript(UNIQUES)
    first = catalog.read(race_db)
    race_db.execute("INSERT INTO runs (id, status, name, k) VALUES (1, 'done', 'x', 1)")
    race_db.execute("UPDATE runs SET k = 2")
    assert catalog.read(race_db) is first  # rows changed, the schema did not
    race_db.execute("CREATE UNIQUE INDEX by_k ON runs (k, status)")
    second = catalog.read(race_db)
    assert second is not first
    assert frozenset({"k", "status"}) in second.unique_columns("runs")
    assert frozenset({"k", "status"}) not in first.unique_columns("runs")
    assert catalog.read(race_db) is second
    race_db.execute("DROP INDEX by_k")
    third = catalog.read(race_db)
    assert third is not second and third.unique_columns("runs") == first.unique_columns("runs")


def test_postgres_fingerprint_sees_function_and_column_changes(postgres_db):
    postgres_db.executescript(PLPGSQL)
    first = catalog.read(postgres_db)
    postgres_db.executescript("""
        CREATE OR REPLACE FUNCTION active_count() RETURNS bigint LANGUAGE sql STABLE AS $$
          SELECT count(*) FROM seen
        $$;
    """)
    second = catalog.read(postgres_db)
    assert second is not first
    assert second.function_effects("active_count") == Footprint(frozenset({"seen"}), frozenset())
    postgres_db.execute("ALTER TABLE seen ALTER COLUMN n TYPE bigint")
    third = catalog.read(postgres_db)
    assert third is not second and third.column_type("seen", "n") == "bigint"
    postgres_db.execute("ALTER TABLE seen ADD COLUMN label varchar(10)")
    fourth = catalog.read(postgres_db)
    postgres_db.execute("ALTER TABLE seen ALTER COLUMN label TYPE varchar(20)")  # no rewrite
    fifth = catalog.read(postgres_db)
    assert fifth is not fourth
    assert fifth.column_type("seen", "label") == "character varying(20)"
    postgres_db.execute("ANALYZE runs")
    postgres_db.execute("INSERT INTO seen VALUES (1)")
    assert catalog.read(postgres_db) is fifth


PG_DDL = [
    "CREATE TABLE extra (n integer)",
    "CREATE INDEX runs_status ON runs (status)",
    "CREATE TRIGGER log_again AFTER UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION log_run()",
    "ALTER TABLE runs DISABLE TRIGGER log_run",
    "DROP TRIGGER log_run ON runs",
    "CREATE VIEW running AS SELECT * FROM runs WHERE status = 'running'",
    "CREATE OR REPLACE VIEW running AS SELECT id, status FROM runs WHERE status = 'done'",
    "CREATE RULE no_delete AS ON DELETE TO run_log DO INSTEAD NOTHING",
    "ALTER TABLE run_log ADD PRIMARY KEY (run_id)",
    "ALTER TABLE seen ADD FOREIGN KEY (n) REFERENCES run_log (run_id) ON DELETE CASCADE",
    "ALTER TABLE seen RENAME COLUMN n TO m",
    "ALTER FUNCTION active_count() VOLATILE",
    "DROP FUNCTION insert_into(text)",
    "CREATE SCHEMA more",
    "ALTER TABLE extra SET SCHEMA more",
    "DROP TABLE more.extra",
]


def test_postgres_fingerprint_changes_after_each_kind_of_ddl(postgres_db):
    postgres_db.executescript(PLPGSQL)
    before = catalog.read(postgres_db)
    for ddl in PG_DDL:
        postgres_db.execute(ddl)
        after = catalog.read(postgres_db)
        assert after is not before, ddl
        before = after
    for not_ddl in (
        "INSERT INTO runs (status) VALUES (1)",
        "ANALYZE",
        "VACUUM",
        "SELECT start_run()",
    ):
        postgres_db.execute(not_ddl)
        assert catalog.read(postgres_db) is before, not_ddl


def test_read_with_an_open_connection_uses_the_same_cache(race_db):
    race_db.executescript(UNIQUES)
    first = catalog.read(race_db)
    conn = race_db.connect()
    try:
        assert catalog.read(race_db, connection=conn) is first
        race_db.execute("CREATE INDEX by_name ON runs (name)")
        assert catalog.read(race_db, connection=conn) is not first
    finally:
        conn.close()


def test_read_takes_only_database_handles():
    with pytest.raises(TypeError, match=r"no \.path or \.dsn"):
        catalog.read(object())


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        (
            "postgres",
            "WITH c AS (UPDATE a SET n = 1 RETURNING id) SELECT * FROM c",
            ({"a"}, {("a", "UPDATE")}),
        ),
        (
            "postgres",
            "INSERT INTO a (k) VALUES (1) ON CONFLICT (k) DO UPDATE SET n = 2",
            ({"a"}, {("a", "INSERT"), ("a", "UPDATE")}),
        ),
        (
            "postgres",
            "INSERT INTO a (k) VALUES (1) ON CONFLICT DO NOTHING",
            ({"a"}, {("a", "INSERT")}),
        ),
        (
            "sqlite",
            "INSERT OR REPLACE INTO a VALUES (1)",
            ({"a"}, {("a", "INSERT"), ("a", "DELETE")}),
        ),
        ("sqlite", "REPLACE INTO a VALUES (1)", ({"a"}, {("a", "INSERT"), ("a", "DELETE")})),
        (
            "postgres",
            "DELETE FROM public.a USING b WHERE a.id = b.id",
            ({"public.a", "b"}, {("public.a", "DELETE")}),
        ),
        ("postgres", "/* hi */ (SELECT 1 FROM a) UNION SELECT 2 FROM b", ({"a", "b"}, set())),
        (
            "postgres",
            "MERGE INTO a USING b ON a.id = b.id WHEN MATCHED THEN DELETE",
            ({"a", "b"}, {("a", "INSERT"), ("a", "UPDATE"), ("a", "DELETE")}),
        ),
    ],
)
def test_statement_bodies(dialect, sql, expected):
    found = catalog.parse_body(sql, dialect)
    assert isinstance(found, catalog.Body), found
    assert (set(found.reads), set(found.writes)) == expected


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("sqlite", "PRAGMA user_version = 5"),
        ("postgres", "SELECT * INTO copy FROM a"),  # creates a table
        ("postgres", "CREATE TABLE x (n int)"),
        ("postgres", "TRUNCATE a"),
        ("postgres", "DO $$ BEGIN NULL; END $$"),
        ("postgres", "CALL p()"),
        ("postgres", "(" + " " * 5000 + "!"),
    ],
)
def test_statements_not_understood(dialect, sql):
    assert catalog.parse_body(sql, dialect) is EVERYTHING


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "BEGIN FOR r IN SELECT id FROM a LOOP UPDATE b SET n = r.id; END LOOP; END",
            ({"a", "b"}, {("b", "UPDATE")}),
        ),
        (
            "DECLARE n int := (SELECT count(*) FROM a); BEGIN PERFORM 1 FROM b; RETURN n; END",
            ({"a", "b"}, set()),
        ),
        (
            "BEGIN n := CASE WHEN x THEN 1 ELSE 2 END; "
            "CASE n WHEN 1 THEN DELETE FROM a; ELSE NULL; END CASE; END",
            ({"a"}, {("a", "DELETE")}),
        ),
        (
            "BEGIN INSERT INTO a VALUES (1); EXCEPTION WHEN unique_violation THEN "
            "UPDATE a SET n = n + 1; END",
            ({"a"}, {("a", "INSERT"), ("a", "UPDATE")}),
        ),
        (
            "BEGIN WITH c AS (UPDATE a SET n = 1 RETURNING id) SELECT count(*) INTO k FROM c; END",
            ({"a"}, {("a", "UPDATE")}),
        ),
    ],
)
def test_plpgsql_bodies(body, expected):
    found = plpgsql_body(body)
    assert isinstance(found, catalog.Body), found
    assert (set(found.reads), set(found.writes)) == expected


@pytest.mark.parametrize(
    "body",
    [
        "BEGIN EXECUTE 'SELECT 1'; END",
        "BEGIN RETURN QUERY EXECUTE 'SELECT 1'; END",
        "BEGIN FOR r IN EXECUTE q LOOP NULL; END LOOP; END",
        "BEGIN LOCK TABLE a; END",
        "BEGIN CREATE TABLE x (n int); END",
        "BEGIN SELECT FROM WHERE; END",
        "BEGIN something strange; END",
    ],
)
def test_plpgsql_bodies_not_understood(body):
    assert plpgsql_body(body) is EVERYTHING
