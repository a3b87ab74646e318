"""The interactive read-only SQL shell behind ``tokenhunt hunt shell``.

A REPL over the same locked session and read-only guard as every other hunt: each statement goes
through ``query``, dot-commands list views and saved hunts or run one. I/O is injected, so tests
drive it with a list of lines.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import duckdb

from pipeline.hunts.catalog import HUNTS_DIR, Hunt, get_hunt, load_hunts
from pipeline.hunts.errors import HuntError
from pipeline.hunts.guard import strip_leading
from pipeline.hunts.output import PREVIEW_ROWS, count_line, export, preview_table
from pipeline.hunts.params import parse_param_args
from pipeline.hunts.session import open_session, query, run_hunt
from pipeline.lake import Lake

SHELL_HELP = """\
Type SQL ending with ';' (the lake tables are views: SELECT * FROM signins LIMIT 5;).
Read-only: one SELECT/WITH/VALUES/FROM/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN statement at a time.
  .tables              list the views
  .schema TABLE        columns of a view
  .hunts               list saved hunts
  .run NAME [k=v ...]  run a saved hunt with parameters
  .maxrows N           rows shown per result (now {maxrows})
  .help                this text
  .quit / .exit / Ctrl-D
"""


@dataclass
class Shell:
    """A read-only SQL REPL over the lake views: every statement goes through ``query``.

    I/O is injected (``read_line`` returns None at end of input), so tests drive it with a list of
    lines; ``tokenhunt hunt shell`` passes ``input`` (with readline history) and a rich console.
    """

    con: duckdb.DuckDBPyConnection
    print: Callable[[Any], None]
    error: Callable[[str], None]
    hunts_dir: Path = HUNTS_DIR
    maxrows: int = PREVIEW_ROWS
    buffer: list[str] = field(default_factory=list)

    def loop(self, read_line: Callable[[str], str | None]) -> None:
        while True:
            line = read_line("tokenhunt> " if not self.buffer else "      ...> ")
            if line is None:
                if self.buffer:
                    self.execute("\n".join(self.buffer))
                return
            if not self.feed(line):
                return

    def feed(self, line: str) -> bool:
        """Take one input line; run what is complete. False when the user asked to quit."""
        if not self.buffer and line.strip().startswith("."):
            return self.dot(line.strip())
        self.buffer.append(line)
        text = "\n".join(self.buffer)
        if _ends_statement(text):
            self.buffer = []
            if strip_leading(text).strip(" ;\n\t"):
                self.execute(text)
        return True

    def execute(self, sql: str, hunt: Hunt | None = None, given: Mapping[str, Any] | None = None, *, show_all: bool = False) -> None:
        try:
            reader = run_hunt(self.con, hunt, given) if hunt else query(self.con, sql)
            summary = export(reader, "table", preview_rows=10_000 if show_all else self.maxrows)
        except HuntError as exc:
            self.error(str(exc))
            return
        if summary.preview.num_rows:
            self.print(preview_table(summary))
        self.print(count_line(summary))

    def dot(self, command: str) -> bool:
        parts = command.split()
        name, args = parts[0].lower(), parts[1:]
        try:
            if name in (".quit", ".exit", ".q"):
                return False
            if name == ".help":
                self.print(SHELL_HELP.format(maxrows=self.maxrows))
            elif name == ".tables":
                self.execute(
                    "SELECT view_name AS name FROM duckdb_views() WHERE NOT internal AND view_name <> 'tokens_stored' ORDER BY 1",
                    show_all=True,
                )
            elif name == ".schema":
                if len(args) != 1 or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args[0]):
                    raise HuntError(".schema takes one view name, e.g. .schema signins")
                self.execute(f"DESCRIBE {args[0]}", show_all=True)
            elif name == ".maxrows":
                if len(args) != 1 or not args[0].isdigit():
                    raise HuntError(".maxrows takes a number of rows")
                self.maxrows = int(args[0])
            elif name == ".hunts":
                for hunt in load_hunts(self.hunts_dir).values():
                    self.print(f"{hunt.name}: {hunt.title}")
            elif name == ".run":
                if not args:
                    raise HuntError(".run NAME [key=value ...]")
                self.execute("", get_hunt(args[0], self.hunts_dir), parse_param_args(args[1:]))
            else:
                raise HuntError(f"unknown command {name}; .help lists them")
        except HuntError as exc:
            self.error(str(exc))
        return True


def _ends_statement(text: str) -> bool:
    """Whether ``text`` ends with a ``;`` outside quotes and comments (the statement is complete)."""
    in_single = in_double = in_line = in_block = False
    last = ""
    i = 0
    while i < len(text):
        ch = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if in_line:
            in_line = ch != "\n"
        elif in_block:
            if ch == "*" and nxt == "/":
                in_block = False
                i += 1
        elif in_single:
            in_single = ch != "'"
        elif in_double:
            in_double = ch != '"'
        elif ch == "-" and nxt == "-":
            in_line = True
            i += 1
        elif ch == "/" and nxt == "*":
            in_block = True
            i += 1
        elif ch == "'":
            in_single = True
        elif ch == '"':
            in_double = True
        if not (in_line or in_block or in_single or in_double) and not ch.isspace() and ch not in "-/*":
            last = ch
        i += 1
    return last == ";" and not (in_single or in_double or in_block)


def run_shell(lake: Lake | Path, *, hunts_dir: Path = HUNTS_DIR, console: Any = None, err_console: Any = None) -> None:
    """The interactive session behind ``tokenhunt hunt shell`` (readline history when available)."""
    from rich.console import Console

    console = console or Console()
    err_console = err_console or Console(stderr=True)
    con = open_session(lake)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:  # pragma: no cover - not on every platform
            pass
        root = lake.root if isinstance(lake, Lake) else Path(lake).resolve()
        console.print(f"tokenhunt hunt shell over {root} (read-only). .help for commands, .quit to leave.", highlight=False)

    def read_line(prompt: str) -> str | None:
        if interactive:
            try:
                return input(prompt)
            except EOFError:
                console.print()
                return None
            except KeyboardInterrupt:
                console.print("^C")
                shell.buffer = []
                return ""
        line = sys.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    from rich.markup import escape

    def show_error(message: str) -> None:
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)

    shell = Shell(con, console.print, show_error, hunts_dir)
    shell.loop(read_line)
