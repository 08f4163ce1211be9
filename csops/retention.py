"""``[retention]`` and ``csops retention purge``: keep personal data only as long as it is needed.

What goes, and what stays so the other promises still hold:
- outbox bodies (``body_text``, ``body_html``) of messages that are done with; ``dedupe_key``,
  ``state``, ``sent_at`` and ``message_id`` stay, so "never twice" still holds;
- survey comments (free text); scores stay, so every KPI is unchanged;
- files in ``[paths] rejects_dir`` and rows of ``rejects`` (they quote the raw input);
- ``runs`` rows (and scheduler heartbeats) of finished runs.
Suppressions are never touched. Each change runs in short batches; a second purge changes
nothing. The connection uses ``secure_delete`` and the WAL is checkpointed afterwards, so the
emptied text does not linger in free pages of the file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from csops import db as dbmod
from csops import timeutil
from csops.result import Result

BATCH = 1000
# States after which a message's body is no longer needed to send it.
_DONE_STATES = ("sent", "failed", "suppressed", "unknown")


@dataclass(frozen=True)
class RetentionSettings:
    """``[retention]``: how many days each kind of personal data is kept (0 = forever)."""

    message_bodies_days: int = 365
    survey_comments_days: int = 730
    rejects_files_days: int = 30
    runs_days: int = 180

    def __post_init__(self) -> None:
        for name in ("message_bodies_days", "survey_comments_days", "rejects_files_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative", "0 (keep) or a number of days")
        if self.runs_days < 0:
            raise ValueError("runs_days must not be negative", "0 (keep) or a number of days")


@dataclass
class _Rule:
    what: str
    select: str  # SELECT of ids to change, with one ? for the cutoff
    change: str  # statement over "id IN (…)"


_RULES = (
    _Rule(
        "outbox bodies",
        "SELECT id FROM outbox WHERE COALESCE(sent_at, queued_at) < ? "
        f"AND state IN ({', '.join(repr(s) for s in _DONE_STATES)}) "
        "AND (COALESCE(body_text, '') != '' OR body_html IS NOT NULL)",
        "UPDATE outbox SET body_text = '', body_html = NULL WHERE id IN ({ids})",
    ),
    _Rule(
        "survey comments",
        "SELECT id FROM surveys WHERE comment IS NOT NULL AND COALESCE(responded_at, sent_at) < ?",
        "UPDATE surveys SET comment = NULL WHERE id IN ({ids})",
    ),
    _Rule(
        "rejects rows",
        "SELECT id FROM rejects WHERE created_at < ?",
        "DELETE FROM rejects WHERE id IN ({ids})",
    ),
    _Rule(
        "runs rows",
        "SELECT id FROM runs WHERE started_at < ? AND finished_at IS NOT NULL",
        "DELETE FROM runs WHERE id IN ({ids})",
    ),
    _Rule(
        "scheduler heartbeats",
        "SELECT id FROM scheduler_heartbeat WHERE beat_at < ? AND state = 'stopped'",
        "DELETE FROM scheduler_heartbeat WHERE id IN ({ids})",
    ),
)

_DAYS_KEY = {
    "outbox bodies": "message_bodies_days",
    "survey comments": "survey_comments_days",
    "rejects rows": "rejects_files_days",
    "runs rows": "runs_days",
    "scheduler heartbeats": "runs_days",
}
_COUNT_KEY = {
    "outbox bodies": "bodies_emptied",
    "survey comments": "comments_cleared",
    "rejects rows": "rejects_rows_deleted",
    "runs rows": "runs_deleted",
    "scheduler heartbeats": "heartbeats_deleted",
}


def _purge_rows(
    conn: sqlite3.Connection, rule: _Rule, cutoff: str, dry_run: bool, keep_run: str | None
) -> int:
    select = rule.select
    params: tuple[Any, ...] = (cutoff,)
    if keep_run and rule.what == "runs rows":
        select += " AND run_id != ?"
        params += (keep_run,)
    if dry_run:
        return int(conn.execute(f"SELECT COUNT(*) FROM ({select})", params).fetchone()[0])
    total = 0
    while True:
        with dbmod.write(conn):
            ids = [r[0] for r in conn.execute(f"{select} LIMIT {BATCH}", params)]
            if not ids:
                break
            conn.execute(rule.change.format(ids=", ".join("?" * len(ids))), ids)
        total += len(ids)
        if len(ids) < BATCH:
            break
    return total


def _old_files(folder: Path, cutoff: datetime) -> list[Path]:
    if not folder.is_dir():
        return []
    limit = cutoff.timestamp()
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime < limit)


def purge(
    conn: sqlite3.Connection,
    settings: RetentionSettings,
    rejects_dir: Path,
    now: datetime,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
) -> Result:
    """Apply the retention policy as of ``now``; one row per kind of data with what changed."""
    result = Result(
        "retention purge", columns=["what", "keep_days", "cutoff", "affected"], dry_run=dry_run
    )
    rows: list[dict[str, Any]] = []
    if not dry_run:
        conn.execute("PRAGMA secure_delete = ON")
    for rule in _RULES:
        days = getattr(settings, _DAYS_KEY[rule.what])
        cutoff = timeutil.iso(now - timedelta(days=days)) if days else None
        affected = _purge_rows(conn, rule, cutoff, dry_run, run_id) if cutoff else 0
        rows.append({"what": rule.what, "keep_days": days, "cutoff": cutoff, "affected": affected})
        result.count(_COUNT_KEY[rule.what], affected)
    days = settings.rejects_files_days
    removed = 0
    cutoff_files = now - timedelta(days=days) if days else None
    if cutoff_files is not None:
        for path in _old_files(rejects_dir, cutoff_files):
            if not dry_run:
                path.unlink(missing_ok=True)
            removed += 1
    rows.append(
        {
            "what": "rejects files",
            "keep_days": days,
            "cutoff": timeutil.iso(cutoff_files),
            "affected": removed,
        }
    )
    result.count("rejects_files_deleted", removed)
    if not dry_run:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    result.rows = rows
    return result
