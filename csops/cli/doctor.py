"""``csops doctor``."""

from __future__ import annotations

import click

from csops.cli.options import app, output_options


@click.command(name="doctor")
@output_options
@click.pass_context
def doctor(ctx: click.Context, fmt: str | None) -> None:
    """Check the config, database, templates and channel settings; send nothing.

    Exits 0 when every check passes, 1 when any fails (warnings do not fail).
    """
    from csops.cli.output import emit
    from csops.doctor import run_doctor

    checks = run_doctor(app().config())
    emit([c.as_row() for c in checks], fmt, ["area", "check", "status", "detail"])
    failed = [c for c in checks if not c.ok and c.level == "error"]
    click.echo(
        f"doctor: {len(checks) - len(failed)} ok, {len(failed)} failed",
        err=True,
    )
    ctx.exit(1 if failed else 0)
