"""Reading a PostgreSQL database's catalog: one round trip of ``pg_catalog`` queries.

Names are unqualified for schemas on the search path, qualified otherwise; the fingerprint, one
query over the user rows of the catalogs, tells a cached catalog from a changed schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Final

import sqlglot
from sqlglot import exp

from pytest_racecheck.sql.bodies import function_body
from pytest_racecheck.sql.code import Code
from pytest_racecheck.sql.schema import (
    Catalog,
    ForeignKey,
    Function,
    Trigger,
    UniqueConstraint,
    View,
)

_USER = "{ns}.nspname NOT IN ('pg_catalog', 'information_schema') AND {ns}.nspname !~ '^pg_'"

_PG_FINGERPRINT = """
SELECT concat_ws('/',
  (SELECT oid FROM pg_database WHERE datname = current_database()),
  current_setting('search_path'),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_class WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_attribute WHERE attrelid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_trigger WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_proc WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_rewrite WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_constraint WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_index WHERE indexrelid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_namespace WHERE oid >= 16384),
  (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0)
     FROM pg_inherits WHERE inhrelid >= 16384))
"""

_PG_SEARCH = "SELECT current_schemas(false)::text[]"

_PG_RELATIONS = f"""
SELECT n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER.format(ns="n")}
ORDER BY n.nspname, c.relname, a.attnum
"""

_PG_VIEWS = f"""
SELECT DISTINCT vn.nspname, v.relname, pg_relation_is_updatable(v.oid, false) > 0,
       rn.nspname, r.relname, fn.nspname, p.proname
FROM pg_class v
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_rewrite w ON w.ev_class = v.oid AND w.rulename = '_RETURN'
LEFT JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
     AND d.refobjid <> v.oid
LEFT JOIN pg_class r ON d.refclassid = 'pg_class'::regclass AND r.oid = d.refobjid
LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
LEFT JOIN pg_proc p ON d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid
LEFT JOIN pg_namespace fn ON fn.oid = p.pronamespace
WHERE v.relkind = 'v' AND {_USER.format(ns="vn")}
"""

_PG_TRIGGERS = f"""
SELECT n.nspname, c.relname, t.tgname, t.tgtype, l.lanname, p.prosrc, {{sqlbody}}
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_language l ON l.oid = p.prolang
WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND {_USER.format(ns="n")}
"""

# An extension's C functions (pgcrypto, uuid-ossp, btree_gist...) are left out: like built-ins,
# they are taken to touch no table. A user's own C function stays, and is EVERYTHING.
_PG_FUNCTIONS = f"""
SELECT n.nspname, p.proname, l.lanname, p.provolatile, p.prosrc, {{sqlbody}}
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE p.prokind IN ('f', 'p') AND {_USER.format(ns="n")}
  AND (l.lanname IN ('sql', 'plpgsql') OR NOT EXISTS (
    SELECT 1 FROM pg_depend e
    WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e'))
"""

_PG_FOREIGN_KEYS = f"""
SELECT cn.nspname, c.relname, pn.nspname, pc.relname, k.confdeltype, k.confupdtype,
  ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(n, i)
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
  ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS u(n, i)
        JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = k.confrelid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE k.contype = 'f' AND {_USER.format(ns="cn")}
"""

_PG_INDEXES = f"""
SELECT n.nspname, c.relname, i.relname, coalesce(k.contype::text, ''),
  ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS u(n, o)
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n
        WHERE u.o <= x.indnkeyatts ORDER BY u.o),
  pg_get_expr(x.indexprs, x.indrelid), pg_get_expr(x.indpred, x.indrelid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = x.indrelid
     AND k.contype IN ('p', 'u', 'x')
WHERE (x.indisunique OR x.indisexclusion) AND {_USER.format(ns="n")}
"""

_PG_RULES = f"""
SELECT n.nspname, c.relname
FROM pg_rewrite r
JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename <> '_RETURN' AND {_USER.format(ns="n")}
"""

_PG_CHILDREN = f"""
SELECT pn.nspname, p.relname, cn.nspname, c.relname
FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
WHERE p.relkind IN ('r', 'p', 'f') AND {_USER.format(ns="pn")}
"""

_PG_ACTIONS: Final = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}
_PG_KINDS: Final = {"p": "primary key", "u": "unique", "x": "exclusion", "": "unique index"}


# Function bodies read so far, by (language, source, SQL-standard body): a body shared by
# several triggers or overloads is read once.
_Bodies = dict[tuple[str, "str | None", "str | None"], Code]


def postgres_fingerprint(conn: Any) -> str:
    """One query over the user rows of the catalogs: it changes with any DDL."""
    return str(conn.execute(_PG_FINGERPRINT).fetchone()[0])


def read_postgres(dsn: str) -> Catalog:
    """The catalog of a PostgreSQL database: one connection, one round trip of catalog queries."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return read_postgres_connection(conn)


def read_postgres_connection(conn: Any) -> Catalog:
    """The catalog of the database ``conn`` (psycopg 3, autocommit) is connected to."""
    (
        fingerprint_rows,
        search_rows,
        relation_rows,
        view_rows,
        trigger_rows,
        function_rows,
        fk_rows,
        index_rows,
        rule_rows,
        child_rows,
    ) = _run_batch(conn, _queries(conn.info.server_version))
    search = tuple(s.lower() for s in search_rows[0][0])
    names = _Names(search)
    tables, columns, aliases = _relations(relation_rows, names)
    bodies: _Bodies = {}
    triggers = _triggers(trigger_rows, names, bodies)
    functions = _functions(function_rows, names, bodies)
    children: dict[str, set[str]] = {}
    for pschema, pname, cschema, cname in child_rows:
        children.setdefault(names(pschema, pname), set()).add(names(cschema, cname))
    return Catalog(
        backend="postgres",
        tables=frozenset(tables),
        columns=columns,
        views=_views(view_rows, names),
        triggers=triggers,
        foreign_keys=_foreign_keys(fk_rows, names),
        uniques=_uniques(index_rows, names),
        rules=frozenset(names(s, r) for s, r in rule_rows),
        functions=functions,
        children={k: frozenset(v) for k, v in children.items()},
        aliases=aliases,
        search_schemas=search,
        fingerprint=str(fingerprint_rows[0][0]),
    )


def _queries(server_version: int) -> list[str]:
    """The catalog queries, in the order :func:`read_postgres_connection` unpacks their rows."""
    sqlbody = (
        "CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) END"
        if server_version >= 140000
        else "NULL::text"
    )
    return [
        _PG_FINGERPRINT,
        _PG_SEARCH,
        _PG_RELATIONS,
        _PG_VIEWS,
        _PG_TRIGGERS.format(sqlbody=sqlbody),
        _PG_FUNCTIONS.format(sqlbody=sqlbody),
        _PG_FOREIGN_KEYS,
        _PG_INDEXES,
        _PG_RULES,
        _PG_CHILDREN,
    ]


class _Names:
    """The catalog's spelling of a relation or function: unqualified on the search path."""

    def __init__(self, search: tuple[str, ...]) -> None:
        self.search = search

    def __call__(self, schema: str, name: str) -> str:
        schema, name = schema.lower(), name.lower()
        return name if schema in self.search else f"{schema}.{name}"


def _relations(
    rows: list[tuple[Any, ...]], names: _Names
) -> tuple[set[str], dict[str, dict[str, str]], dict[str, str]]:
    """Tables, their columns' types and the qualified spellings, the search path's first won."""
    tables: set[str] = set()
    columns: dict[str, dict[str, str]] = {}
    aliases: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for schema, relname, relkind, attname, type_ in sorted(
        rows, key=lambda r: _search_rank(names.search, r[0])
    ):
        key = names(schema, relname)
        if kinds.setdefault(key, f"{schema}.{relname}") != f"{schema}.{relname}":
            continue  # shadowed by a relation of that name earlier on the search path
        aliases[f"{schema}.{relname}".lower()] = key
        if relkind != "v":
            tables.add(key)
        if attname is not None:
            columns.setdefault(key, {})[attname.lower()] = str(type_).lower()
    return tables, columns, aliases


def _views(rows: list[tuple[Any, ...]], names: _Names) -> dict[str, View]:
    """Each view with the relations and user functions its rewrite rule depends on."""
    view_parts: dict[str, tuple[bool, set[str], set[str]]] = {}
    for vschema, vname, updatable, rschema, rname, fschema, fname in rows:
        _, rels, calls = view_parts.setdefault(
            names(vschema, vname), (bool(updatable), set(), set())
        )
        if rname is not None:
            rels.add(names(rschema, rname))
        if fname is not None and fschema not in ("pg_catalog", "information_schema"):
            calls.add(names(fschema, fname))
    return {
        name: View(name, frozenset(rels), frozenset(calls), updatable)
        for name, (updatable, rels, calls) in view_parts.items()
    }


def _body(
    bodies: _Bodies,
    language: str,
    source: str | None,
    sql_body: str | None,
) -> Code:
    """A function's body, read once per read of the catalog (``bodies`` holds those read)."""
    key = (language, source, sql_body)
    if key not in bodies:
        bodies[key] = function_body(language, source, sql_body)
    return bodies[key]


def _triggers(
    rows: list[tuple[Any, ...]],
    names: _Names,
    bodies: _Bodies,
) -> tuple[Trigger, ...]:
    """The enabled user triggers, timing and events decoded from ``tgtype``."""
    triggers: list[Trigger] = []
    for schema, relname, tgname, tgtype, language, source, sql_body in rows:
        timing = "INSTEAD OF" if tgtype & 64 else "BEFORE" if tgtype & 2 else "AFTER"
        events = frozenset(
            e for bit, e in ((4, "INSERT"), (16, "UPDATE"), (8, "DELETE")) if tgtype & bit
        )
        triggers.append(
            Trigger(
                tgname,
                names(schema, relname),
                timing,
                events,
                _body(bodies, language, source, sql_body),
            )
        )
    return tuple(triggers)


def _functions(
    rows: list[tuple[Any, ...]],
    names: _Names,
    bodies: _Bodies,
) -> dict[str, tuple[Function, ...]]:
    """User functions and procedures by name, one entry per overload."""
    functions: dict[str, list[Function]] = {}
    for schema, proname, language, volatility, source, sql_body in rows:
        name = names(schema, proname)
        body = _body(bodies, language, source, sql_body)
        functions.setdefault(name, []).append(Function(name, language, str(volatility), body))
    return {k: tuple(v) for k, v in functions.items()}


def _foreign_keys(rows: list[tuple[Any, ...]], names: _Names) -> tuple[ForeignKey, ...]:
    return tuple(
        ForeignKey(
            names(cschema, cname),
            tuple(c.lower() for c in ccols),
            names(pschema, pname),
            tuple(c.lower() for c in pcols),
            _PG_ACTIONS.get(str(on_delete), "NO ACTION"),
            _PG_ACTIONS.get(str(on_update), "NO ACTION"),
        )
        for cschema, cname, pschema, pname, on_delete, on_update, ccols, pcols in rows
    )


def _uniques(rows: list[tuple[Any, ...]], names: _Names) -> tuple[UniqueConstraint, ...]:
    """Primary keys, unique and exclusion constraints, unique indexes (expressions included)."""
    uniques: list[UniqueConstraint] = []
    for schema, relname, index, contype, cols, exprs, predicate in rows:
        used = {c.lower() for c in cols}
        expressions: tuple[str, ...] = ()
        if exprs:
            expressions = (exprs,)
            used |= _columns_in(exprs)
        uniques.append(
            UniqueConstraint(
                index,
                names(schema, relname),
                frozenset(used),
                _PG_KINDS.get(str(contype), "unique index"),
                expressions,
                predicate,
            )
        )
    return tuple(uniques)


def _run_batch(conn: Any, queries: Sequence[str]) -> list[list[tuple[Any, ...]]]:
    """All ``queries`` in one round trip: a pipeline (psycopg prepares what a connection repeats).

    Without pipeline support, one query at a time. A single multi-statement string would also be
    one round trip, but the simple protocol plans every query afresh: 4 times slower here.
    """
    import psycopg

    if not psycopg.Pipeline.is_supported():
        return [conn.execute(q).fetchall() for q in queries]
    with conn.pipeline():
        cursors = [conn.execute(q) for q in queries]
    return [cur.fetchall() for cur in cursors]


def _search_rank(search: tuple[str, ...], schema: str) -> int:
    return search.index(schema.lower()) if schema.lower() in search else len(search)


@lru_cache(maxsize=1024)
def _columns_in(expression: str) -> frozenset[str]:
    try:
        node = sqlglot.parse_one("SELECT " + expression, dialect="postgres")
    except Exception:
        return frozenset()
    return frozenset(c.name.lower() for c in node.find_all(exp.Column))


def clear_cache() -> None:
    """Forget the columns read from indexed expressions."""
    _columns_in.cache_clear()
