"""Every command runs inside one mechanism: a per-job file lock, an audit row, an exit code.

``run(job, ...)`` takes the job's lock (a second overlapping run fails at once with exit 75, or
waits ``--wait`` seconds), records the run in ``runs`` (command, redacted arguments, start, end,
exit code, summary), calls the job with a :class:`RunContext`, and returns its :class:`Result`.
The lock is an OS file lock (``filelock``), so a run killed with -9 releases it with its process:
no stale lock files to clean by hand. The scheduler goes through the same function.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from csops import db as dbmod
from csops import timeutil
from csops.config import Config
from csops.errors import CsopsError, ExitCode, LockBusyError, LockLocationError
from csops.log import clear_context, get_logger, set_context
from csops.result import Result
from csops.secrets import redact


@dataclass
class RunContext:
    """What a job gets: the config, an open database, the run's id and clock, and its flags."""

    job: str
    run_id: str
    config: Config
    conn: sqlite3.Connection
    now: datetime
    dry_run: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self):
        return get_logger(self.job)


def lock_path(config: Config, job: str) -> Path:
    return config.lock_dir / f"{job.replace(' ', '-')}.lock"


@contextmanager
def job_lock(config: Config, job: str, wait: float | None = None) -> Iterator[None]:
    """Hold the job's lock; raise LockBusyError (75) if another run has it after ``wait`` s."""
    lock_dir = config.lock_dir
    try:
        lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # One probe name per process: a shared name races (A unlinks B's file → exit 2).
        probe = lock_dir / f".write-test.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise LockLocationError(
            f"cannot create lock files in {lock_dir}: {exc.strerror}",
            expected="a writable folder ([paths] lock_dir)",
        ) from None
    lock = FileLock(str(lock_path(config, job)), timeout=wait if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise LockBusyError(
            f"another '{job}' run holds the lock ({lock.lock_file}); try again later "
            "or pass --wait SECONDS"
        ) from None
    try:
        yield
    finally:
        lock.release()


def open_db(config: Config) -> sqlite3.Connection:
    return dbmod.connect(
        config.db_path,
        synchronous=config.database.synchronous,
        busy_timeout_ms=config.database.busy_timeout_ms,
    )


def _record_start(conn: sqlite3.Connection, run_id: str, job: str, argv: Sequence[str]) -> None:
    args = redact(json.dumps(list(argv), ensure_ascii=False))
    with dbmod.write(conn):
        conn.execute(
            "INSERT INTO runs (run_id, command, args, pid, started_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, job, args, os.getpid(), timeutil.iso(timeutil.now())),
        )


def _record_end(conn: sqlite3.Connection, run_id: str, code: int, summary: str) -> None:
    with dbmod.write(conn):
        conn.execute(
            "UPDATE runs SET finished_at = ?, exit_code = ?, summary = ? WHERE run_id = ?",
            (timeutil.iso(timeutil.now()), int(code), redact(summary)[:2000], run_id),
        )


def run(
    job: str,
    config: Config,
    fn: Callable[[RunContext], Result],
    *,
    argv: Sequence[str] = (),
    wait: float | None = None,
    dry_run: bool = False,
    lock: bool = True,
    options: dict[str, Any] | None = None,
) -> Result:
    """Run ``fn`` as job ``job`` under its lock with an audit row; errors propagate after logging.

    A LockBusyError is recorded too (exit 75), so `csops runs` shows overlapping cron runs.
    """
    run_id = uuid.uuid4().hex[:12]
    set_context(job=job, run_id=run_id)
    log = get_logger(job)
    conn = open_db(config)
    started = False
    try:
        try:
            ctx_lock = job_lock(config, job, wait) if lock else _no_lock()
            with ctx_lock:
                _record_start(conn, run_id, job, argv)
                started = True
                ctx = RunContext(
                    job=job,
                    run_id=run_id,
                    config=config,
                    conn=conn,
                    now=timeutil.now(),
                    dry_run=dry_run,
                    options=options or {},
                )
                result = fn(ctx)
                result.dry_run = result.dry_run or dry_run
                _record_end(conn, run_id, result.exit_code, result.summary())
                log.info(
                    result.summary(),
                    extra={"counts": result.counts, "exit_code": int(result.exit_code)},
                )
                return result
        except LockBusyError as exc:
            if not started:
                _record_start(conn, run_id, job, argv)
                _record_end(conn, run_id, ExitCode.LOCKED, str(exc))
            raise
        except CsopsError as exc:
            if started:
                _record_end(conn, run_id, exc.exit_code, f"{exc.code}: {exc}")
            raise
        except KeyboardInterrupt:
            if started:
                _record_end(conn, run_id, ExitCode.INTERRUPTED, "interrupted")
            raise
        except Exception as exc:
            if started:
                _record_end(conn, run_id, ExitCode.FAILED, f"internal error: {type(exc).__name__}")
            raise
    finally:
        conn.close()
        clear_context()


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def recent_runs(conn: sqlite3.Connection, last: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, run_id, command, args, started_at, finished_at, exit_code, summary "
        "FROM runs ORDER BY id DESC LIMIT ?",
        (last,),
    ).fetchall()
    return [dict(r) for r in rows]
