"""The return policy as one pure function: a request, the order and its history in, a decision out.

``decide_line`` does no I/O and reads no clock: the batch loads the facts (:class:`OrderFacts`,
:class:`History`) and passes ``now`` and the shop's timezone. Every outcome carries a stable
``code`` (for scripts and templates) and a ``note`` (a sentence for people). Checks run in a
fixed order: the first rejection wins; otherwise the first review reason wins; otherwise approved.

Days are counted as shop-local calendar days between delivery and the request, so "day 30" is
the same whatever the hour, and a DST change in between neither adds nor removes a day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from csops.model import format_money
from csops.returns.refunds import ItemFacts, RefundParts, item_refund, percent_of
from csops.returns.settings import ReturnPolicy, fee_basis_points

APPROVED, REJECTED, REVIEW = "approved", "rejected", "review"

# Every decision code, with the decision it leads to (documented in docs/returns.md).
CODES: dict[str, str] = {
    "within_policy": APPROVED,
    "already_decided": "(earlier)",
    "order_not_found": REJECTED,
    "order_cancelled": REJECTED,
    "order_refunded": REJECTED,
    "not_shipped": REJECTED,
    "sku_not_on_order": REJECTED,
    "quantity_exceeded": REJECTED,
    "non_returnable": REJECTED,
    "window_expired": REJECTED,
    "unknown_reason": f"{REVIEW} or {REJECTED} (unknown_reason setting)",
    "reason_needs_review": REVIEW,
    "condition_needs_review": REVIEW,
    "delivery_unknown": REVIEW,
    "amount_over_limit": REVIEW,
    "frequent_returner": REVIEW,
    "over_refund": REVIEW,
}


@dataclass(frozen=True)
class ReturnRequest:
    """One line of a return batch, normalised by a format reader."""

    return_ref: str
    order_ref: str
    sku: str | None
    quantity: int | None  # None: every unit of the SKU that is still returnable (Taobao)
    reason_code: str = "other"
    reason_text: str = ""
    requested_at: datetime | None = None
    resolution: str = "refund"
    condition: str = ""
    line_no: int | None = None
    item_title: str = ""  # helps find the item when the SKU is blank


@dataclass(frozen=True)
class OrderFacts:
    """The order a request names, as stored by the importers."""

    id: int
    number: str
    platform: str
    status: str
    currency: str
    items: tuple[ItemFacts, ...] = ()
    customer_key: str | None = None
    tags: tuple[str, ...] = ()
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    cancelled_at: datetime | None = None
    shipping_minor: int = 0
    discount_minor: int = 0
    tax_minor: int = 0
    total_minor: int = 0
    refunded_minor: int = 0


@dataclass(frozen=True)
class PriorDecision:
    decision: str
    code: str
    batch_id: int
    decided_at: str
    refund_minor: int = 0


@dataclass(frozen=True)
class History:
    """What was decided before this line (earlier batches and earlier lines of this one)."""

    returned_by_sku: Mapping[str, int] = field(default_factory=dict)  # approved + review units
    shipping_refunded: bool = False
    refunded_minor: int = 0  # refunds csops approved or proposed on this order
    customer_returns: int = 0  # this customer's returns in the frequent window before this one
    prior: PriorDecision | None = None


@dataclass(frozen=True)
class Decision:
    decision: str
    code: str
    note: str
    quantity: int = 0
    sku: str | None = None
    refund: RefundParts = field(default_factory=RefundParts)
    currency: str | None = None
    days_since_delivery: int | None = None
    return_shipping: str | None = None  # "customer" / "shop" for approved and review lines
    is_new: bool = True

    @property
    def refund_minor(self) -> int:
        return self.refund.refund_minor


def local_days_between(start: datetime, end: datetime, tz: ZoneInfo) -> int:
    """Shop-local calendar days from ``start`` to ``end`` (same local day → 0)."""
    return (end.astimezone(tz).date() - start.astimezone(tz).date()).days


def _resolve_sku(request: ReturnRequest, order: OrderFacts) -> tuple[str | None, str | None]:
    """The SKU the line is about, or why none: a blank SKU is taken from the item title, or
    from the order when it holds one kind of item (Taobao refunds often carry no SKU)."""
    number = order.number
    if request.sku:
        if any(i.sku == request.sku for i in order.items):
            return request.sku, None
        return None, f"SKU {request.sku} is not on order {number}"
    candidates = {i.sku for i in order.items}
    title = (request.item_title or "").strip()
    if title and len(candidates) > 1:
        named = {i.sku for i in order.items if i.name and (i.name == title or title in i.name)}
        if len(named) == 1:
            return next(iter(named)), None
    if len(candidates) == 1:
        return next(iter(candidates)), None
    return None, f"no SKU given and order {number} has {len(candidates)} different items"


def _days(n: int) -> str:
    return f"{n} day" if abs(n) == 1 else f"{n} days"


def _money(minor: int, currency: str) -> str:
    return format_money(minor, currency)


def _reject(code: str, note: str, request: ReturnRequest, **kw) -> Decision:
    return Decision(
        REJECTED, code, note, quantity=request.quantity or 0, sku=request.sku or None, **kw
    )


def decide_line(
    request: ReturnRequest,
    order: OrderFacts | None,
    history: History,
    policy: ReturnPolicy,
    *,
    tz: ZoneInfo,
    now: datetime,
) -> Decision:
    """Decide one return line against ``policy``; pure (``now`` only stands in for a missing
    request time)."""
    prior = history.prior
    if prior is not None:
        return Decision(
            prior.decision,
            "already_decided",
            f"return {request.return_ref} was already decided on {prior.decided_at[:10]} "
            f"(batch {prior.batch_id}: {prior.decision}, {prior.code}); not decided again",
            quantity=request.quantity or 0,
            sku=request.sku,
            is_new=False,
        )
    if order is None:
        return _reject("order_not_found", f"no order {request.order_ref} is known", request)
    number = order.number
    if order.status == "cancelled" or order.cancelled_at is not None:
        return _reject(
            "order_cancelled", f"order {number} was cancelled; there is nothing to return", request
        )
    if order.status == "refunded":
        return _reject("order_refunded", f"order {number} was already refunded in full", request)
    unshipped = order.shipped_at is None and order.delivered_at is None
    if unshipped and order.status in ("pending", "paid"):
        return _reject(
            "not_shipped",
            f"order {number} has not shipped yet (status {order.status}); cancel it instead",
            request,
        )

    sku, problem = _resolve_sku(request, order)
    if problem:
        return _reject("sku_not_on_order", problem, request)
    bought = sum(i.quantity for i in order.items if i.sku == sku)
    already = int(history.returned_by_sku.get(sku, 0))
    left = max(0, bought - already)
    quantity = request.quantity if request.quantity is not None else left
    if quantity <= 0 or quantity > left:
        asked = request.quantity if request.quantity is not None else "the rest"
        return Decision(
            REJECTED,
            "quantity_exceeded",
            f"asked to return {asked} × {sku or 'the item'}; {bought} bought and {already} "
            f"already returned, so at most {left} can be",
            quantity=quantity,
            sku=sku,
        )

    for pattern in policy.non_returnable_skus:
        if sku and fnmatchcase(sku, pattern):
            return Decision(
                REJECTED,
                "non_returnable",
                f"{sku} is final sale (matches {pattern!r}) and cannot be returned",
                quantity=quantity,
                sku=sku,
            )
    tags = {t.strip().lower() for t in order.tags}
    final_tags = sorted(tags & {t.strip().lower() for t in policy.non_returnable_tags})
    if final_tags:
        return Decision(
            REJECTED,
            "non_returnable",
            f"order {number} is tagged {final_tags[0]!r} (final sale) and cannot be returned",
            quantity=quantity,
            sku=sku,
        )

    requested_at = request.requested_at or now
    basis_note = "delivery"
    basis = order.delivered_at
    if basis is None and order.shipped_at is not None:
        basis = order.shipped_at + timedelta(days=policy.transit_allowance_days)
        basis_note = (
            f"estimated delivery (shipped {order.shipped_at.astimezone(tz).date()} + "
            f"{policy.transit_allowance_days} days in transit)"
        )
    days = local_days_between(basis, requested_at, tz) if basis is not None else None
    if days is not None and days > policy.window_days:
        return Decision(
            REJECTED,
            "window_expired",
            f"requested {_days(days)} after {basis_note}; "
            f"the window is {_days(policy.window_days)}",
            quantity=quantity,
            sku=sku,
            days_since_delivery=days,
        )

    rule = policy.reason(request.reason_code)
    if rule is None and policy.unknown_reason == "reject":
        return Decision(
            REJECTED,
            "unknown_reason",
            f"reason {request.reason_code!r} is not in the return policy",
            quantity=quantity,
            sku=sku,
            days_since_delivery=days,
        )
    return_shipping = rule.return_shipping if rule else "customer"
    shop_fault = bool(rule and rule.shop_fault)

    currency = order.currency
    parts = item_refund(
        order.items,
        sku,
        already_returned=already,
        quantity=quantity,
        order_discount_minor=order.discount_minor,
        order_tax_minor=order.tax_minor,
        refund_tax=policy.refund_tax,
    )
    shipping = 0
    if not history.shipping_refunded and order.shipping_minor > 0:
        total_bought = sum(i.quantity for i in order.items)
        total_back = sum(history.returned_by_sku.values()) + quantity
        wanted = {
            "never": False,
            "always": True,
            "shop_fault": shop_fault,
            "full_return": total_back >= total_bought,
        }[policy.refund_shipping]
        shipping = order.shipping_minor if wanted else 0
    merchandise = parts.item_minor - parts.discount_minor + parts.tax_minor
    fee = percent_of(merchandise, fee_basis_points(rule.restocking_fee_percent) if rule else 0)
    if return_shipping == "customer":
        fee += policy.limit_minor(policy.return_label_fee, currency) or 0
    fee = min(fee, merchandise + shipping)
    parts = RefundParts(parts.item_minor, parts.discount_minor, parts.tax_minor, shipping, fee)
    if request.resolution == "exchange":
        parts = RefundParts()
    refund = parts.refund_minor
    offer = (
        "exchange, no money back"
        if request.resolution == "exchange"
        else f"{request.resolution.replace('_', ' ')} {_money(refund, currency)}"
    )
    if days is not None and days >= 0:
        window = f"within the {policy.window_days}-day window"
        when = f"requested {_days(days)} after {basis_note}, {window}"
    else:
        when = f"requested before {basis_note}"
    common = dict(
        quantity=quantity,
        sku=sku,
        refund=parts,
        currency=currency,
        days_since_delivery=days,
        return_shipping=return_shipping,
    )

    def review(code: str, why: str) -> Decision:
        return Decision(REVIEW, code, f"{why}; proposed: {offer}", **common)

    if rule is None:
        return review("unknown_reason", f"reason {request.reason_code!r} is not in the policy")
    if request.reason_code in policy.review_reasons:
        return review(
            "reason_needs_review", f"reason {request.reason_code!r} is reviewed by a person"
        )
    condition = (request.condition or "").strip().lower()
    if condition and condition in {c.lower() for c in policy.review_conditions}:
        return review(
            "condition_needs_review", f"item condition {condition!r} is reviewed by a person"
        )
    if days is None:
        return review(
            "delivery_unknown",
            f"order {number} has no shipment or delivery date, so the window cannot be checked",
        )
    limit = policy.limit_minor(policy.auto_approve_max_refund, currency)
    if limit is not None and refund > limit:
        return review(
            "amount_over_limit",
            f"refund {_money(refund, currency)} is over the auto-approval limit of "
            f"{_money(limit, currency)}",
        )
    cap = policy.auto_approve_max_returns
    if cap and history.customer_returns >= cap:
        return review(
            "frequent_returner",
            f"the customer already has {history.customer_returns} other returns in the last "
            f"{_days(policy.frequent_window_days)} (auto-approval stops at {cap})",
        )
    paid = order.total_minor
    before = max(order.refunded_minor, history.refunded_minor)
    if paid and before + refund > paid:
        return review(
            "over_refund",
            f"this refund would bring the order's refunds to {_money(before + refund, currency)}, "
            f"more than the {_money(paid, currency)} paid",
        )
    return Decision(APPROVED, "within_policy", f"{when}; {offer}", **common)
