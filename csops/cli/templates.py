"""``csops templates list | render NAME --order ID | check``."""

from __future__ import annotations

import click

from csops.cli.options import app, output_options


@click.group(name="templates")
def templates() -> None:
    """Message templates: list them, preview one for an order, check them all."""


@templates.command(name="list")
@output_options
def templates_list(fmt: str | None) -> None:
    """Every message template with its locales and parts."""
    from csops.cli.output import emit
    from csops.messaging.render import list_templates

    emit(list_templates(app().config()), fmt, ["name", "locales", "parts", "source", "rules"])


@templates.command(name="render")
@click.argument("name")
@click.option("--order", "order_id", type=int, default=None, help="Render for this order id.")
@click.option("--customer", "customer_id", type=int, default=None, help="Or this customer id.")
@click.option("--locale", type=click.Choice(["en", "zh-CN"]), default=None)
@click.option("--rule", default=None, help="Use this rule's variables (default: first using NAME).")
@click.option("--part", type=click.Choice(["all", "subject", "text", "html"]), default="all")
def templates_render(
    name: str,
    order_id: int | None,
    customer_id: int | None,
    locale: str | None,
    rule: str | None,
    part: str,
) -> None:
    """Render template NAME for an order (or sample data) and print it; sends nothing.

    \b
    Example:
      csops templates render delivery_checkin --order 42 --locale en
    """
    from csops.messaging.render import render_preview

    r = render_preview(
        app().config(), name, order_id=order_id, customer_id=customer_id, locale=locale, rule=rule
    )
    if part in ("all", "subject"):
        click.echo(("Subject: " if part == "all" else "") + r.subject)
    if part in ("all", "text"):
        if part == "all":
            click.echo(f"Locale: {r.locale}\n\n--- text ---")
        click.echo(r.text, nl=not r.text.endswith("\n"))
    if part in ("all", "html") and r.html is not None:
        if part == "all":
            click.echo("--- html ---")
        click.echo(r.html, nl=not r.html.endswith("\n"))


@templates.command(name="check")
@output_options
@click.pass_context
def templates_check(ctx: click.Context, fmt: str | None) -> None:
    """Render every template in every locale against sample data; exit 1 on any error."""
    from csops.cli.output import emit
    from csops.messaging.render import check_templates, template_names

    config = app().config()
    problems = check_templates(config)
    names = template_names(config)
    if problems:
        emit(problems, fmt, ["template", "locale", "error"])
    click.echo(f"templates check: {len(names)} templates, {len(problems)} problems", err=True)
    ctx.exit(1 if problems else 0)
