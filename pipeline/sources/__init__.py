"""Source formats: each module sniffs and normalizes one family of exports.

The registry is a list, in sniffing order (most specific first). Adding a format means adding a
module with a ``FORMATS`` list of ``SourceFormat`` and naming it here.
"""

from __future__ import annotations

import importlib

from pipeline.sources.base import FileSample, SourceFormat, sniff_container

# Modules in sniffing order; each exposes FORMATS: list[SourceFormat].
_MODULES = [
    "pipeline.sources.purview",
    "pipeline.sources.office_activity",
    "pipeline.sources.gateway",
    "pipeline.sources.log_analytics",
    "pipeline.sources.entra_portal",
    "pipeline.sources.graph",
]


def all_formats() -> list[SourceFormat]:
    formats: list[SourceFormat] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # module not written yet
                continue
            raise
        formats.extend(module.FORMATS)
    return formats


def by_name(name: str) -> SourceFormat:
    for fmt in all_formats():
        if fmt.name == name:
            return fmt
    raise KeyError(f"unknown format {name!r}; known: {', '.join(f.name for f in all_formats())}")


def sniff(sample: FileSample) -> SourceFormat | None:
    for fmt in all_formats():
        if fmt.sniff(sample):
            return fmt
    return None
