"""``--from csv --mapping NAME``: any other CSV, read through ``[import.mappings.NAME]``.

The mapping names the column holding each field (``columns.order_id = "Order No"``), how dates
are written, how the file's statuses map onto ours, the encoding, delimiter and currency. Rows
sharing an order id (consecutive) are one order with one item per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from csops.errors import UsageError
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
from csops.importers.settings import ImportSettings, MappingSettings
from csops.model import ORDER_STATUSES, Customer, Order, OrderItem


def build_format(name: str, m: MappingSettings) -> CsvFormat:
    col = m.columns

    def cell(row: Row, fld: str) -> str:
        return row.get(col[fld], "") if fld in col else ""

    def money(row: Row, fld: str, currency: str, blank: int | None = 0) -> int:
        if fld not in col:
            return 0
        return parse_money(
            row.get(col[fld], ""), currency, col[fld], blank=blank, decimal_comma=m.decimal_comma
        )

    def when(row: Row, fld: str, env: ParseEnv) -> str | None:
        return parse_time(cell(row, fld), env, col.get(fld, fld), m.date_format)

    def key(row: Row) -> str:
        return require(row, col["order_id"])

    zoned: list[ParseEnv] = []  # [run's env, env in the mapping's zone]: one time cache a run

    def parse_group(rows: list[tuple[int, Row]], env: ParseEnv) -> Order:
        if m.timezone:
            if not zoned or zoned[0] is not env:
                zoned[:] = [env, ParseEnv(ZoneInfo(m.timezone), env.currency, env.field_size_limit)]
            env = zoned[1]
        _, first = rows[0]
        currency = parse_currency(
            cell(first, "currency"), col.get("currency", "currency"), m.currency or env.currency
        )
        raw_status = unwrap(cell(first, "status"))
        if "status" in col:
            status = m.status_map.get(raw_status) or (
                raw_status.lower() if raw_status.lower() in ORDER_STATUSES else None
            )
            if status is None:
                raise FieldError(
                    col["status"],
                    f"unknown status {raw_status[:30]!r}",
                    ", ".join(list(m.status_map) or ORDER_STATUSES),
                )
        else:
            status = "paid"
        created = when(first, "created_at", env)
        if created is None:
            raise FieldError(col["created_at"], "empty", "the order's creation time")
        items = []
        for n, (line, row) in enumerate(rows, 1):
            if not any(f in col for f in ("sku", "item_name", "quantity")):
                break
            try:
                qty = parse_quantity(cell(row, "quantity"), col.get("quantity", ""), blank=1)
                unit = money(row, "unit_price", currency)
                if unit < 0:
                    raise FieldError(col["unit_price"], "negative price", "an amount ≥ 0")
                line_total = money(row, "line_total", currency, blank=unit * qty)
                if "line_total" not in col:
                    line_total = unit * qty
                if line_total < 0:  # only a mapped line total can be: price and quantity ≥ 0
                    raise FieldError(col["line_total"], "negative line total", "an amount ≥ 0")
            except FieldError as exc:
                exc.line = line
                raise
            items.append(
                OrderItem(
                    line_no=n,
                    sku=clean_text(cell(row, "sku"), 200),
                    name=clean_text(cell(row, "item_name")),
                    quantity=qty,
                    unit_price_minor=unit,
                    total_minor=line_total,
                )
            )
        subtotal = money(first, "subtotal", currency) if "subtotal" in col else None
        if subtotal is None:
            subtotal = sum(i.total_minor for i in items)
        shipping = money(first, "shipping", currency)
        tax = money(first, "tax", currency)
        discount = abs(money(first, "discount", currency))
        total = (
            money(first, "total", currency, blank=None)
            if "total" in col
            else subtotal + shipping + tax - discount
        )
        refunded = abs(money(first, "refunded", currency))  # some systems write refunds < 0
        amounts = {"subtotal": subtotal, "shipping": shipping, "tax": tax, "total": total}
        for fld, amount in amounts.items():
            if amount < 0 and fld in col:  # a mapped column below zero is a defect in the file
                raise FieldError(col[fld], "negative amount", "an amount ≥ 0")
        if total < 0:  # computed from the parts: the discount is larger than they are
            raise FieldError(
                col["discount"], "discount larger than subtotal + shipping + tax", "a smaller one"
            )
        order_id = key(first)
        return Order(
            platform=m.platform,
            external_id=order_id,
            number=unwrap(cell(first, "number")) or order_id,
            status=status,
            currency=currency,
            created_at=created,
            customer=Customer(
                email=normalize_email(cell(first, "email")),
                phone=unquote_phone(cell(first, "phone")) or None,
                name=clean_text(cell(first, "name")),
                platform_buyer_id=clean_text(cell(first, "buyer_id"), 200),
            ),
            subtotal_minor=subtotal,
            shipping_minor=shipping,
            tax_minor=tax,
            discount_minor=discount,
            total_minor=total,
            refunded_minor=refunded,
            paid_at=when(first, "paid_at", env),
            shipped_at=when(first, "shipped_at", env),
            delivered_at=when(first, "delivered_at", env),
            cancelled_at=when(first, "cancelled_at", env),
            items=items,
        )

    return CsvFormat(
        name=f"csv mapping {name!r}",
        platform=m.platform,
        required=tuple(dict.fromkeys(col.values())),
        parse_group=parse_group,
        group_key=key,
        delimiter=m.delimiter,
        encoding=m.encoding or None,
    )


@dataclass(frozen=True)
class MappedCsv:
    """The ``csv`` source: becomes a concrete format once a mapping is chosen."""

    name: str = "csv"

    def for_mapping(self, settings: ImportSettings, mapping: str | None) -> CsvFormat:
        names = sorted(settings.mappings)
        if mapping is None:
            if len(names) != 1:
                raise UsageError(
                    "--from csv needs --mapping NAME",
                    expected="one of " + (", ".join(names) or "(none: add [import.mappings.NAME])"),
                )
            mapping = names[0]
        if mapping not in settings.mappings:
            raise UsageError(
                f"no mapping named {mapping!r} in [import.mappings]",
                expected="one of " + (", ".join(names) or "(none defined)"),
            )
        return build_format(mapping, settings.mappings[mapping])


SOURCE = MappedCsv()
