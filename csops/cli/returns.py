"""``csops returns process``: decide a return batch against the ``[returns]`` policy."""

from __future__ import annotations

import click

from csops.cli.options import dry_run_option, output_options, run_job, wait_option


@click.group(name="returns")
def returns() -> None:
    """Decide return batches against the written policy in [returns]."""


@returns.command(name="process")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--from",
    "format_name",
    default="csv",
    show_default=True,
    metavar="FORMAT",
    help="Batch layout: csv (our generic columns) or taobao-refunds (退款报表, GBK).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Write the decisions to this file (CSV, or JSON with --json) instead of stdout.",
)
@click.option(
    "--send",
    is_flag=True,
    help="Also hand the queued notices over now (else the next `followups send` does).",
)
@output_options
@dry_run_option
@wait_option
def returns_process(
    path: str,
    format_name: str,
    out: str | None,
    send: bool,
    fmt: str | None,
    dry_run: bool,
    wait: float | None,
) -> None:
    """Decide every line of the return batch PATH ("-" reads stdin).

    Each line is approved, rejected or sent to review with a stable code and a sentence; the
    decisions go to stdout as CSV (the default; or --json) or to --out, a summary to stderr.
    Refund files per platform land in [paths] exports_dir and customer notices are queued in
    the outbox. The same file again decides nothing; bad lines are reported with their line
    numbers (exit 3).

    \b
    Examples:
      csops returns process returns.csv --out decisions.csv --send
      csops returns process ExportRefundList.csv --from taobao-refunds --dry-run
    """
    from csops.returns.batch import BatchRequest, process_batch

    fmt = fmt or "csv"
    request = BatchRequest(
        path=path,
        format_name=format_name,
        out=out,
        out_format="json" if fmt == "json" else "csv",
        stdin=click.get_binary_stream("stdin") if path == "-" else None,
        send=send,
    )
    show_rows = out is None or dry_run
    run_job(
        "returns",
        lambda ctx: process_batch(ctx, request),
        fmt=fmt,
        dry_run=dry_run,
        wait=wait,
        show_rows=show_rows,
    )


@returns.command(name="review")
@output_options
def returns_review(fmt: str | None) -> None:
    """List the return lines waiting for a person, with the policy's proposal.

    \b
    Example:
      csops returns review
      csops returns review --json | jq -r '.return_id'
    """
    from csops.result import Result
    from csops.returns.batch import COLUMNS
    from csops.returns.review import review_rows

    def job(ctx):
        rows = review_rows(ctx.conn)
        res = Result("returns review", rows=rows, columns=list(COLUMNS))
        res.count("review", len(rows))
        return res

    run_job("returns-read", job, fmt=fmt, lock=False)


@returns.command(name="decide")
@click.argument("return_id")
@click.option("--approve", "decision", flag_value="approved", help="Approve as proposed.")
@click.option("--reject", "decision", flag_value="rejected", help="Reject (needs --note).")
@click.option("--note", help="Why: stored on the line and shown in the customer's notice.")
@click.option(
    "--refund",
    metavar="AMOUNT",
    help="With --approve: refund this amount instead (up to the line's value; the rest is kept "
    "back as a fee).",
)
@click.option(
    "--send",
    is_flag=True,
    help="Also hand the customer's notice over now (else the next `followups send` does).",
)
@output_options
@dry_run_option
@wait_option
def returns_decide(
    return_id: str,
    decision: str | None,
    note: str | None,
    refund: str | None,
    send: bool,
    fmt: str | None,
    dry_run: bool,
    wait: float | None,
) -> None:
    """Decide a line that `returns review` lists: --approve (as proposed) or --reject.

    The customer's notice is queued (its own, after any "we are reviewing it" notice) and an
    approved refund is written again into its batch's refund file.

    \b
    Examples:
      csops returns decide R-1007 --approve --note "photos show transit damage"
      csops returns decide R-1009 --approve --refund 12.50 --note "partial: item was used"
      csops returns decide R-1012 --reject --note "returned after use" --send
    """
    from csops.errors import UsageError
    from csops.returns.review import decide

    if not decision:
        raise UsageError("decide needs --approve or --reject", expected="--approve | --reject")

    def job(ctx):
        res = decide(ctx, return_id, decision, note, refund)
        if send and not ctx.dry_run:
            from csops.messaging.outbox import deliver_into

            deliver_into(res, ctx, kinds={"return_notice"}, prefix="notices_")
        return res

    run_job("returns", job, fmt=fmt, dry_run=dry_run, wait=wait)
