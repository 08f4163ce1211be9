"""The root ``csops`` group: global options, lazily loaded subcommands, the one error boundary.

This package is the only code that imports click. Subcommands are listed here by import path
with their one-line help, and imported only when invoked, so ``csops --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from csops import __version__

# name -> (import path of the click command, short help shown by `csops --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("csops.cli.init_:init", "Write a workspace: config, templates, database."),
    "doctor": ("csops.cli.doctor:doctor", "Check config, database, templates, channels."),
    "import": ("csops.cli.import_:import_group", "Import orders or service conversations."),
    "followups": ("csops.cli.followups:followups", "Plan and send templated follow-ups."),
    "surveys": ("csops.cli.surveys:surveys", "Send CSAT/NPS surveys, serve answers, import."),
    "outbox": ("csops.cli.outbox:outbox", "Inspect and resolve queued messages."),
    "templates": ("csops.cli.templates:templates", "List, render and check message templates."),
    "returns": ("csops.cli.returns:returns", "Decide return batches against the policy."),
    "kpi": ("csops.cli.kpi:kpi", "Compute, report and check daily KPIs."),
    "schedule": ("csops.cli.schedule:schedule", "Run jobs on a timetable; print crontab."),
    "retention": ("csops.cli.retention:retention", "Purge old personal data per policy."),
    "customers": ("csops.cli.customers:customers", "Opt customers out of or back into mail."),
    "runs": ("csops.cli.runs_:runs", "Show recent runs and their exit codes."),
    "db": ("csops.cli.db_:db", "Database maintenance: backup."),
}


@dataclass
class App:
    """Global options, shared with every subcommand through ``ctx.obj``."""

    config_path: str | None = None
    db_path: str | None = None
    verbose: int = 0
    quiet: bool = False
    log_format: str = "text"
    _config: Any = field(default=None, repr=False)

    def config(self, required: bool = True) -> Any:
        from csops.config import load_config

        if self._config is None:
            self._config = load_config(
                self.config_path, db_override=self.db_path, required=required
            )
        return self._config


def _not_built(name: str, help_text: str) -> click.Command:
    @click.command(
        name=name,
        help=f"{help_text}\n\nNot built yet in this version.",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    @click.pass_context
    def placeholder(ctx: click.Context) -> None:
        click.echo(f"Error: 'csops {name}' is not built yet in this version of csops.", err=True)
        ctx.exit(2)

    return placeholder


class CsopsGroup(click.Group):
    """Loads subcommands on demand and turns CsopsError into one line on stderr + exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, help_text = COMMANDS[cmd_name]
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return _not_built(cmd_name, help_text)
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from csops.errors import CsopsError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except CsopsError as exc:
            _traceback_if_verbose(ctx)
            _error_line(str(exc))
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            _error_line("interrupted")
            ctx.exit(130)
        except Exception as exc:
            if _traceback_if_verbose(ctx):
                _error_line(f"internal error ({type(exc).__name__}: {exc})")
            else:
                _error_line(
                    f"internal error ({type(exc).__name__}); run again with -v for the traceback"
                )
            ctx.exit(1)


def _traceback_if_verbose(ctx: click.Context) -> bool:
    """Under -v, print the current traceback to stderr — redacted, like every other line.

    (Re-raising would let Python print it unredacted and turn every exit code into 1.)
    """
    import traceback

    from csops.secrets import redact

    app = ctx.find_object(App)
    if not (app and app.verbose):
        return False
    click.echo(redact(traceback.format_exc()).rstrip(), err=True)
    return True


def _error_line(message: str) -> None:
    from csops.secrets import redact

    click.echo(redact(f"Error: {message}"), err=True)


@click.group(cls=CsopsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="CSOPS_CONFIG",
    help="Config file (default: $CSOPS_CONFIG, then ./config/csops.toml).",
)
@click.option("--db", "db_path", type=click.Path(dir_okay=False), help="Database file override.")
@click.option("-v", "--verbose", count=True, help="More detail; show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines on stderr: text for people, json for log collectors.",
)
@click.version_option(__version__, prog_name="csops")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    db_path: str | None,
    verbose: int,
    quiet: bool,
    log_format: str,
) -> None:
    """Customer-service operations for online shops, on one SQLite database.

    Import orders, send follow-ups and surveys, decide returns, and track daily KPIs —
    by hand, from cron, or inside shell pipelines. stdout carries data; stderr carries
    logs and summaries.

    \b
    Exit codes: 0 done · 1 failed · 2 usage/config error · 3 done with rejects or
    failed sends · 4 KPI critical · 75 another run holds the lock.
    """
    from csops.log import configure

    if os.environ.get("NO_COLOR"):
        ctx.color = False
    ctx.obj = App(
        config_path=config_path,
        db_path=db_path,
        verbose=verbose,
        quiet=quiet,
        log_format=log_format,
    )
    configure(verbose=verbose, quiet=quiet, fmt=log_format)


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="csops")
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(130)
