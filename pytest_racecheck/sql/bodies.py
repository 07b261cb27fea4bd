"""What code names, read from its text: statements, PL/pgSQL bodies, function bodies.

Each reader gives a :class:`~pytest_racecheck.sql.code.Body`, or :data:`EVERYTHING` for what
cannot be read with confidence (a body that does not parse, dynamic SQL, DDL, a C function).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Final

import sqlglot
from sqlglot import TokenType, exp

from pytest_racecheck.sql.code import EVENTS, EVERYTHING, Body, Code, Everything, merge
from pytest_racecheck.sql.tokens import (
    STATEMENT_WORDS,
    source_of,
    split_statements,
    split_tokens,
    tokenize,
    word_of,
)

if TYPE_CHECKING:
    from sqlglot.tokenizer_core import Token


def _table_name(table: exp.Table) -> str:
    name = table.name.lower()
    return f"{table.db.lower()}.{name}" if table.db else name


_UNKNOWN_NODES: Final = (exp.Into, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.TruncateTable)


def node_body(node: exp.Expr) -> Code:
    """What one parsed statement names: DML anywhere in its tree, tables, function calls."""
    if not isinstance(node, (exp.Query, exp.Values, exp.Insert, exp.Update, exp.Delete, exp.Merge)):
        return EVERYTHING
    if any(isinstance(n, _UNKNOWN_NODES) for n in node.walk()):
        return EVERYTHING
    ctes = {cte.alias_or_name.lower() for cte in node.find_all(exp.CTE)}
    reads: set[str] = set()
    writes: set[tuple[str, str]] = set()
    calls: set[str] = set()
    for table in node.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function, seen below as a call
        name = _table_name(table)
        if not table.db and name in ctes:
            continue
        reads.add(name)
    for dml in node.find_all(exp.Insert, exp.Update, exp.Delete, exp.Merge):
        target = dml.this
        if isinstance(target, exp.Schema):
            target = target.this
        if not isinstance(target, exp.Table) or not isinstance(target.this, exp.Identifier):
            return EVERYTHING
        name = _table_name(target)
        reads.add(name)
        writes.update((name, event) for event in _events_of(dml))
    for call in node.find_all(exp.Anonymous):
        name = call.name.lower()
        parent = call.parent
        if isinstance(parent, exp.Dot) and parent.expression is call:
            name = f"{parent.this.name.lower()}.{name}"
        calls.add(name)
    return Body(frozenset(reads), frozenset(writes), frozenset(calls))


def _events_of(dml: exp.Expr) -> set[str]:
    if isinstance(dml, exp.Update):
        return {"UPDATE"}
    if isinstance(dml, exp.Delete):
        return {"DELETE"}
    if isinstance(dml, exp.Merge):
        return set(EVENTS)
    events = {"INSERT"}
    conflict = dml.args.get("conflict")
    if isinstance(conflict, exp.OnConflict) and conflict.args.get("expressions"):
        events.add("UPDATE")  # ON CONFLICT DO UPDATE
    if str(dml.args.get("alternative") or "").upper() == "REPLACE":
        events.add("DELETE")  # SQLite's INSERT OR REPLACE deletes the rows in the way
    return events


# Blanks, comments and opening parentheses, then the first word; no two branches overlap, so a
# statement that starts otherwise fails fast instead of backtracking.
_FIRST_WORD: Final = re.compile(r"(?:\s|--[^\n]*(?:\n|$)|/\*(?:[^*]|\*(?!/))*\*/|\()*([A-Za-z_]+)")


@lru_cache(maxsize=4096)  # bodies and statements repeat across reads of one schema
def parse_body(sql: str, dialect: str) -> Code:
    """One statement's text as a :class:`Body`; EVERYTHING if it does not parse or is not DML."""
    text = sql.strip()
    if not text:
        return Body()
    if text[:7].upper() == "REPLACE":  # SQLite's REPLACE INTO, which sqlglot reads as a Command
        text = "INSERT OR " + text
    first = _FIRST_WORD.match(text)
    if first is None or first.group(1).upper() not in STATEMENT_WORDS:
        return EVERYTHING  # DDL, PRAGMA, LOCK, CALL, DO...: unknown, and sqlglot would warn
    try:
        node = sqlglot.parse_one(text, dialect=dialect)
    except Exception:
        return EVERYTHING
    return node_body(node)


def expression_body(text: str, dialect: str) -> Code:
    if not text.strip():
        return Body()
    return parse_body("SELECT " + text, dialect)


# -- PL/pgSQL -------------------------------------------------------------------------------

_PL_SKIP: Final = frozenset(
    {"END", "NULL", "GET", "FETCH", "MOVE", "CLOSE", "COMMIT", "ROLLBACK", "LOOP", ""}
)
_PL_CONDITION: Final = frozenset({"IF", "ELSIF", "ELSEIF", "WHILE", "WHEN", "ASSERT"})


def plpgsql_body(source: str) -> Code:
    """What a PL/pgSQL (or BEGIN ATOMIC) body names, read one embedded statement at a time.

    The control lines (IF, ELSIF, WHILE, FOR ... LOOP, RETURN, PERFORM, assignments) become the
    SELECTs they evaluate; every embedded SQL statement is parsed with sqlglot. Dynamic SQL
    (EXECUTE), statements not understood and anything that fails to parse give EVERYTHING.
    """
    try:
        tokens = tokenize(source, "postgres")
    except Exception:
        return EVERYTHING
    parts: list[Code] = []
    declaring = False
    in_handler = False
    for segment in split_tokens(tokens, plpgsql=True):
        toks = list(segment)
        while toks:
            word = word_of(toks[0])
            if word in ("BEGIN", "ATOMIC", "ELSE"):
                declaring = declaring and word != "BEGIN"
                toks.pop(0)
            elif word == "DECLARE":
                declaring = True
                toks.pop(0)
            elif (
                len(toks) >= 5
                and [t.token_type for t in toks[:2]] == [TokenType.LT, TokenType.LT]
                and toks[3].token_type == TokenType.GT
                and toks[4].token_type == TokenType.GT
            ):
                del toks[:5]  # <<label>>
            else:
                break
        if not toks:
            continue
        if declaring:
            parts.append(_declaration(source, toks))
            continue
        word = word_of(toks[0])
        if word == "EXCEPTION":
            in_handler = True
            continue
        if word == "END":
            in_handler = False
            continue
        if word == "WHEN" and in_handler:
            continue  # a condition name such as unique_violation or SQLSTATE '23505'
        parts.append(_plpgsql_statement(source, toks))
        if isinstance(parts[-1], Everything):
            return EVERYTHING
    return merge(parts)


def _declaration(source: str, toks: list[Token]) -> Code:
    words = [word_of(t) for t in toks]
    if "CURSOR" in words and "FOR" in words:
        return parse_body(source_of(source, toks[words.index("FOR") + 1 :]), "postgres")
    for i, token in enumerate(toks):
        if token.token_type in (TokenType.COLON_EQ, TokenType.EQ) or words[i] == "DEFAULT":
            return expression_body(source_of(source, toks[i + 1 :]), "postgres")
    return Body()


def _without_trailing(toks: list[Token], *words: str) -> list[Token]:
    return toks[:-1] if toks and word_of(toks[-1]) in words else toks


def _plpgsql_statement(source: str, toks: list[Token]) -> Code:
    words = [word_of(t) for t in toks]
    first = words[0]
    if "EXECUTE" in words or first == "DO":
        return EVERYTHING  # dynamic SQL: the tables are known only when it runs
    if first in _PL_SKIP:
        return Body()
    if first == "RAISE":
        return EVERYTHING if "SELECT" in words else Body()
    if first in _PL_CONDITION:
        rest = _without_trailing(toks[1:], "THEN", "LOOP")
        if first == "ASSERT":
            rest = _until_comma(rest)
        return expression_body(source_of(source, rest), "postgres")
    if first == "CASE":
        rest = _without_trailing(toks[1:], "THEN")
        return expression_body(_case_expressions(source, rest), "postgres")
    if first in ("EXIT", "CONTINUE"):
        if "WHEN" not in words:
            return Body()
        return expression_body(source_of(source, toks[words.index("WHEN") + 1 :]), "postgres")
    if first == "RETURN":
        rest = toks[1:]
        if rest and word_of(rest[0]) in ("QUERY", "NEXT"):
            if word_of(rest[0]) == "QUERY":
                return parse_body(source_of(source, rest[1:]), "postgres")
            rest = rest[1:]
        return expression_body(source_of(source, rest), "postgres")
    if first == "PERFORM":
        return parse_body("SELECT " + source_of(source, toks[1:]), "postgres")
    if first in ("FOR", "FOREACH"):
        return _for_loop(source, toks, words)
    if first == "OPEN":
        if "FOR" not in words:
            return Body()
        return parse_body(source_of(source, toks[words.index("FOR") + 1 :]), "postgres")
    if first == "CALL":
        return expression_body(source_of(source, toks[1:]), "postgres")
    if first in STATEMENT_WORDS or toks[0].token_type == TokenType.L_PAREN:
        return parse_body(source_of(source, _strip_into(toks)), "postgres")
    for i, token in enumerate(toks):  # an assignment: target := expression
        if token.token_type in (TokenType.COLON_EQ, TokenType.EQ):
            return expression_body(source_of(source, toks[i + 1 :]), "postgres")
    return EVERYTHING


def _until_comma(toks: list[Token]) -> list[Token]:
    depth = 0
    for i, token in enumerate(toks):
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif token.token_type == TokenType.COMMA and depth == 0:
            return toks[:i]
    return toks


def _case_expressions(source: str, toks: list[Token]) -> str:
    """``CASE x WHEN v`` as the list of expressions ``x, v`` that the statement evaluates."""
    pieces: list[list[Token]] = [[]]
    for token in toks:
        if word_of(token) == "WHEN":
            pieces.append([])
        else:
            pieces[-1].append(token)
    return ", ".join(source_of(source, piece) for piece in pieces if piece)


def _for_loop(source: str, toks: list[Token], words: list[str]) -> Code:
    if "IN" not in words:
        return EVERYTHING
    rest = _without_trailing(toks[words.index("IN") + 1 :], "LOOP")
    while rest and word_of(rest[0]) in ("REVERSE", "ARRAY"):
        rest = rest[1:]
    text = source_of(source, rest)
    if rest and (word_of(rest[0]) in STATEMENT_WORDS or rest[0].token_type == TokenType.L_PAREN):
        return parse_body(text, "postgres")
    if ".." in text:  # an integer range: lower .. upper [BY step]
        lower, _, upper = text.partition("..")
        upper = upper.lstrip(".").replace(" BY ", ", ").replace(" by ", ", ")
        return expression_body(f"{lower.rstrip('.')}, {upper}", "postgres")
    return expression_body(text, "postgres")  # a bound cursor, or FOREACH's array


def _strip_into(toks: list[Token]) -> list[Token]:
    """A PL/pgSQL statement without its ``INTO [STRICT] variables`` (not INSERT's INTO)."""
    out: list[Token] = []
    i = 0
    depth = 0
    while i < len(toks):
        token = toks[i]
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        if (
            token.token_type != TokenType.INTO
            or depth
            or (out and word_of(out[-1]) in ("INSERT", "MERGE"))
        ):
            out.append(token)
            i += 1
            continue
        i += 1
        if i < len(toks) and word_of(toks[i]) == "STRICT":
            i += 1
        while i < len(toks):  # target[.field] [, target[.field] ...]
            i += 1
            while i + 1 < len(toks) and toks[i].token_type == TokenType.DOT:
                i += 2
            if i < len(toks) and toks[i].token_type == TokenType.COMMA:
                i += 1
                continue
            break
    return out


@lru_cache(maxsize=1024)
def function_body(language: str, source: str | None, sql_body: str | None) -> Code:
    """A PostgreSQL function's body by its language; EVERYTHING for C, internal and the rest."""
    language = language.lower()
    if sql_body:  # LANGUAGE sql with BEGIN ATOMIC ... END (PostgreSQL 14+)
        return plpgsql_body(sql_body)
    if source is None:
        return EVERYTHING
    if language == "plpgsql":
        return plpgsql_body(source)
    if language == "sql":
        return merge(parse_body(s, "postgres") for s in split_statements(source, "postgres"))
    return EVERYTHING
