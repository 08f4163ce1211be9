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


def test_random_kills_during_a_large_import_then_rerun_equal_the_reference(
    workspace, tmp_path, scale
):
    orders = gen_orders(1500 * scale, seed=11)
    path = write_shopify(tmp_path / "big.csv", orders)
    workspace.set_config("[import]\nbatch_size = 50\n")
    ref_db = str(tmp_path / "reference.db")
    ref = workspace.run(
        "--db", ref_db, "import", "orders", "--from", "shopify-csv", str(path), "--json"
    )
    assert ref.code == 0, ref.stderr
    n_orders = ref.json()[0]["inserted"]
    assert n_orders == 1500 * scale
    rng = random.Random(4)
    killed_midway = 0
    for _ in range(5):
        runs_before = len(rows(str(workspace.db_path), "SELECT id FROM runs"))
        proc = workspace.popen("import", "orders", "--from", "shopify-csv", str(path))
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:  # wait for the run to start
            if len(rows(str(workspace.db_path), "SELECT id FROM runs")) > runs_before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_midway += 1
        proc.wait(30)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()
    assert killed_midway >= 1
    final = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert final.code == 0, final.stderr
    out = final.json()[0]
    assert out["inserted"] + out["updated"] + out["unchanged"] == n_orders
    assert out["rejected"] == 0
    db = str(workspace.db_path)
    assert rows(db, COMPARE_ORDERS) == rows(ref_db, COMPARE_ORDERS)
    assert rows(db, COMPARE_ITEMS) == rows(ref_db, COMPARE_ITEMS)
    dupes = rows(db, "SELECT platform, external_id FROM orders GROUP BY 1, 2 HAVING count(*) > 1")
    assert dupes == []
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    again = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert again.json()[0]["unchanged"] == n_orders
