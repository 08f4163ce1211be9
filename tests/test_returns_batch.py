"""`csops returns process` end to end: a real workspace and SQLite file, csops as a subprocess."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from returns_helpers import (
    add_customer,
    add_order,
    open_db,
    parse_csv,
    write_batch,
)

FIXTURES = Path(__file__).parent / "fixtures"
NOW = "2024-05-01T10:00:00Z"


@pytest.fixture
def shop(workspace):
    """A workspace with three orders: one delivered with a discount, one cancelled, one unpaid."""
    workspace.env["CSOPS_NOW"] = NOW
    conn = open_db(workspace.db_path)
    conn.execute("BEGIN IMMEDIATE")
    ana = add_customer(conn, "ana@example.org", name="Ana Ribeiro", locale="en")
    li = add_customer(conn, "li@example.cn", name="李雷", locale="zh-CN")
    add_order(
        conn,
        "#1001",
        [("MUG", 3, 1000), ("TOWEL", 1, 999)],
        discount=1000,
        shipping=650,
        customer_id=ana,
        email="ana@example.org",
    )
    add_order(
        conn,
        "#1002",
        [("MUG", 1, 1000)],
        status="cancelled",
        cancelled_at="2024-04-02T00:00:00Z",
        customer_id=li,
        email="li@example.cn",
    )
    add_order(
        conn,
        "#1003",
        [("LAMP", 1, 5000)],
        status="paid",
        shipped_at=None,
        delivered_at=None,
        customer_id=li,
        email="li@example.cn",
    )
    conn.execute("COMMIT")
    conn.close()
    return workspace


LINES = [
    "R1,#1001,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,unopened",
    "R2,#1001,TOWEL,1,wrong_item,sent blue,2024-04-20T10:00:00Z,refund,",
    "R3,#1002,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
    "R4,#9999,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
    "R5,#1001,MUG,9,changed_mind,,2024-04-20T10:00:00Z,refund,",
    "R6,#1001,MUG,two,changed_mind,,2024-04-20T10:00:00Z,refund,",
    "R7,#1003,LAMP,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
    "R8,#1001,MUG,1,changed_mind,,not a date,refund,",
    "R9,#1001,MUG,1,changed_mind,,2024-04-21T10:00:00Z,swap,",
]


def decisions_by_id(text: str) -> dict[str, dict[str, str]]:
    return {r["return_id"]: r for r in parse_csv(text)}


def test_a_batch_decides_good_lines_and_reports_bad_ones_with_line_numbers(shop, tmp_path):
    batch = write_batch(tmp_path / "batch.csv", LINES)
    proc = shop.run("returns", "process", str(batch))
    assert proc.code == 3, proc.stderr
    got = decisions_by_id(proc.stdout)
    assert {k: (v["decision"], v["code"]) for k, v in got.items()} == {
        "R1": ("approved", "within_policy"),
        "R2": ("approved", "within_policy"),
        "R3": ("rejected", "order_cancelled"),
        "R4": ("rejected", "order_not_found"),
        "R5": ("rejected", "quantity_exceeded"),
        "R7": ("rejected", "not_shipped"),
    }
    # MUG line 3000 + TOWEL 999 = 3999; the 1000 discount splits 750 / 250 (largest remainder).
    assert got["R1"]["refund_minor"] == "750"  # 1000 − 250 (one third of the MUG line's 750)
    assert got["R2"]["refund_minor"] == str(999 - 250 + 650)  # shop's fault: shipping back too
    assert "requested 10 days after delivery" in got["R1"]["note"]
    assert "batch.csv:7: quantity: 'two' is not a whole number" in proc.stderr
    assert "batch.csv:9: requested_at:" in proc.stderr
    assert "batch.csv:10: resolution: 'swap' is not a resolution" in proc.stderr
    rows = shop.query("SELECT return_ref, decision, refund_minor FROM return_lines ORDER BY id")
    assert [r["return_ref"] for r in rows] == ["R1", "R2", "R3", "R4", "R5", "R7"]
    assert shop.query("SELECT COUNT(*) AS n FROM rejects WHERE job = 'returns'")[0]["n"] == 3
    export = shop.root / "exports" / "refunds-batch1-shopify.csv"
    exported = parse_csv(export.read_text(encoding="utf-8"))
    assert [(r["return_id"], r["refund_minor"]) for r in exported] == [
        ("R1", "750"),
        ("R2", "1399"),
    ]


def test_the_same_file_again_decides_nothing_and_says_so(shop, tmp_path):
    batch = write_batch(tmp_path / "batch.csv", LINES[:4])
    first = shop.run("returns", "process", str(batch))
    assert first.code == 0, first.stderr
    outbox_before = shop.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"]
    copy = tmp_path / "renamed.csv"
    shutil.copy(batch, copy)  # the content decides, not the name
    again = shop.run("returns", "process", str(copy), "--out", str(tmp_path / "again.csv"))
    assert again.code == 0, again.stderr
    assert "already processed as batch 1" in again.stderr
    assert "nothing new decided" in again.stderr
    assert shop.query("SELECT COUNT(*) AS n FROM return_lines")[0]["n"] == 4
    assert shop.query("SELECT COUNT(*) AS n FROM return_batches")[0]["n"] == 1
    assert shop.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == outbox_before
    # The decisions file of a re-run is the batch's decisions, unchanged.
    assert decisions_by_id((tmp_path / "again.csv").read_text()) == decisions_by_id(first.stdout)


def test_dry_run_decides_but_writes_nothing(shop, tmp_path):
    batch = write_batch(tmp_path / "batch.csv", LINES[:5])
    out = tmp_path / "decisions.csv"
    proc = shop.run("returns", "process", str(batch), "--dry-run", "--out", str(out))
    assert proc.code == 0, proc.stderr
    got = decisions_by_id(proc.stdout)
    assert got["R1"]["decision"] == "approved" and got["R5"]["code"] == "quantity_exceeded"
    for table in ("return_batches", "return_lines", "outbox", "rejects"):
        assert shop.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] == 0, table
    assert not out.exists()
    assert not any((shop.root / "exports").iterdir())
    assert not any((shop.root / "outbox").rglob("*.eml"))
    assert "dry run" in proc.stderr


def test_dry_run_counts_earlier_lines_of_the_same_batch(shop, tmp_path):
    batch = write_batch(
        tmp_path / "batch.csv",
        [
            "A1,#1001,MUG,2,changed_mind,,2024-04-20T10:00:00Z,refund,",
            "A2,#1001,MUG,2,changed_mind,,2024-04-20T10:00:00Z,refund,",
        ],
    )
    dry = decisions_by_id(shop.run("returns", "process", str(batch), "--dry-run").stdout)
    real = decisions_by_id(shop.run("returns", "process", str(batch)).stdout)
    assert dry["A2"]["code"] == real["A2"]["code"] == "quantity_exceeded"
    assert {k: v["refund_minor"] for k, v in dry.items()} == {
        k: v["refund_minor"] for k, v in real.items()
    }


def test_partial_returns_across_two_batches_add_up_to_the_cent(shop, tmp_path):
    one = write_batch(
        tmp_path / "one.csv", ["P1,#1001,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,"]
    )
    two = write_batch(
        tmp_path / "two.csv",
        [
            "P2,#1001,MUG,2,changed_mind,,2024-04-25T10:00:00Z,refund,",
            "P3,#1001,TOWEL,1,changed_mind,,2024-04-25T10:00:00Z,store_credit,",
        ],
    )
    three = write_batch(
        tmp_path / "three.csv", ["P4,#1001,MUG,1,changed_mind,,2024-04-26T10:00:00Z,refund,"]
    )
    assert shop.run("returns", "process", str(one)).code == 0
    assert shop.run("returns", "process", str(two)).code == 0
    late = decisions_by_id(shop.run("returns", "process", str(three)).stdout)
    assert late["P4"]["code"] == "quantity_exceeded"
    assert "3 bought and 3 already returned" in late["P4"]["note"]
    rows = shop.query(
        "SELECT return_ref, item_minor, discount_minor, refund_minor FROM return_lines "
        "WHERE decision = 'approved' ORDER BY id"
    )
    assert [r["return_ref"] for r in rows] == ["P1", "P2", "P3"]
    assert sum(r["item_minor"] for r in rows) == 3 * 1000 + 999
    assert sum(r["discount_minor"] for r in rows) == 1000  # the whole order discount, exactly
    assert sum(r["refund_minor"] for r in rows) == 3999 - 1000  # changed mind: no shipping


def test_a_return_id_decided_in_an_earlier_batch_is_never_decided_again(shop, tmp_path):
    first = write_batch(tmp_path / "a.csv", LINES[:1])
    second = write_batch(
        tmp_path / "b.csv",
        [LINES[0], "R10,#1001,MUG,1,changed_mind,,2024-04-22T10:00:00Z,refund,"],
    )
    assert shop.run("returns", "process", str(first)).code == 0
    proc = shop.run("returns", "process", str(second))
    assert proc.code == 0, proc.stderr
    got = decisions_by_id(proc.stdout)
    assert got["R1"]["code"] == "already_decided"
    assert got["R1"]["refund_minor"] == "0"
    assert got["R1"]["batch_id"] == "1"
    assert got["R10"]["decision"] == "approved"
    rows = shop.query("SELECT return_ref, batch_id FROM return_lines ORDER BY id")
    assert rows == [{"return_ref": "R1", "batch_id": 1}, {"return_ref": "R10", "batch_id": 2}]
    notices = shop.query("SELECT dedupe_key FROM outbox ORDER BY id")
    assert [n["dedupe_key"] for n in notices] == ["return_notice:R1", "return_notice:R10"]


def test_a_return_id_twice_in_one_file_is_a_bad_line(shop, tmp_path):
    batch = write_batch(tmp_path / "dup.csv", [LINES[0], LINES[0].replace(",1,", ",2,", 1)])
    proc = shop.run("returns", "process", str(batch))
    assert proc.code == 3
    assert "dup.csv:3: return_id: return id R1 already appears on line 2" in proc.stderr
    assert len(parse_csv(proc.stdout)) == 1


def test_a_file_without_a_required_column_fails_naming_it(shop, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("return_id,order_number,quantity\nR1,#1001,1\n", encoding="utf-8")
    proc = shop.run("returns", "process", str(bad))
    assert proc.code == 2
    assert "bad.csv:1: missing column sku" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = shop.run("returns", "process", str(tmp_path / "nope.csv"))
    assert missing.code == 2 and "Traceback" not in missing.stderr


def test_stdin_and_json_output(shop, tmp_path):
    text = "return_id,order_number,sku,quantity\nS1,1001,MUG,1\n"  # '#' is optional
    proc = shop.run("returns", "process", "-", "--json", input=text)
    assert proc.code == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["return_id"] == "S1" and rows[0]["decision"] == "approved"
    assert rows[0]["refund_minor"] == 750
    assert shop.query("SELECT file_name FROM return_batches")[0]["file_name"] == "<stdin>"


def test_notices_are_queued_once_per_decision_in_the_customers_language(shop, tmp_path):
    batch = write_batch(tmp_path / "batch.csv", LINES[:4])
    assert shop.run("returns", "process", str(batch)).code == 0
    rows = shop.query(
        "SELECT o.dedupe_key, o.kind, o.rule, o.recipient, o.locale, o.subject, o.is_marketing, "
        "o.state, r.return_ref FROM outbox o JOIN return_lines r ON r.outbox_id = o.id "
        "ORDER BY o.id"
    )
    assert [(r["return_ref"], r["rule"], r["locale"]) for r in rows] == [
        ("R1", "return_approved", "en"),
        ("R2", "return_approved", "en"),
        ("R3", "return_rejected", "zh-CN"),
    ]  # R4 names no known order: nobody to tell
    assert all(r["kind"] == "return_notice" and r["is_marketing"] == 0 for r in rows)
    assert rows[0]["subject"] == "Your return R1 for order #1001 is approved"
    assert rows[2]["subject"].startswith("关于您的退货申请 R3")
    body = shop.query("SELECT body_text FROM outbox WHERE dedupe_key = 'return_notice:R1'")[0]
    assert "$7.50" in body["body_text"]
    # Delivered by the outbox's own channel: one .eml per notice in the outbox folder.
    sent = shop.run("followups", "send")
    assert sent.code in (0, 3), sent.stderr
    assert len(list((shop.root / "outbox").rglob("*.eml"))) == 3


def test_a_taobao_refund_export_in_gbk_is_read_and_exported_back_in_gb18030(shop, tmp_path):
    raw = (FIXTURES / "taobao_refunds_gbk.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # the fixture really is GBK
    shop.env["CSOPS_NOW"] = "2026-03-20T00:00:00Z"
    conn = open_db(shop.db_path)
    conn.execute("BEGIN IMMEDIATE")
    add_order(
        conn,
        "3861220471234567890",
        [(None, 2, 6400)],
        platform="taobao",
        currency="CNY",
        email="buyer1@example.cn",
        delivered_at=None,
        shipped_at="2026-03-02T02:00:00Z",
        item_names=["亚麻餐巾套装 鼠尾草绿"],
    )
    add_order(
        conn,
        "3861220471234567891",
        [("MUG-DAWN", 1, 5990), ("NAPKIN", 1, 1000)],
        platform="taobao",
        currency="CNY",
        shipping=1000,
        status="shipped",
        delivered_at=None,
        shipped_at="2026-03-03T02:00:00Z",
        item_names=["陶瓷马克杯「晨光」，350ml", "餐巾"],
    )
    conn.execute("COMMIT")
    conn.close()
    src = tmp_path / "ExportRefundList202603201200.csv"
    src.write_bytes(raw)
    proc = shop.run("returns", "process", str(src), "--from", "taobao-refunds")
    assert proc.code == 3, proc.stderr
    got = decisions_by_id(proc.stdout)
    assert set(got) == {"20260310001", "20260310002", "20260310004"}
    first = got["20260310001"]
    # No SKU and no quantity in a Taobao refund: the whole (single-item) line comes back.
    assert (first["decision"], first["quantity"], first["refund_minor"]) == (
        "approved",
        "2",
        "12800",
    )
    second = got["20260310002"]  # 收到商品破损 → damaged → reviewed by a person
    assert (second["sku"], second["decision"], second["code"]) == (
        "MUG-DAWN",
        "review",
        "reason_needs_review",
    )
    assert got["20260310004"]["code"] == "order_not_found"
    assert "refund 20260310003 skipped: closed by the buyer" in proc.stderr
    assert ":6: 退款的申请时间: '昨天下午' is not a date and time" in proc.stderr
    stored = shop.query("SELECT reason_text FROM return_lines WHERE return_ref = '20260310002'")
    assert stored[0]["reason_text"] == "收到商品破损 / =cmd|' /C calc'!A0"  # raw in the DB
    export = shop.root / "exports" / "refunds-batch1-taobao.csv"
    rows = parse_csv(export.read_bytes().decode("gb18030"))
    assert [(r["order_number"], r["refund_amount"], r["currency"]) for r in rows] == [
        ("3861220471234567890", "128.00", "CNY")
    ]


def test_an_inch_mark_in_a_reason_text_costs_no_line(shop, tmp_path):
    """``12" too small`` in an unquoted cell opens no quoted field: each line is decided on its
    own (before, every line up to the next odd number of quotes was swallowed as one record)."""
    lines = [
        'R1,#1001,MUG,1,changed_mind,frame 12" too small,2024-04-20T10:00:00Z,refund,unopened',
        "R3,#1002,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
        "R4,#9999,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
        'R2,#1001,TOWEL,1,wrong_item,blue 9" not red,2024-04-20T10:00:00Z,refund,',
    ]
    proc = shop.run("returns", "process", str(write_batch(tmp_path / "batch.csv", lines)))
    got = decisions_by_id(proc.stdout)
    assert sorted(got) == ["R1", "R2", "R3", "R4"], proc.stderr
    assert got["R1"]["decision"] == "approved" and got["R3"]["code"] == "order_cancelled"


def test_a_reason_over_two_lines_whose_last_holds_an_inch_mark_is_one_line(shop, tmp_path):
    lines = [
        'R1,#1001,MUG,1,damaged,"cracked\nall over",2024-04-20T10:00:00Z,refund,12" box',
        "R3,#1002,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
    ]
    proc = shop.run("returns", "process", str(write_batch(tmp_path / "batch.csv", lines)))
    got = decisions_by_id(proc.stdout)
    assert sorted(got) == ["R1", "R3"], proc.stderr
    assert "bad lines" not in proc.stderr and proc.code == 0, proc.stderr


def test_a_line_after_a_stray_quote_whose_reason_spans_lines_is_still_decided(shop, tmp_path):
    # R1's stray quote closes at R2's last cell, which starts with a line break: read alone,
    # R2's first line is no row, read on it is one
    lines = [
        'R1,#1001,MUG,1,"oops,,2024-04-20T10:00:00Z,refund,',
        'R2,#1001,TOWEL,1,wrong_item,sent blue,2024-04-20T10:00:00Z,refund,"\nopened"',
        "R3,#1002,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
    ]
    proc = shop.run("returns", "process", str(write_batch(tmp_path / "batch.csv", lines)))
    got = decisions_by_id(proc.stdout)
    assert sorted(got) == ["R2", "R3"], proc.stderr
    assert "batch.csv:2:" in proc.stderr
