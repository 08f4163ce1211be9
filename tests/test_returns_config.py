"""The policy lives in `[returns]`: a shop's own rules change decisions; bad rules fail early."""

from __future__ import annotations

import pytest
from returns_helpers import add_customer, add_order, open_db, parse_csv, write_batch


@pytest.fixture
def shop(workspace):
    workspace.env["CSOPS_NOW"] = "2024-05-01T10:00:00Z"
    conn = open_db(workspace.db_path)
    conn.execute("BEGIN IMMEDIATE")
    cust = add_customer(conn, "ana@example.org")
    add_order(
        conn,
        "#1",
        [("MUG", 3, 2000), ("GIFT-BOX", 1, 500)],
        delivered_at="2024-04-10T15:00:00Z",
        customer_id=cust,
        email="ana@example.org",
    )
    add_order(conn, "#2", [("MUG", 1, 2000)], tags="VIP, Final-Sale", email="ana@example.org")
    conn.execute("COMMIT")
    conn.close()
    return workspace


def test_a_shops_own_policy_changes_the_decisions(shop, tmp_path):
    shop.set_config(
        """
[returns]
window_days = 14
non_returnable_skus = ["GIFT-*"]
return_label_fee = { USD = "4.99" }
review_conditions = ["used"]
review_reasons = []

[returns.reasons.changed_mind]
return_shipping = "customer"
restocking_fee_percent = 12.5
"""
    )
    batch = write_batch(
        tmp_path / "b.csv",
        [
            "A,#1,MUG,1,changed_mind,,2024-04-24T10:00:00Z,refund,",  # day 14: allowed
            "B,#1,MUG,1,changed_mind,,2024-04-25T10:00:00Z,refund,",  # day 15: too late
            "C,#1,GIFT-BOX,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
            "D,#2,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,",
            "E,#1,MUG,1,changed_mind,,2024-04-20T10:00:00Z,refund,used",
            "F,#1,MUG,1,damaged,,2024-04-20T10:00:00Z,refund,",  # not in the table: review
        ],
    )
    proc = shop.run("returns", "process", str(batch))
    assert proc.code == 0, proc.stderr
    got = {r["return_id"]: r for r in parse_csv(proc.stdout)}
    assert {k: r["code"] for k, r in got.items()} == {
        "A": "within_policy",
        "B": "window_expired",
        "C": "non_returnable",
        "D": "non_returnable",  # tags compare case-insensitively
        "E": "condition_needs_review",
        "F": "unknown_reason",
    }
    assert got["B"]["note"] == "requested 15 days after delivery; the window is 14 days"
    # 2000 − 12.5 % (250) − the 4.99 label = 12.51
    assert (got["A"]["fee_minor"], got["A"]["refund_minor"], got["A"]["refund"]) == (
        "749",
        "1251",
        "12.51",
    )


@pytest.mark.parametrize(
    "toml, named",
    [
        ('review_reasons = ["nope"]', "review_reasons: 'nope' is not in [returns.reasons]"),
        ("window_days = -1", "window_days must not be negative"),
        ('auto_approve_max_refund = { USD = "1.234" }', "auto_approve_max_refund.USD"),
        ('return_label_fee = { usd = "1" }', "'usd' is not a currency code"),
        ("windw_days = 30", "returns.windw_days: unknown key"),
        ('refund_shipping = "sometimes"', "returns.refund_shipping"),
        (
            "[returns.reasons.damaged]\nrestocking_fee_percent = 12.345",
            "invalid restocking_fee_percent 12.345",
        ),
    ],
    ids=[
        "review reason not in the table",
        "negative window",
        "amount too precise",
        "bad currency",
        "typo in a key",
        "unknown choice",
        "fee with 3 decimals",
    ],
)
def test_a_bad_policy_is_a_config_error_naming_the_key(shop, tmp_path, toml, named):
    if toml.startswith("[returns.reasons"):
        shop.set_config(toml)
    else:
        shop.set_config(f"[returns]\n{toml}")
    batch = write_batch(tmp_path / "b.csv", ["A,#1,MUG,1,changed_mind,,,refund,"])
    proc = shop.run("returns", "process", str(batch))
    assert proc.code == 2, proc.stderr
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unknown_notice_channel_or_a_broken_template_stops_before_any_decision(shop, tmp_path):
    batch = write_batch(tmp_path / "b.csv", ["A,#1,MUG,1,changed_mind,,,refund,"])
    shop.set_config('[returns]\nnotice_channel = "pigeon"')
    proc = shop.run("returns", "process", str(batch))
    assert proc.code == 2 and "notice_channel 'pigeon'" in proc.stderr
    shop.replace_config('notice_channel = "pigeon"', 'notice_channel = "outbox"')
    broken = shop.root / "templates" / "messages" / "return_rejected" / "en.txt"
    broken.write_text("{% if %}", encoding="utf-8")
    proc = shop.run("returns", "process", str(batch))
    assert proc.code == 2 and "return_rejected" in proc.stderr
    assert shop.query("SELECT COUNT(*) AS n FROM return_lines")[0]["n"] == 0
    doctor = shop.run("doctor", "--json")
    assert "template return_rejected" in doctor.stdout
