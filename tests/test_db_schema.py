"""The database opens in WAL with FKs on, migrates by user_version, and backs up consistently."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from csops import db
from csops.migrations import latest_version

DESIGN_TABLES = {
    "customers": {"id", "email", "phone", "name", "locale", "birthday", "opted_out_at"},
    "orders": {
        "id",
        "platform",
        "external_id",
        "number",
        "customer_id",
        "email",
        "status",
        "currency",
        "subtotal_minor",
        "shipping_minor",
        "tax_minor",
        "discount_minor",
        "total_minor",
        "refunded_minor",
        "created_at",
        "paid_at",
        "shipped_at",
        "delivered_at",
        "cancelled_at",
        "content_hash",
        "source",
        "imported_at",
        "updated_at",
    },
    "order_items": {"order_id", "line_no", "sku", "name", "quantity", "unit_price_minor"},
    "conversations": {"id", "source", "external_id", "channel", "order_id", "kind", "created_at"},
    "outbox": {
        "id",
        "dedupe_key",
        "message_id",
        "kind",
        "rule",
        "order_id",
        "customer_id",
        "channel",
        "recipient",
        "locale",
        "subject",
        "body_text",
        "body_html",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
        "claimed_by",
        "claimed_at",
        "queued_at",
        "sent_at",
    },
    "surveys": {"id", "kind", "order_id", "customer_id", "outbox_id", "sent_at", "score"},
    "return_batches": {"id", "file_name", "file_sha256", "format", "processed_at"},
    "return_lines": {"id", "batch_id", "return_ref", "decision", "refund_minor", "fee_minor"},
    "kpi_daily": {"day", "metric", "value", "numerator", "denominator", "sample_size"},
    "suppressions": {"address", "channel", "scope", "reason", "created_at"},
    "sync_state": {"source", "cursor", "updated_at"},
    "runs": {"id", "command", "args", "started_at", "finished_at", "exit_code", "summary"},
}


def test_every_design_table_and_column_exists(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "x.db")
    for table, columns in DESIGN_TABLES.items():
        have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
        assert columns <= have, (table, columns - have)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 30000
    assert db.schema_version(conn) == latest_version()


def test_a_failing_write_rolls_back_whole(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "x.db")
    try:
        with db.write(conn):
            conn.execute(
                "INSERT INTO sync_state (source, cursor, updated_at) VALUES ('a', '1', 'now')"
            )
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert conn.execute("SELECT COUNT(*) FROM sync_state").fetchone()[0] == 0


def test_two_connections_migrating_at_once_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            db.connect(path).close()
        except BaseException as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.schema_version(db.connect(path)) == latest_version()


def test_backup_is_integrity_checked_and_appears_only_under_final_name(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "live.db")
    with db.write(conn):
        conn.execute("INSERT INTO sync_state (source, cursor, updated_at) VALUES ('s', 'c', 'n')")
    final = db.backup(conn, tmp_path / "backups" / "copy.db")
    assert [p.name for p in final.parent.iterdir()] == ["copy.db"]
    copy = sqlite3.connect(final)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT cursor FROM sync_state").fetchone()[0] == "c"
    assert final.stat().st_mode & 0o077 == 0


def test_migrations_from_an_empty_file_then_rerun_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    conn = db.connect(path)
    schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    again = db.connect(path)
    assert db.schema_version(again) == latest_version()
    rerun = again.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    assert [tuple(r) for r in rerun] == [tuple(r) for r in schema]
    assert again.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
