"""A small hand-computed KPI fixture, written straight into the real SQLite file.

Other jobs fill orders, outbox, surveys, return_lines and conversations; here rows are inserted
with plain SQL following csops/migrations.py so every KPI can be worked out by hand. The shop
timezone is Asia/Shanghai (UTC+8, no DST): day 2024-04-18 is [2024-04-17T16:00Z, 2024-04-18T16:00Z).
EXPECTED holds each KPI of that day computed by hand (see the comments beside the rows).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

DAY = "2024-04-18"
NOW = "2024-04-20T02:00:00Z"

# (key, email, status, currency, total, refunded, created_at, cancelled_at, refunded_at)
ORDERS = [
    ("o1", "a@x.test", "delivered", "CNY", 10000, 0, "2024-04-17T16:00:00Z", None, None),
    ("o2", "b@x.test", "partially_refunded", "CNY", 25050, 5000, "2024-04-18T03:00:00Z", None,
     "2024-04-18T10:00:00Z"),
    ("o3", "c@x.test", "cancelled", "CNY", 8000, 0, "2024-04-18T04:00:00Z",
     "2024-04-18T05:00:00Z", None),
    ("o4", "d@x.test", "paid", "USD", 4999, 0, "2024-04-18T15:59:59Z", None, None),
    ("o5", "A@X.test", "shipped", "CNY", 12000, 0, "2024-04-18T08:00:00Z", None, None),
    ("o6", None, "pending", "CNY", 3000, 0, "2024-04-18T09:00:00Z", None, None),
    # not on the day: the next day's first second, the previous day's last second
    ("next", "e@x.test", "paid", "CNY", 99999, 0, "2024-04-18T16:00:00Z", None, None),
    ("prev", "b@x.test", "delivered", "CNY", 77777, 0, "2024-04-17T15:59:59Z", None, None),
    # placed earlier, refunded on the day
    ("early", "g@x.test", "partially_refunded", "CNY", 9000, 3000, "2024-04-10T02:00:00Z", None,
     "2024-04-18T12:00:00Z"),
    # repurchase window is 2024-01-20..2024-04-18 (local): jan25 is in, jan10 is out
    ("jan25", "a@x.test", "completed", "CNY", 1000, 0, "2024-01-25T02:00:00Z", None, None),
    ("jan10", "f@x.test", "completed", "CNY", 1000, 0, "2024-01-10T02:00:00Z", None, None),
]  # fmt: skip

# (order key, decision, requested_at, decided_at)
RETURN_LINES = [
    ("o1", "approved", "2024-04-17T20:00:00Z", "2024-04-18T02:00:00Z"),  # 6 h
    ("o5", "rejected", "2024-04-16T02:00:00Z", "2024-04-18T02:00:00Z"),  # 48 h
    ("o2", "review", "2024-04-18T04:00:00Z", "2024-04-18T05:00:00Z"),  # review: not a decision
    ("early", "approved", "2024-04-15T00:00:00Z", "2024-04-18T00:00:00Z"),  # 72 h
    ("early", "approved", "2024-04-15T00:00:00Z", "2024-04-18T16:30:00Z"),  # decided next day
]

# (kind, score, sent_at, responded_at)
SURVEYS = [
    ("csat", 5, "2024-04-16T02:00:00Z", "2024-04-18T01:00:00Z"),
    ("csat", 4, "2024-04-18T01:00:00Z", "2024-04-18T02:00:00Z"),
    ("csat", 2, "2024-04-18T01:00:00Z", "2024-04-18T03:00:00Z"),
    ("csat", 5, "2024-04-17T02:00:00Z", "2024-04-18T04:00:00Z"),
    ("csat", 1, "2024-04-18T02:00:00Z", "2024-04-18T17:00:00Z"),  # answered the next day
    ("csat", None, "2024-04-18T02:00:00Z", None),  # not answered
    ("nps", 10, "2024-04-15T02:00:00Z", "2024-04-18T01:00:00Z"),
    ("nps", 9, "2024-04-15T02:00:00Z", "2024-04-18T02:00:00Z"),
    ("nps", 9, "2024-04-15T02:00:00Z", "2024-04-18T03:00:00Z"),
    ("nps", 8, "2024-04-15T02:00:00Z", "2024-04-18T04:00:00Z"),
    ("nps", 6, "2024-04-15T02:00:00Z", "2024-04-18T05:00:00Z"),
    ("nps", 3, "2024-04-15T02:00:00Z", "2024-04-18T06:00:00Z"),
    ("nps", None, "2024-04-18T03:00:00Z", None),  # sent on the day, not answered
]

# (kind, state, queued_at, sent_at)
OUTBOX = [
    ("followup", "sent", "2024-04-18T01:00:00Z", "2024-04-18T01:05:00Z"),
    ("followup", "sent", "2024-04-17T10:00:00Z", "2024-04-18T00:30:00Z"),
    ("followup", "failed", "2024-04-18T02:00:00Z", None),
    ("followup", "queued", "2024-04-18T03:00:00Z", None),
    ("alert", "sent", "2024-04-18T04:00:00Z", "2024-04-18T04:00:05Z"),  # alerts are not follow-ups
    ("csat", "failed", "2024-04-18T04:00:00Z", None),  # nor are survey invitations
    ("followup", "sent", "2024-04-18T15:00:00Z", "2024-04-18T16:10:00Z"),  # sent the next day
]

# (kind, created_at, first_response_at, resolved_at)
CONVERSATIONS = [
    ("pre_sale", "2024-04-18T01:00:00Z", "2024-04-18T01:01:00Z", "2024-04-18T02:00:00Z"),  # 60 s
    ("after_sale", "2024-04-18T02:00:00Z", "2024-04-18T02:05:00Z", "2024-04-19T02:00:00Z"),  # 300
    ("complaint", "2024-04-18T03:00:00Z", "2024-04-18T03:05:01Z", "2024-04-18T05:00:00Z"),  # 301
    ("complaint", "2024-04-18T04:00:00Z", "2024-04-18T06:00:00Z", None),  # 7200 s
    ("after_sale", "2024-04-18T05:00:00Z", None, None),  # never answered
    ("after_sale", "2024-04-18T06:00:00Z", "2024-04-19T07:00:00Z", None),  # 90000 s
    ("pre_sale", "2024-04-18T07:00:00Z", "2024-04-18T07:10:00Z", "2024-04-18T07:30:00Z"),  # 600
    ("pre_sale", "2024-04-17T10:00:00Z", "2024-04-17T10:01:00Z", "2024-04-18T10:00:00Z"),  # prev
    ("pre_sale", "2024-04-18T08:00:00Z", "2024-04-18T07:00:00Z", None),  # response before ask
]

# metric -> (value, numerator, denominator, sample_size), worked out by hand from the rows above
EXPECTED: dict[str, tuple] = {
    "orders": (6, 6, None, 6),  # o1..o6
    "gmv.CNY": (50050, 50050, None, 4),  # o1 10000 + o2 25050 + o5 12000 + o6 3000 (o3 cancelled)
    "gmv.USD": (4999, 4999, None, 1),
    "aov.CNY": (12512.5, 50050, 4, 4),
    "aov.USD": (4999, 4999, 1, 1),
    "cancellation_rate": (100 / 6, 1, 6, 6),
    "return_rate": (40.0, 2, 5, 5),  # o1 approved, o2 review; o5 rejected does not count
    "refund.CNY": (8000, 8000, None, 2),  # o2 5000 + early 3000 (refunded_at on the day)
    "refund_rate": (20.0, 1, 5, 5),  # o2 of o1,o2,o4,o5,o6
    "return_decision.median_hours": (48.0, None, None, 3),  # 6, 48, 72
    "csat.avg": (4.0, 16, 4, 4),  # 5 + 4 + 2 + 5
    "csat.satisfied_pct": (75.0, 3, 4, 4),
    "nps": (100 / 6, 1, 6, 6),  # promoters 10,9,9; passives 8; detractors 6,3
    "nps.promoters": (3, 3, 6, 6),
    "nps.passives": (1, 1, 6, 6),
    "nps.detractors": (2, 2, 6, 6),
    "survey_response_rate": (60.0, 3, 5, 5),  # sent on the day: csat 4,2,1,None; nps None
    "followups.sent": (2, 2, None, 2),
    "followups.failed": (1, 1, 4, 4),  # queued on the day (alert excluded): 4, one failed
    "repurchase_rate": (50.0, 2, 4, 4),  # a (o1,o5,jan25), b (o2,prev) of a,b,d,g
    "complaint_rate": (100 / 3, 2, 6, 6),  # 2 complaints / 6 orders
    "frt.median_minutes": (450.5 / 60, None, None, 6),  # 60,300,301,600,7200,90000 s
    "frt.p90_minutes": (1500.0, None, None, 6),  # ceil(0.9*6)=6th: 90000 s
    "frt.within_5m_pct": (200 / 7, 2, 7, 7),  # 60 s and 300 s of 7 valid conversations
    "after_sales.answered_24h_pct": (60.0, 3, 5, 5),  # after_sale x3 + complaint x2
    "resolution.median_hours": (1.5, None, None, 4),  # 1, 2, 0.5 (day) and 24 (prev)
}

# A few trailing values, by hand: 7 days are 2024-04-12..18, 30 days are 2024-03-20..04-18.
EXPECTED_TRAILING: dict[str, tuple] = {
    "orders.7d": (7, 7, None, 7),  # + prev
    "orders.30d": (8, 8, None, 8),  # + early
    "gmv.CNY.7d": (127827, 127827, None, 5),  # + prev 77777
    "gmv.USD.30d": (4999, 4999, None, 1),
}


def insert_fixture(db_path: Path) -> None:
    """Write the rows above into the workspace database (one transaction)."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        with conn:
            ids = {}
            for n, (
                key,
                email,
                status,
                cur,
                total,
                refunded,
                created,
                cancelled,
                refunded_at,
            ) in enumerate(ORDERS, 1):
                cur_ = conn.execute(
                    "INSERT INTO orders (platform, external_id, number, email, status, currency,"
                    " total_minor, refunded_minor, created_at, cancelled_at, refunded_at,"
                    " imported_at, updated_at) VALUES ('test', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " ?, ?)",
                    (key, f"#{1000 + n}", email, status, cur, total, refunded, created, cancelled,
                     refunded_at, "2024-04-19T00:00:00Z", "2024-04-19T00:00:00Z"),
                )  # fmt: skip
                ids[key] = cur_.lastrowid
            batch = conn.execute(
                "INSERT INTO return_batches (file_name, file_sha256, format, processed_at)"
                " VALUES ('r.csv', 'sha', 'csv', '2024-04-18T02:00:00Z')"
            ).lastrowid
            for n, (key, decision, requested, decided) in enumerate(RETURN_LINES, 1):
                conn.execute(
                    "INSERT INTO return_lines (batch_id, return_ref, order_id, quantity,"
                    " requested_at, decision, decision_code, decided_at)"
                    " VALUES (?, ?, ?, 1, ?, ?, 'test', ?)",
                    (batch, f"R-{n}", ids[key], requested, decision, decided),
                )
            for kind, score, sent, responded in SURVEYS:
                conn.execute(
                    "INSERT INTO surveys (kind, sent_at, responded_at, score, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (kind, sent, responded, score, responded or sent),
                )
            for n, (kind, state, queued, sent) in enumerate(OUTBOX, 1):
                conn.execute(
                    "INSERT INTO outbox (dedupe_key, message_id, kind, channel, recipient, state,"
                    " queued_at, sent_at, updated_at) VALUES (?, ?, ?, 'mail', 'r@x.test', ?, ?,"
                    " ?, ?)",
                    (f"k{n}", f"<m{n}@x>", kind, state, queued, sent, sent or queued),
                )
            for n, (kind, created, first, resolved) in enumerate(CONVERSATIONS, 1):
                conn.execute(
                    "INSERT INTO conversations (source, external_id, kind, created_at,"
                    " first_response_at, resolved_at, imported_at)"
                    " VALUES ('csv', ?, ?, ?, ?, ?, '2024-04-19T00:00:00Z')",
                    (f"C-{n}", kind, created, first, resolved),
                )
    finally:
        conn.close()


def env_at(instant: str) -> dict[str, str]:
    return {"CSOPS_NOW": instant}
