"""``--from amazon-tsv``: the Seller Central "All Orders" flat-file report (tab-separated).

One row per item, no quoting at all (product names may hold raw ``"``), ISO 8601 times in UTC.
``item-price`` is the line total for the row's quantity. The report has no ship or delivery
date: a ``Shipped`` order's ``last-updated-date`` is taken as its shipped time (docs/formats.md).
"""

from __future__ import annotations

import csv

from csops.importers.base import (
    CsvFormat,
    FieldError,
    ParseEnv,
    Row,
    clean_text,
    parse_currency,
    parse_money,
    parse_quantity,
    parse_time,
    require,
    unwrap,
)
from csops.model import Order, OrderItem

STATUS = {
    "pending": "pending",
    "pendingavailability": "pending",
    "unshipped": "paid",
    "partiallyshipped": "shipped",
    "shipped": "shipped",
    "shipping": "shipped",
    "shipped - delivered to buyer": "delivered",
    "shipped - returned to seller": "shipped",
    "shipped - rejected by buyer": "shipped",
    "shipped - returning to seller": "shipped",
    "shipped - out for delivery": "shipped",
    "shipped - picked up": "shipped",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "unfulfillable": "cancelled",
    "complete": "completed",
}

REQUIRED = (
    "amazon-order-id",
    "purchase-date",
    "order-status",
    "sku",
    "quantity",
    "currency",
    "item-price",
)


def _key(row: Row) -> str:
    text = require(row, "amazon-order-id")
    if len(text) > 40:
        raise FieldError("amazon-order-id", "too long", "like 113-1234567-1234567")
    return text


# the row's charges besides its price, and the sum each goes into
_CHARGES = (
    ("item-tax", "tax"),
    ("shipping-tax", "tax"),
    ("gift-wrap-tax", "tax"),
    ("shipping-price", "ship"),
    ("gift-wrap-price", "wrap"),
)


def parse_group(rows: list[tuple[int, Row]], env: ParseEnv) -> Order:
    first = rows[0][1]
    raw = unwrap(first.get("order-status"))
    status = STATUS.get(raw.lower())
    if status is None:
        raise FieldError("order-status", f"unknown status {raw[:30]!r}", "Pending, Shipped, …")
    currency = ""
    for _, r in rows:
        currency = currency or unwrap(r.get("currency"))
    currency = parse_currency(currency, "currency", env.currency)
    created = parse_time(first.get("purchase-date", ""), env, "purchase-date")
    if created is None:
        raise FieldError("purchase-date", "empty", "an ISO 8601 time")
    updated = parse_time(first.get("last-updated-date", ""), env, "last-updated-date")
    items: list[OrderItem] = []
    sums = {"price": 0, "tax": 0, "ship": 0, "wrap": 0, "disc": 0}
    for n, (ln, r) in enumerate(rows, 1):
        try:
            qty = parse_quantity(r.get("quantity", ""), "quantity")
            price = parse_money(r.get("item-price", ""), currency, "item-price")
            if price < 0:
                raise FieldError("item-price", "negative price", "an amount ≥ 0")
            sums["price"] += price
            for f, into in _CHARGES:  # promotions are the only negative cells Amazon writes
                amount = parse_money(r.get(f, ""), currency, f)
                if amount < 0:
                    raise FieldError(f, "negative amount", "an amount ≥ 0")
                sums[into] += amount
            for f in ("item-promotion-discount", "ship-promotion-discount"):
                sums["disc"] += abs(parse_money(r.get(f, ""), currency, f))
        except FieldError as exc:
            exc.line = ln
            raise
        items.append(
            OrderItem(
                line_no=n,
                sku=clean_text(r.get("sku"), 200),
                name=clean_text(r.get("product-name")),
                quantity=qty,
                unit_price_minor=price // qty if qty else price,
                total_minor=price,
            )
        )
    total = sums["price"] + sums["ship"] + sums["wrap"] + sums["tax"] - sums["disc"]
    order_id = _key(first)
    return Order(
        platform="amazon",
        external_id=order_id,
        number=order_id,
        status=status,
        currency=currency,
        created_at=created,
        subtotal_minor=sums["price"],
        shipping_minor=sums["ship"] + sums["wrap"],
        tax_minor=sums["tax"],
        discount_minor=sums["disc"],
        total_minor=total,
        paid_at=created if status not in ("pending", "cancelled") else None,
        shipped_at=updated if status in ("shipped", "delivered") else None,
        delivered_at=updated if status == "delivered" else None,
        cancelled_at=updated if status == "cancelled" else None,
        updated_at=updated,
        items=items,
    )


SOURCE = CsvFormat(
    name="amazon-tsv",
    platform="amazon",
    required=REQUIRED,
    parse_group=parse_group,
    group_key=_key,
    delimiter="\t",
    quoting=csv.QUOTE_NONE,
    columns=(
        "last-updated-date",
        "product-name",
        "item-tax",
        "shipping-price",
        "shipping-tax",
        "gift-wrap-price",
        "gift-wrap-tax",
        "item-promotion-discount",
        "ship-promotion-discount",
    ),
)
