"""The pure return policy, table by table: every reason code, the window's edges, time zones."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from csops.returns.policy import (
    CODES,
    History,
    OrderFacts,
    PriorDecision,
    ReturnRequest,
    decide_line,
)
from csops.returns.refunds import ItemFacts
from csops.returns.settings import ReasonRule, ReturnPolicy

UTC = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2024, 6, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


POLICY = ReturnPolicy(
    window_days=30,
    transit_allowance_days=5,
    non_returnable_skus=("GIFT-*",),
    non_returnable_tags=("final-sale",),
    auto_approve_max_refund={"USD": "100.00"},
    auto_approve_max_returns=3,
    review_reasons=("damaged",),
    review_conditions=("used",),
)
ORDER = OrderFacts(
    id=1,
    number="#1001",
    platform="shopify",
    status="delivered",
    currency="USD",
    items=(
        ItemFacts(1, "MUG", "Mug", 2, 2000, 4000),
        ItemFacts(2, "TOWEL", "Towel", 1, 1000, 1000),
        ItemFacts(3, "GIFT-CARD", "Gift card", 1, 5000, 5000),
    ),
    customer_key="id:7",
    shipped_at=at("2024-04-28T08:00:00Z"),
    delivered_at=at("2024-05-01T08:00:00Z"),
    total_minor=10000,
)
REQ = ReturnRequest(
    return_ref="R-1",
    order_ref="#1001",
    sku="MUG",
    quantity=1,
    reason_code="changed_mind",
    requested_at=at("2024-05-10T08:00:00Z"),
)


def decide(request=REQ, order=ORDER, history=None, policy=POLICY, tz=UTC):
    return decide_line(request, order, history or History(), policy, tz=tz, now=NOW)


# (case id, request changes, order changes or None for "no order", history, policy changes,
#  expected decision, expected code)
CASES = [
    ("approved within the window", {}, {}, None, {}, "approved", "within_policy"),
    (
        "same return id decided before",
        {},
        {},
        History(prior=PriorDecision("approved", "within_policy", 3, "2024-05-20T00:00:00Z")),
        {},
        "approved",
        "already_decided",
    ),
    ("unknown order", {"order_ref": "#9"}, None, None, {}, "rejected", "order_not_found"),
    ("cancelled order", {}, {"status": "cancelled"}, None, {}, "rejected", "order_cancelled"),
    (
        "order with a cancellation time",
        {},
        {"status": "shipped", "cancelled_at": at("2024-04-27T00:00:00Z")},
        None,
        {},
        "rejected",
        "order_cancelled",
    ),
    ("order refunded in full", {}, {"status": "refunded"}, None, {}, "rejected", "order_refunded"),
    (
        "order not shipped yet",
        {},
        {"status": "paid", "shipped_at": None, "delivered_at": None},
        None,
        {},
        "rejected",
        "not_shipped",
    ),
    ("SKU not on the order", {"sku": "LAMP"}, {}, None, {}, "rejected", "sku_not_on_order"),
    (
        "no SKU and several items",
        {"sku": None},
        {},
        None,
        {},
        "rejected",
        "sku_not_on_order",
    ),
    ("more than bought", {"quantity": 3}, {}, None, {}, "rejected", "quantity_exceeded"),
    (
        "more than bought minus already returned",
        {"quantity": 2},
        {},
        History(returned_by_sku={"MUG": 1}),
        {},
        "rejected",
        "quantity_exceeded",
    ),
    ("final-sale SKU pattern", {"sku": "GIFT-CARD"}, {}, None, {}, "rejected", "non_returnable"),
    (
        "order tagged final sale",
        {},
        {"tags": ("vip", "final-sale")},
        None,
        {},
        "rejected",
        "non_returnable",
    ),
    (
        "34 days after delivery",
        {"requested_at": at("2024-06-04T08:00:00Z")},
        {},
        None,
        {},
        "rejected",
        "window_expired",
    ),
    (
        "unknown reason goes to review",
        {"reason_code": "aliens"},
        {},
        None,
        {},
        "review",
        "unknown_reason",
    ),
    (
        "unknown reason rejected when the policy says so",
        {"reason_code": "aliens"},
        {},
        None,
        {"unknown_reason": "reject"},
        "rejected",
        "unknown_reason",
    ),
    (
        "reason reviewed by a person",
        {"reason_code": "damaged"},
        {},
        None,
        {},
        "review",
        "reason_needs_review",
    ),
    ("used item", {"condition": "used"}, {}, None, {}, "review", "condition_needs_review"),
    (
        "no shipment or delivery date",
        {},
        {"status": "completed", "shipped_at": None, "delivered_at": None},
        None,
        {},
        "review",
        "delivery_unknown",
    ),
    (
        "refund over the auto-approval limit",
        {},
        {},
        None,
        {"auto_approve_max_refund": {"USD": "10.00"}},
        "review",
        "amount_over_limit",
    ),
    (
        "customer returns often",
        {},
        {},
        History(customer_returns=3),
        {},
        "review",
        "frequent_returner",
    ),
    (
        "platform already refunded most of the order",
        {},
        {"refunded_minor": 9000},
        None,
        {},
        "review",
        "over_refund",
    ),
]


@pytest.mark.parametrize(
    "request_changes, order_changes, history, policy_changes, decision, code",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_each_rule_gives_its_decision_and_stable_code(
    request_changes, order_changes, history, policy_changes, decision, code
):
    request = replace(REQ, **request_changes)
    order = None if order_changes is None else replace(ORDER, **order_changes)
    policy = replace(POLICY, **policy_changes)
    result = decide(request, order, history, policy)
    assert (result.decision, result.code) == (decision, code), result.note
    assert result.note
    if decision == "rejected":
        assert result.refund_minor == 0


def test_every_documented_code_is_exercised_by_the_table():
    assert {c[-1] for c in CASES} == set(CODES)


def test_window_expired_sentence_names_the_days_and_the_window():
    result = decide(replace(REQ, requested_at=at("2024-06-04T08:00:00Z")))
    assert result.note == "requested 34 days after delivery; the window is 30 days"
    assert result.days_since_delivery == 34


@pytest.mark.parametrize(
    "requested, decision, days",
    [
        ("2024-05-31T23:59:59Z", "approved", 30),
        ("2024-06-01T00:00:00Z", "rejected", 31),
        ("2024-05-01T00:00:00Z", "approved", 0),
    ],
    ids=["day 30 is allowed", "day 31 is not", "same day"],
)
def test_window_boundary_is_day_30_allowed_day_31_not(requested, decision, days):
    result = decide(replace(REQ, requested_at=at(requested)))
    assert (result.decision, result.days_since_delivery) == (decision, days)


@pytest.mark.parametrize(
    "requested_local, decision, days, utc_days",
    [
        ("2024-06-01T23:59:00+08:00", "approved", 30, 31),
        ("2024-06-02T00:00:00+08:00", "rejected", 31, 31),
    ],
    ids=["one minute before local midnight", "local midnight starts day 31"],
)
def test_days_are_counted_at_midnight_in_the_shop_timezone(
    requested_local, decision, days, utc_days
):
    # Delivered 2024-05-02 00:30 in Shanghai = 2024-05-01 16:30 UTC.
    order = replace(ORDER, delivered_at=at("2024-05-01T16:30:00Z"))
    result = decide(replace(REQ, requested_at=at(requested_local)), order, tz=SHANGHAI)
    assert (result.decision, result.days_since_delivery) == (decision, days)
    # Counted in UTC, the first request would already be day 31: the shop's zone decides.
    in_utc = decide(replace(REQ, requested_at=at(requested_local)), order, tz=UTC)
    assert in_utc.days_since_delivery == utc_days


def test_a_dst_change_between_delivery_and_request_neither_adds_nor_removes_a_day():
    ny = ZoneInfo("America/New_York")
    # Delivered 2024-03-10 00:30 EST, 90 minutes before clocks spring forward.
    order = replace(ORDER, delivered_at=datetime(2024, 3, 10, 0, 30, tzinfo=ny))
    day30_late = replace(REQ, requested_at=datetime(2024, 4, 9, 23, 59, tzinfo=ny))
    day31_early = replace(REQ, requested_at=datetime(2024, 4, 10, 0, 0, tzinfo=ny))
    ok = decide(day30_late, order, tz=ny)
    late = decide(day31_early, order, tz=ny)
    assert (ok.decision, ok.days_since_delivery) == ("approved", 30)
    assert (late.decision, late.days_since_delivery) == ("rejected", 31)
    # The elapsed time of the first is under 30×24 h + 24 h only because of the lost hour;
    # a 24-hour-day count in UTC would call it day 31.
    assert (day30_late.requested_at - order.delivered_at).days == 30
    utc = decide(day30_late, order, tz=UTC)
    assert utc.days_since_delivery == 31


def test_autumn_dst_in_berlin_keeps_day_30_inside_the_window():
    berlin = ZoneInfo("Europe/Berlin")
    # Delivered 2024-10-26 23:30 CEST; clocks fall back on 10-27.
    order = replace(ORDER, delivered_at=datetime(2024, 10, 26, 23, 30, tzinfo=berlin))
    request = replace(REQ, requested_at=datetime(2024, 11, 25, 23, 59, tzinfo=berlin))
    result = decide(request, order, tz=berlin)
    assert (result.decision, result.days_since_delivery) == ("approved", 30)


def test_without_delivery_date_the_window_starts_after_the_transit_allowance():
    order = replace(
        ORDER, status="shipped", delivered_at=None, shipped_at=at("2024-05-01T08:00:00Z")
    )
    inside = decide(replace(REQ, requested_at=at("2024-06-05T08:00:00Z")), order)
    outside = decide(replace(REQ, requested_at=at("2024-06-06T08:00:00Z")), order)
    assert (inside.decision, inside.days_since_delivery) == ("approved", 30)
    assert outside.code == "window_expired"
    assert "estimated delivery (shipped 2024-05-01 + 5 days in transit)" in outside.note


def test_a_missing_sku_is_taken_from_a_single_item_order_and_quantity_none_means_the_rest():
    order = replace(ORDER, items=(ItemFacts(1, "MUG", "Mug", 3, 2000, 6000),))
    request = replace(REQ, sku=None, quantity=None)
    result = decide(request, order, History(returned_by_sku={"MUG": 1}))
    assert (result.decision, result.sku, result.quantity) == ("approved", "MUG", 2)
    assert result.refund_minor == 4000


def test_exchange_is_approved_without_money_back():
    result = decide(replace(REQ, resolution="exchange"))
    assert (result.decision, result.refund_minor) == ("approved", 0)
    assert "exchange, no money back" in result.note


def test_restocking_fee_and_label_fee_come_off_the_refund():
    policy = replace(
        POLICY,
        reasons={**POLICY.reasons, "changed_mind": ReasonRule("Changed mind", "customer", 12.5)},
        return_label_fee={"USD": "4.99"},
    )
    result = decide(replace(REQ, quantity=1), policy=policy)
    # 2000 × 12.5 % = 250, plus the 499 label.
    assert (result.refund.fee_minor, result.refund_minor) == (749, 2000 - 749)


def test_shipping_is_refunded_once_for_a_shop_fault_and_never_for_a_change_of_mind():
    order = replace(ORDER, shipping_minor=650)
    fault = replace(REQ, reason_code="wrong_item")
    first = decide(fault, order)
    again = decide(fault, order, History(shipping_refunded=True))
    mind = decide(REQ, order)
    assert first.refund.shipping_minor == 650
    assert again.refund.shipping_minor == 0
    assert mind.refund.shipping_minor == 0


def test_full_return_policy_refunds_shipping_with_the_last_unit():
    order = replace(
        ORDER,
        shipping_minor=500,
        items=(ItemFacts(1, "MUG", "Mug", 2, 2000, 4000), ItemFacts(2, "TOWEL", "T", 1, 1000, 0)),
    )
    policy = replace(POLICY, refund_shipping="full_return")
    partial = decide(REQ, order, policy=policy)
    last = decide(
        replace(REQ, sku="TOWEL"), order, History(returned_by_sku={"MUG": 2}), policy=policy
    )
    assert partial.refund.shipping_minor == 0
    assert last.refund.shipping_minor == 500
