"""kill -9 during a file import, then re-run: the database converges to the reference (AT-04)."""

from __future__ import annotations

import random
import signal
import sqlite3
import time

from import_helpers import gen_orders, write_shopify

COMPARE_ORDERS = (
    "SELECT platform, external_id, number, status, currency, subtotal_minor, shipping_minor, "
    "tax_minor, discount_minor, total_minor, refunded_minor, created_at, paid_at, shipped_at, "
    "cancelled_at, email, content_hash FROM orders ORDER BY platform, external_id"
)
COMPARE_ITEMS = (
    "SELECT o.external_id, i.line_no, i.sku, i.name, i.quantity, i.unit_price_minor, "
    "i.total_minor FROM order_items i JOIN orders o ON o.id = i.order_id "
    "ORDER BY o.external_id, i.line_no"
)


def rows(db, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _count(db: str, sql: str) -> int:
    try:
        return rows(db, sql)[0][0]
    except sqlite3.OperationalError:  # locked for a moment by the import
        return -1


def _kill_mid_write(workspace, path, progress_sql: str, rng: random.Random) -> bool:
    """Start an import and kill -9 it once it has committed a random 1–4 batches of 50 orders
    (``progress_sql`` grew by that much), at whatever point of the next batch it then is. True
    if it was killed before it finished, which is what the test must show it survives."""
    db = str(workspace.db_path)
    target = _count(db, progress_sql) + 50 * rng.randint(1, 4)
    proc = workspace.popen("import", "orders", "--from", "shopify-csv", str(path))
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if _count(db, progress_sql) >= target:
            break
        time.sleep(0.002)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()
    return killed


def test_random_kills_during_a_large_import_then_rerun_equal_the_reference(
    workspace, tmp_path, scale
):
    """AT-04: 10 kills at random instants, each after the run has committed 1–4 batches, and
    a re-run after each: five during the first import (inserts), five during the import of
    a later export where every order has progressed to refunded (updates that replace items).
    The database then equals a reference made without interruption, row for row."""
    n = 1500 * scale
    orders = gen_orders(n, seed=11)
    first = write_shopify(tmp_path / "export.csv", orders)
    for o in orders:  # the later export: every order refunded in full
        o.financial, o.refunded_minor = "refunded", o.total_minor
    later = write_shopify(tmp_path / "later.csv", orders)
    workspace.set_config("[import]\nbatch_size = 50\n")
    ref_db = str(tmp_path / "reference.db")
    for path in (first, later):
        ref = workspace.run(
            "--db", ref_db, "import", "orders", "--from", "shopify-csv", str(path), "--json"
        )
        assert ref.code == 0, ref.stderr
    assert _count(ref_db, "SELECT count(*) FROM orders WHERE status = 'refunded'") == n
    rng = random.Random(4)
    db = str(workspace.db_path)
    phases = (
        (first, "SELECT count(*) FROM orders"),
        (later, "SELECT count(*) FROM orders WHERE status = 'refunded'"),
    )
    for path, progress in phases:
        mid_write = 0
        for _ in range(5):
            if _kill_mid_write(workspace, path, progress, rng):
                mid_write += 1 if _count(db, progress) < n else 0
            assert rows(db, "PRAGMA integrity_check") == [("ok",)]
        assert mid_write >= 2, f"only {mid_write} kill(s) of {path.name} landed mid-import"
    final = workspace.run("import", "orders", "--from", "shopify-csv", str(later), "--json")
    assert final.code == 0, final.stderr
    out = final.json()[0]
    assert out["inserted"] + out["updated"] + out["unchanged"] == n
    assert out["rejected"] == 0
    assert rows(db, COMPARE_ORDERS) == rows(ref_db, COMPARE_ORDERS)
    assert rows(db, COMPARE_ITEMS) == rows(ref_db, COMPARE_ITEMS)
    dupes = rows(db, "SELECT platform, external_id FROM orders GROUP BY 1, 2 HAVING count(*) > 1")
    assert dupes == []
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    again = workspace.run("import", "orders", "--from", "shopify-csv", str(later), "--json")
    assert again.json()[0]["unchanged"] == n
