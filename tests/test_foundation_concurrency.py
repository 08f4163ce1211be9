"""AT-10 (small scale): two configs on one database with different lock folders — so the file
locks do not serialize them — write at the same time, beside a `schedule run`; SQLite must hold."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

from tests.schedule_helpers import no_leftover_processes, track  # noqa: F401

N = 12


def test_two_configs_on_one_database_write_concurrently_without_busy_errors_or_damage(workspace):
    body = workspace.config.read_text()
    start, end = body.index("[schedule]"), body.index("### retention")
    second = (
        body[:start]
        + (
            '[schedule]\n[schedule.jobs.optout]\ncommand = "customers optout sched@example.com"\n'
            'every = "1s"\n'
        )
        + body[end:]
    )
    second = second.replace('# lock_dir = ""', 'lock_dir = "../locks-b"')
    config_b = workspace.root / "config" / "b.toml"
    config_b.write_text(second)

    sched = workspace.popen(
        "--config", str(config_b), "schedule", "run", env={"CSOPS_NOW": "2024-04-20T02:00:00Z"}
    )
    results: list = []

    def loop(tag: str, extra: tuple[str, ...]) -> None:
        for i in range(N):
            proc = workspace.run(*extra, "customers", "optout", f"{tag}{i}@example.com")
            results.append(proc)

    threads = [
        threading.Thread(target=loop, args=("a", ())),
        threading.Thread(target=loop, args=("b", ("--config", str(config_b)))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    time.sleep(1)
    sched.send_signal(signal.SIGTERM)
    _, sched_err = sched.communicate(timeout=60)

    assert sched.returncode == 0, sched_err.decode()
    assert len(results) == 2 * N
    for proc in results:
        assert proc.code == 0, proc.stderr
        assert "locked" not in proc.stderr.lower() and "busy" not in proc.stderr.lower()
    assert "database is locked" not in sched_err.decode()
    assert (workspace.root / "locks-b" / "customers.lock").exists()
    assert (workspace.root / "data" / ".csops-locks" / "customers.lock").exists()

    addresses = {r["address"] for r in workspace.query("SELECT address FROM suppressions")}
    assert addresses == {f"{t}{i}@example.com" for t in "ab" for i in range(N)} | {
        "sched@example.com"
    }
    runs = workspace.query("SELECT command, exit_code, finished_at FROM runs")
    scheduled = [r for r in runs if r["command"] == "customers"]
    assert len(scheduled) > 2 * N  # the scheduler's runs wrote beside the two loops
    assert all(r["exit_code"] == 0 and r["finished_at"] for r in runs)
    conn = sqlite3.connect(workspace.db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
