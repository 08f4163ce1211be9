"""Write normalized orders: batched upserts keyed by (platform, external_id), skipped if unchanged.

Each order carries a ``content_hash`` of everything we store about it; a re-import whose hash
matches costs one indexed lookup per batch and no write, so the same file twice changes nothing.
A changed order is updated in place and its ``order_items`` replaced. Customers are matched by
normalized e-mail, else phone, else the platform's buyer id, and created when new.

A batch is one short ``BEGIN IMMEDIATE`` transaction; an API source hands its cursor to
:meth:`OrderStore.flush` so the cursor lands in the same transaction as the page's rows: a
kill -9 leaves both or neither.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from csops import db as dbmod
from csops.importers.base import FieldError, GroupReject, PendingOrder, normalize_phone
from csops.model import Order

_ORDER_COLS = (
    "number, customer_id, email, status, currency, subtotal_minor, shipping_minor, tax_minor, "
    "discount_minor, total_minor, refunded_minor, tags, created_at, paid_at, shipped_at, "
    "delivered_at, cancelled_at, refunded_at, content_hash, source, raw_hash"
)
_INSERT_ORDER = (
    f"INSERT INTO orders (platform, external_id, {_ORDER_COLS}, imported_at, updated_at) "
    f"VALUES ({', '.join(['?'] * 25)})"
)
_UPDATE_ORDER = (
    "UPDATE orders SET "
    + ", ".join(f"{c.strip()} = ?" for c in _ORDER_COLS.split(","))
    + ", updated_at = ? WHERE id = ?"
)
_INSERT_ITEM = (
    "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_minor, "
    "total_minor) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def fingerprint(order: Order) -> str:
    """A hash of every stored value of an order, its customer and its items."""
    c = order.customer
    data = (
        order.number,
        order.status,
        order.currency,
        order.created_at,
        order.subtotal_minor,
        order.shipping_minor,
        order.tax_minor,
        order.discount_minor,
        order.total_minor,
        order.refunded_minor,
        order.paid_at,
        order.shipped_at,
        order.delivered_at,
        order.cancelled_at,
        getattr(order, "refunded_at", None),
        order.tags,
        (c.email, c.phone, c.name, c.platform_buyer_id),
        [
            (i.line_no, i.sku, i.name, i.quantity, i.unit_price_minor, i.total_minor)
            for i in order.items
        ],
    )
    return hashlib.blake2b(repr(data).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class PendingReject:
    file: str | None
    line: int | None
    field: str | None
    expected: str | None
    message: str
    raw: str | None


@dataclass
class OrderStore:
    """Buffers orders and rejects, and writes them a batch per transaction."""

    conn: sqlite3.Connection
    source: str
    run_id: str
    now: str
    dry_run: bool = False
    batch_size: int = 500
    counts: dict[str, int] = field(
        default_factory=lambda: {"inserted": 0, "updated": 0, "unchanged": 0}
    )
    # Called with a GroupReject when a file order fails to parse at write time.
    on_reject: Callable[[GroupReject], None] | None = None
    _orders: list[Any] = field(default_factory=list)
    _rejects: list[PendingReject] = field(default_factory=list)
    _customers: dict[tuple[str, ...], int] = field(default_factory=dict)
    _flushing: bool = False

    def add(self, order: Order | PendingOrder) -> None:
        self._orders.append(order)
        if len(self._orders) >= self.batch_size:
            self.flush()

    def add_reject(self, reject: PendingReject) -> None:
        self._rejects.append(reject)
        if len(self._rejects) >= self.batch_size and not self._flushing:
            self.flush()

    def _parse(self, pending: PendingOrder) -> Order | None:
        try:
            return pending.parse()
        except FieldError as exc:
            if self.on_reject:
                self.on_reject(pending.reject(exc))
            return None

    def flush(self, cursor: tuple[str, str] | None = None) -> None:
        """Write what is buffered (and the cursor, if any) in one transaction."""
        orders, self._orders = self._orders, []
        self._flushing = True
        try:
            if self.dry_run:
                self._classify_only(orders)
                self._rejects = []
                return
            if not orders and not self._rejects and cursor is None:
                return
            with dbmod.write(self.conn):
                self._write(orders)
                self._write_rejects()
                if cursor is not None:
                    save_cursor(self.conn, cursor[0], cursor[1], self.now)
        finally:
            self._flushing = False

    def _write_rejects(self) -> None:
        rejects, self._rejects = self._rejects, []
        if not rejects:
            return
        self.conn.executemany(
            "INSERT INTO rejects (run_id, job, source, file, line, field, expected, "
            "message, raw, created_at) VALUES (?, 'import', ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    self.run_id,
                    self.source,
                    r.file,
                    r.line,
                    r.field,
                    r.expected,
                    r.message,
                    r.raw,
                    self.now,
                )
                for r in rejects
            ],
        )

    # -- internals ---------------------------------------------------------------------------

    def _existing(self, orders: list[Any]) -> dict[tuple[str, str], list[Any]]:
        """(platform, external_id) → [id, content_hash, raw_hash] of orders already stored."""
        found: dict[tuple[str, str], list[Any]] = {}
        by_platform: dict[str, list[str]] = {}
        for o in orders:
            by_platform.setdefault(o.platform, []).append(o.external_id)
        for platform, ids in by_platform.items():
            unique = list(dict.fromkeys(ids))
            for i in range(0, len(unique), 500):
                chunk = unique[i : i + 500]
                rows = self.conn.execute(
                    "SELECT id, external_id, content_hash, raw_hash FROM orders WHERE "
                    f"platform = ? AND external_id IN ({', '.join('?' * len(chunk))})",
                    (platform, *chunk),
                ).fetchall()
                for r in rows:
                    found[(platform, r[1])] = [r[0], r[2], r[3]]
        return found

    def _classify_only(self, orders: list[Any]) -> None:
        existing = self._existing(orders)
        for item in orders:
            key = (item.platform, item.external_id)
            have = existing.get(key)
            outcome = self._compare(item, have)
            if outcome is None:
                continue
            kind, _order, h, raw = outcome
            self.counts[kind] += 1
            if kind != "unchanged":
                existing[key] = [have[0] if have else 0, h, raw]

    def _compare(
        self, item: Any, have: list[Any] | None
    ) -> tuple[str, Order | None, str, str | None] | None:
        """(inserted|updated|unchanged, parsed order, content hash, raw hash); None = rejected.

        A file order whose raw cells hash as before is unchanged without being parsed; one
        whose cells changed but whose parsed values did not (a newer layout) is unchanged too.
        """
        raw = None
        if isinstance(item, PendingOrder):
            raw = item.raw_hash
            if have is not None and have[2] == raw:
                return "unchanged", None, have[1], raw
            order = self._parse(item)
            if order is None:
                return None
        else:
            order = item
        h = fingerprint(order)
        if have is None:
            return "inserted", order, h, raw
        if have[1] == h:
            return "unchanged", None, h, raw
        return "updated", order, h, raw

    def _write(self, orders: list[Any]) -> None:
        if not orders:
            return
        existing = self._existing(orders)
        conn = self.conn
        for item in orders:
            key = (item.platform, item.external_id)
            have = existing.get(key)
            outcome = self._compare(item, have)
            if outcome is None:
                continue
            kind, o, h, raw = outcome
            if kind == "unchanged":
                self.counts["unchanged"] += 1
                if have is not None and raw is not None and have[2] != raw:
                    conn.execute("UPDATE orders SET raw_hash = ? WHERE id = ?", (raw, have[0]))
                    have[2] = raw
                continue
            assert o is not None
            values = (
                o.number,
                self._customer_id(o),
                o.customer.email,
                o.status,
                o.currency,
                o.subtotal_minor,
                o.shipping_minor,
                o.tax_minor,
                o.discount_minor,
                o.total_minor,
                o.refunded_minor,
                o.tags,
                o.created_at,
                o.paid_at,
                o.shipped_at,
                o.delivered_at,
                o.cancelled_at,
                getattr(o, "refunded_at", None),
                h,
                self.source,
            )
            if have is None:
                order_id = conn.execute(
                    _INSERT_ORDER, (o.platform, o.external_id, *values, raw, self.now, self.now)
                ).lastrowid
                self.counts["inserted"] += 1
            else:
                order_id = have[0]
                conn.execute(_UPDATE_ORDER, (*values, raw, self.now, order_id))
                conn.execute("DELETE FROM order_items WHERE order_id = ?", (order_id,))
                self.counts["updated"] += 1
            existing[key] = [order_id, h, raw]
            if o.items:
                conn.executemany(
                    _INSERT_ITEM,
                    [
                        (
                            order_id,
                            i.line_no,
                            i.sku,
                            i.name,
                            i.quantity,
                            i.unit_price_minor,
                            i.total_minor,
                        )
                        for i in o.items
                    ],
                )

    def _customer_id(self, order: Order) -> int | None:
        c = order.customer
        phone = normalize_phone(c.phone) if c.phone else None
        if c.email:
            key: tuple[str, ...] = ("email", c.email)
            where, params = "email = ?", (c.email,)
        elif phone:
            key = ("phone", phone)
            where, params = "phone = ?", (phone,)
        elif c.platform_buyer_id:
            key = ("buyer", order.platform, c.platform_buyer_id)
            where, params = (
                "platform = ? AND platform_buyer_id = ?",
                (
                    order.platform,
                    c.platform_buyer_id,
                ),
            )
        else:
            return None
        cached = self._customers.get(key)
        if cached is not None:
            return cached
        row = self.conn.execute(
            f"SELECT id, phone, name, platform_buyer_id FROM customers WHERE {where} "
            "ORDER BY id LIMIT 1",
            params,
        ).fetchone()
        if row is None:
            cid = self.conn.execute(
                "INSERT INTO customers (email, phone, name, platform, platform_buyer_id, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (c.email, phone, c.name, order.platform, c.platform_buyer_id, self.now, self.now),
            ).lastrowid
        else:
            cid = row[0]
            if (phone and not row[1]) or (c.name and not row[2]):
                self.conn.execute(
                    "UPDATE customers SET phone = COALESCE(phone, ?), name = COALESCE(name, ?), "
                    "updated_at = ? WHERE id = ?",
                    (phone, c.name, self.now, cid),
                )
        if len(self._customers) > 100_000:
            self._customers.clear()
        self._customers[key] = cid
        return cid


def load_cursor(conn: sqlite3.Connection, source: str) -> dict | None:
    row = conn.execute("SELECT cursor FROM sync_state WHERE source = ?", (source,)).fetchone()
    if row is None or not row[0]:
        return None
    try:
        value = json.loads(row[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def save_cursor(conn: sqlite3.Connection, source: str, cursor: str, now: str) -> None:
    """Inside the caller's transaction."""
    conn.execute(
        "INSERT INTO sync_state (source, cursor, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(source) DO UPDATE SET cursor = excluded.cursor, "
        "updated_at = excluded.updated_at",
        (source, cursor, now),
    )
