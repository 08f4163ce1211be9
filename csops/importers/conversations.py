"""``import conversations``: helpdesk exports into ``conversations``, keyed by (source, id).

Rows stream in batches like orders; a conversation is linked to its order by number (``#1001``)
or platform order id when that order is already imported, and the reference is kept in
``order_ref`` either way so a later run can link it. Re-importing changes nothing.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from csops import db as dbmod
from csops import registry
from csops.importers.base import FieldError, GroupReject, ParseEnv, iter_records, open_source
from csops.importers.conversations_csv import Conversation
from csops.importers.orders import MAX_REPORTED, CountingReader, RejectsFile
from csops.importers.settings import ImportSettings
from csops.inputs import open_input
from csops.result import Reject, Result
from csops.timeutil import iso

_FIELDS = (
    "channel",
    "order_id",
    "order_ref",
    "kind",
    "created_at",
    "first_response_at",
    "resolved_at",
)


def import_conversations(
    ctx: Any,
    source_name: str,
    path: str,
    *,
    rejects_path: str | None = None,
    encoding: str | None = None,
) -> Result:
    settings: ImportSettings = ctx.config.section("import")
    fmt = registry.load("conversation_sources", source_name)
    env = ParseEnv(
        tz=ZoneInfo(settings.timezone or ctx.config.shop.timezone),
        currency=ctx.config.shop.currency,
        field_size_limit=settings.field_size_limit,
    )
    result = Result(f"import conversations --from {source_name}")
    counts = {"inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    stream, label = open_input(path)
    now = iso(ctx.now)
    try:
        text, enc = open_source(
            io.BufferedReader(CountingReader(stream, None), 1 << 16), encoding or fmt.encoding
        )
        header, records = iter_records(text, fmt, env, label, enc)
        if rejects_path:
            target = Path(rejects_path)
        else:
            stamp = ctx.now.strftime("%Y%m%dT%H%M%S")
            target = ctx.config.resolve(ctx.config.paths.rejects_dir) / (
                f"conversations-{source_name}-{stamp}-{ctx.run_id}.csv"
            )
        rejects = RejectsFile(target, header)
        batch: list[Conversation] = []
        try:
            for rec in records:
                if isinstance(rec, tuple):
                    line, row = rec
                    try:
                        batch.append(fmt.parse_row(row, env))
                    except FieldError as exc:
                        rec = GroupReject(line, exc.message, exc.field, exc.expected, [(line, row)])
                if isinstance(rec, GroupReject):
                    counts["rejected"] += 1
                    if len(result.rejects) < MAX_REPORTED:
                        result.rejects.append(
                            Reject(
                                rec.message,
                                file=label,
                                line=rec.line,
                                field=rec.field,
                                expected=rec.expected,
                            )
                        )
                    if not ctx.dry_run:
                        for ln, raw in rec.rows:
                            rejects.write(ln, raw, rec.field, rec.message)
                if len(batch) >= settings.batch_size:
                    _save(ctx.conn, source_name, batch, now, counts, ctx.dry_run)
                    batch = []
            _save(ctx.conn, source_name, batch, now, counts, ctx.dry_run)
        finally:
            rejects.close()
    finally:
        stream.close()
    result.counts.update(counts)
    row: dict[str, Any] = {"source": source_name, "file": label, **counts}
    if counts["rejected"] and not ctx.dry_run:
        row["rejects_file"] = str(target)
        result.messages.append(f"rejected rows written to {target}")
    result.rows = [row]
    return result


def _order_id(conn: sqlite3.Connection, ref: str | None) -> int | None:
    if not ref:
        return None
    row = conn.execute(
        "SELECT id FROM orders WHERE number = ? OR external_id = ? ORDER BY id LIMIT 1",
        (ref, ref),
    ).fetchone()
    if row is None and not ref.startswith("#"):
        row = conn.execute(
            "SELECT id FROM orders WHERE number = ? LIMIT 1", ("#" + ref,)
        ).fetchone()
    return row[0] if row else None


def _save(
    conn: sqlite3.Connection,
    source: str,
    batch: list[Conversation],
    now: str,
    counts: dict[str, int],
    dry_run: bool,
) -> None:
    if not batch:
        return

    def body() -> None:
        for c in batch:
            values = (
                c.channel,
                _order_id(conn, c.order_ref),
                c.order_ref,
                c.kind,
                c.created_at,
                c.first_response_at,
                c.resolved_at,
            )
            have = conn.execute(
                f"SELECT id, {', '.join(_FIELDS)} FROM conversations WHERE source = ? "
                "AND external_id = ?",
                (source, c.external_id),
            ).fetchone()
            if have is not None and tuple(have[1:]) == values:
                counts["unchanged"] += 1
                continue
            counts["updated" if have is not None else "inserted"] += 1
            if dry_run:
                continue
            if have is None:
                conn.execute(
                    f"INSERT INTO conversations (source, external_id, {', '.join(_FIELDS)}, "
                    "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (source, c.external_id, *values, now),
                )
            else:
                conn.execute(
                    f"UPDATE conversations SET {', '.join(f + ' = ?' for f in _FIELDS)} "
                    "WHERE id = ?",
                    (*values, have[0]),
                )

    if dry_run:
        body()
    else:
        with dbmod.write(conn):
            body()
