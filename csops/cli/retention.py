"""``csops retention purge``: apply the [retention] policy (daily, from the scheduler or cron)."""

from __future__ import annotations

import click

from csops.cli.options import app, dry_run_option, output_options, run_job, wait_option


@click.group(name="retention")
def retention() -> None:
    """Personal-data retention: purge what is older than [retention] allows."""


@retention.command(name="purge")
@dry_run_option
@wait_option
@output_options
def retention_purge(dry_run: bool, wait: float | None, fmt: str | None) -> None:
    """Empty old message bodies and survey comments, delete old rejects and runs.

    Keeps what the other promises need: outbox dedupe keys, states and send times (so nothing
    is ever sent twice), survey scores (so KPIs stay the same), and every suppression.
    Running it again changes nothing. --dry-run counts without changing anything.

    \b
    Example:
      csops retention purge --dry-run --table
    """
    from csops.retention import purge

    config = app().config()
    rejects_dir = config.resolve(config.paths.rejects_dir)

    def job(ctx):
        return purge(
            ctx.conn,
            ctx.config.section("retention"),
            rejects_dir,
            ctx.now,
            dry_run=ctx.dry_run,
            run_id=ctx.run_id,
        )

    run_job("retention", job, fmt=fmt, dry_run=dry_run, wait=wait)
