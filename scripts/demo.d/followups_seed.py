"""Demo only: a few orders whose dates line up with the demo clock, so follow-ups are due.

Inserted as platform "demo" (INSERT OR IGNORE on (platform, external_id) and on e-mail), so it
never collides with orders the import step brought in and re-running it changes nothing.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from csops import db
from csops.config import load_config
from csops.timeutil import iso, now

config = load_config()
conn = db.connect(config.db_path)
t = now()


def ago(**kw: float) -> str:
    return iso(t - timedelta(**kw))


customers = [
    ("li.na@demo-customers.example", "李娜", "zh-CN", "1992-04-20"),
    ("tom.h@demo-customers.example", "Tom Hughes", "en", None),
    ("wang.w@demo-customers.example", "王伟", None, None),
    ("eve@demo-customers.example", "<b>Eve</b> {{ 7*7 }}", "en", None),
]
orders = [
    # (ext id, customer index, status, total, currency, created, shipped, delivered, cancelled)
    ("D-1", 0, "shipped", 25900, "CNY", ago(days=2), ago(hours=6), None, None),
    ("D-2", 1, "delivered", 8450, "USD", ago(days=9), ago(days=7), ago(days=3, hours=2), None),
    ("D-3", 2, "cancelled", 12900, "CNY", ago(days=1), None, None, ago(hours=3)),
    ("D-4", 3, "delivered", 4200, "USD", ago(days=15), ago(days=12), ago(days=7, hours=5), None),
]
with db.write(conn):
    for email, name, locale, birthday in customers:
        conn.execute(
            "INSERT OR IGNORE INTO customers (email, name, locale, birthday, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (email, name, locale, birthday, iso(t), iso(t)),
        )
    for ext, ci, status, total, cur, created, shipped, delivered, cancelled in orders:
        email = customers[ci][0]
        cid = conn.execute("SELECT id FROM customers WHERE email = ?", (email,)).fetchone()[0]
        cur_ = conn.execute(
            "INSERT OR IGNORE INTO orders (platform, external_id, number, customer_id, email, "
            "status, currency, subtotal_minor, total_minor, created_at, paid_at, shipped_at, "
            "delivered_at, cancelled_at, source, imported_at, updated_at) "
            "VALUES ('demo', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'demo', ?, ?)",
            (ext, f"#{ext}", cid, email, status, cur, total, total, created, created, shipped,
             delivered, cancelled, iso(t), iso(t)),
        )  # fmt: skip
        if cur_.rowcount:
            oid = cur_.lastrowid
            conn.execute(
                "INSERT INTO order_items (order_id, line_no, sku, name, quantity, "
                "unit_price_minor, total_minor) VALUES (?, 1, 'DEMO-SKU', 'Demo item', 1, ?, ?)",
                (oid, total, total),
            )
conn.close()
print(f"demo orders ready ({len(orders)} demo orders)", file=sys.stderr)
