"""`csops returns review` and `returns decide`: a person settles the lines the policy sent to
review; real workspace and SQLite file, csops as a subprocess."""

from __future__ import annotations

import json

import pytest
from returns_helpers import add_customer, add_order, open_db, parse_csv, write_batch

NOW = "2024-05-01T10:00:00Z"
LINES = [
    "R1,#2001,MUG,1,damaged,cracked handle,2024-04-20T10:00:00Z,refund,",
    "R2,#2001,TOWEL,1,defective,frayed,2024-04-21T10:00:00Z,refund,",
    "R3,#2001,MUG,1,changed_mind,,2024-04-22T10:00:00Z,refund,unopened",
]


@pytest.fixture
def reviewed(workspace, tmp_path):
    """One delivered order; a batch with two lines in review (damaged, defective), one approved."""
    workspace.env["CSOPS_NOW"] = NOW
    conn = open_db(workspace.db_path)
    conn.execute("BEGIN IMMEDIATE")
    ana = add_customer(conn, "ana@example.org", name="Ana Ribeiro", locale="en")
    add_order(conn, "#2001", [("MUG", 2, 1500), ("TOWEL", 1, 1200)], shipping=500,
              customer_id=ana, email="ana@example.org")  # fmt: skip
    conn.execute("COMMIT")
    conn.close()
    batch = write_batch(tmp_path / "batch.csv", LINES)
    r = workspace.run("returns", "process", str(batch))
    assert r.code == 0, r.stderr
    return workspace


def line(ws, ref: str) -> dict:
    return ws.query("SELECT * FROM return_lines WHERE return_ref = ?", (ref,))[0]


def test_review_lists_the_lines_waiting_for_a_person_with_the_proposed_refund(reviewed):
    r = reviewed.run("returns", "review", "--json")
    assert r.code == 0, r.stderr
    rows = r.json()
    assert [(x["return_id"], x["code"]) for x in rows] == [
        ("R1", "reason_needs_review"),
        ("R2", "reason_needs_review"),
    ]
    # proposed: the mug (15.00) and, the seller's fault, the order's shipping (5.00)
    assert rows[0]["decision"] == "review" and rows[0]["refund"] == "20.00"
    assert "review=2" in r.stderr


def test_approving_records_the_person_queues_the_notice_and_rewrites_the_refund_file(reviewed):
    before = line(reviewed, "R1")
    r = reviewed.run("returns", "decide", "R1", "--approve", "--note", "photos show damage")
    assert r.code == 0, r.stderr
    after = line(reviewed, "R1")
    assert after["decision"] == "approved" and after["decision_code"] == "approved_by_person"
    assert after["decision_note"] == "photos show damage"
    assert after["refund_minor"] == before["refund_minor"] == 2000  # exactly as proposed
    assert after["decided_at"] == NOW
    notices = reviewed.query(
        "SELECT dedupe_key, rule, subject FROM outbox WHERE kind = 'return_notice' "
        "AND dedupe_key LIKE 'return_notice:R1%' ORDER BY id"
    )
    assert [n["dedupe_key"] for n in notices] == ["return_notice:R1", "return_notice:R1:approved"]
    assert [n["rule"] for n in notices] == ["return_review", "return_approved"]
    assert after["outbox_id"] is not None
    files = list((reviewed.root / "exports").glob("refunds-batch*-shopify.csv"))
    assert len(files) == 1
    exported = {row["return_id"]: row for row in parse_csv(files[0].read_text("utf-8"))}
    assert exported["R1"]["refund_minor"] == "2000" and "R3" in exported
    assert "R2" not in exported  # still in review
    assert [x["return_id"] for x in reviewed.run("returns", "review", "--json").json()] == ["R2"]


def test_rejecting_needs_a_note_and_zeroes_the_money(reviewed):
    r = reviewed.run("returns", "decide", "R2", "--reject")
    assert r.code == 2 and "--note" in r.stderr and "Traceback" not in r.stderr
    assert line(reviewed, "R2")["decision"] == "review"
    r = reviewed.run("returns", "decide", "R2", "--reject", "--note", "worn, not defective")
    assert r.code == 0, r.stderr
    after = line(reviewed, "R2")
    assert (after["decision"], after["decision_code"]) == ("rejected", "rejected_by_person")
    assert after["refund_minor"] == after["item_minor"] == after["shipping_refund_minor"] == 0
    body = reviewed.query(
        "SELECT body_text FROM outbox WHERE dedupe_key = 'return_notice:R2:rejected'"
    )[0]["body_text"]
    assert "worn, not defective" in body


def test_a_decided_line_an_unknown_id_and_a_missing_choice_are_one_line_errors(reviewed):
    r = reviewed.run("returns", "decide", "R3", "--approve")
    assert r.code == 2 and "already decided: approved" in r.stderr
    r = reviewed.run("returns", "decide", "R404", "--approve")
    assert r.code == 1 and "no return line 'R404'" in r.stderr
    r = reviewed.run("returns", "decide", "R1")
    assert r.code == 2 and "--approve or --reject" in r.stderr and "Traceback" not in r.stderr
    reviewed.run("returns", "decide", "R1", "--approve")
    again = reviewed.run("returns", "decide", "R1", "--reject", "--note", "changed my mind")
    assert again.code == 2 and "already decided" in again.stderr
    assert line(reviewed, "R1")["decision"] == "approved"


def test_dry_run_shows_the_decision_and_changes_nothing(reviewed):
    before = reviewed.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"]
    r = reviewed.run("returns", "decide", "R1", "--approve", "--dry-run", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)[0]["decision"] == "approved"
    assert line(reviewed, "R1")["decision"] == "review"
    assert reviewed.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == before


def test_send_hands_the_notice_over_at_once(reviewed):
    r = reviewed.run("returns", "decide", "R1", "--approve", "--send")
    assert r.code == 0, r.stderr
    state = reviewed.query(
        "SELECT state FROM outbox WHERE dedupe_key = 'return_notice:R1:approved'"
    )[0]["state"]
    assert state == "sent"
    assert len(list((reviewed.root / "outbox").rglob("*.eml"))) >= 1


def test_a_person_may_approve_a_smaller_amount_kept_back_as_a_fee(reviewed):
    gross = line(reviewed, "R1")["refund_minor"]  # 2000: no fee in the proposal
    for bad, why in (
        ("25.00", "from 0 to 20.00"),
        ("1.234", "more decimals than USD allows"),
        ("-1", "from 0 to 20.00"),
    ):
        r = reviewed.run("returns", "decide", "R1", "--approve", "--refund", bad)
        assert r.code == 2 and why in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
    r = reviewed.run("returns", "decide", "R2", "--reject", "--refund", "1", "--note", "x")
    assert r.code == 2 and "--refund goes with --approve" in r.stderr
    assert line(reviewed, "R1")["decision"] == "review"
    r = reviewed.run("returns", "decide", "R1", "--approve", "--refund", "12.50", "--note", "used")
    assert r.code == 0, r.stderr
    after = line(reviewed, "R1")
    assert (after["refund_minor"], after["fee_minor"]) == (1250, gross - 1250)
    parts = after["item_minor"] - after["discount_minor"] + after["tax_minor"]
    assert parts + after["shipping_refund_minor"] - after["fee_minor"] == 1250  # adds up exactly
    exported = parse_csv(next((reviewed.root / "exports").glob("refunds-*.csv")).read_text())
    assert {r["return_id"]: r["refund_minor"] for r in exported}["R1"] == "1250"
