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
