"""A statement shortened for a person: its verb and main table (``INSERT runs``).

Read from the text's tokens as far as needed, never parsed: it names every statement a racer
sends, so it must be cheap and never fail.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<str>'(?:[^']|'')*'?)
  | (?P<qid>"(?:[^"]|"")*"?|`[^`]*`?)
  | (?P<word>[^\W\d][\w$]*)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")
# fmt: off
_OBJECT_KINDS = frozenset({
    "TABLE", "INDEX", "VIEW", "TRIGGER", "SEQUENCE", "SCHEMA", "FUNCTION", "PROCEDURE", "TYPE",
    "EXTENSION", "DATABASE", "ROLE", "USER",
})
# fmt: on


class _Tokens:
    """SQL tokens one at a time, comments and blanks left out; read only as far as needed."""

    __slots__ = ("_it", "_peeked")

    def __init__(self, sql: str) -> None:
        self._it = _TOKEN.finditer(sql)
        self._peeked: tuple[str, str] | None = None

    def next(self) -> tuple[str, str] | None:
        if self._peeked is not None:
            tok, self._peeked = self._peeked, None
            return tok
        for m in self._it:
            kind = m.lastgroup
            if kind != "skip":
                return kind or "punct", m.group()
        return None

    def peek(self) -> tuple[str, str] | None:
        if self._peeked is None:
            self._peeked = self.next()
        return self._peeked

    def word(self) -> str:
        """The next token as an upper-case keyword, consumed, or '' if it is not a word."""
        tok = self.peek()
        if tok is None or tok[0] != "word":
            return ""
        self._peeked = None
        return tok[1].upper()

    def skip_words(self, *words: str) -> None:
        while (tok := self.peek()) is not None and tok[0] == "word" and tok[1].upper() in words:
            self._peeked = None

    def name(self) -> str:
        """A possibly qualified, possibly quoted name (``"public"."runs"`` -> public.runs)."""
        parts: list[str] = []
        while True:
            tok = self.peek()
            if tok is None or tok[0] not in ("word", "qid"):
                break
            self._peeked = None
            text = tok[1]
            if tok[0] == "qid":
                quote = text[0]
                text = text[1:-1] if len(text) > 1 and text[-1] == quote else text[1:]
                text = text.replace(quote * 2, quote)
            parts.append(text)
            dot = self.peek()
            if dot is None or dot[1] != ".":
                break
            self._peeked = None
        return ".".join(parts)


def _with_main_verb(tokens: _Tokens) -> str:
    """Skip ``WITH [RECURSIVE] a AS (...), b AS (...)``; return the main statement's verb."""
    depth = 0
    closed = False
    while (tok := tokens.next()) is not None:
        kind, text = tok
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            closed = depth == 0
        elif depth == 0 and kind == "word" and closed:
            verb = text.upper()
            if verb in ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES"):
                return verb
    return "WITH"


def _select_target(tokens: _Tokens) -> str:
    """The table a SELECT reads (first FROM at depth 0, else any FROM), else its function."""
    depth = 0
    inner_from = ""
    function = ""
    previous: tuple[str, str] | None = None
    while (tok := tokens.next()) is not None:
        kind, text = tok
        if text == "(":
            if not function and previous is not None and previous[0] in ("word", "qid"):
                function = previous[1].strip('"')
            depth += 1
        elif text == ")":
            depth -= 1
        elif kind == "word" and text.upper() == "FROM":
            name = tokens.name()
            after = tokens.peek()
            if after is not None and after[1] == "(":  # extract(year FROM now())
                name = ""
            if name and depth <= 0:
                return name
            if name and not inner_from:
                inner_from = name
        previous = tok
    return inner_from or function


def _joined(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _begin(tokens: _Tokens) -> str:
    """``BEGIN`` with what decides how it races: SQLite's locking mode (``BEGIN IMMEDIATE``)
    or the isolation level (``BEGIN REPEATABLE READ``, ``BEGIN SERIALIZABLE``)."""
    mode = tokens.word()
    if mode in _BEGIN_MODES:
        return f"BEGIN {mode}"
    rest = [mode]
    while w := tokens.word():
        rest.append(w)
    if "LEVEL" in rest:
        level = rest[rest.index("LEVEL") + 1 : rest.index("LEVEL") + 3]
        if level[:1] != ["READ"] and level[:1] != ["REPEATABLE"]:
            level = level[:1]
        return _joined("BEGIN", *level)
    return "BEGIN"


def _schema_change(verb: str, tokens: _Tokens) -> str:
    """``CREATE TABLE runs``: the kind of object and its name, past the modifiers, which tell
    two statements apart less than the object they change."""
    tokens.skip_words("OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "VIRTUAL")
    kind = tokens.word()
    if kind not in _OBJECT_KINDS:
        return _joined(verb, kind)
    tokens.skip_words("IF", "NOT", "EXISTS", "CONCURRENTLY", "ONLY")
    return _joined(verb, kind, tokens.name())


def short_sql(sql: str) -> str:
    """A readable short form of a statement: ``SELECT runs``, ``INSERT runs``, ``COMMIT``.

    The verb and the table (or, for a SELECT without FROM, its function, as in
    ``SELECT pg_advisory_xact_lock``); transaction control keeps its mode (``BEGIN
    IMMEDIATE``). Text that is only comments or blanks gives ``''``.
    """
    tokens = _Tokens(sql)
    while (tok := tokens.peek()) is not None and tok[1] == "(":
        tokens.next()
    verb = tokens.word()
    if not verb:
        tok = tokens.next()
        return "" if tok is None else tok[1]
    if verb == "WITH":
        verb = _with_main_verb(tokens)
        if verb == "WITH":
            return verb
    if verb in ("SELECT", "VALUES"):
        return _joined(verb, _select_target(tokens) if verb == "SELECT" else "")
    if verb in ("INSERT", "REPLACE", "MERGE"):
        tokens.skip_words("OR", "REPLACE", "IGNORE", "ABORT", "FAIL", "ROLLBACK", "INTO")
        return _joined(verb, tokens.name())
    if verb == "UPDATE":
        tokens.skip_words("OR", "REPLACE", "IGNORE", "ABORT", "FAIL", "ROLLBACK", "ONLY")
        return _joined(verb, tokens.name())
    if verb == "DELETE":
        tokens.skip_words("FROM", "ONLY")
        return _joined(verb, tokens.name())
    if verb in ("BEGIN", "START"):
        return _begin(tokens)
    if verb in ("COMMIT", "END"):
        return "COMMIT"
    if verb in ("ROLLBACK", "ABORT"):
        tokens.skip_words("TRANSACTION", "WORK")
        return "ROLLBACK TO" if tokens.word() == "TO" else "ROLLBACK"
    if verb in ("LOCK", "TRUNCATE", "COPY"):
        tokens.skip_words("TABLE", "ONLY")
        return _joined(verb, tokens.name())
    if verb in ("CREATE", "DROP", "ALTER"):
        return _schema_change(verb, tokens)
    if verb in ("PRAGMA", "SET", "SHOW", "RESET"):
        tokens.skip_words("SESSION", "LOCAL")
        return _joined(verb, tokens.name())
    return verb
