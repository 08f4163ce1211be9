"""``--from shopify-csv``: the Shopify admin "Export orders" CSV (73/78/79-column layouts).

One row per line item; order-level cells only on an order's first row; rows grouped by
``Name``. Columns are read by name, so every layout generation works. See docs/formats.md.
"""

from __future__ import annotations

from csops.importers.base import (
    CsvFormat,
    FieldError,
    ParseEnv,
    Row,
    clean_text,
    normalize_email,
    parse_currency,
    parse_money,
    parse_quantity,
    parse_time,
    require,
    unquote_phone,
    unwrap,
)
from csops.model import Customer, Order, OrderItem

FINANCIAL = {
    "pending",
    "authorized",
    "partially_paid",
    "paid",
    "partially_refunded",
    "refunded",
    "voided",
    "expired",
}
FULFILLMENT = {"fulfilled", "unfulfilled", "partial", "restocked", ""}

REQUIRED = (
    "Name",
    "Email",
    "Financial Status",
    "Fulfillment Status",
    "Currency",
    "Total",
    "Created at",
    "Lineitem quantity",
    "Lineitem name",
    "Lineitem price",
)
ALIASES = {
    "Canceled at": "Cancelled at",
    "Lineitem SKU": "Lineitem sku",
    "Lineitem compare-at price": "Lineitem compare at price",
}


def map_status(financial: str, fulfillment: str, cancelled: bool) -> str:
    """Shopify's two statuses (+ a cancellation) → one normalized status; docs/formats.md."""
    if financial == "refunded":
        return "refunded"
    if cancelled or financial == "voided":
        return "cancelled"
    if financial == "partially_refunded":
        return "partially_refunded"
    if fulfillment in ("fulfilled", "partial"):
        return "shipped"
    if financial in ("paid", "partially_paid", "authorized"):
        return "paid"
    return "pending"


def _key_cell(value: str) -> str:
    """The order's ``Name`` cell as ``require`` reads it; the usual clean cell without calls."""
    if value and value[0] != "=" and not value[0].isspace() and not value[-1].isspace():
        return value
    return require({"Name": value}, "Name")


def _key(row: Row) -> str:
    return _key_cell(row.get("Name", ""))


def _items(rows: list[tuple[int, Row]], currency: str) -> list[OrderItem]:
    """The order's line items, numbered from 1; a bad cell's FieldError carries its line.

    Checks per row, in this order: quantity, price (≥ 0), discount. The usual plain quantity
    cell is read without the helper calls: this runs once per export row.
    """
    out = []
    for n, (line, row) in enumerate(rows, 1):
        try:
            q = row.get("Lineitem quantity", "")
            if q.isdigit() and q.isascii() and len(q) < 7:
                qty = int(q)
            else:
                qty = parse_quantity(q, "Lineitem quantity")
            price = parse_money(
                row.get("Lineitem price", ""), currency, "Lineitem price", blank=None
            )
            if price < 0:
                raise FieldError("Lineitem price", "negative price", "an amount ≥ 0")
            discount = parse_money(row.get("Lineitem discount", ""), currency, "Lineitem discount")
            out.append(
                OrderItem(
                    n,
                    clean_text(row.get("Lineitem sku"), 200),
                    clean_text(row.get("Lineitem name")),
                    qty,
                    price,
                    price * qty - discount,
                )
            )
        except FieldError as exc:
            exc.line = exc.line or line
            raise
    return out


def parse_group(rows: list[tuple[int, Row]], env: ParseEnv) -> Order:
    line, first = rows[0]
    financial = unwrap(first.get("Financial Status")).lower()
    if not financial and not unwrap(first.get("Currency")):
        raise FieldError(
            "Financial Status",
            "order starts with a continuation row (order-level cells are blank)",
            "the order's first row with its totals",
            line,
        )
    if financial not in FINANCIAL:
        raise FieldError(
            "Financial Status", f"unknown status {financial[:30]!r}", ", ".join(sorted(FINANCIAL))
        )
    fulfillment = unwrap(first.get("Fulfillment Status")).lower()
    if fulfillment not in FULFILLMENT:
        raise FieldError(
            "Fulfillment Status",
            f"unknown status {fulfillment[:30]!r}",
            ", ".join(sorted(FULFILLMENT - {""})),
        )
    currency = parse_currency(first.get("Currency", ""), "Currency", "")
    created = parse_time(first.get("Created at", ""), env, "Created at")
    if created is None:
        raise FieldError("Created at", "empty", "the order's creation time")
    cancelled = parse_time(first.get("Cancelled at", ""), env, "Cancelled at")
    items = _items(rows, currency)
    fulfilled_at = parse_time(first.get("Fulfilled at", ""), env, "Fulfilled at")
    name = clean_text(first.get("Billing Name")) or clean_text(first.get("Shipping Name"))
    phone = (
        unquote_phone(first.get("Phone"))
        or unquote_phone(first.get("Billing Phone"))
        or unquote_phone(first.get("Shipping Phone"))
    )
    number = _key(first)
    order_id = unwrap(first.get("Id")) or number
    return Order(
        platform="shopify",
        external_id=order_id,
        number=number,
        status=map_status(financial, fulfillment, cancelled is not None),
        currency=currency,
        created_at=created,
        customer=Customer(
            email=normalize_email(first.get("Email")), phone=phone or None, name=name
        ),
        subtotal_minor=parse_money(first.get("Subtotal", ""), currency, "Subtotal"),
        shipping_minor=parse_money(first.get("Shipping", ""), currency, "Shipping"),
        tax_minor=parse_money(first.get("Taxes", ""), currency, "Taxes"),
        discount_minor=parse_money(first.get("Discount Amount", ""), currency, "Discount Amount"),
        total_minor=parse_money(first.get("Total", ""), currency, "Total", blank=None),
        refunded_minor=parse_money(first.get("Refunded Amount", ""), currency, "Refunded Amount"),
        paid_at=parse_time(first.get("Paid at", ""), env, "Paid at"),
        shipped_at=fulfilled_at if fulfillment in ("fulfilled", "partial") else None,
        delivered_at=None,  # the export has no delivery date (docs/formats.md)
        cancelled_at=cancelled,
        tags=clean_text(first.get("Tags")),
        items=items,
    )


def _external_id(rows: list[tuple[int, Row]]) -> str:
    first = rows[0][1]
    return unwrap(first.get("Id")) or _key(first)


SOURCE = CsvFormat(
    name="shopify-csv",
    platform="shopify",
    required=REQUIRED,
    aliases=ALIASES,
    parse_group=parse_group,
    group_key=_key,
    external_id=_external_id,
    key_column="Name",
    key_cell=_key_cell,
    id_column="Id",
)
