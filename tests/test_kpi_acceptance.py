"""Acceptance tests owned by the KPI job: AT-11 (`kpi daily` under load, small) and AT-30 (KPIs
unchanged by the retention purge)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest
from kpi_helpers import DAY, NOW, env_at, insert_fixture

WRITER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 30000")
deadline = time.time() + float(sys.argv[2])
n = 0
while time.time() < deadline:
    conn.execute("BEGIN IMMEDIATE")
    for _ in range(20):
        n += 1
        conn.execute(
            "INSERT INTO orders (platform, external_id, number, status, currency, total_minor,"
            " created_at, imported_at, updated_at) VALUES ('load', ?, ?, 'paid', 'CNY', 1000,"
            " '2024-04-18T06:00:00Z', '2024-04-20T01:00:00Z', '2024-04-20T01:00:00Z')",
            (f"L{n}", f"#L{n}"),
        )
    conn.execute("COMMIT")
    time.sleep(0.01)
print(n)
"""

READER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT COUNT(*) FROM orders").fetchone()
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_at11_kpi_daily_and_check_under_concurrent_writers_and_a_long_reader(workspace, scale):
    insert_fixture(workspace.db_path)
    seconds = 6 * scale
    db = str(workspace.db_path)
    helpers = [
        subprocess.Popen([sys.executable, "-c", WRITER, db, str(seconds)], stdout=subprocess.PIPE),
        subprocess.Popen([sys.executable, "-c", READER, db, str(seconds / 2)]),
    ]
    procs = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        procs.append(workspace.popen("kpi", "daily", "--json", env=env_at(NOW)))
        procs.append(workspace.popen("kpi", "daily", "--date", DAY, "--json", env=env_at(NOW)))
        procs.append(workspace.popen("kpi", "check", "--date", DAY, "--json", env=env_at(NOW)))
        time.sleep(1.0)
    outcomes = []
    for p in procs:
        _out, err = p.communicate(timeout=120)
        outcomes.append((p.returncode, err.decode()))
    inserted = int(helpers[0].communicate(timeout=60)[0])
    helpers[1].wait(timeout=60)
    codes = [code for code, _ in outcomes]
    assert 1 not in codes, [e for c, e in outcomes if c == 1][:2]
    assert set(codes) <= {0, 4, 75}, [e for c, e in outcomes if c not in (0, 4, 75)][:2]
    assert codes.count(0) >= 1 and codes.count(4) >= 1
    assert not any("database is locked" in err for _, err in outcomes)
    # The last computation of the day saw every order the writer committed before it started.
    final = workspace.run("kpi", "daily", "--date", DAY, "--json", env=env_at(NOW))
    orders = {r["metric"]: r for r in final.json()}["orders"]["value"]
    assert orders == 6 + inserted
    conn = sqlite3.connect(db)
    busy, _log, _ckpt = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    wal = workspace.db_path.parent / (workspace.db_path.name + "-wal")
    assert busy == 0
    assert wal.stat().st_size == 0  # checked while our connection keeps the file open
    conn.close()


def _kpis(ws) -> list[tuple]:
    return [
        (r["day"], r["metric"], r["value"], r["numerator"], r["denominator"], r["sample_size"])
        for r in ws.query("SELECT * FROM kpi_daily ORDER BY day, metric")
    ]


def _add_personal_data(ws) -> None:
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute(
            "UPDATE surveys SET comment = 'slow delivery, but nice' WHERE score IS NOT NULL"
        )
        conn.execute(
            "UPDATE outbox SET subject = 'Hello', body_text = 'Dear Ana', body_html = '<p>'"
        )


def test_kpis_do_not_depend_on_the_columns_retention_empties(workspace):
    """AT-30's KPI part, by the purge's contract: bodies and comments emptied, rows kept."""
    insert_fixture(workspace.db_path)
    _add_personal_data(workspace)
    args = ("kpi", "daily", "--from", "2024-03-20", "--to", DAY, "--json")
    assert workspace.run(*args, env=env_at(NOW)).code == 0
    before = _kpis(workspace)
    with sqlite3.connect(workspace.db_path) as conn:
        conn.execute("UPDATE surveys SET comment = NULL")
        conn.execute("UPDATE outbox SET body_text = '', body_html = NULL, subject = ''")
    assert workspace.run(*args, env=env_at(NOW)).code == 0
    assert _kpis(workspace) == before


def test_at30_kpis_are_unchanged_to_the_last_digit_by_the_retention_purge(workspace):
    """The real `csops retention purge` (the scheduler job); skipped until it is built."""
    insert_fixture(workspace.db_path)
    _add_personal_data(workspace)
    args = ("kpi", "daily", "--from", "2024-03-20", "--to", DAY, "--json")
    assert workspace.run(*args, env=env_at(NOW)).code == 0
    before = _kpis(workspace)
    # Three years later, everything in the fixture is past every retention period.
    purge = workspace.run("retention", "purge", env=env_at("2027-05-01T00:00:00Z"))
    if purge.code == 2 and "not built" in purge.stderr:
        pytest.skip("`csops retention purge` is not in this build yet")
    assert purge.code == 0, purge.stderr
    # the purge did its work (so the comparison below means something) ...
    assert (
        workspace.query("SELECT COUNT(*) AS n FROM surveys WHERE comment IS NOT NULL")[0]["n"] == 0
    )
    emptied = workspace.query("SELECT COUNT(*) AS n FROM outbox WHERE body_text = ''")[0]["n"]
    assert emptied >= 6  # every finished message (a still-queued one may keep its body)
    # ... and recomputing every day gives the same KPIs to the last digit.
    assert workspace.run(*args, env=env_at("2027-05-01T00:00:00Z")).code == 0
    assert _kpis(workspace) == before
