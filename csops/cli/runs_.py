"""``csops runs``: the audit trail of every command run."""

from __future__ import annotations

import click

from csops.cli.options import app, output_options


@click.command(name="runs")
@click.option("--last", type=click.IntRange(min=1), default=20, show_default=True)
@output_options
def runs(last: int, fmt: str | None) -> None:
    """Show the last runs: command, arguments (secrets redacted), times, exit code, summary.

    \b
    Example (cron health check):
      csops runs --last 50 --json | jq '.[] | select(.exit_code != 0)'
    """
    from csops.cli.output import emit
    from csops.runs import open_db, recent_runs

    conn = open_db(app().config())
    try:
        rows = recent_runs(conn, last)
    finally:
        conn.close()
    emit(rows, fmt, ["id", "command", "started_at", "finished_at", "exit_code", "summary"])
