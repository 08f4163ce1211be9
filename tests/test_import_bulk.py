"""Large file imports: the forked reader process, indexes set aside during a bulk load and
rebuilt after it (also after a kill -9), and the same stored rows as the sequential path."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from import_helpers import gen_orders, write_shopify

from csops import db

INDEXES = (
    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"
)


def rows(path: Path | str, sql: str) -> list[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def fresh_indexes(tmp_path: Path) -> list[tuple]:
    conn = db.connect(tmp_path / "fresh.db")
    conn.close()
    return rows(tmp_path / "fresh.db", INDEXES)


def mangled_export(path: Path, n: int) -> Path:
    """A Shopify export of ``n`` orders with a few bad rows of every kind the reader meets."""
    write_shopify(path, gen_orders(n, seed=5))
    lines = path.read_text("utf-8").splitlines(keepends=True)
    head, body = lines[0], lines[1:]
    width = head.count(",") + 1
    bad = [
        "#BAD1," + ",".join(["x"] * (width - 2)) + "\n",  # unknown status, bad amounts
        "#BAD2,a@b.c\n",  # too few columns
        '#BAD3,"never closed' + "," * (width - 1) + "\n",  # unterminated quote
    ]
    step = max(1, len(body) // (len(bad) + 1))
    for k, line in enumerate(bad, 1):
        body.insert(k * step, line)
    path.write_text(head + "".join(body), "utf-8")
    return path


def test_the_reader_process_stores_the_same_rows_counts_and_rejects_as_the_sequential_path(
    workspace, tmp_path
):
    src = mangled_export(tmp_path / "export.csv", 400)
    out = {}
    workspace.set_config("[import]\nbatch_size = 37\nreader_process_min_bytes = -1\n")
    for mode in ("sequential", "forked"):
        if mode == "forked":
            workspace.replace_config(
                "reader_process_min_bytes = -1", "reader_process_min_bytes = 0"
            )
        db_path = tmp_path / f"{mode}.db"
        rejects = tmp_path / f"{mode}-rejects.csv"
        proc = workspace.run(
            "--db",
            str(db_path),
            *("import", "orders", "--from", "shopify-csv", str(src)),
            *("--rejects", str(rejects), "--json"),
            env={"CSOPS_TESTING": "1", "CSOPS_NOW": "2024-05-01T10:00:00Z"},
        )
        assert proc.code == 3, proc.stderr
        counts = proc.json()[0]
        counts.pop("rejects_file")
        out[mode] = (
            counts,
            rejects.read_text("utf-8-sig"),
            rows(db_path, "SELECT * FROM customers ORDER BY id"),
            rows(
                db_path,
                "SELECT id, platform, external_id, number, customer_id, email, status, currency,"
                " subtotal_minor, total_minor, refunded_minor, created_at, paid_at, shipped_at,"
                " cancelled_at, content_hash, raw_hash FROM orders ORDER BY id",
            ),
            rows(db_path, "SELECT * FROM order_items ORDER BY id"),
            rows(db_path, "SELECT file, line, field, expected, message, raw FROM rejects"),
        )
    assert out["forked"] == out["sequential"]
    counts = out["forked"][0]
    assert counts["inserted"] > 200 and counts["rejected"] >= 3


def test_undecodable_bytes_deep_in_a_file_refuse_it_whole_before_any_write(workspace, tmp_path):
    """Bytes that are not UTF-8 at line 501: exit 2 naming that very line and no order
    written, in both paths, from a file or from stdin (spooled to a temporary file, then read
    through its decoder before anything is written, like a file)."""
    src = tmp_path / "export.csv"
    write_shopify(src, gen_orders(400, seed=6))
    lines = src.read_bytes().splitlines(keepends=True)
    src.write_bytes(b"".join(lines[:500]) + b"#BAD,\xff\xfe,oops\n" + b"".join(lines[500:]))
    workspace.set_config("[import]\nbatch_size = 37\nreader_process_min_bytes = -1\n")
    stored = {}
    for mode in ("sequential", "forked"):
        if mode == "forked":
            workspace.replace_config(
                "reader_process_min_bytes = -1", "reader_process_min_bytes = 0"
            )
        for name, how in (("file", str(src)), ("stdin", "-")):
            db_path = tmp_path / f"{mode}-{name}.db"
            proc = workspace.run(
                *("--db", str(db_path), "import", "orders", "--from", "shopify-csv", how),
                input=src.read_bytes() if how == "-" else None,
                env={"CSOPS_TESTING": "1", "CSOPS_NOW": "2024-05-01T10:00:00Z"},
            )
            assert proc.code == 2, proc.stderr
            where = f"{src}:501" if name == "file" else "<stdin>:501"
            assert f"{where}: bytes not valid utf-8" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
            stored[mode, name] = rows(
                db_path, "SELECT external_id, content_hash FROM orders ORDER BY id"
            )
    assert all(got == [] for got in stored.values()), stored


def test_a_bulk_load_sets_indexes_aside_and_leaves_the_full_index_set_after_it(workspace, tmp_path):
    src = write_shopify(tmp_path / "export.csv", gen_orders(600, seed=2))
    workspace.set_config("[import]\nbatch_size = 50\nbulk_load_min_orders = 100\n")
    proc = workspace.run("-v", "import", "orders", "--from", "shopify-csv", str(src), "--json")
    assert proc.code == 0, proc.stderr
    assert "indexes set aside" in proc.stderr
    assert proc.json()[0]["inserted"] == 600
    assert rows(workspace.db_path, INDEXES) == fresh_indexes(tmp_path)
    assert rows(workspace.db_path, "SELECT * FROM deferred_indexes") == []
    # a small file into a big table does not set anything aside
    small = write_shopify(tmp_path / "small.csv", gen_orders(120, seed=3, start=9001))
    proc = workspace.run("-v", "import", "orders", "--from", "shopify-csv", str(small))
    assert proc.code == 0, proc.stderr
    assert "indexes set aside" not in proc.stderr


def test_kpi_queries_still_search_indexes_after_a_bulk_load(workspace, tmp_path):
    from csops.kpi.metrics import METRICS

    src = write_shopify(tmp_path / "export.csv", gen_orders(300, seed=4))
    workspace.set_config("[import]\nbulk_load_min_orders = 10\n")
    assert workspace.run("import", "orders", "--from", "shopify-csv", str(src)).code == 0
    conn = sqlite3.connect(str(workspace.db_path))
    params = {"start": "a", "end": "b", "start90": "a", "kinds": "[]"}
    for m in METRICS:
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + m.sql, params))
        assert "SCAN orders" not in plan, (m.name, plan)
    conn.close()


def test_an_import_killed_during_a_bulk_load_is_healed_by_the_next_connection(workspace, tmp_path):
    src = write_shopify(tmp_path / "export.csv", gen_orders(3000, seed=6))
    workspace.set_config(
        "[import]\nbatch_size = 20\nbulk_load_min_orders = 40\nreader_process_min_bytes = 0\n"
    )
    proc = workspace.popen("import", "orders", "--from", "shopify-csv", str(src))
    deadline = time.monotonic() + 30
    deferred: list[tuple] = []
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            deferred = rows(workspace.db_path, "SELECT name FROM deferred_indexes")
        except sqlite3.OperationalError:
            deferred = []
        if deferred:
            break
        time.sleep(0.005)
    assert deferred, "the import never set its indexes aside"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    time.sleep(0.2)  # the reader process notices its parent is gone and exits
    missing = {name for (name,) in deferred}
    present = {name for name, _sql in rows(workspace.db_path, INDEXES)}
    assert missing and not missing & present
    # any command's connection rebuilds them now that the import's process is gone
    assert workspace.run("runs").code == 0
    assert rows(workspace.db_path, INDEXES) == fresh_indexes(tmp_path)
    assert rows(workspace.db_path, "SELECT * FROM deferred_indexes") == []
    again = workspace.run("import", "orders", "--from", "shopify-csv", str(src), "--json")
    assert again.code == 0, again.stderr
    counts = again.json()[0]
    assert counts["inserted"] + counts["unchanged"] + counts["updated"] == 3000
    assert rows(workspace.db_path, INDEXES) == fresh_indexes(tmp_path)
    assert rows(workspace.db_path, "PRAGMA integrity_check") == [("ok",)]


def test_indexes_set_aside_by_a_live_process_stay_aside_until_it_is_gone(tmp_path):
    path = tmp_path / "shop.db"
    db.connect(path).close()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
        sql = rows(path, "SELECT sql FROM sqlite_master WHERE name = 'idx_orders_created'")[0][0]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO deferred_indexes (name, tbl, sql, owner_pid, owner_host, run_id, "
            "dropped_at) VALUES ('idx_orders_created', 'orders', ?, ?, ?, 'r1', 'now')",
            (sql, owner.pid, socket.gethostname()),
        )
        conn.execute("DROP INDEX idx_orders_created")
        conn.execute("COMMIT")
        conn.close()
        db.connect(path).close()  # the owner runs: a reader leaves its indexes alone
        assert rows(path, "SELECT name FROM deferred_indexes") == [("idx_orders_created",)]
        assert not rows(path, "SELECT 1 FROM sqlite_master WHERE name = 'idx_orders_created'")
    finally:
        owner.kill()
        owner.wait()
    db.connect(path).close()
    assert rows(path, "SELECT name FROM deferred_indexes") == []
    assert rows(path, "SELECT sql FROM sqlite_master WHERE name = 'idx_orders_created'") == [(sql,)]


def test_a_killed_reader_process_fails_the_run_in_one_line_and_keeps_what_was_committed(
    workspace, tmp_path
):
    src = write_shopify(tmp_path / "export.csv", gen_orders(3000, seed=8))
    workspace.set_config(
        "[import]\nbatch_size = 20\nbulk_load_min_orders = 40\nreader_process_min_bytes = 0\n"
    )
    proc = workspace.popen("import", "orders", "--from", "shopify-csv", str(src))
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 30
    reader = None
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            started = rows(workspace.db_path, "SELECT count(*) FROM orders")[0][0] > 0
            pids = children.read_text().split()
        except (sqlite3.OperationalError, OSError):
            started, pids = False, []
        if started and pids:
            reader = int(pids[0])
            break
        time.sleep(0.005)
    assert reader is not None, "the import never started writing through a reader process"
    os.kill(reader, signal.SIGKILL)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "reader process ended without finishing" in err.decode()
    assert "Traceback" not in err.decode()
    assert rows(workspace.db_path, INDEXES) == fresh_indexes(tmp_path)
    assert rows(workspace.db_path, "SELECT * FROM deferred_indexes") == []
    committed = rows(workspace.db_path, "SELECT count(*) FROM orders")[0][0]
    again = workspace.run("import", "orders", "--from", "shopify-csv", str(src), "--json")
    assert again.code == 0, again.stderr
    assert again.json()[0]["unchanged"] == committed
    assert again.json()[0]["inserted"] == 3000 - committed
