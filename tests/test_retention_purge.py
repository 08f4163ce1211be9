"""AT-30: `csops retention purge` minimizes old personal data and keeps every promise intact."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import pytest

NOW = datetime(2024, 4, 20, 2, 0, tzinfo=timezone.utc)
ENV = {"CSOPS_NOW": "2024-04-20T02:00:00Z"}
DAYS = 3 * 365


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(workspace) -> None:
    """Three years of data, one row every few days, written straight into the database."""
    conn = workspace.db()
    with conn:
        for i in range(0, DAYS, 3):
            at = iso(NOW - timedelta(days=i, hours=1))
            state = "queued" if i % 30 == 0 else ("failed" if i % 7 == 0 else "sent")
            conn.execute(
                "INSERT INTO outbox (dedupe_key, message_id, kind, channel, recipient, subject,"
                " body_text, body_html, state, queued_at, sent_at, next_attempt_at)"
                " VALUES (?, ?, 'followup', 'email', ?, 'Thanks', ?, ?, ?, ?, ?, ?)",
                (
                    f"review:{i}",
                    f"<m{i}@shop>",
                    f"c{i}@example.com",
                    f"BODY-{i:04d}-text",
                    f"<p>BODY-{i:04d}-html</p>",
                    state,
                    at,
                    at if state == "sent" else None,
                    iso(NOW + timedelta(hours=1)) if state == "queued" else None,
                ),
            )
            conn.execute(
                "INSERT INTO surveys (kind, order_id, sent_at, responded_at, score, comment)"
                " VALUES ('csat', NULL, ?, ?, ?, ?)",
                (at, at, 1 + i % 5, f"COMMENT-{i:04d}"),
            )
            conn.execute(
                "INSERT INTO rejects (job, file, line, message, raw, created_at)"
                " VALUES ('import', 'orders.csv', ?, 'bad date', ?, ?)",
                (i, f"RAW-{i:04d}", at),
            )
            conn.execute(
                "INSERT INTO runs (run_id, command, args, started_at, finished_at, exit_code)"
                " VALUES (?, 'import', '[]', ?, ?, 0)",
                (f"old{i}", at, at),
            )
            conn.execute(
                "INSERT INTO kpi_daily (day, metric, value, numerator, denominator, sample_size,"
                " computed_at) VALUES (?, 'csat', ?, ?, 10, 10, ?)",
                (at[:10], (i % 5) / 5, i % 5, at),
            )
        for n in range(20):  # opted-out customers among the oldest
            conn.execute(
                "INSERT INTO suppressions (address, channel, scope, reason, created_at)"
                " VALUES (?, 'email', 'all', 'asked', ?)",
                (f"old{n}@example.com", iso(NOW - timedelta(days=DAYS - n))),
            )
    conn.close()
    rejects = workspace.root / "rejects"
    for age in (1, 29, 31, 400):
        path = rejects / f"orders-{age}d.rejects.csv"
        path.write_text(f"line,message\n{age},RAW\n")
        stamp = (NOW - timedelta(days=age)).timestamp()
        os.utime(path, (stamp, stamp))


def snapshot(workspace, table: str) -> list[dict]:
    return workspace.query(f"SELECT * FROM {table} ORDER BY rowid")


def digest(workspace) -> str:
    tables = ["outbox", "surveys", "rejects", "suppressions", "kpi_daily"]
    return hashlib.sha256(repr([snapshot(workspace, t) for t in tables]).encode()).hexdigest()


@pytest.fixture
def seeded(workspace):
    seed(workspace)
    return workspace


def test_purge_empties_old_bodies_and_comments_keeping_keys_states_scores_and_suppressions(
    seeded,
):
    ws = seeded
    before = {t: snapshot(ws, t) for t in ("outbox", "surveys", "suppressions", "kpi_daily")}
    untouched = digest(ws)
    dry = ws.run("retention", "purge", "--dry-run", "--json", env=ENV)
    assert dry.code == 0, dry.stderr
    assert digest(ws) == untouched
    assert len(list((ws.root / "rejects").iterdir())) == 4

    proc = ws.run("retention", "purge", "--json", env=ENV)
    assert proc.code == 0, proc.stderr
    assert proc.json() == dry.json()  # the dry run counted exactly what the purge did
    affected = {r["what"]: r["affected"] for r in proc.json()}

    body_cut = iso(NOW - timedelta(days=365))
    emptied = 0
    for old, new in zip(before["outbox"], snapshot(ws, "outbox"), strict=True):
        for key in ("dedupe_key", "message_id", "state", "sent_at", "queued_at", "recipient"):
            assert new[key] == old[key]
        is_old = (old["sent_at"] or old["queued_at"]) < body_cut and old["state"] != "queued"
        if is_old:
            emptied += 1
            assert (new["body_text"], new["body_html"]) == ("", None)
        else:
            assert (new["body_text"], new["body_html"]) == (old["body_text"], old["body_html"])
    assert emptied == affected["outbox bodies"] > 100

    comment_cut = iso(NOW - timedelta(days=730))
    for old, new in zip(before["surveys"], snapshot(ws, "surveys"), strict=True):
        assert new["score"] == old["score"] and new["responded_at"] == old["responded_at"]
        expected = None if old["responded_at"] < comment_cut else old["comment"]
        assert new["comment"] == expected
    assert affected["survey comments"] > 100

    assert snapshot(ws, "suppressions") == before["suppressions"]  # all 20 survive
    assert len(before["suppressions"]) == 20
    assert snapshot(ws, "kpi_daily") == before["kpi_daily"]

    names = sorted(p.name for p in (ws.root / "rejects").iterdir())
    assert names == ["orders-1d.rejects.csv", "orders-29d.rejects.csv"]
    reject_cut = iso(NOW - timedelta(days=30))
    assert ws.query("SELECT COUNT(*) n FROM rejects WHERE created_at < ?", (reject_cut,)) == [
        {"n": 0}
    ]
    assert ws.query("SELECT COUNT(*) n FROM rejects")[0]["n"] == 10  # 0..27 days, every 3rd
    runs_cut = iso(NOW - timedelta(days=180))
    assert ws.query("SELECT COUNT(*) n FROM runs WHERE started_at < ?", (runs_cut,)) == [{"n": 0}]
    assert ws.query("SELECT exit_code FROM runs WHERE command='retention'") == [
        {"exit_code": 0},
        {"exit_code": 0},
    ]

    # The purged text is gone from the file itself, not just from query results.
    raw = ws.db_path.read_bytes()
    wal = ws.db_path.with_name(ws.db_path.name + "-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"BODY-1000-text" not in raw and b"COMMENT-0900" not in raw
    assert b"BODY-0003-text" in raw  # recent ones are still there


def test_a_second_purge_changes_nothing(seeded):
    assert seeded.run("retention", "purge", env=ENV).code == 0
    state = digest(seeded)
    again = seeded.run("retention", "purge", "--json", env=ENV)
    assert again.code == 0
    assert all(row["affected"] == 0 for row in again.json())
    assert digest(seeded) == state


def test_zero_days_keeps_forever_and_negative_days_is_a_config_error(seeded):
    seeded.replace_config("message_bodies_days = 365", "message_bodies_days = 0")
    proc = seeded.run("retention", "purge", "--json", env=ENV)
    assert {r["what"]: r["affected"] for r in proc.json()}["outbox bodies"] == 0
    seeded.replace_config("message_bodies_days = 0", "message_bodies_days = -1")
    bad = seeded.run("retention", "purge", env=ENV)
    assert bad.code == 2 and "retention" in bad.stderr and "Traceback" not in bad.stderr


def test_the_database_and_personal_data_folders_are_owner_only(seeded):
    assert seeded.run("retention", "purge", env=ENV).code == 0
    conn = seeded.db()  # keep a connection open so the -wal and -shm files exist
    try:
        conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        for suffix in ("", "-wal", "-shm"):
            path = seeded.db_path.with_name(seeded.db_path.name + suffix)
            assert path.stat().st_mode & 0o777 == 0o600, path
    finally:
        conn.close()
    for folder in ("data", "rejects", "outbox"):
        assert (seeded.root / folder).stat().st_mode & 0o777 == 0o700, folder
