"""Render results: a table on a terminal, newline-delimited JSON in a pipe, or --json/--csv.

stdout is data only; summaries and rejects go to stderr. This is the only code that prints a
Result.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

import click

from csops.csvio import SafeCsvWriter
from csops.result import Result


def resolve_format(fmt: str | None) -> str:
    if fmt:
        return fmt
    return "table" if sys.stdout.isatty() else "nl"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def emit(rows: Iterable[dict[str, Any]], fmt: str | None, columns: list[str] | None = None) -> int:
    """Write rows to stdout in the chosen format; returns how many rows were written."""
    fmt = resolve_format(fmt)
    out = sys.stdout
    count = 0
    if fmt == "json":
        out.write("[")
        for count, row in enumerate(rows, 1):
            out.write(("\n" if count == 1 else ",\n") + json.dumps(row, ensure_ascii=False))
        out.write("\n]\n" if count else "]\n")
        return count
    if fmt == "nl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        return count
    materialized = list(rows)
    cols = columns or (list(materialized[0]) if materialized else [])
    if fmt == "csv":
        writer = SafeCsvWriter(out, cols)
        writer.write_all(materialized)
        return len(materialized)
    if not materialized:
        return 0
    table = [[_cell(r.get(c)) for c in cols] for r in materialized]
    widths = [max([_width(c)] + [_width(row[i]) for row in table]) for i, c in enumerate(cols)]

    def line(values: list[str]) -> str:
        cells = (v + " " * (w - _width(v)) for v, w in zip(values, widths, strict=True))
        return "  ".join(cells).rstrip()

    click.echo(click.style(line(cols), bold=True))
    click.echo("  ".join("-" * w for w in widths))
    for row in table:
        click.echo(line(row))
    return len(materialized)


def report(result: Result, fmt: str | None, *, show_rows: bool = True) -> None:
    """Rows to stdout, rejects and messages to stderr."""
    if show_rows:
        emit(result.rows, fmt, result.columns)
    for message in result.messages:
        click.echo(message, err=True)
    for reject in result.rejects[:50]:
        click.echo(f"rejected: {reject}", err=True)
    if len(result.rejects) > 50:
        click.echo(f"... and {len(result.rejects) - 50} more rejected", err=True)
