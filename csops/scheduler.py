"""The ``[schedule]`` timetable and the long-lived ``csops schedule run`` loop.

Times are wall-clock times in the shop's timezone. The ``schedule`` library keeps naive local
time and reads ``datetime.now()`` itself, which is neither the shop's zone nor testable, so
each job is a :class:`TimetableJob` (a ``schedule.Job`` whose next run comes from
:func:`next_run_after`, compared against an injected clock) while ``schedule.Scheduler`` keeps
doing what it is good at: holding the jobs and dispatching the due ones in order.

Each run of a job is a child process ``python -m csops --config … <command>``: exactly what cron
runs, so it takes the same code path and the command's own lock (a lock held by a cron run is
respected: the child exits 75 and the run is logged as skipped). A job whose previous child is
still running is skipped, not stacked; different jobs may run side by side. A child that
crashes or leaks cannot take the scheduler down with it.

DST rules (shop zone): an ``at`` time that does not exist on a spring-forward day runs once,
shifted by the gap (02:30 → 03:30); an ``at`` time that occurs twice on a fall-back day runs once,
at its first occurrence. ``every`` slots are laid out from local midnight each day; in a repeated
hour they run in both occurrences (an interval is about elapsed time), in a skipped hour they
collapse onto the instants after the jump.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import schedule as schedule_lib

from csops import db as dbmod
from csops import timeutil

UTC = timezone.utc
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

Clock = Callable[[], datetime]


def _parse_hhmm(value: str, what: str) -> time:
    m = _HHMM.match(value.strip())
    if not m:
        raise ValueError(f"invalid {what} {value!r}", "a 24-hour time HH:MM, e.g. '06:00'")
    return time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class ScheduleJob:
    """One timetable entry: a csops command line and when to run it (shop timezone)."""

    command: str
    every: str = ""
    between: str = ""
    at: list[str] = ()  # type: ignore[assignment]
    days: list[str] = ()  # type: ignore[assignment]
    enabled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", tuple(self.at))  # hashable: timetables are cached
        object.__setattr__(self, "days", tuple(self.days))
        try:
            words = shlex.split(self.command)
        except ValueError as exc:
            raise ValueError(f"cannot split command: {exc}", "a csops command line") from None
        if not words:
            raise ValueError("empty command", "a csops command line, e.g. 'kpi daily'")
        if words[0] in ("csops", "schedule") or words[0].startswith("-"):
            raise ValueError(
                f"command {self.command!r} must be a csops subcommand line",
                "e.g. 'import orders --from shopify-api' (no 'csops', no global options)",
            )
        if bool(self.every) == bool(self.at):
            raise ValueError("give either 'every' or 'at'", 'every = "15m" or at = ["06:00"]')
        if self.every:
            step = timeutil.parse_duration(self.every)
            if not timedelta(seconds=1) <= step <= timedelta(days=1):
                raise ValueError(f"every = {self.every!r} is out of range", "1s … 1d")
        if self.between:
            if not self.every:
                raise ValueError("'between' only applies to 'every'", "remove 'between'")
            self.window  # noqa: B018 - validates
        for value in self.at:
            _parse_hhmm(value, "time")
        for day in self.days:
            if day not in WEEKDAYS:
                raise ValueError(f"invalid day {day!r}", "mon, tue, wed, thu, fri, sat, sun")

    @property
    def interval(self) -> timedelta | None:
        return timeutil.parse_duration(self.every) if self.every else None

    @property
    def window(self) -> tuple[time, time] | None:
        """Inclusive wall-clock window ``(start, end)``; ``end < start`` wraps past midnight."""
        if not self.between:
            return None
        start, sep, end = self.between.partition("-")
        if not sep:
            raise ValueError(f"invalid between {self.between!r}", "'HH:MM-HH:MM'")
        return _parse_hhmm(start, "between start"), _parse_hhmm(end, "between end")

    @property
    def times(self) -> tuple[time, ...]:
        return tuple(sorted(_parse_hhmm(v, "time") for v in self.at))

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(d) for d in self.days) if self.days else frozenset(range(7))

    def argv(self) -> list[str]:
        return shlex.split(self.command)

    def describe(self) -> str:
        if self.at:
            when = "at " + ", ".join(t.strftime("%H:%M") for t in self.times)
        else:
            when = f"every {self.every}" + (f" between {self.between}" if self.between else "")
        if self.days:
            when += " on " + ",".join(self.days)
        return when


@dataclass(frozen=True)
class ScheduleSettings:
    """``[schedule]``: named jobs (``[schedule.jobs.NAME]``) and the heartbeat interval."""

    jobs: dict[str, ScheduleJob] = field(default_factory=dict)
    # How often `schedule run` writes its heartbeat row (also written at every job start/end).
    heartbeat: str = "30s"

    def __post_init__(self) -> None:
        for name in self.jobs:
            if not _NAME.match(name):
                raise ValueError(
                    f"invalid job name {name!r}", "lower-case letters, digits, '-' and '_'"
                )
        timeutil.parse_duration(self.heartbeat)

    @property
    def heartbeat_interval(self) -> timedelta:
        return timeutil.parse_duration(self.heartbeat)


# --------------------------------------------------------------------------- the timetable


def _wall_times(job: ScheduleJob) -> list[time]:
    if job.at:
        return list(job.times)
    step = int(job.interval.total_seconds())  # type: ignore[union-attr]
    window = job.window
    out = []
    for sec in range(0, 86400, step):
        t = time(sec // 3600, sec % 3600 // 60, sec % 60)
        if window:
            start, end = window
            inside = start <= t <= end if start <= end else (t >= start or t <= end)
            if not inside:
                continue
        out.append(t)
    return out


@functools.lru_cache(maxsize=64)
def day_slots(job: ScheduleJob, day: date, tz_name: str) -> tuple[datetime, ...]:
    """The UTC instants at which ``job`` runs on shop-local ``day``, sorted (DST rules above)."""
    if day.weekday() not in job.weekdays:
        return ()
    tz = ZoneInfo(tz_name)
    both_folds = not job.at
    instants: set[datetime] = set()
    for wall in _wall_times(job):
        naive = datetime.combine(day, wall)
        first = naive.replace(tzinfo=tz).astimezone(UTC)
        instants.add(first)  # a skipped wall time maps forward by the gap (fold=0)
        exists = first.astimezone(tz).replace(tzinfo=None) == naive
        if both_folds and exists:
            instants.add(naive.replace(tzinfo=tz, fold=1).astimezone(UTC))
    return tuple(sorted(instants))


def next_run_after(job: ScheduleJob, after: datetime, tz_name: str) -> datetime | None:
    """The first run of ``job`` strictly after instant ``after`` (aware), as an aware UTC time."""
    after = after.astimezone(UTC)
    start = timeutil.local_day(after, ZoneInfo(tz_name)) - timedelta(days=1)
    for offset in range(10):
        slots = day_slots(job, start + timedelta(days=offset), tz_name)
        i = bisect.bisect_right(slots, after)
        if i < len(slots):
            return slots[i]
    return None


def upcoming(job: ScheduleJob, after: datetime, tz_name: str, count: int) -> list[datetime]:
    out: list[datetime] = []
    cursor = after
    while len(out) < count:
        nxt = next_run_after(job, cursor, tz_name)
        if nxt is None:
            break
        out.append(nxt)
        cursor = nxt
    return out


def plan_list(
    settings: ScheduleSettings, tz_name: str, now: datetime, count: int = 1
) -> list[dict[str, Any]]:
    """Rows for ``schedule list``: each job with its next ``count`` run times."""
    tz = ZoneInfo(tz_name)
    rows = []
    for name, job in settings.jobs.items():
        runs = upcoming(job, now, tz_name, count) if job.enabled else []
        for i, when in enumerate(runs or [None]):
            rows.append(
                {
                    "job": name,
                    "command": job.command,
                    "when": job.describe(),
                    "enabled": job.enabled,
                    "n": i + 1,
                    "next_run": when.astimezone(tz).isoformat() if when else None,
                    "next_run_utc": timeutil.iso(when) if when else None,
                }
            )
    return rows


# --------------------------------------------------------------------------- crontab


def _cron_field(values: Sequence[int], lo: int, hi: int) -> str:
    vals = sorted(set(values))
    if vals == list(range(lo, hi + 1)):
        return "*"
    if len(vals) > 2 and vals[0] == lo:
        step = vals[1] - vals[0]
        if vals == list(range(lo, hi + 1, step)):
            return f"*/{step}"
    parts: list[str] = []
    run = [vals[0]]
    for v in vals[1:]:
        if v == run[-1] + 1:
            run.append(v)
            continue
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [v]
    parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def cron_schedules(job: ScheduleJob) -> list[str]:
    """The five cron fields (one or more lines) that give the same wall-clock timetable.

    Raises ValueError for a timetable cron cannot express (a step below one minute).
    """
    walls = _wall_times(job)
    if any(t.second for t in walls):
        raise ValueError(f"every = {job.every!r} needs seconds, which cron cannot express")
    by_hour: dict[int, set[int]] = {}
    for t in walls:
        by_hour.setdefault(t.hour, set()).add(t.minute)
    groups: dict[tuple[int, ...], list[int]] = {}
    for hour, minutes in sorted(by_hour.items()):
        groups.setdefault(tuple(sorted(minutes)), []).append(hour)
    dow = "*"
    if job.days and len(job.weekdays) < 7:
        dow = _cron_field([(d + 1) % 7 for d in job.weekdays], 0, 6)
    return [
        f"{_cron_field(minutes, 0, 59)} {_cron_field(hours, 0, 23)} * * {dow}"
        for minutes, hours in groups.items()
    ]


def crontab_lines(
    settings: ScheduleSettings,
    tz_name: str,
    base_command: Sequence[str],
    log_path: str,
    source: str = "",
    env_file: str | None = None,
) -> list[str]:
    """The whole crontab text: a CRON_TZ line, then each enabled job's lines with a comment."""
    prefix = " ".join(shlex.quote(a) for a in base_command)
    out = [
        f"# csops timetable{f' from {source}' if source else ''} (generated by csops schedule"
        " crontab).",
        "# No flock needed: every csops command takes its own lock (a busy job exits 75).",
        "# Secrets are never written here: cron reads them from an env file (--env-file) or its"
        " environment.",
        f"CRON_TZ={tz_name}",
    ]
    for name, job in settings.jobs.items():
        command = f"{prefix} {' '.join(shlex.quote(a) for a in job.argv())}"
        if env_file:  # secrets for cron: exported from a root-owned 0600 file, never inline
            command = f"set -a; . {shlex.quote(env_file)}; set +a; {command}"
        line_cmd = f"{command} >> {shlex.quote(log_path)} 2>&1".replace("%", r"\%")
        out.append(f"# {name}: {job.describe()}")
        if not job.enabled:
            out.append("# (disabled in [schedule])")
            continue
        try:
            for fields in cron_schedules(job):
                out.append(f"{fields} {line_cmd}")
        except ValueError as exc:
            out.append(f"# not expressible in cron: {exc}")
    return out


# --------------------------------------------------------------------------- the loop


def system_clock() -> datetime:
    return datetime.now(UTC)


def offset_clock(start: datetime) -> Clock:
    """A clock that starts at ``start`` and advances in real time (tests: ``CSOPS_NOW``)."""
    t0 = _time.monotonic()
    return lambda: start + timedelta(seconds=_time.monotonic() - t0)


def default_clock() -> Clock:
    if os.environ.get("CSOPS_TESTING") == "1" and os.environ.get("CSOPS_NOW"):
        return offset_clock(timeutil.now())
    return system_clock


class TimetableJob(schedule_lib.Job):
    """A ``schedule.Job`` whose next run is computed in the shop zone against our clock.

    ``next_run`` holds a naive UTC time (``schedule`` compares and sorts it; we never let it
    read the system clock).
    """

    def __init__(
        self,
        name: str,
        spec: ScheduleJob,
        tz_name: str,
        clock: Clock,
        func: Callable[[str], Any],
        scheduler: schedule_lib.Scheduler,
    ) -> None:
        super().__init__(1, scheduler)
        self.name = name
        self.spec = spec
        self.tz_name = tz_name
        self.clock = clock
        self.job_func = functools.partial(func, name)  # type: ignore[assignment]
        self.unit = "seconds"
        self._schedule_next_run()

    def _naive_now(self) -> datetime:
        return self.clock().astimezone(UTC).replace(tzinfo=None)

    @property
    def should_run(self) -> bool:
        return self.next_run is not None and self._naive_now() >= self.next_run

    def run(self) -> Any:
        try:
            return self.job_func()  # type: ignore[misc]
        finally:  # even if starting it failed: the next try is the next slot, not the next tick
            self.last_run = self._naive_now()
            self._schedule_next_run()

    def _schedule_next_run(self) -> None:
        nxt = next_run_after(self.spec, self.clock(), self.tz_name)
        self.next_run = nxt.replace(tzinfo=None) if nxt else None  # type: ignore[assignment]

    @property
    def next_run_utc(self) -> datetime | None:
        return self.next_run.replace(tzinfo=UTC) if self.next_run else None

    def __repr__(self) -> str:
        return f"<TimetableJob {self.name}: {self.spec.describe()}>"


def csops_argv(config_path: str, db_override: str | None, log_format: str) -> list[str]:
    """How a child run starts: the same entry point a cron line uses."""
    argv = [sys.executable, "-m", "csops", "--config", config_path]
    if db_override:
        argv += ["--db", db_override]
    return [*argv, "--log-format", log_format]


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen
    started_at: datetime


@dataclass
class Runner:
    """Start due jobs as child processes, never two of one job; heartbeat; stop on request."""

    settings: ScheduleSettings
    tz_name: str
    argv_prefix: list[str]
    conn: Any  # sqlite3.Connection for the heartbeat, or None
    run_id: str
    log: Any
    clock: Clock = system_clock
    counts: dict[str, int] = field(default_factory=dict)
    children: dict[str, _Child] = field(default_factory=dict)
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        self.scheduler = schedule_lib.Scheduler()
        for name, spec in self.settings.jobs.items():
            if spec.enabled:
                self.scheduler.jobs.append(
                    TimetableJob(name, spec, self.tz_name, self.clock, self.start, self.scheduler)
                )
        self._last_beat: datetime | None = None
        self._signals = 0
        self._started_at = self.clock()

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    # -- jobs
    def start(self, name: str) -> None:
        """Start job ``name`` now unless its previous run is still going."""
        if self.stop_reason:
            return
        self.reap()  # log a finished previous run before its slot is reused
        child = self.children.get(name)
        if child and child.proc.poll() is None:
            self._count("skipped_running")
            self.log.warning(
                f"{name}: skipped, its previous run (pid {child.proc.pid}) is still going",
                extra={"task": name, "pid": child.proc.pid},
            )
            return
        spec = self.settings.jobs[name]
        env = dict(os.environ)
        if env.get("CSOPS_TESTING") == "1" and env.get("CSOPS_NOW"):  # the injected clock
            env["CSOPS_NOW"] = timeutil.iso(self.clock()) or ""
        argv = [*self.argv_prefix, *spec.argv()]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches only the scheduler
            )
        except OSError as exc:
            self._count("failed")
            self.log.error(f"{name}: cannot start: {exc}", extra={"task": name})
            return
        self.children[name] = _Child(name, proc, self.clock())
        self._count("started")
        self.log.info(
            f"{name}: started `{spec.command}` (pid {proc.pid})",
            extra={"task": name, "pid": proc.pid},
        )
        self.beat(force=True)

    def reap(self) -> None:
        for name, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            del self.children[name]
            seconds = round((self.clock() - child.started_at).total_seconds(), 1)
            extra = {"task": name, "exit_code": code, "seconds": seconds}
            if code == 0:
                self._count("ok")
                self.log.info(f"{name}: done in {seconds}s", extra=extra)
            elif code == 75:
                self._count("skipped_locked")
                self.log.warning(
                    f"{name}: skipped, another run (cron?) holds its lock (exit 75)", extra=extra
                )
            elif code in (130, -signal.SIGINT):
                self._count("interrupted")
                self.log.warning(f"{name}: interrupted (exit {code})", extra=extra)
            elif code == 3:
                self._count("partial")
                self.log.warning(f"{name}: done with rejects or failures (exit 3)", extra=extra)
            else:
                self._count("failed")
                self.log.error(f"{name}: failed with exit code {code}", extra=extra)
            self.beat(force=True)

    # -- heartbeat
    def next_due(self) -> tuple[str | None, datetime | None]:
        jobs = [j for j in self.scheduler.jobs if j.next_run is not None]
        if not jobs:
            return None, None
        first = min(jobs)
        return first.name, first.next_run_utc

    def beat(self, force: bool = False, state: str = "running") -> None:
        if self.conn is None:
            return
        now = self.clock()
        if (
            not force
            and self._last_beat is not None
            and now - self._last_beat < self.settings.heartbeat_interval
        ):
            return
        self._last_beat = now
        name, at = self.next_due()
        with dbmod.write(self.conn):
            self.conn.execute(
                "INSERT INTO scheduler_heartbeat (run_id, pid, host, started_at, beat_at, state,"
                " running_jobs, next_job, next_run_at, stopped_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(run_id) DO UPDATE SET beat_at = excluded.beat_at,"
                " state = excluded.state, running_jobs = excluded.running_jobs,"
                " next_job = excluded.next_job, next_run_at = excluded.next_run_at,"
                " stopped_at = excluded.stopped_at",
                (
                    self.run_id,
                    os.getpid(),
                    socket.gethostname(),
                    timeutil.iso(self._started_at),
                    timeutil.iso(now),
                    state,
                    json.dumps(sorted(self.children)),
                    name,
                    timeutil.iso(at),
                    timeutil.iso(now) if state == "stopped" else None,
                ),
            )

    # -- the loop
    def tick(self) -> None:
        self.reap()
        self.scheduler.run_pending()
        self.beat()

    def request_stop(self, signum: int, _frame: Any = None) -> None:
        """First signal: finish running jobs, start no new ones. Second: interrupt them."""
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.stop_reason = name
            return
        for child in self.children.values():
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGINT)

    def loop(self, sleep: Callable[[float], None] = _time.sleep) -> None:
        """Run until a stop is requested, then wait for the running jobs to finish."""
        self.beat(force=True)
        self.log.info(
            f"scheduler started: {len(self.scheduler.jobs)} jobs, timezone {self.tz_name}",
            extra={"jobs": [j.name for j in self.scheduler.jobs]},
        )
        for job in sorted(self.scheduler.jobs):
            self.log.info(
                f"{job.name}: next run {job.next_run_utc.astimezone(ZoneInfo(self.tz_name))}"
                if job.next_run_utc
                else f"{job.name}: no upcoming run",
                extra={"task": job.name, "next_run_at": timeutil.iso(job.next_run_utc)},
            )
        while not self.stop_reason:
            try:
                self.tick()
            except Exception as exc:  # e.g. the disk is full: log it, keep the timetable alive
                self._count("errors")
                self.log.error(f"scheduler error: {type(exc).__name__}: {exc}", exc_info=True)
                sleep(1.0)
            if self.stop_reason:
                break
            _, at = self.next_due()
            wait = 0.5 if at is None else (at - self.clock()).total_seconds()
            sleep(max(0.02, min(wait, 0.5)))
        if self.children:
            self.log.info(
                f"stopping ({self.stop_reason}): waiting for {', '.join(sorted(self.children))}",
                extra={"running": sorted(self.children)},
            )
            self.beat(force=True, state="stopping")
        while self.children:
            self.reap()
            if self.children:
                sleep(0.1)
        self.beat(force=True, state="stopped")
        self.log.info(f"scheduler stopped ({self.stop_reason})")


def heartbeats(conn: Any, last: int = 5) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT run_id, pid, host, started_at, beat_at, state, running_jobs, next_job,"
        " next_run_at, stopped_at FROM scheduler_heartbeat ORDER BY id DESC LIMIT ?",
        (last,),
    ).fetchall()
    return [dict(r) for r in rows]


def heartbeat_status(row: dict[str, Any] | None, settings: ScheduleSettings, now: datetime) -> str:
    """``alive``, ``stale`` (no beat for 3 intervals: hung or killed), ``stopped`` or ``never``."""
    if row is None:
        return "never"
    if row["state"] == "stopped":
        return "stopped"
    beat = timeutil.from_iso(row["beat_at"])
    if beat and now - beat <= 3 * settings.heartbeat_interval + timedelta(seconds=5):
        return "alive"
    return "stale"


def run_scheduler(ctx: Any, *, log_format: str = "text") -> Any:
    """The body of ``csops schedule run`` (inside ``runs.run("schedule")``, so one per lock dir).

    SIGTERM/SIGINT end the loop after the running jobs finish; the run is recorded with counts.
    """
    from csops.errors import UsageError
    from csops.result import Result

    config = ctx.config
    settings: ScheduleSettings = config.section("schedule")
    if not any(job.enabled for job in settings.jobs.values()):
        raise UsageError(
            "no enabled jobs in [schedule]", field="schedule.jobs", expected="[schedule.jobs.NAME]"
        )
    prefix = csops_argv(
        str(config.path), str(config.db_override) if config.db_override else None, log_format
    )
    runner = Runner(
        settings=settings,
        tz_name=config.shop.timezone,
        argv_prefix=prefix,
        conn=ctx.conn,
        run_id=ctx.run_id,
        log=ctx.log,
        clock=default_clock(),
    )
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, runner.request_stop) for sig in signals}
    try:
        runner.loop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # (No extra stderr message: the log already says why it stopped, in the chosen format.)
    return Result("schedule run", rows=[], counts=dict(runner.counts))


def doctor_checks(config: Any) -> list[Any]:
    """``csops doctor``: the timetable is readable and, if a scheduler ran, it is not stale."""
    from csops.doctor import Check

    settings: ScheduleSettings = config.section("schedule")
    enabled = [n for n, j in settings.jobs.items() if j.enabled]
    checks = [
        Check(
            "schedule",
            "jobs",
            True,
            f"{len(enabled)} enabled of {len(settings.jobs)}, times in {config.shop.timezone}",
        )
    ]
    conn = dbmod.connect(config.db_path, busy_timeout_ms=config.database.busy_timeout_ms)
    try:
        rows = heartbeats(conn, 1)
    finally:
        conn.close()
    if rows:
        state = heartbeat_status(rows[0], settings, timeutil.now())
        checks.append(
            Check(
                "schedule",
                "heartbeat",
                state != "stale",
                f"{state}: last beat {rows[0]['beat_at']} (pid {rows[0]['pid']} on "
                f"{rows[0]['host']})",
                level="warning",
            )
        )
    return checks
