"""The read-only guard: only a single read statement may reach the session.

This is layer 1 of the hunts' defence (see ``pipeline.hunts``). DuckDB's own parser splits the
text, so what is checked is what would run; exactly one statement of a read type (SELECT, WITH,
VALUES, FROM-first, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of one of those) passes. DDL/DML, COPY,
ATTACH, INSTALL/LOAD, SET/PRAGMA/CALL, EXPORT and PIVOT statements (which create types) are refused
before DuckDB executes anything. The locked session cannot refuse writes *into* the lake directory
(``COPY ... TO '<lake>/x'``); this check is what does.
"""

from __future__ import annotations

import re
import threading

import duckdb

from pipeline.hunts.errors import HuntRefused, HuntSQLError, scrub

_parser = threading.local()


def parse_statements(sql: str) -> list[duckdb.Statement]:
    """DuckDB's own split and classification of ``sql`` (parse only: nothing runs)."""
    con = getattr(_parser, "con", None)
    if con is None:  # one parsing connection per thread: connections are not shared across threads
        con = _parser.con = duckdb.connect(":memory:")
    try:
        return con.extract_statements(sql)
    except duckdb.Error as exc:
        raise HuntSQLError(scrub(str(exc))) from None


def strip_leading(sql: str) -> str:
    """``sql`` without leading whitespace and comments (``--`` lines, ``/* */`` blocks)."""
    text = sql
    while True:
        text = text.lstrip()
        if text.startswith("--"):
            nl = text.find("\n")
            text = "" if nl < 0 else text[nl + 1 :]
        elif text.startswith("/*"):
            end = text.find("*/")
            text = "" if end < 0 else text[end + 2 :]
        else:
            return text


def _first_word(sql: str) -> str:
    text = strip_leading(sql)
    m = re.match(r"[A-Za-z_]+|\(", text)
    return m.group(0).upper() if m else text[:1]


_OPTION = r"[A-Za-z_]+(?:\s+(?:'[A-Za-z_]+'|[A-Za-z_]+))?"
_EXPLAIN_OPTIONS_RE = re.compile(rf"\(\s*{_OPTION}(?:\s*,\s*{_OPTION})*\s*\)")


def _explained(sql: str) -> str | None:
    """The statement an EXPLAIN [ANALYZE] [(options)] wraps, or None when it cannot be found."""
    text = strip_leading(sql)
    m = re.match(r"EXPLAIN\b", text, re.I)
    if not m:
        return None
    text = strip_leading(text[m.end() :])
    m = re.match(r"ANALY[SZ]E\b", text, re.I)
    if m:
        text = strip_leading(text[m.end() :])
    if text.startswith("("):
        # Options are words only (ANALYZE, FORMAT json, FORMAT 'json'): a quoted ")" cannot hide
        # the statement that really follows.
        m = _EXPLAIN_OPTIONS_RE.match(text)
        if not m:
            return None
        text = text[m.end() :]
    return text


def check_read_only(sql: str) -> str:
    """The kind (first keyword) of ``sql`` when it is exactly one read statement; HuntRefused otherwise.

    Uses DuckDB's own parser for the statement count and type, so what is checked is what would run.
    """
    statements = parse_statements(sql)
    if not statements:
        raise HuntRefused("no SQL statement to run")
    if len(statements) > 1:
        kinds = ", ".join(_first_word(s.query) for s in statements)
        raise HuntRefused(f"a hunt runs exactly one statement; found {len(statements)} ({kinds}). Remove the extra statements.")
    stmt = statements[0]
    kind = _first_word(stmt.query)
    stype = stmt.type.name
    if stype == "EXPLAIN":
        inner = _explained(stmt.query)
        if inner is None:
            raise HuntRefused("refused EXPLAIN: cannot tell which statement it explains")
        return f"EXPLAIN {check_read_only(inner)}"  # raises for EXPLAIN [ANALYZE] COPY/INSERT/...
    if stype != "SELECT":  # DuckDB's parser says what the statement is; only plain reads pass
        label = kind if kind.isalpha() else stype
        note = "" if label == stype else f" (DuckDB statement type {stype})"
        raise HuntRefused(
            f"refused {label} statement{note}: hunts are read-only. Only SELECT, WITH, VALUES, FROM, DESCRIBE, "
            "SHOW, SUMMARIZE and EXPLAIN of those run; DDL/DML, COPY, ATTACH, INSTALL/LOAD, SET/PRAGMA/CALL, "
            "EXPORT and PIVOT statements do not (write PIVOT inside a SELECT with an explicit IN list)."
        )
    return kind

