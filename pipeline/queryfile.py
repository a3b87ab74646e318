"""Query files (detections, saved hunts): a TOML header in leading ``-- `` comment lines, then SQL.

One reader for every consumer (the detection runner, the hunt catalog, the portability lint and
the retention report's coverage check), so a header means the same thing everywhere.
"""

from __future__ import annotations

from typing import NamedTuple


class SplitQuery(NamedTuple):
    header: str  # TOML text, comment markers removed
    body: str  # the SQL
    body_line: int  # 1-based line where the SQL starts


def split_header(text: str) -> SplitQuery:
    """Split leading ``--`` comment lines (blank lines allowed before and between them) from the SQL."""
    lines = text.splitlines()
    header: list[str] = []
    i = 0
    while i < len(lines) and (lines[i].startswith("--") or not lines[i].strip()):
        line = lines[i]
        if line.startswith("--"):
            header.append(line[3:] if line.startswith("-- ") else line[2:])
        i += 1
    return SplitQuery("\n".join(header), "\n".join(lines[i:]).strip(), i + 1)
