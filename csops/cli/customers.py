"""``csops customers optout|optin ADDRESS``."""

from __future__ import annotations

import click

from csops.cli.options import output_options, run_job, wait_option


@click.group(name="customers")
def customers() -> None:
    """Customers' contact preferences."""


@customers.command(name="optout")
@click.argument("address")
@click.option("--reason", default="operator", show_default=True)
@wait_option
@output_options
def customers_optout(address: str, reason: str, wait: float | None, fmt: str | None) -> None:
    """Never contact ADDRESS again (e-mail or phone), on any channel, for any message.

    \b
    Example:
      csops customers optout jane@example.com --reason "asked by phone"
    """
    from csops.customers import opt_out
    from csops.result import Result

    def job(ctx):
        r = opt_out(ctx.conn, address, scope="all", reason=reason)
        res = Result("customers optout", rows=[vars(r)])
        res.count("suppressed" if r.changed else "already_suppressed")
        return res

    run_job("customers", job, fmt=fmt, wait=wait)


@customers.command(name="optin")
@click.argument("address")
@wait_option
@output_options
def customers_optin(address: str, wait: float | None, fmt: str | None) -> None:
    """Allow messages to ADDRESS again (lifts any suppression)."""
    from csops.customers import opt_in
    from csops.result import Result

    def job(ctx):
        r = opt_in(ctx.conn, address)
        res = Result("customers optin", rows=[vars(r)])
        res.count("unsuppressed" if r.changed else "was_not_suppressed")
        return res

    run_job("customers", job, fmt=fmt, wait=wait)
