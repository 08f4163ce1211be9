"""``--from shopify-csv``: the Shopify admin "Export orders" CSV (73/78/79-column layouts).

One row per line item; order-level cells only on an order's first row; rows grouped by
``Name``. Columns are read by name, so every layout generation works. See docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from csops.importers.base import (
    _MONEY,
    Compact,
    CsvFormat,
    FieldError,
    ParseEnv,
    Row,
    clean_text,
    expand,
    normalize_email,
    parse_currency,
    parse_money,
    parse_quantity,
    parse_time,
    require,
    unquote_phone,
    unwrap,
)
from csops.model import Order

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


# The cells the parser reads: order-level ones from an order's first row, item ones from every
# row. Rows are read as tuples of these (a blank for a column the layout lacks), from a row dict
# (parse_group) or straight from the CSV cells (cell_parser), so both share one parser.
ORDER_COLUMNS = (
    "Name",
    "Id",
    "Email",
    "Financial Status",
    "Fulfillment Status",
    "Currency",
    "Created at",
    "Cancelled at",
    "Fulfilled at",
    "Paid at",
    "Billing Name",
    "Shipping Name",
    "Phone",
    "Billing Phone",
    "Shipping Phone",
    "Subtotal",
    "Shipping",
    "Taxes",
    "Discount Amount",
    "Total",
    "Refunded Amount",
    "Tags",
)
ITEM_COLUMNS = (
    "Lineitem quantity",
    "Lineitem price",
    "Lineitem discount",
    "Lineitem sku",
    "Lineitem name",
)


def _text(value: str, limit: int = 500) -> str | None:
    """``clean_text``; a cell with nothing to strip or unwrap is taken as is."""
    if value and value[0] != "=" and value.strip() is value:  # nothing to strip or unwrap
        return value[:limit]
    return clean_text(value, limit)


def _items(rows: list[tuple[int, tuple[str, ...]]], currency: str) -> list[tuple[Any, ...]]:
    """The order's line items, numbered from 1; a bad cell's FieldError carries its line.

    Checks per row, in this order: quantity, price (≥ 0), discount. The usual plain quantity
    cell is read without the helper calls: this runs once per export row.
    """
    out = []
    known = _MONEY.get(currency, {}).get  # cells parse_money has read before
    for n, (line, (q, price_cell, discount_cell, sku, name)) in enumerate(rows, 1):
        try:
            if q.isdigit() and q.isascii() and len(q) < 7:
                qty = int(q)
            else:
                qty = parse_quantity(q, "Lineitem quantity")
            price = known(price_cell)
            if price is None:
                price = parse_money(price_cell, currency, "Lineitem price", blank=None)
            if price < 0:
                raise FieldError("Lineitem price", "negative price", "an amount ≥ 0")
            discount = known(discount_cell)
            if discount is None:
                discount = parse_money(discount_cell, currency, "Lineitem discount")
            if not 0 <= discount <= price * qty:
                raise FieldError(
                    "Lineitem discount",
                    "discount below zero or above the line's price × quantity",
                    f"an amount from 0 to {price * qty} minor units",
                )
            # _text(), inlined for the usual clean cells: this runs once per export row
            if not (sku and sku[0] != "=" and sku.strip() is sku):
                sku = _text(sku, 200)
            elif len(sku) > 200:
                sku = sku[:200]
            if not (name and name[0] != "=" and name.strip() is name):
                name = _text(name)
            elif len(name) > 500:
                name = name[:500]
            out.append((n, sku, name, qty, price, price * qty - discount))
        except FieldError as exc:
            exc.line = exc.line or line
            raise
    return out


def _parse(
    line: int,
    cells: tuple[str, ...],
    items: list[tuple[int, tuple[str, ...]]],
    env: ParseEnv,
) -> Compact:
    """One order (compact form) from its first row's ORDER_COLUMNS cells and each row's
    ITEM_COLUMNS cells.

    Shopify's ``Subtotal`` is Σ(price × quantity) − ``Discount Amount`` (FORMATS.md §1.4); csops
    stores the subtotal before order-level discounts, as for every other source, so that
    total = subtotal + shipping + tax − discount holds for every order."""
    (
        name_cell,
        id_cell,
        email,
        financial,
        fulfillment,
        currency_cell,
        created_cell,
        cancelled_cell,
        fulfilled_cell,
        paid_cell,
        billing_name,
        shipping_name,
        phone,
        billing_phone,
        shipping_phone,
        subtotal,
        shipping,
        taxes,
        discount,
        total,
        refunded,
        tags,
    ) = cells
    if financial not in FINANCIAL:  # the usual clean lower-case cell needs no unwrap
        financial = unwrap(financial).lower()
    if not financial and not unwrap(currency_cell):
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
    if fulfillment not in FULFILLMENT:
        fulfillment = unwrap(fulfillment).lower()
    if fulfillment not in FULFILLMENT:
        raise FieldError(
            "Fulfillment Status",
            f"unknown status {fulfillment[:30]!r}",
            ", ".join(sorted(FULFILLMENT - {""})),
        )
    currency = parse_currency(currency_cell, "Currency", "")
    created = parse_time(created_cell, env, "Created at")
    if created is None:
        raise FieldError("Created at", "empty", "the order's creation time")
    cancelled = parse_time(cancelled_cell, env, "Cancelled at") if cancelled_cell else None
    order_items = _items(items, currency)
    fulfilled_at = parse_time(fulfilled_cell, env, "Fulfilled at") if fulfilled_cell else None
    name = _text(billing_name) or _text(shipping_name)
    phone = unquote_phone(phone) or unquote_phone(billing_phone) or unquote_phone(shipping_phone)
    number = _key_cell(name_cell)
    order_id = unwrap(id_cell) or number
    email = normalize_email(email)
    known = _MONEY.get(currency, {}).get  # cells parse_money has read before (in this order)
    subtotal_minor = known(subtotal)
    if subtotal_minor is None:
        subtotal_minor = parse_money(subtotal, currency, "Subtotal")
    shipping_minor = known(shipping)
    if shipping_minor is None:
        shipping_minor = parse_money(shipping, currency, "Shipping")
    tax_minor = known(taxes)
    if tax_minor is None:
        tax_minor = parse_money(taxes, currency, "Taxes")
    discount_minor = known(discount)
    if discount_minor is None:
        discount_minor = parse_money(discount, currency, "Discount Amount")
    total_minor = known(total)
    if total_minor is None:
        total_minor = parse_money(total, currency, "Total", blank=None)
    refunded_minor = known(refunded)
    if refunded_minor is None:
        refunded_minor = parse_money(refunded, currency, "Refunded Amount")
    amounts = (subtotal_minor, shipping_minor, tax_minor, discount_minor, total_minor)
    if min(amounts) < 0 or refunded_minor < 0:  # Shopify writes none of these below zero
        names = ("Subtotal", "Shipping", "Taxes", "Discount Amount", "Total", "Refunded Amount")
        at = next(i for i, v in enumerate((*amounts, refunded_minor)) if v < 0)
        raise FieldError(names[at], "negative amount", "an amount ≥ 0")
    paid = parse_time(paid_cell, env, "Paid at") if paid_cell else None
    shipped = fulfilled_at if fulfillment in ("fulfilled", "partial") else None
    return (
        "shopify",
        order_id,
        (
            number,
            email,
            map_status(financial, fulfillment, cancelled is not None),
            currency,
            subtotal_minor + discount_minor,  # Shopify's Subtotal is after discounts (below)
            shipping_minor,
            tax_minor,
            discount_minor,
            total_minor,
            refunded_minor,
            _text(tags),
            created,
            paid,
            shipped,
            None,  # delivered_at: the export has no delivery date (docs/formats.md)
            cancelled,
            None,  # refunded_at
        ),
        (email, phone or None, name, None),
        order_items,
    )


def parse_group(rows: list[tuple[int, Row]], env: ParseEnv) -> Order:
    """One order from its rows as dicts (header name -> cell)."""
    line, first = rows[0]
    return expand(
        _parse(
            line,
            tuple(first.get(c) or "" for c in ORDER_COLUMNS),
            [(n, tuple(r.get(c) or "" for c in ITEM_COLUMNS)) for n, r in rows],
            env,
        )
    )


def cell_parser(header: list[str]) -> Callable[[list[tuple[int, list[str]]], ParseEnv], Compact]:
    """``parse_group`` for rows given as cell lists in ``header`` order (no dict per row)."""
    at = {h: i for i, h in enumerate(header)}

    def picker(columns: tuple[str, ...]) -> Callable[[list[str]], tuple[str, ...]]:
        idx = [at.get(c, -1) for c in columns]
        if min(idx) >= 0:
            return itemgetter(*idx)
        return lambda v: tuple(v[i] if i >= 0 else "" for i in idx)

    order_cells = picker(ORDER_COLUMNS)
    item_cells = picker(ITEM_COLUMNS)

    def parse(rows: list[tuple[int, list[str]]], env: ParseEnv) -> Compact:
        return _parse(
            rows[0][0], order_cells(rows[0][1]), [(n, item_cells(v)) for n, v in rows], env
        )

    return parse


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
    cell_parser=cell_parser,
    columns=ORDER_COLUMNS + ITEM_COLUMNS,
)
