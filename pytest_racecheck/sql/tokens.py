"""SQL text as tokens: the statements of a script, and the words of a statement.

sqlglot's tokenizers, without the commands that swallow the rest of a statement, so that a
PL/pgSQL body or a trigger's body can be cut into the statements it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from sqlglot import TokenType
from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.sqlite import SQLite

if TYPE_CHECKING:
    from sqlglot.tokenizer_core import Token


class _PgTokenizer(Postgres.Tokenizer):
    """PostgreSQL tokens that do not swallow the rest of a statement after DECLARE or EXECUTE."""

    COMMANDS = set()


class _SqliteTokenizer(SQLite.Tokenizer):
    """SQLite tokens, same reason as :class:`_PgTokenizer`."""

    COMMANDS = set()


_NOT_WORDS: Final = frozenset(
    TokenType[n]
    for n in (
        "STRING",
        "HEREDOC_STRING",
        "IDENTIFIER",
        "NUMBER",
        "BYTE_STRING",
        "NATIONAL_STRING",
        "RAW_STRING",
        "BIT_STRING",
        "HEX_STRING",
        "UNICODE_STRING",
    )
    if n in TokenType.__members__
)
STATEMENT_WORDS: Final = frozenset(
    {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"}
)


def word_of(token: Token) -> str:
    return "" if token.token_type in _NOT_WORDS else token.text.upper()


def tokenize(text: str, dialect: str) -> list[Token]:
    tokenizer = _PgTokenizer() if dialect == "postgres" else _SqliteTokenizer()
    return tokenizer.tokenize(text)


def source_of(source: str, tokens: Sequence[Token]) -> str:
    """The source of ``tokens`` (comments between them dropped, adjacency kept)."""
    parts: list[str] = []
    previous_end = None
    for token in tokens:
        if previous_end is not None and token.start > previous_end + 1:
            parts.append(" ")
        parts.append(source[token.start : token.end + 1])
        previous_end = token.end
    return "".join(parts)


def split_tokens(tokens: Sequence[Token], plpgsql: bool) -> list[list[Token]]:
    """Statements separated by ``;``; for PL/pgSQL also after the THEN and LOOP of control lines."""
    segments: list[list[Token]] = []
    current: list[Token] = []
    parens = 0
    cases = 0  # open SQL CASE expressions, whose THEN must not split
    at_start = True  # nothing but BEGIN, ELSE, ... so far: a CASE here is PL/pgSQL's statement
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON and parens == 0:
            if current:
                segments.append(current)
            current, cases, at_start = [], 0, True
            continue
        current.append(token)
        if token.token_type == TokenType.L_PAREN:
            parens += 1
        elif token.token_type == TokenType.R_PAREN:
            parens = max(0, parens - 1)
        if not plpgsql or parens:
            continue
        word = word_of(token)
        if word == "CASE" and not at_start:
            cases += 1
        elif word == "END" and cases:
            cases -= 1
        elif word in ("THEN", "LOOP") and not cases:
            segments.append(current)
            current, at_start = [], True
            continue
        at_start = at_start and word in ("BEGIN", "ELSE", "ATOMIC", "DECLARE")
    if current:
        segments.append(current)
    return segments


def split_statements(sql: str, dialect: str) -> list[str]:
    """The statements of a script, split on ``;`` outside strings and parentheses."""
    try:
        tokens = tokenize(sql, dialect)
    except Exception:
        return [sql]
    return [source_of(sql, seg) for seg in split_tokens(tokens, plpgsql=False)]
