"""Exact refunds in integer minor units: what returning N units of a SKU gives back.

An order-level discount (and tax, when refunded) is split over the order's lines with
:func:`csops.model.allocate`, so the lines' shares add up to the order's figure to the cent. A
line's share is then spread over its units cumulatively: returning units ``a+1 … a+n`` of ``q``
gives ``floor(S·(a+n)/q) − floor(S·a/q)``, so partial returns across any number of batches add up
to exactly the line's share once every unit is back. Never a float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from csops.model import allocate


@dataclass(frozen=True)
class ItemFacts:
    """One order line as the policy needs it."""

    line_no: int
    sku: str | None
    name: str | None
    quantity: int
    unit_price_minor: int
    total_minor: int


@dataclass(frozen=True)
class RefundParts:
    """The pieces of one line's refund; ``refund_minor`` is what the customer gets back."""

    item_minor: int = 0
    discount_minor: int = 0
    tax_minor: int = 0
    shipping_minor: int = 0
    fee_minor: int = 0

    @property
    def gross_minor(self) -> int:
        return self.item_minor - self.discount_minor + self.tax_minor + self.shipping_minor

    @property
    def refund_minor(self) -> int:
        return max(0, self.gross_minor - self.fee_minor)


def line_value(item: ItemFacts) -> int:
    """What a line cost before order-level discounts: its total, or price × quantity."""
    return item.total_minor if item.total_minor else item.unit_price_minor * item.quantity


def order_shares(items: Sequence[ItemFacts], order_amount: int) -> list[int]:
    """Split an order-level amount (discount, tax) over its lines by value; sums exactly."""
    return allocate(order_amount, [max(0, line_value(i)) for i in items])


def units_share(line_amount: int, quantity: int, already: int, count: int) -> int:
    """The part of ``line_amount`` that belongs to units ``already+1 … already+count``."""
    if quantity <= 0 or count <= 0:
        return 0
    end = min(quantity, already + count)
    start = min(quantity, already)
    return line_amount * end // quantity - line_amount * start // quantity


def item_refund(
    items: Sequence[ItemFacts],
    sku: str,
    *,
    already_returned: int,
    quantity: int,
    order_discount_minor: int,
    order_tax_minor: int = 0,
    refund_tax: bool = False,
) -> RefundParts:
    """Value, discount share and tax share of returning ``quantity`` more units of ``sku``.

    Units of a SKU that sits on several lines are taken line by line in line order, the units
    already returned first, so every batch picks up exactly where the previous one stopped.
    """
    discounts = order_shares(items, order_discount_minor)
    taxes = order_shares(items, order_tax_minor) if refund_tax else [0] * len(items)
    value = discount = tax = 0
    skip, want = already_returned, quantity
    for item, d_share, t_share in zip(items, discounts, taxes, strict=True):
        if item.sku != sku or item.quantity <= 0 or want <= 0:
            continue
        if skip >= item.quantity:
            skip -= item.quantity
            continue
        take = min(want, item.quantity - skip)
        value += units_share(line_value(item), item.quantity, skip, take)
        discount += units_share(d_share, item.quantity, skip, take)
        tax += units_share(t_share, item.quantity, skip, take)
        want -= take
        skip = 0
    return RefundParts(item_minor=value, discount_minor=discount, tax_minor=tax)


def percent_of(amount_minor: int, basis_points: int) -> int:
    """``amount × bp / 10000`` rounded half up, in integers."""
    if amount_minor <= 0 or basis_points <= 0:
        return 0
    return (amount_minor * basis_points + 5000) // 10000
