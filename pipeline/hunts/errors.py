"""Hunt errors and exit codes: what the user sees when a hunt cannot run, in one place.

Every hunt error's ``str()`` is the whole message for the terminal (no traceback needed), and its
``exit_code`` is what ``tokenhunt hunt`` returns. DuckDB's messages echo the query text, so they
pass through ``scrub`` first: a raw bearer token pasted into SQL must not be printed back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import duckdb
import pyarrow as pa

# Exit codes of the `tokenhunt hunt` commands.
EXIT_OK = 0
EXIT_SQL_ERROR = 1  # DuckDB rejected or failed the query
EXIT_USAGE = 2  # bad option, unknown hunt, bad parameter, malformed hunt file, refused statement


class HuntError(Exception):
    """Base of every hunt error; ``str()`` is the message for the user (no traceback needed)."""

    exit_code = EXIT_USAGE


class HuntLoadError(HuntError):
    """Saved hunt files are malformed. ``problems`` lists every problem of every file."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in hunt files:\n" + "\n".join(f"  {p}" for p in problems))


class HuntParamError(HuntError):
    """A parameter is unknown, missing, or its value does not convert to the declared type."""


class HuntRefused(HuntError):
    """The SQL is not a single read statement (or reaches outside the lake)."""


class HuntSQLError(HuntError):
    """DuckDB rejected or failed the query; the message is DuckDB's, with its LINE/caret position."""

    exit_code = EXIT_SQL_ERROR


def scrub(text: str) -> str:
    """Error text echoes the query: a raw bearer token pasted into SQL must not reach the terminal."""
    try:
        from pipeline.tokens import scrub_text
    except ImportError:  # pragma: no cover - tokens module is part of the package
        return text
    return scrub_text(text)


@contextmanager
def reading_errors() -> Iterator[None]:
    """DuckDB/Arrow errors raised while a result streams, as hunt errors (access refused, or SQL)."""
    try:
        yield
    except duckdb.PermissionException as exc:
        raise HuntRefused(scrub(str(exc))) from None
    except (duckdb.Error, pa.ArrowException) as exc:
        raise HuntSQLError(scrub(str(exc))) from None
