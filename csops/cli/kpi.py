"""``csops kpi daily | report | check``: thin commands over :mod:`csops.kpi`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from csops.cli.options import dry_run_option, output_options, run_job, wait_option


class DayType(click.ParamType):
    """A calendar day ``YYYY-MM-DD`` (in the shop's timezone)."""

    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx):
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (expected YYYY-MM-DD)", param, ctx)


DAY = DayType()


@click.group(name="kpi")
def kpi() -> None:
    """Compute, report and check daily KPIs (definitions: docs/kpis.md)."""


def _display(rows: list[dict], columns: list[str]) -> list[dict]:
    """Values as people read them (money in major units, %, minutes) for the terminal table."""
    from csops.kpi.alerts import format_value

    shown = []
    for r in rows:
        row = {c: r.get(c) for c in columns}
        for c in ("value", "value_7d", "value_30d"):
            if c in row:
                row[c] = format_value(r["metric"], r[c])
        shown.append(row)
    return shown


@kpi.command(name="daily")
@click.option("--date", "day", type=DAY, help="Compute this one day.")
@click.option("--from", "first", type=DAY, help="First day of a range (with --to).")
@click.option("--to", "last", type=DAY, help="Last day of a range (with --from).")
@dry_run_option
@wait_option
@output_options
def kpi_daily(day, first, last, dry_run: bool, wait, fmt: str | None) -> None:
    """Compute KPIs per shop-local day and store them in kpi_daily.

    Without a date: the last [kpi] recompute_days days plus every day whose orders, returns,
    surveys, messages or conversations changed since the previous run (late data). Prints the
    KPIs of the day asked for (default: yesterday) with their 7- and 30-day values.

    \b
    Examples:
      csops kpi daily
      csops kpi daily --date 2024-04-19 --json
      csops kpi daily --from 2024-03-01 --to 2024-04-19
    """
    from csops.cli.output import resolve_format
    from csops.kpi.daily import run_daily

    if day is not None and (first or last):
        raise click.UsageError("use --date or --from/--to, not both")
    table = resolve_format(fmt) == "table"

    def job(ctx):
        result = run_daily(ctx, day=day, first=first, last=last)
        if table:
            cols = ["day", "metric", "value", "sample_size", "value_7d", "sample_7d",
                    "value_30d", "sample_30d"]  # fmt: skip
            result.rows = _display(list(result.rows), cols)
            result.columns = cols
        return result

    run_job("kpi daily", job, fmt=fmt, dry_run=dry_run, wait=wait)


@kpi.command(name="report")
@click.option("--days", type=click.IntRange(1, 3660), default=None,
              help="Days to show (default: [kpi] report_days).")  # fmt: skip
@click.option("--to", "last", type=DAY, help="Last day shown (default: yesterday, shop time).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="HTML file to write.")  # fmt: skip
@dry_run_option
@output_options
def kpi_report(days, last, out: Path, dry_run: bool, fmt: str | None) -> None:
    """Write one self-contained HTML report: a chart per KPI, thresholds, sample sizes.

    \b
    Example:
      csops kpi daily && csops kpi report --days 30 --out reports/kpi.html
    """
    from csops.kpi.report import run_report

    out = out.resolve()
    run_job(
        "kpi report",
        lambda ctx: run_report(ctx, out=out, days=days, last_day=last),
        fmt=fmt,
        dry_run=dry_run,
        lock=False,
    )


@kpi.command(name="check")
@click.option("--date", "day", type=DAY, help="Day to judge (default: yesterday, shop time).")
@dry_run_option
@wait_option
@output_options
def kpi_check(day, dry_run: bool, wait, fmt: str | None) -> None:
    """Judge a day's KPIs against [kpi.thresholds]; alert once per KPI, day and level.

    Exit 4 when a KPI is at critical (cron: mail the output or page someone).

    \b
    Example:
      csops kpi check --date 2024-04-19 || [ $? -eq 4 ] && echo "critical KPI"
    """
    from csops.cli.output import resolve_format
    from csops.kpi.alerts import run_check

    table = resolve_format(fmt) == "table"

    def job(ctx):
        result = run_check(ctx, day=day)
        if table:
            result.rows = _display(list(result.rows), result.columns or [])
        return result

    run_job("kpi check", job, fmt=fmt, dry_run=dry_run, wait=wait)
