"""Exact refunds: discount and tax shares add up to the cent however the units come back."""

from __future__ import annotations

import random

import pytest

from csops.returns.refunds import ItemFacts, item_refund, order_shares, percent_of, units_share


def test_a_discount_is_split_over_lines_so_the_shares_add_up_to_the_cent():
    items = [
        ItemFacts(1, "A", "", 3, 333, 999),
        ItemFacts(2, "B", "", 1, 1, 1),
        ItemFacts(3, "C", "", 7, 1429, 10003),
    ]
    shares = order_shares(items, 1001)
    assert sum(shares) == 1001
    assert all(isinstance(s, int) for s in shares)
    assert shares == [91, 0, 910]


def test_returning_every_unit_one_at_a_time_gives_back_exactly_the_line_and_its_discount():
    items = [ItemFacts(1, "A", "", 3, 1000, 3000), ItemFacts(2, "B", "", 1, 999, 999)]
    refunds = [
        item_refund(items, "A", already_returned=k, quantity=1, order_discount_minor=1000)
        for k in range(3)
    ]
    b = item_refund(items, "B", already_returned=0, quantity=1, order_discount_minor=1000)
    assert [r.discount_minor for r in refunds] == [250, 250, 250]
    assert sum(r.discount_minor for r in refunds) + b.discount_minor == 1000
    assert sum(r.item_minor for r in refunds) + b.item_minor == 3999


@pytest.mark.parametrize("seed", range(40))
def test_partial_returns_in_any_split_add_up_to_the_order_to_the_cent(seed):
    rng = random.Random(seed)
    items = []
    for n in range(1, rng.randint(1, 5) + 1):
        qty = rng.randint(1, 9)
        price = rng.randint(1, 50_000)
        items.append(ItemFacts(n, f"SKU{n % 3}", "", qty, price, qty * price))
    subtotal = sum(i.total_minor for i in items)
    discount = rng.randint(0, subtotal)
    tax = rng.randint(0, 9_999)
    got = {"item": 0, "discount": 0, "tax": 0}
    for sku in sorted({i.sku for i in items}):
        bought = sum(i.quantity for i in items if i.sku == sku)
        done = 0
        while done < bought:  # several batches, each a random number of units
            n = rng.randint(1, bought - done)
            parts = item_refund(
                items,
                sku,
                already_returned=done,
                quantity=n,
                order_discount_minor=discount,
                order_tax_minor=tax,
                refund_tax=True,
            )
            assert parts.discount_minor <= parts.item_minor
            got["item"] += parts.item_minor
            got["discount"] += parts.discount_minor
            got["tax"] += parts.tax_minor
            done += n
    assert got == {"item": subtotal, "discount": discount, "tax": tax}


def test_units_share_never_goes_past_the_units_bought():
    assert units_share(1000, 3, 2, 5) == 1000 - 1000 * 2 // 3
    assert units_share(1000, 3, 3, 1) == 0
    assert units_share(1000, 0, 0, 1) == 0


@pytest.mark.parametrize(
    "amount, bp, fee",
    [(2000, 1250, 250), (1999, 1000, 200), (1995, 1000, 200), (1994, 1000, 199), (0, 1000, 0)],
)
def test_percent_fees_round_half_up_in_integers(amount, bp, fee):
    assert percent_of(amount, bp) == fee
