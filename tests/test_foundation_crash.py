"""AT-08: kill -9 in the middle of a migration or a backup leaves nothing half-done in sight."""

from __future__ import annotations

import random
import re
import sqlite3
import subprocess
import sys
import time

from tests.schedule_helpers import no_leftover_processes, track  # noqa: F401

ORDERS = 60_000

# A release's migration that rebuilds a table slowly (copy in chunks), added at run time in a
# child process so the test can kill it at any instant; the real migrate() runs it.
MIGRATE = """
import sys, time
from csops import db, migrations

def rebuild_orders(conn):
    conn.execute("CREATE TABLE orders_new AS SELECT * FROM orders WHERE 0")
    last = conn.execute("SELECT MAX(id) FROM orders").fetchone()[0]
    for low in range(0, last + 1, 2000):
        conn.execute(
            "INSERT INTO orders_new SELECT * FROM orders WHERE id >= ? AND id < ?",
            (low, low + 2000),
        )
        time.sleep(float(sys.argv[2]))
    conn.execute("DROP TABLE orders")
    conn.execute("ALTER TABLE orders_new RENAME TO orders")

migrations.STEPS.append(migrations.Step(99, "rebuild orders", rebuild_orders))
print("start", flush=True)
db.connect(sys.argv[1]).close()
print("done", flush=True)
"""


# A job writing sent messages the whole time, one short IMMEDIATE transaction each.
WRITER = """
import sys, sqlite3, time
c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
for i in range(100000):
    c.execute("BEGIN IMMEDIATE")
    c.execute(
        "INSERT INTO outbox (dedupe_key, message_id, kind, channel, recipient, state, queued_at,"
        " sent_at) VALUES (?, ?, 'f', 'email', 'y@x', 'sent', '2024-01-01T00:00:00Z',"
        " '2024-01-01T00:00:01Z')",
        (f"w{i}", f"<w{i}>"),
    )
    c.execute("COMMIT")
    time.sleep(0.005)
"""


def seed_orders(workspace, n: int = ORDERS) -> None:
    conn = workspace.db()
    with conn:
        conn.executemany(
            "INSERT INTO orders (platform, external_id, number, status, currency, total_minor,"
            " created_at, source, imported_at, updated_at, content_hash)"
            " VALUES ('shopify', ?, ?, 'paid', 'USD', ?, '2024-01-01T00:00:00Z', 'test',"
            " '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z', 'h')",
            ((str(i), f"#{i}", i * 7) for i in range(n)),
        )
        conn.executemany(
            "INSERT INTO outbox (dedupe_key, message_id, kind, channel, recipient, body_text,"
            " state, queued_at, sent_at) VALUES (?, ?, 'followup', 'email', 'x@example.com',"
            " 'hello', 'sent', '2024-01-01T00:00:00Z', '2024-01-01T00:01:00Z')",
            ((f"k{i}", f"<m{i}@x>") for i in range(500)),
        )
    conn.close()


def inspect(path) -> dict:
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {
            "version": conn.execute("PRAGMA user_version").fetchone()[0],
            "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
            "orders": conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0],
            "half_built": "orders_new" in tables,
            "sent_without_time": conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE state='sent' AND sent_at IS NULL"
            ).fetchone()[0],
        }
    finally:
        conn.close()


def test_kill_9_during_a_migration_leaves_version_n_or_n_plus_1_never_half_built(workspace):
    seed_orders(workspace)
    base = inspect(workspace.db_path)["version"]
    rng = random.Random(8)
    versions = []
    for _ in range(5):
        child = track(
            subprocess.Popen(
                [sys.executable, "-c", MIGRATE, str(workspace.db_path), "0.02"],
                stdout=subprocess.PIPE,
                env=workspace.env,
                text=True,
            )
        )
        assert child.stdout.readline().strip() == "start"
        time.sleep(rng.uniform(0.05, 0.6))
        child.kill()
        child.wait()
        state = inspect(workspace.db_path)
        versions.append(state["version"])
        assert state["version"] in (base, 99)
        assert state["integrity"] == "ok" and state["orders"] == ORDERS
        assert not state["half_built"]
        if state["version"] == 99:
            break
    assert base in versions, "no kill landed inside the migration"
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE, str(workspace.db_path), "0"],
        capture_output=True,
        env=workspace.env,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["start", "done"], done.stderr
    assert inspect(workspace.db_path) == {
        "version": 99,
        "integrity": "ok",
        "orders": ORDERS,
        "half_built": False,
        "sent_without_time": 0,
    }
    assert workspace.run("customers", "optout", "after@example.com").code == 0


def test_kill_9_during_backups_while_writing_leaves_only_whole_checked_copies(workspace):
    seed_orders(workspace)
    out = workspace.root / "backups"
    out.mkdir()
    final = out / "csops-backup.db"
    rng = random.Random(80)
    writer = track(
        subprocess.Popen([sys.executable, "-c", WRITER, str(workspace.db_path)], env=workspace.env)
    )
    killed_partial = 0
    try:
        for _ in range(6):
            child = workspace.popen("db", "backup", str(final))
            time.sleep(rng.uniform(0.25, 0.9))
            if child.poll() is None:
                child.kill()
            child.wait()
            for path in out.iterdir():
                if path == final:
                    state = inspect(path)
                    assert state["integrity"] == "ok" and state["orders"] == ORDERS
                    assert state["sent_without_time"] == 0
                else:
                    partial = re.fullmatch(r"\.csops-backup\.db\.\d+\.tmp(-journal)?", path.name)
                    assert partial, path.name
                    killed_partial += 1
        ok = workspace.run("db", "backup", str(final))
        assert ok.code == 0, ok.stderr
    finally:
        writer.kill()
        writer.wait()
    assert killed_partial > 0, "no kill landed inside a backup"
    state = inspect(final)
    assert state["integrity"] == "ok" and state["orders"] == ORDERS
    # A completed backup sweeps the partial files its killed predecessors left behind.
    assert [p.name for p in out.iterdir()] == ["csops-backup.db"]
