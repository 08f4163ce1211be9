"""``csops import orders|conversations``: thin commands over csops.importers."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click

from csops.cli.options import app, dry_run_option, output_options, run_job, wait_option


@click.group(name="import")
def import_group() -> None:
    """Import orders from platform exports and APIs, and helpdesk conversations."""


@import_group.command(name="orders")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="SOURCE",
    help="shopify-csv, shopify-api, woocommerce-api, taobao-csv, amazon-tsv, csv (mapped).",
)
@click.argument("path", required=False, metavar="[PATH|-]")
@click.option("--since", metavar="DATE", help="API sources: start here instead of the watermark.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Where rejected rows go (default: a file in [paths] rejects_dir).",
)
@click.option("--strict", is_flag=True, help="Import nothing if any row is bad (exit 2).")
@click.option("--encoding", metavar="ENC", help="Override detection: utf-8, gb18030, utf-16 …")
@click.option("--mapping", metavar="NAME", help="--from csv: the [import.mappings.NAME] to use.")
@dry_run_option
@wait_option
@output_options
def import_orders(
    source: str,
    path: str | None,
    since: str | None,
    rejects_path: str | None,
    strict: bool,
    encoding: str | None,
    mapping: str | None,
    dry_run: bool,
    wait: float | None,
    fmt: str | None,
) -> None:
    """Import orders from a platform export file or API, idempotently.

    Re-importing the same data changes nothing; a later export with progressed orders updates
    them. Bad rows go to a rejects CSV (original cells + _line, _field, _reason) and the good
    rows still land: exit 3 when any row was rejected, 2 when the file is not the format at all.

    \b
    Examples:
      csops import orders --from shopify-csv orders_export.csv
      iconv -f gbk -t utf-8 ExportOrderList.csv | csops import orders --from taobao-csv -
      csops import orders --from shopify-api --since 2024-04-01
      csops import orders --from csv --mapping erp erp_orders.csv --json
    """
    from csops.importers.orders import import_orders as core

    quiet = app().quiet
    with ExitStack() as stack:
        bar: list = []

        def on_size(size: int | None) -> None:
            if size and sys.stderr.isatty() and not quiet:
                bar.append(
                    stack.enter_context(
                        click.progressbar(length=size, file=sys.stderr, label="importing")
                    )
                )

        def on_progress(n: int) -> None:
            if bar:
                bar[0].update(n)

        def job(ctx):
            return core(
                ctx,
                source,
                path,
                since=since,
                rejects_path=rejects_path,
                strict=strict,
                encoding=encoding,
                mapping=mapping,
                on_progress=on_progress,
                on_size=on_size,
            )

        run_job("import", job, fmt=fmt, dry_run=dry_run, wait=wait)


@import_group.command(name="conversations")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="SOURCE",
    help="csv (our generic export), zendesk-csv (a Zendesk ticket export).",
)
@click.argument("path", metavar="PATH|-")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Where rejected rows go (default: a file in [paths] rejects_dir).",
)
@click.option("--encoding", metavar="ENC", help="Override detection: utf-8, gb18030 …")
@dry_run_option
@wait_option
@output_options
def import_conversations(
    source: str,
    path: str,
    rejects_path: str | None,
    encoding: str | None,
    dry_run: bool,
    wait: float | None,
    fmt: str | None,
) -> None:
    """Import helpdesk conversations (for response-time KPIs), idempotently.

    Each conversation is linked to its order by the order number when one is given.

    \b
    Example:
      csops import conversations --from csv helpdesk_export.csv
    """
    from csops.importers.conversations import import_conversations as core

    def job(ctx):
        return core(ctx, source, path, rejects_path=rejects_path, encoding=encoding)

    run_job("import", job, fmt=fmt, dry_run=dry_run, wait=wait)
