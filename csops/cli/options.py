"""Shared options and the one way a command runs a job: load config, run under lock, render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from csops.cli import App

F = TypeVar("F", bound=Callable[..., Any])


def output_options(func: F) -> F:
    """``--table | --json | --nl | --csv`` as one ``fmt`` parameter (a feature-switch group)."""
    for flag, value, text in reversed(
        [
            ("--table", "table", "Aligned table (default on a terminal)."),
            ("--json", "json", "One JSON array."),
            ("--nl", "nl", "Newline-delimited JSON (default in a pipe)."),
            ("--csv", "csv", "CSV, formula-safe for spreadsheets."),
        ]
    ):
        func = click.option(flag, "fmt", flag_value=value, help=text)(func)
    return func


def dry_run_option(func: F) -> F:
    return click.option(
        "--dry-run", is_flag=True, help="Show what would happen; change and send nothing."
    )(func)


def wait_option(func: F) -> F:
    return click.option(
        "--wait",
        type=click.FloatRange(min=0),
        default=None,
        metavar="SECONDS",
        help="If another run holds this job's lock, wait up to SECONDS instead of exiting 75.",
    )(func)


def app() -> App:
    return click.get_current_context().find_object(App)  # type: ignore[return-value]


def run_job(
    job: str,
    fn: Callable[[Any], Any],
    *,
    fmt: str | None = None,
    dry_run: bool = False,
    wait: float | None = None,
    show_rows: bool = True,
    lock: bool = True,
) -> NoReturn:
    """Run a core job under :func:`csops.runs.run`, print its result, exit with its code."""
    from csops.cli.output import report
    from csops.runs import run

    ctx = click.get_current_context()
    config = app().config()
    argv = [*ctx.command_path.split()[1:]]
    for name, value in ctx.params.items():
        if value not in (None, False, (), ""):
            argv.append(f"--{name.replace('_', '-')}={value}")
    result = run(job, config, fn, argv=argv, wait=wait, dry_run=dry_run, lock=lock)
    report(result, fmt, show_rows=show_rows)
    ctx.exit(int(result.exit_code))
