"""``csops followups send``."""

from __future__ import annotations

import click

from csops.cli.options import dry_run_option, output_options, run_job, wait_option


@click.group(name="followups")
def followups() -> None:
    """Templated follow-ups: shipping notices, check-ins, review requests, birthdays."""


@followups.command(name="send")
@click.option("--rule", "rules", multiple=True, metavar="NAME", help="Only this rule (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Hand over at most N.")
@dry_run_option
@wait_option
@output_options
def followups_send(
    rules: tuple[str, ...], limit: int | None, dry_run: bool, wait: float | None, fmt: str | None
) -> None:
    """Plan every follow-up that is due and deliver the due outbox queue.

    Planning runs in the pauses of delivery (while the mail server works) and always to the
    end: --limit caps hand-overs, never planning.

    Each message is planned once ever (a unique dedupe key per rule and order) and handed over
    at most once; re-running is harmless. Exit 3 when a message failed, ended unknown, or the
    circuit breaker stopped the run; 75 when another run holds the lock.

    \b
    Examples:
      csops followups send
      csops followups send --rule delivery_checkin --limit 100 --dry-run
    """
    from csops.messaging.followups import send_job

    run_job(
        "followups",
        lambda ctx: send_job(ctx, rules=set(rules) or None, limit=limit),
        fmt=fmt,
        dry_run=dry_run,
        wait=wait,
    )
