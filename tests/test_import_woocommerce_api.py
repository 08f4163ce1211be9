"""WooCommerce REST v3 import against a loopback server: pages, statuses, resume, auth."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from import_helpers import WooServer, woo_config, woo_order

T0 = datetime(2024, 4, 1, tzinfo=timezone.utc)
ENV = {"CSOPS_TEST_WC_KEY": "ck_test_key", "CSOPS_TEST_WC_SECRET": "cs_test_secret"}


@pytest.fixture
def woo():
    server = WooServer()
    server.start()
    yield server
    server.stop()


def fill(server: WooServer, n: int, start: int = 0) -> None:
    for k in range(start, start + n):
        server.orders[k] = woo_order(k, T0 + timedelta(seconds=10 * k))


def test_pages_import_with_statuses_refunds_and_basic_auth(workspace, woo):
    fill(woo, 95)
    woo.faults = {2: ["503"], 3: ["429:1"]}
    workspace.set_config(woo_config(woo.base))
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 95 and p.json()[0]["pages"] == 5
    q = woo.log[0]["query"]
    assert (q["per_page"], q["orderby"], q["order"], q["dates_are_gmt"]) == (
        "20",
        "id",
        "asc",
        "true",
    )
    assert "modified_after" not in q
    rows = {r["external_id"]: r for r in workspace.query("SELECT * FROM orders")}
    assert rows["800"]["status"] == "paid" and rows["801"]["status"] == "completed"
    assert rows["801"]["shipped_at"] == "2024-03-03T00:01:00Z"
    assert rows["802"]["status"] == "pending" and rows["803"]["status"] == "cancelled"
    assert rows["825"]["status"] == "partially_refunded" and rows["825"]["refunded_minor"] == 500
    assert (rows["800"]["total_minor"], rows["800"]["shipping_minor"], rows["800"]["currency"]) == (
        3490,
        490,
        "EUR",
    )
    again = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert again.json()[0]["inserted"] == 0 and again.json()[0]["updated"] == 0
    assert woo.log[-1]["query"]["modified_after"] < "2024-04-01T00:15:40"


def test_kill_mid_sync_resumes_at_the_page_it_stopped_on(workspace, woo):
    fill(woo, 100)
    woo.hold_page = 4
    workspace.set_config(woo_config(woo.base))
    proc = workspace.popen("import", "orders", "--from", "woocommerce-api", env=ENV)
    try:
        assert woo.stall_event.wait(30)
        time.sleep(0.3)
        assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 60
        cursor = json.loads(workspace.query("SELECT cursor FROM sync_state")[0]["cursor"])
        assert cursor["resume"]["page"] == 4
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    woo.hold_page = None
    woo.release.set()
    before = len(woo.log)
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 0, p.stderr
    assert woo.log[before]["page"] == 4
    assert p.json()[0]["inserted"] == 40
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 100
    cursor = json.loads(workspace.query("SELECT cursor FROM sync_state")[0]["cursor"])
    assert "resume" not in cursor and cursor["watermark"] == "2024-04-01T00:16:30Z"


def test_refused_keys_exit_1_naming_the_variables_and_not_their_values(workspace, woo):
    fill(woo, 3)
    workspace.set_config(woo_config(woo.base))
    p = workspace.run(
        "import",
        "orders",
        "--from",
        "woocommerce-api",
        env={**ENV, "CSOPS_TEST_WC_SECRET": "cs_wrong_value_123"},
    )
    assert p.code == 1
    assert "CSOPS_TEST_WC_KEY" in p.stderr and "cs_wrong_value_123" not in p.stderr
    assert len(woo.log) == 1


def test_an_order_the_mapping_cannot_read_is_rejected_and_the_rest_land(workspace, woo):
    fill(woo, 5)
    woo.orders[2]["status"] = "teleported"
    workspace.set_config(woo_config(woo.base))
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 3
    assert p.json()[0]["inserted"] == 4 and p.json()[0]["rejected"] == 1
    assert "order 802: unknown status 'teleported'" in p.stderr
    assert workspace.query("SELECT field FROM rejects") == [{"field": "status"}]
