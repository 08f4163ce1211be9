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
        assert (cursor["resume"]["pos"], cursor["resume"]["last_id"]) == (60, 859)
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
    assert woo.log[before]["page"] == 4 and woo.log[before]["query"]["offset"] == "59"
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


def test_a_negative_total_rejects_the_order_negative_refunds_are_woos_own(workspace, woo):
    """WooCommerce writes refund totals below zero (read as amounts refunded); any other
    negative amount is a defect, rejected naming the field."""
    fill(woo, 3)
    woo.orders[1]["total"] = "-5.00"
    woo.orders[2]["refunds"] = [{"id": 1, "reason": "", "total": "-3.50"}]
    workspace.set_config(woo_config(woo.base))
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 2 and p.json()[0]["rejected"] == 1
    assert "order 801: negative amount -5.00" in p.stderr
    assert workspace.query("SELECT field FROM rejects") == [{"field": "total"}]
    got = workspace.query("SELECT refunded_minor FROM orders WHERE external_id = '802'")
    assert got == [{"refunded_minor": 350}]


def run_while_page_2_waits(workspace, woo, change) -> tuple[str, str]:
    """Run an import with --json; while page 2 is held, ``change`` the server; (stdout,
    stderr) of the run, which must succeed."""
    woo.hold_page = 2
    proc = workspace.popen("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    try:
        assert woo.stall_event.wait(30), "page 2 never requested"
        change()
        woo.hold_page = None
        woo.release.set()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    return out.decode(), err.decode()


def test_orders_leaving_the_listing_mid_run_keep_the_watermark_so_none_is_lost(workspace, woo):
    """An order deleted from a page already read moves every later order up one place: read
    by page numbers, the first order of the next page would never be read. Pages overlap by one
    order; when it is not where it was, the run keeps the watermark and the next run reads the
    window again, so every order still listed lands."""
    fill(woo, 100)
    workspace.set_config(woo_config(woo.base))

    def delete_a_read_order() -> None:
        del woo.orders[5]  # order 805, on page 1 (read): orders from 821 on move up one place

    _out, err = run_while_page_2_waits(workspace, woo, delete_a_read_order)
    assert "orders left the listing while it was read" in err
    assert "resume" not in saved_cursor(workspace)
    assert saved_cursor(workspace)["watermark"] is None  # not moved: there was none before
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 0, p.stderr
    stored = {r["external_id"] for r in workspace.query("SELECT external_id FROM orders")}
    assert stored >= {str(800 + k) for k in woo.orders}  # 820 included
    assert saved_cursor(workspace)["watermark"] is not None


def test_orders_entering_the_listing_mid_run_are_read_once(workspace, woo):
    """An older order edited mid-run enters the listing before the reading position and pushes
    the rest down one place: the overlap order shows up again and is not counted twice."""
    run_start = T0 + timedelta(days=1)
    woo.now = run_start
    fill(woo, 60)
    fill_from = T0 - timedelta(days=30)
    woo.orders[99] = woo_order(99, fill_from)
    woo.orders[99]["id"] = 799  # id below all others, modified long before the window
    workspace.set_config(woo_config(woo.base))
    assert workspace.run("import", "orders", "--from", "woocommerce-api", env=ENV).code == 0
    mark = saved_cursor(workspace)["watermark"]
    for k in range(60):  # every order edited: the next run reads all of them
        woo.orders[k] = woo_order(k, run_start + timedelta(minutes=1, seconds=k))

    def edit_an_old_order() -> None:
        woo.orders[99] = woo_order(99, run_start + timedelta(minutes=5))
        woo.orders[99]["id"] = 799  # now in the window, before everything read

    out, err = run_while_page_2_waits(workspace, woo, edit_an_old_order)
    got = json.loads(out)[0]
    assert got["unchanged"] + got["updated"] + got["inserted"] == 60, got
    assert "left the listing" not in err
    assert saved_cursor(workspace)["watermark"] >= mark


def saved_cursor(ws) -> dict:
    return json.loads(ws.query("SELECT cursor FROM sync_state")[0]["cursor"])


def test_an_order_edited_during_a_run_after_its_page_was_read_is_read_by_the_next_run(
    workspace, woo
):
    """Pages go by id: the watermark is capped at the server's Date when the run began."""
    run_start = T0 + timedelta(days=1)
    woo.now = run_start
    fill(woo, 100)
    woo.hold_page = 2
    workspace.set_config(woo_config(woo.base))
    proc = workspace.popen("import", "orders", "--from", "woocommerce-api", env=ENV)
    try:
        assert woo.stall_event.wait(30), "page 2 never requested"
        woo.now = run_start + timedelta(hours=1)
        woo.orders[3] = woo_order(3, run_start + timedelta(minutes=10))  # page 1: already read
        woo.orders[3]["total"] = "55.00"
        woo.orders[100] = woo_order(100, run_start + timedelta(minutes=30))  # on the last page
        woo.hold_page = None
        woo.release.set()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert saved_cursor(workspace)["watermark"] <= "2024-04-02T00:00:00Z"
    assert workspace.query("SELECT total_minor FROM orders WHERE external_id = '803'") == [
        {"total_minor": 3490}
    ]
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 0, p.stderr
    assert workspace.query("SELECT total_minor FROM orders WHERE external_id = '803'") == [
        {"total_minor": 5500}
    ]
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 101


@pytest.mark.parametrize("past_last", ["400", "empty"])
def test_without_total_pages_the_page_past_the_last_ends_the_run_and_moves_the_watermark(
    workspace, woo, past_last
):
    """Some hosts strip X-WP-TotalPages; WooCommerce answers 400 for a page past the last."""
    woo.total_pages_header = False
    woo.past_last = past_last
    fill(woo, 40)
    workspace.set_config(woo_config(woo.base))
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 40
    marks = [saved_cursor(workspace)]
    assert "resume" not in marks[0] and marks[0]["watermark"] == "2024-04-01T00:06:30Z"
    for n, total in enumerate(["61.00", "62.00"], 1):
        woo.orders[n] = woo_order(n, T0 + timedelta(hours=n))
        woo.orders[n]["total"] = total
        before = len(woo.log)
        p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
        assert p.code == 0, p.stderr
        assert woo.log[before]["page"] == 1  # not stuck re-reading the page past the end
        assert p.json()[0]["updated"] == 1
        got = workspace.query(f"SELECT total_minor FROM orders WHERE external_id = '{800 + n}'")
        assert got == [{"total_minor": int(total.replace(".", ""))}]
        marks.append(saved_cursor(workspace))
        assert "resume" not in marks[-1] and marks[-1]["watermark"] > marks[-2]["watermark"]


def test_incremental_sync_catches_boundary_and_late_orders_and_then_writes_nothing(workspace, woo):
    """AT-19 at its full count: 1,000 orders and a watermark T; then 30 change, 5 new ones carry
    exactly T and 3 late ones T − 2 min. One run stores all 1,008 in their latest versions; a
    second run rewrites no row."""
    fill(woo, 1000)
    workspace.set_config(woo_config(woo.base).replace("page_size = 20", "page_size = 100"))
    assert workspace.run("import", "orders", "--from", "woocommerce-api", env=ENV).code == 0
    mark = saved_cursor(workspace)["watermark"]
    t = datetime.fromisoformat(mark.replace("Z", "+00:00"))
    for k in range(30):
        woo.orders[k] = woo_order(k, t + timedelta(hours=1, seconds=k))
        woo.orders[k]["total"] = "77.00"
    for k in range(1000, 1005):
        woo.orders[k] = woo_order(k, t)
    for k in range(1005, 1008):
        woo.orders[k] = woo_order(k, t - timedelta(minutes=2))
    p = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 8 and p.json()[0]["updated"] == 30
    rows = {r["external_id"]: r for r in workspace.query("SELECT * FROM orders")}
    assert len(rows) == 1008
    assert all(rows[str(800 + k)]["total_minor"] == 7700 for k in range(30))
    assert {str(800 + k) for k in range(1000, 1008)} <= set(rows)
    stamped = "SELECT id, updated_at, imported_at, raw_hash, content_hash FROM orders ORDER BY id"
    before = workspace.query(stamped)
    p2 = workspace.run("import", "orders", "--from", "woocommerce-api", "--json", env=ENV)
    assert p2.code == 0, p2.stderr
    assert p2.json()[0]["inserted"] == 0 and p2.json()[0]["updated"] == 0
    assert workspace.query(stamped) == before  # not one row rewritten
    # page size 100: a first page of 99, then 99 new + the 1 order of overlap
    assert {r["query"]["per_page"] for r in woo.log} == {"99", "100"}


def test_basic_auth_over_plain_http_to_a_remote_host_is_refused_naming_the_url_key(workspace):
    """FORMATS §3: over plain HTTP WooCommerce takes only OAuth 1.0a; loopback stays allowed."""
    workspace.set_config(woo_config("http://shop.example.com"))
    p = workspace.run("import", "orders", "--from", "woocommerce-api", env=ENV, timeout=30)
    assert p.code == 2, p.stderr
    assert "import.woocommerce.url" in p.stderr
    assert "ck_test_key" not in p.stderr + p.stdout and "cs_test_secret" not in p.stderr
