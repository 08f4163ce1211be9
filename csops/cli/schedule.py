"""``csops schedule run | list | crontab | status``: the ``[schedule]`` timetable, run two ways."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from pathlib import Path

import click

from csops.cli.options import app, output_options, run_job


@click.group(name="schedule")
def schedule() -> None:
    """Run the [schedule] jobs in one long-lived process, or print them as crontab lines."""


def _command_status(command: str) -> str:
    """``ok``, ``not built`` (group listed but its module is absent) or ``unknown command``."""
    from csops.cli import COMMANDS

    word = shlex.split(command)[0]
    if word not in COMMANDS:
        return "unknown command"
    module = COMMANDS[word][0].partition(":")[0]
    return "ok" if importlib.util.find_spec(module) is not None else "not built"


def _check_commands(settings) -> None:
    from csops.errors import ConfigError
    from csops.log import get_logger

    for name, job in settings.jobs.items():
        status = _command_status(job.command)
        if status == "unknown command":
            raise ConfigError(
                f"job {name!r}: unknown csops command {job.command!r}",
                field=f"schedule.jobs.{name}.command",
                expected="a csops subcommand line (see csops --help)",
            )
        if status == "not built" and job.enabled:
            get_logger("schedule").warning(
                f"job {name!r}: `csops {job.command}` is not built in this version",
                extra={"task": name},
            )


@schedule.command(name="run")
def schedule_run() -> None:
    """Run the timetable until SIGTERM/SIGINT (for systemd: config/csops.service).

    Each due job runs as `csops --config … COMMAND` in a child process, under the command's
    own lock: a job whose previous run is still going is skipped, not stacked; a lock held by a
    cron run makes the child exit 75 (logged as skipped). On SIGTERM or Ctrl-C the scheduler
    starts nothing new, waits for running jobs to finish, records its run and exits 0; a second
    signal interrupts the running jobs. A heartbeat row (`csops schedule status`) shows it is
    alive. Only one scheduler runs per lock folder (a second exits 75).

    \b
    Example:
      csops --log-format json schedule run 2>> /var/log/csops.log
    """
    from csops.scheduler import run_scheduler

    config = app().config()
    _check_commands(config.section("schedule"))
    log_format = app().log_format
    run_job("schedule", lambda ctx: run_scheduler(ctx, log_format=log_format), show_rows=False)


@schedule.command(name="list")
@click.option(
    "--next",
    "count",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="How many upcoming runs to show per job.",
)
@output_options
def schedule_list(count: int, fmt: str | None) -> None:
    """Each job with its next run time, in the shop timezone and in UTC.

    \b
    Example:
      csops schedule list --next 3 --table
    """
    from csops import timeutil
    from csops.cli.output import emit
    from csops.scheduler import plan_list

    config = app().config()
    settings = config.section("schedule")
    rows = plan_list(settings, config.shop.timezone, timeutil.now(), count)
    for row in rows:
        row["status"] = _command_status(row["command"]) if row["enabled"] else "disabled"
    columns = ["job", "when", "next_run", "next_run_utc", "command", "status"]
    if count > 1:
        columns.insert(1, "n")
    emit(rows, fmt, columns)
    click.echo(
        f"{len(settings.jobs)} jobs, times in {config.shop.timezone} (from {config.path})", err=True
    )


def _executable() -> list[str]:
    """An absolute way to start csops from cron: the console script of this install."""
    beside = Path(sys.executable).parent / "csops"
    if beside.exists():
        return [str(beside.absolute())]
    found = shutil.which("csops")
    if found:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).absolute()), "-m", "csops"]


@schedule.command(name="crontab")
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where each line appends its output (default: [paths] log_file, else csops.log "
    "beside the database).",
)
@click.option(
    "--executable",
    default=None,
    help="Absolute path of the csops executable to put in the lines (default: this one).",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A file of VAR=value lines (the secrets) each line sources first; keep it 0600.",
)
def schedule_crontab(log_path: str | None, executable: str | None, env_file: str | None) -> None:
    """Print the [schedule] timetable as crontab lines, ready for `crontab -`.

    The lines carry CRON_TZ=<shop timezone>, absolute paths to csops and the config, and
    --log-format json; no flock (each csops command locks itself and exits 75 when busy).

    \b
    Example:
      csops schedule crontab > /tmp/csops.cron && crontab /tmp/csops.cron
    """
    from csops.scheduler import crontab_lines

    config = app().config()
    base = [*(shlex.split(executable) if executable else _executable())]
    base += ["--config", str(config.path)]
    if config.db_override:
        base += ["--db", str(config.db_override)]
    base += ["--log-format", "json"]
    if log_path:
        log = Path(log_path).absolute()
    elif config.paths.log_file:
        log = config.resolve(config.paths.log_file)
    else:
        log = config.db_path.parent / "csops.log"
    lines = crontab_lines(
        config.section("schedule"),
        config.shop.timezone,
        base,
        str(log),
        str(config.path),
        env_file=str(Path(env_file).absolute()) if env_file else None,
    )
    click.echo("\n".join(lines))


@schedule.command(name="status")
@output_options
@click.pass_context
def schedule_status(ctx: click.Context, fmt: str | None) -> None:
    """Is `schedule run` alive? The latest heartbeats; exit 0 if alive, 1 if not.

    \b
    Example (monitoring):
      csops schedule status --json || echo "scheduler down" | mail -s csops ops@example.com
    """
    from csops import timeutil
    from csops.cli.output import emit
    from csops.runs import open_db
    from csops.scheduler import heartbeat_status, heartbeats

    config = app().config()
    conn = open_db(config)
    try:
        rows = heartbeats(conn)
    finally:
        conn.close()
    state = heartbeat_status(rows[0] if rows else None, config.section("schedule"), timeutil.now())
    emit(rows, fmt, ["run_id", "pid", "host", "state", "beat_at", "next_job", "next_run_at"])
    click.echo(f"scheduler: {state}", err=True)
    ctx.exit(0 if state == "alive" else 1)
