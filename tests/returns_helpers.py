"""Helpers for the returns tests: orders written straight into the real SQLite file by SQL that
follows the schema (csops/migrations.py), as the import job would leave them."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

NOW = "2024-05-01T10:00:00Z"
GENERIC_HEADER = (
    "return_id,order_number,sku,quantity,reason_code,reason_text,requested_at,resolution,condition"
)


def add_customer(
    conn: sqlite3.Connection, email: str, *, name: str = "Ana", locale: str | None = "en"
) -> int:
    cur = conn.execute(
        "INSERT INTO customers (email, name, locale, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (email.lower(), name, locale, NOW, NOW),
    )
    return int(cur.lastrowid)


def add_order(
    conn: sqlite3.Connection,
    number: str,
    items: list[tuple[str, int, int]],
    *,
    platform: str = "shopify",
    external_id: str | None = None,
    status: str = "delivered",
    currency: str = "USD",
    shipping: int = 0,
    discount: int = 0,
    tax: int = 0,
    refunded: int = 0,
    delivered_at: str | None = "2024-04-10T15:00:00Z",
    shipped_at: str | None = "2024-04-07T15:00:00Z",
    cancelled_at: str | None = None,
    customer_id: int | None = None,
    email: str | None = None,
    tags: str | None = None,
    item_names: list[str] | None = None,
) -> int:
    """An order with ``items`` as (sku, quantity, unit price in minor units)."""
    subtotal = sum(q * p for _, q, p in items)
    total = subtotal - discount + shipping + tax
    cur = conn.execute(
        "INSERT INTO orders (platform, external_id, number, customer_id, email, status, currency, "
        "subtotal_minor, shipping_minor, tax_minor, discount_minor, total_minor, refunded_minor, "
        "tags, created_at, paid_at, shipped_at, delivered_at, cancelled_at, source, imported_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'test', ?)",
        (
            platform,
            external_id or number.lstrip("#"),
            number,
            customer_id,
            email,
            status,
            currency,
            subtotal,
            shipping,
            tax,
            discount,
            total,
            refunded,
            tags,
            "2024-04-01T10:00:00Z",
            "2024-04-01T10:00:00Z",
            shipped_at,
            delivered_at,
            cancelled_at,
            NOW,
        ),
    )
    order_id = int(cur.lastrowid)
    for n, (sku, qty, price) in enumerate(items, 1):
        name = item_names[n - 1] if item_names else f"Item {sku}"
        conn.execute(
            "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_minor, "
            "total_minor) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (order_id, n, sku, name, qty, price, qty * price),
        )
    return order_id


def open_db(path: Path) -> sqlite3.Connection:
    """The workspace database through csops's own connect (migrated, WAL), autocommit."""
    from csops import db

    return db.connect(path)


def write_batch(path: Path, lines: list[str], header: str = GENERIC_HEADER) -> Path:
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


REASONS = ["changed_mind", "wrong_size", "damaged", "defective", "not_as_described", "other"]


def seed_orders(conn: sqlite3.Connection, count: int, seed: int = 1) -> list[tuple[str, dict]]:
    """``count`` delivered orders over ~200 customers, with discounts, shipping and several SKUs;
    returns [(number, {sku: quantity})]."""
    import random

    rng = random.Random(seed)
    out = []
    conn.execute("BEGIN IMMEDIATE")
    customers = [add_customer(conn, f"c{i}@example.org") for i in range(max(1, count // 3))]
    for n in range(count):
        items = []
        for k in range(rng.randint(1, 3)):
            items.append((f"SKU-{n}-{k}", rng.randint(1, 4), rng.randint(199, 25_000)))
        subtotal = sum(q * p for _, q, p in items)
        day = rng.randint(1, 28)
        add_order(
            conn,
            f"#{5000 + n}",
            items,
            discount=rng.randint(0, subtotal // 5),
            shipping=rng.choice([0, 500, 999]),
            customer_id=rng.choice(customers),
            email=f"o{n}@example.org",
            delivered_at=f"2024-04-{day:02d}T12:00:00Z",
            shipped_at=f"2024-04-{day:02d}T00:00:00Z",
        )
        out.append((f"#{5000 + n}", {sku: q for sku, q, _ in items}))
    conn.execute("COMMIT")
    return out


def batch_lines(orders: list[tuple[str, dict]], count: int, seed: int = 2) -> list[str]:
    """``count`` generic CSV lines against ``orders``: mostly valid, some over quantity, some late,
    some unknown orders, so every kind of decision appears."""
    import random

    rng = random.Random(seed)
    lines = []
    for i in range(count):
        number, skus = rng.choice(orders)
        sku = rng.choice(sorted(skus))
        qty = rng.randint(1, 2)
        if i % 50 == 7:
            number = f"#NOPE{i}"
        day = rng.randint(20, 31)
        month = "04" if day <= 30 else "05"
        day = day if day <= 30 else rng.randint(1, 30)
        reason = rng.choice(REASONS)
        lines.append(
            f"R{i:06d},{number},{sku},{qty},{reason},,2024-{month}-{day:02d}T08:00:00Z,refund,"
        )
    return lines
