"""``csops surveys send | serve | import``: thin commands over :mod:`csops.surveys`."""

from __future__ import annotations

import click

from csops.cli.options import app, dry_run_option, output_options, run_job, wait_option


@click.group(name="surveys")
def surveys() -> None:
    """CSAT and NPS surveys: send them, serve their links, import answers."""


@surveys.command(name="send")
@click.option("--kind", type=click.Choice(["csat", "nps"]), help="Only this kind of survey.")
@click.option("--limit", type=click.IntRange(min=0), help="Plan at most N surveys this run.")
@dry_run_option
@wait_option
@output_options
def surveys_send(
    kind: str | None, limit: int | None, dry_run: bool, wait: float | None, fmt: str | None
) -> None:
    """Plan the surveys and reminders that are due into the outbox, then deliver them.

    \b
    Example (cron, every 15 minutes):
      */15 * * * *  csops surveys send
    """
    from csops.surveys.send import send_surveys

    run_job(
        "surveys send",
        lambda ctx: send_surveys(ctx, kind=kind, limit=limit),
        fmt=fmt,
        dry_run=dry_run,
        wait=wait,
    )


@surveys.command(name="import")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@dry_run_option
@wait_option
@output_options
def surveys_import(path: str, dry_run: bool, wait: float | None, fmt: str | None) -> None:
    """Record answers collected elsewhere: a CSV with token or order, score, comment, time.

    \b
    Rejected rows are listed on stderr, kept in the rejects table and written to
    [paths] rejects_dir; the command then exits 3. Re-importing a file changes nothing.
    Example:
      csops surveys import answers.csv
    """
    import sys

    from csops.surveys.importer import import_answers

    stream = sys.stdin.buffer if path == "-" else None
    run_job(
        "surveys import",
        lambda ctx: import_answers(ctx, path, stream=stream),
        fmt=fmt,
        dry_run=dry_run,
        wait=wait,
    )


@surveys.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def surveys_serve(host: str, port: int) -> None:
    """Answer survey and unsubscribe links (put it behind your HTTPS proxy at [shop] base_url).

    \b
    GET/HEAD never change anything (mail scanners open every link); answers and
    unsubscribes are POSTs. Stop with Ctrl-C or SIGTERM.
    """
    import signal
    import threading

    from csops.log import get_logger
    from csops.surveys.server import make_server, serve_until
    from csops.tokens import signing_keys

    config = app().config()
    signing_keys(config)  # a missing key env var is exit 2 now, not a 500 on the first click
    server = make_server(config, host=host, port=port)
    log = get_logger("surveys.serve")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    click.echo(f"serving survey links on http://{host}:{server.effective_port}/", err=True)
    log.info("survey server listening", extra={"host": host, "port": server.effective_port})
    serve_until(server, stop)
    log.info("survey server stopped")


@surveys.command(name="summary")
@click.option("--days", type=click.IntRange(min=1), help="Only answers of the last N days.")
@output_options
def surveys_summary(days: int | None, fmt: str | None) -> None:
    """CSAT (% of answers 4–5) and NPS (% 9–10 minus % 0–6) from the recorded answers.

    \b
    Example:
      csops surveys summary --days 30 --table
    """
    from csops.surveys.summary import summarize

    run_job("surveys summary", lambda ctx: summarize(ctx, days=days), fmt=fmt, lock=False)
