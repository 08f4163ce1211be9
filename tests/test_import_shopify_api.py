"""Shopify Admin REST import against a real HTTP server on loopback (AT-05, AT-18, AT-19)."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
from import_helpers import ShopifyServer, shopify_config

T0 = datetime(2024, 4, 1, tzinfo=timezone.utc)
TOKEN_ENV = {"CSOPS_TEST_SHOPIFY_TOKEN": "shpat_test_token_value"}


@pytest.fixture
def shop():
    server = ShopifyServer()
    server.start()
    yield server
    server.stop()


def fill(server: ShopifyServer, n: int, start: int = 0) -> None:
    for k in range(start, start + n):
        server.set_order(k, T0 + timedelta(seconds=30 * k))


def db_orders(ws) -> dict[str, dict]:
    return {
        r["external_id"]: r
        for r in ws.query("SELECT external_id, status, total_minor, updated_at FROM orders")
    }


def test_several_pages_import_every_order_once_with_items_and_customers(workspace, shop):
    fill(shop, 620)
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 620
    assert [e["page"] for e in shop.log] == [1, 2, 3]
    first = shop.log[0]["query"]
    assert first["status"] == "any" and first["limit"] == "250"
    assert "updated_at_min" not in first
    assert "page_info" in shop.log[1]["query"] and "status" not in shop.log[1]["query"]
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 620
    assert workspace.query("SELECT count(*) n FROM order_items")[0]["n"] == 620
    assert workspace.query("SELECT count(*) n FROM customers")[0]["n"] == 40
    row = workspace.query("SELECT * FROM orders WHERE external_id = '5000007'")[0]
    assert (row["number"], row["total_minor"], row["shipping_minor"], row["email"]) == (
        "#1007",
        2650,
        650,
        "api7@example.com",
    )


def test_faults_are_retried_within_fifteen_requests_and_429_waits_retry_after(workspace, shop):
    """AT-18 scenario 1: 429 twice, a 503, a reset mid-body and a stall past the read timeout."""
    fill(shop, 2500)
    # page 9 stalls far longer than the test's own guards: only the read timeout can cut it
    shop.faults = {3: ["429:2", "429:2"], 6: ["503"], 8: ["reset"], 9: ["stall:120"]}
    workspace.set_config(shopify_config(shop.base, read_timeout=2))
    start = time.monotonic()
    p = workspace.run(
        "import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV, timeout=60
    )
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 2500
    assert len(shop.log) <= 15
    page3 = [e["t"] for e in shop.log if e["page"] == 3]
    assert len(page3) == 3
    assert page3[1] - page3[0] >= 1.9 and page3[2] - page3[1] >= 1.9
    page9 = [e["t"] for e in shop.log if e["page"] == 9]
    assert len(page9) == 2 and 1.9 <= page9[1] - page9[0] < 5  # cut at 2 s, retried once
    assert workspace.query("SELECT count(DISTINCT external_id) n, count(*) c FROM orders")[0] == {
        "n": 2500,
        "c": 2500,
    }
    assert time.monotonic() - start < 40


def test_a_retry_after_above_the_cap_stops_with_the_cursor_saved_and_exit_3(workspace, shop):
    """AT-18 scenario 2: no sleeping for a day inside cron."""
    fill(shop, 1000)
    shop.faults = {4: ["429:86400"]}
    workspace.set_config(shopify_config(shop.base))
    start = time.monotonic()
    p = workspace.run("import", "orders", "--from", "shopify-api", env=TOKEN_ENV, timeout=60)
    assert time.monotonic() - start < 30
    assert p.code == 3, p.stderr
    assert "86400" in p.stderr and "run again after" in p.stderr
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 750
    cursor = json.loads(workspace.query("SELECT cursor FROM sync_state")[0]["cursor"])
    newest_committed = max(
        r["updated_at"] for r in shop.orders.values() if r["id"] - 5_000_000 < 750
    )
    assert cursor["watermark"] < newest_committed.replace("+00:00", "Z")


def test_a_decimal_retry_after_is_waited_and_an_unreadable_one_backs_off_without_a_crash(
    workspace, shop
):
    """Shopify sends ``Retry-After: 2.0`` (FORMATS §2.2); urllib3 alone only reads integers."""
    fill(shop, 1000)
    shop.faults = {2: ["429:2.0"], 3: ["429:soon", "429:nan", "429:-1"], 4: ["429:date+3"]}
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run(
        "import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV, timeout=60
    )
    assert p.code == 0, p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr
    assert p.json()[0]["inserted"] == 1000
    page2 = [e["t"] for e in shop.log if e["page"] == 2]
    assert len(page2) == 2 and page2[1] - page2[0] >= 1.95
    page3 = [e["t"] for e in shop.log if e["page"] == 3]
    assert len(page3) == 4 and page3[-1] - page3[0] < 10  # backoff, no crash, no long sleep
    page4 = [e["t"] for e in shop.log if e["page"] == 4]
    assert len(page4) == 2 and page4[1] - page4[0] >= 1.9  # an HTTP date 2-3 s ahead


def test_an_infinite_retry_after_stops_like_one_above_the_cap(workspace, shop):
    fill(shop, 300)
    shop.faults = {2: ["429:inf"]}
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api", env=TOKEN_ENV, timeout=60)
    assert p.code == 3, p.stderr
    assert "Traceback" not in p.stderr and "run again" in p.stderr
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 250


def test_a_refused_token_exits_1_naming_the_variable_without_its_value(workspace, shop):
    """AT-18 scenario 3 (and AT-29: the token never appears)."""
    fill(shop, 10)
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run(
        "import",
        "orders",
        "--from",
        "shopify-api",
        env={"CSOPS_TEST_SHOPIFY_TOKEN": "shpat_wrong_secret_value"},
    )
    assert p.code == 1
    assert "CSOPS_TEST_SHOPIFY_TOKEN" in p.stderr
    assert "shpat_wrong_secret_value" not in p.stderr + p.stdout
    assert len(shop.log) == 1
    runs = workspace.query("SELECT args, summary FROM runs")
    assert "shpat_wrong_secret_value" not in json.dumps(runs)


def test_a_redirect_to_another_host_is_refused_before_the_token_is_sent_there(workspace, shop):
    """AT-29: requests strips only Authorization on a cross-host redirect, not our header."""
    other = ShopifyServer()
    other.start()
    try:
        fill(shop, 600)
        fill(other, 600)
        shop.faults = {1: ["redirect:self"], 2: [f"redirect:{other.base}"]}
        workspace.set_config(shopify_config(shop.base))
        p = workspace.run("import", "orders", "--from", "shopify-api", env=TOKEN_ENV)
        assert p.code == 1, p.stderr
        assert other.log == []  # never asked, so never saw the token
        assert other.base.split("//")[1] in p.stderr and "redirect" in p.stderr
        assert "shpat_test_token_value" not in p.stderr + p.stdout
        assert [e["page"] for e in shop.log] == [1, 1, 2]  # the same-host redirect is followed
        assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 250
    finally:
        other.stop()


def test_a_missing_token_variable_is_a_config_error(workspace, shop):
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api")
    assert p.code == 2
    assert "CSOPS_TEST_SHOPIFY_TOKEN" in p.stderr
    assert shop.log == []


COMPARE = (
    "SELECT platform, external_id, number, status, currency, subtotal_minor, shipping_minor, "
    "tax_minor, discount_minor, total_minor, refunded_minor, created_at, paid_at, shipped_at, "
    "delivered_at, cancelled_at, refunded_at, email, content_hash FROM orders "
    "ORDER BY platform, external_id"
)


def test_kill_between_pages_then_rerun_converges_to_the_server(workspace, shop, tmp_path):
    """AT-05 at its full count: 12 pages × 250; kill -9 once page 5 is committed and page 6
    is in flight; meanwhile the server updates 50 orders on pages 1–5 and adds 10. The re-run
    leaves exactly 3,010 orders, equal row for row to an uninterrupted import of the server's
    latest versions."""
    fill(shop, 3000)
    shop.hold_page = 6
    workspace.set_config(shopify_config(shop.base))
    proc = workspace.popen("import", "orders", "--from", "shopify-api", env=TOKEN_ENV)
    try:
        assert shop.stall_event.wait(60), "page 6 never requested"
        time.sleep(0.3)
        # the cursor never points past committed data
        mark = json.loads(workspace.query("SELECT cursor FROM sync_state")[0]["cursor"])[
            "watermark"
        ]
        have = {r["external_id"] for r in workspace.query("SELECT external_id FROM orders")}
        for o in shop.orders.values():
            if o["updated_at"].replace("+00:00", "Z") <= mark:
                assert str(o["id"]) in have
        assert len(have) == 1250
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    shop.hold_page = None
    shop.release.set()
    later = T0 + timedelta(days=2)
    for k in range(0, 1250, 25):  # 50 orders already imported change on the server
        shop.orders[k]["total_price"] = "99.00"
        shop.orders[k]["financial_status"] = "refunded"
        shop.orders[k]["updated_at"] = (later + timedelta(seconds=k)).isoformat()
    fill(shop, 10, start=3000)
    for k in range(3000, 3010):
        shop.orders[k]["updated_at"] = (later + timedelta(minutes=30, seconds=k)).isoformat()
    before = len(shop.log)
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 0, p.stderr
    first = shop.log[before]["query"]
    assert first["updated_at_min"] and first["updated_at_min"] <= mark
    assert first["updated_at_min"] > "2024-04-01T00:00:00"  # not a full resync
    assert len(db_orders(workspace)) == 3010
    ref_db = str(tmp_path / "reference.db")
    ref = workspace.run(
        "--db", ref_db, "import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV
    )
    assert ref.code == 0, ref.stderr
    assert ref.json()[0]["inserted"] == 3010
    got = [tuple(r.values()) for r in workspace.query(COMPARE)]
    conn = sqlite3.connect(ref_db)
    try:
        want = [tuple(r) for r in conn.execute(COMPARE)]
    finally:
        conn.close()
    assert got == want
    assert sum(1 for r in got if r[3] == "refunded") >= 50


def saved_mark(ws) -> str | None:
    return json.loads(ws.query("SELECT cursor FROM sync_state")[0]["cursor"])["watermark"]


def assert_mark_behind_committed(ws, server: ShopifyServer) -> None:
    """AT-05: every order with updated_at <= the saved watermark is in the DB."""
    mark = saved_mark(ws)
    have = {r["external_id"] for r in ws.query("SELECT external_id FROM orders")}
    missing = [
        o["id"]
        for o in server.orders.values()
        if mark is not None
        and o["updated_at"].replace("+00:00", "Z") <= mark
        and str(o["id"]) not in have
    ]
    assert missing == [], f"watermark {mark} points past {len(missing)} uncommitted orders"


def test_a_server_sending_newest_first_never_gets_a_watermark_past_uncommitted_orders(
    workspace, shop
):
    """``order=updated_at asc`` is not a documented parameter: a server may ignore it."""
    shop.page_size = 25
    shop.sort = "newest_first"
    fill(shop, 300)
    shop.hold_page = 3
    workspace.set_config(shopify_config(shop.base).replace("page_size = 250", "page_size = 25"))
    proc = workspace.popen("import", "orders", "--from", "shopify-api", env=TOKEN_ENV)
    try:
        assert shop.stall_event.wait(30), "page 3 never requested"
        time.sleep(0.3)
        assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 50
        assert_mark_behind_committed(workspace, shop)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    shop.hold_page = None
    shop.release.set()
    later = T0 + timedelta(days=2)
    for k in range(0, 300, 7):
        shop.orders[k]["total_price"] = "99.00"
        shop.orders[k]["updated_at"] = (later + timedelta(seconds=k)).isoformat()
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 0, p.stderr
    assert_mark_behind_committed(workspace, shop)
    rows = db_orders(workspace)
    assert len(rows) == 300
    for o in shop.orders.values():
        assert rows[str(o["id"])]["total_minor"] == int(o["total_price"].replace(".", ""))


def test_an_order_edited_during_a_run_after_its_page_was_read_is_read_by_the_next_run(
    workspace, shop
):
    """Every mark is capped at the server's Date at the run's start (server sorting by id)."""
    shop.page_size = 25
    shop.sort = "id"
    run_start = T0 + timedelta(days=1)
    shop.now = run_start
    fill(shop, 100)
    shop.hold_page = 2
    workspace.set_config(shopify_config(shop.base).replace("page_size = 250", "page_size = 25"))
    proc = workspace.popen("import", "orders", "--from", "shopify-api", env=TOKEN_ENV)
    try:
        assert shop.stall_event.wait(30), "page 2 never requested"
        shop.now = run_start + timedelta(hours=1)
        shop.orders[3]["total_price"] = "55.00"  # page 1 is already read
        shop.orders[3]["updated_at"] = (run_start + timedelta(minutes=10)).isoformat()
        shop.set_order(100, run_start + timedelta(minutes=30))  # read on the last page
        shop.hold_page = None
        shop.release.set()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert saved_mark(workspace) <= "2024-04-02T00:00:00Z"
    assert db_orders(workspace)["5000003"]["total_minor"] == 2650
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 0, p.stderr
    assert db_orders(workspace)["5000003"]["total_minor"] == 5500
    assert len(db_orders(workspace)) == 101


def test_incremental_sync_catches_boundary_and_late_orders_and_then_writes_nothing(
    workspace, shop, tmp_path
):
    """AT-19 at its full count: 1,000 orders and a watermark T; then 30 change, 5 new ones
    carry exactly T and 3 late ones T − 2 min. One run makes the DB equal to the server (an
    uninterrupted import of it, row for row); a second run writes nothing at all."""
    fill(shop, 1000)
    workspace.set_config(shopify_config(shop.base))
    assert workspace.run("import", "orders", "--from", "shopify-api", env=TOKEN_ENV).code == 0
    mark = json.loads(workspace.query("SELECT cursor FROM sync_state")[0]["cursor"])["watermark"]
    t = datetime.fromisoformat(mark.replace("Z", "+00:00"))
    for k in range(0, 30):
        shop.orders[k]["total_price"] = "77.00"
        shop.orders[k]["updated_at"] = (t + timedelta(hours=1, seconds=k)).isoformat()
    for k in range(1000, 1005):
        shop.set_order(k, t)
    for k in range(1005, 1008):
        shop.set_order(k, t - timedelta(minutes=2))
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 8 and p.json()[0]["updated"] == 30
    ref_db = str(tmp_path / "reference.db")
    ref = workspace.run("--db", ref_db, "import", "orders", "--from", "shopify-api", env=TOKEN_ENV)
    assert ref.code == 0, ref.stderr
    conn = sqlite3.connect(ref_db)
    try:
        want = [tuple(r) for r in conn.execute(COMPARE)]
    finally:
        conn.close()
    got = [tuple(r.values()) for r in workspace.query(COMPARE)]
    assert got == want and len(got) == 1008
    stamped = "SELECT id, updated_at, imported_at, raw_hash FROM orders ORDER BY id"
    before = workspace.query(stamped)
    p2 = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p2.code == 0
    out = p2.json()[0]
    assert out["inserted"] == 0 and out["updated"] == 0
    assert workspace.query(stamped) == before  # not one row rewritten


def test_fulfillments_and_refunds_map_to_shipped_delivered_and_refunded(workspace, shop):
    fill(shop, 3)
    o0, o1, o2 = shop.orders[0], shop.orders[1], shop.orders[2]
    o0["fulfillment_status"] = "fulfilled"
    o0["fulfillments"] = [
        {
            "created_at": "2024-03-02T10:00:00-05:00",
            "shipment_status": "in_transit",
            "updated_at": "2024-03-02T10:00:00-05:00",
        }
    ]
    o1["fulfillment_status"] = "fulfilled"
    o1["fulfillments"] = [
        {
            "created_at": "2024-03-02T10:00:00Z",
            "shipment_status": "delivered",
            "updated_at": "2024-03-04T09:30:00Z",
        }
    ]
    o2["financial_status"] = "partially_refunded"
    o2["refunds"] = [
        {
            "created_at": "2024-03-05T00:00:00Z",
            "transactions": [
                {"kind": "refund", "status": "success", "amount": "5.25"},
                {"kind": "refund", "status": "failure", "amount": "9.00"},
            ],
        }
    ]
    workspace.set_config(shopify_config(shop.base))
    assert workspace.run("import", "orders", "--from", "shopify-api", env=TOKEN_ENV).code == 0
    rows = {r["number"]: r for r in workspace.query("SELECT * FROM orders")}
    assert (rows["#1000"]["status"], rows["#1000"]["shipped_at"]) == (
        "shipped",
        "2024-03-02T15:00:00Z",
    )
    assert (rows["#1001"]["status"], rows["#1001"]["delivered_at"]) == (
        "delivered",
        "2024-03-04T09:30:00Z",
    )
    assert (
        rows["#1002"]["status"],
        rows["#1002"]["refunded_minor"],
        rows["#1002"]["refunded_at"],
    ) == ("partially_refunded", 525, "2024-03-05T00:00:00Z")


def test_refunds_in_another_currency_reject_the_order_instead_of_a_wrong_amount(workspace, shop):
    """Refund transactions carry their own currency (presentment money on multi-currency)."""
    fill(shop, 3)
    o0, o1 = shop.orders[0], shop.orders[1]
    o0["financial_status"] = o1["financial_status"] = "partially_refunded"
    o0["refunds"] = [
        {
            "created_at": "2024-03-05T00:00:00Z",
            "transactions": [
                {"kind": "refund", "status": "success", "amount": "5.25", "currency": "USD"},
                {"kind": "refund", "status": "success", "amount": "1.00"},  # no currency: USD
                {"kind": "refund", "status": "failure", "amount": "9.00", "currency": "EUR"},
            ],
        }
    ]
    o1["presentment_currency"] = "EUR"
    o1["refunds"] = [
        {
            "created_at": "2024-03-05T00:00:00Z",
            "transactions": [
                {"kind": "refund", "status": "success", "amount": "4.60", "currency": "EUR"}
            ],
        }
    ]
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 2 and p.json()[0]["rejected"] == 1
    rows = db_orders(workspace)
    assert "5000001" not in rows
    assert workspace.query("SELECT refunded_minor FROM orders WHERE external_id = '5000000'") == [
        {"refunded_minor": 625}
    ]
    assert workspace.query("SELECT field FROM rejects") == [
        {"field": "refunds.transactions.currency"}
    ]
    assert "order 5000001" in p.stderr and "EUR" in p.stderr


def test_an_unknown_or_missing_financial_status_rejects_the_order(workspace, shop):
    fill(shop, 4)
    shop.orders[1]["financial_status"] = "mystery"
    shop.orders[2]["financial_status"] = None
    shop.orders[3]["financial_status"] = "Expired"
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 2 and p.json()[0]["rejected"] == 2
    assert set(db_orders(workspace)) == {"5000000", "5000003"}
    assert db_orders(workspace)["5000003"]["status"] == "pending"
    assert workspace.query("SELECT field FROM rejects") == [{"field": "financial_status"}] * 2
    assert "unknown status 'mystery'" in p.stderr


def test_a_negative_price_or_total_rejects_the_order(workspace, shop):
    fill(shop, 3)
    shop.orders[1]["total_price"] = "-10.00"
    shop.orders[2]["line_items"][0]["price"] = "-1.00"
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 1 and p.json()[0]["rejected"] == 2
    assert set(db_orders(workspace)) == {"5000000"}
    fields = {r["field"] for r in workspace.query("SELECT field FROM rejects")}
    assert fields == {"total_price", "line_items.price"}


def test_out_of_range_values_reject_their_order_and_the_sync_goes_on(workspace, shop):
    """A quantity, amount or year no shop has (10^20 pieces, 1e30, year 1) is rejected as in
    files; before, it stopped the run with an internal error, on the same page every run."""
    fill(shop, 6)
    shop.orders[1]["line_items"][0]["quantity"] = 10**20
    shop.orders[2]["total_price"] = "1e30"
    shop.orders[3]["created_at"] = "0001-01-01T00:00:00+01:00"
    shop.orders[4]["line_items"][0]["price"] = "9999999999999.99"
    shop.orders[4]["line_items"][0]["quantity"] = 1_000_000
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 3, p.stderr
    assert "internal error" not in p.stderr
    assert p.json()[0]["inserted"] == 2 and p.json()[0]["rejected"] == 4
    assert set(db_orders(workspace)) == {"5000000", "5000005"}
    fields = sorted(r["field"] for r in workspace.query("SELECT field FROM rejects"))
    assert fields == ["created_at", "line total", "line_items.quantity", "total_price"]
    assert workspace.query("SELECT count(*) n FROM sync_state")[0]["n"] == 1


@pytest.mark.parametrize("fill_level", ["1/40", "39/40"])
def test_a_nearly_full_call_limit_bucket_slows_the_requests(workspace, shop, fill_level):
    """FORMATS §2.2: ``X-Shopify-Shop-Api-Call-Limit`` near its bucket size: csops waits about
    a second (the bucket leaks 2 requests/s on the smallest plan) before the next request."""
    shop.page_size = 10
    shop.call_limit = fill_level
    fill(shop, 40)
    workspace.set_config(shopify_config(shop.base).replace("page_size = 250", "page_size = 10"))
    p = workspace.run("import", "orders", "--from", "shopify-api", "--json", env=TOKEN_ENV)
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 40
    times = [e["t"] for e in shop.log]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    if fill_level == "39/40":
        assert min(gaps) >= 0.9, gaps
    else:
        assert max(gaps) < 0.9, gaps


def test_dry_run_reads_the_api_but_writes_no_order_and_no_cursor(workspace, shop):
    fill(shop, 30)
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run(
        "import", "orders", "--from", "shopify-api", "--dry-run", "--json", env=TOKEN_ENV
    )
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 30
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 0
    assert workspace.query("SELECT count(*) n FROM sync_state")[0]["n"] == 0


def test_since_starts_at_that_day_in_the_shop_timezone_instead_of_the_watermark(workspace, shop):
    fill(shop, 5)
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run(
        "import", "orders", "--from", "shopify-api", "--since", "2024-04-01", env=TOKEN_ENV
    )
    assert p.code == 0, p.stderr
    # midnight in Asia/Shanghai (the workspace's shop timezone) is 16:00 UTC the day before
    assert shop.log[0]["query"]["updated_at_min"] == "2024-03-31T16:00:00Z"
    bad = workspace.run(
        "import", "orders", "--from", "shopify-api", "--since", "last week", env=TOKEN_ENV
    )
    assert bad.code == 2 and "--since" in bad.stderr


def test_the_subtotal_is_stored_before_discounts_as_for_every_source(workspace, shop):
    """``subtotal_price`` is after discounts; csops stores the subtotal before them, so that
    total = subtotal + shipping + tax − discount holds as it does for the CSV export."""
    fill(shop, 2)
    shop.orders[1].update(
        {"subtotal_price": "18.00", "total_discounts": "2.00", "total_price": "24.50"}
    )
    workspace.set_config(shopify_config(shop.base))
    p = workspace.run("import", "orders", "--from", "shopify-api", env=TOKEN_ENV)
    assert p.code == 0, p.stderr
    row = workspace.query("SELECT * FROM orders WHERE external_id = '5000001'")[0]
    money = ("subtotal_minor", "shipping_minor", "tax_minor", "discount_minor", "total_minor")
    assert tuple(row[k] for k in money) == (2000, 650, 0, 200, 2450)
