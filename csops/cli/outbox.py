"""``csops outbox list | retry ID | resolve ID --sent|--failed``."""

from __future__ import annotations

import click

from csops.cli.options import output_options, run_job


@click.group(name="outbox")
def outbox() -> None:
    """Inspect queued messages and settle the ones whose outcome is unknown."""


@outbox.command(name="list")
@click.option(
    "--status",
    type=click.Choice(["queued", "sending", "sent", "failed", "unknown", "suppressed"]),
    default=None,
)
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@output_options
def outbox_list(status: str | None, limit: int, fmt: str | None) -> None:
    """List outbox messages, newest first (optionally only one state).

    \b
    Example:
      csops outbox list --status unknown --json
    """
    from csops.messaging.outbox import LIST_COLUMNS, list_rows
    from csops.result import Result

    def job(ctx):
        rows = list_rows(ctx.conn, status=status, limit=limit)
        res = Result("outbox list", rows=rows, columns=LIST_COLUMNS)
        res.count("rows", len(rows))
        return res

    run_job("outbox-read", job, fmt=fmt, lock=False)


@outbox.command(name="retry")
@click.argument("outbox_id", metavar="ID", type=int)
@output_options
def outbox_retry(outbox_id: int, fmt: str | None) -> None:
    """Queue a failed, unknown or suppressed message again, with the same Message-ID.

    Retrying an `unknown` message may deliver it twice: do it only when you know the first
    attempt did not arrive (receivers that dedupe by Message-ID absorb the second copy).
    """
    from csops.messaging.outbox import retry
    from csops.result import Result

    def job(ctx):
        row = retry(ctx.conn, outbox_id, now=ctx.now)
        res = Result("outbox retry", rows=[row])
        res.count(row["state"])
        return res

    run_job("outbox", job, fmt=fmt)


@outbox.command(name="resolve")
@click.argument("outbox_id", metavar="ID", type=int)
@click.option("--sent", "outcome", flag_value="sent", help="It did arrive.")
@click.option("--failed", "outcome", flag_value="failed", help="It did not arrive; do not send.")
@output_options
def outbox_resolve(outbox_id: int, outcome: str | None, fmt: str | None) -> None:
    """Settle an `unknown` message by hand after checking with the receiver."""
    from csops.errors import UsageError
    from csops.messaging.outbox import resolve
    from csops.result import Result

    if not outcome:
        raise UsageError("resolve needs --sent or --failed")

    def job(ctx):
        row = resolve(ctx.conn, outbox_id, outcome, now=ctx.now)
        res = Result("outbox resolve", rows=[row])
        res.count(outcome)
        return res

    run_job("outbox", job, fmt=fmt)
