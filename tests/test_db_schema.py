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


def _at_version(path: Path, version: int) -> sqlite3.Connection:
    """A database migrated up to ``version`` only (the steps a released csops had run)."""
    from csops import migrations

    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    steps = [s for s in migrations.STEPS if s.version <= version]
    original = migrations.STEPS
    migrations.STEPS = steps
    try:
        migrations.migrate(conn)
    finally:
        migrations.STEPS = original
    return conn


def test_check_lists_become_comparisons_that_accept_and_refuse_the_same_values(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old = _at_version(path, 81)
    old.execute(
        "INSERT INTO orders (platform, external_id, number, status, currency, created_at) "
        "VALUES ('shopify', '1', '#1', 'paid', 'USD', '2024-01-01T00:00:00Z')"
    )
    before = old.execute("SELECT * FROM orders").fetchall()
    # a connection that stays open across the migration must see the new schema
    bystander = sqlite3.connect(str(path), isolation_level=None)
    bystander.execute("SELECT COUNT(*) FROM orders").fetchone()
    conn = db.connect(path)
    assert db.schema_version(conn) == latest_version()
    tables = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql LIKE '%CHECK%'"
    ).fetchall()
    assert {t[0] for t in tables} >= {"orders", "outbox", "outbox_outcomes", "surveys"}
    for name, sql in tables:
        assert " IN (" not in sql.upper(), (name, sql)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [tuple(r) for r in conn.execute("SELECT * FROM orders")] == before
    insert = (
        "INSERT INTO orders (platform, external_id, number, status, currency, created_at) "
        "VALUES ('shopify', ?, '#2', ?, 'USD', '2024-01-01T00:00:00Z')"
    )
    for c in (conn, bystander):
        try:
            c.execute(insert, (f"bad-{id(c)}", "shipping"))
        except sqlite3.IntegrityError as exc:
            assert "CHECK constraint failed" in str(exc)
        else:
            raise AssertionError("an unknown status was accepted")
    for n, status in enumerate(("pending", "partially_refunded", "refunded"), 2):
        conn.execute(insert, (str(n), status))
    assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 4


def test_milestone_indexes_hold_only_orders_that_reached_the_milestone_and_serve_ranges(
    tmp_path: Path,
) -> None:
    conn = db.connect(tmp_path / "m.db")
    for m in ("paid", "shipped", "delivered", "cancelled", "refunded"):
        sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (f"idx_orders_{m}",)
        ).fetchone()[0]
        assert sql.endswith(f"WHERE {m}_at IS NOT NULL"), sql
        for where in (f"{m}_at BETWEEN ? AND ?", f"{m}_at >= ? AND {m}_at <= ?"):
            plan = conn.execute(
                f"EXPLAIN QUERY PLAN SELECT * FROM orders WHERE {where}", ("a", "b")
            ).fetchall()
            assert f"INDEX idx_orders_{m} " in plan[0][3], (where, plan[0][3])


def test_none_is_bound_as_null_and_values_as_themselves(tmp_path: Path):
    """csops registers a fast adapter for None (see csops.db): it must still bind SQL NULL,
    never a stand-in like 0 or '' that `IS NULL` queries (due follow-ups, KPIs) would miss."""
    conn = db.connect(tmp_path / "t.db")
    try:
        conn.execute("CREATE TABLE t (a, b, c, d)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)", [(None, 0, "", None), (1, None, "x", 2.5)]
        )
        got = conn.execute("SELECT typeof(a), typeof(b), typeof(c), typeof(d) FROM t").fetchall()
        assert [tuple(r) for r in got] == [
            ("null", "integer", "text", "null"),
            ("integer", "null", "text", "real"),
        ]
        assert conn.execute("SELECT count(*) FROM t WHERE a IS NULL").fetchone()[0] == 1
    finally:
        conn.close()
