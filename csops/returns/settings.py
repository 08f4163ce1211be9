"""``[returns]``: the written return policy every batch is decided against.

The policy is data, not code: the window, what is final sale, who pays return shipping per
reason, restocking fees, auto-approval limits and what goes to a person. :mod:`policy` reads
only this object, so a change of policy is a config edit that ``csops doctor`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

from csops.model import to_minor, valid_currency


@dataclass(frozen=True)
class ReasonRule:
    """What one reason code means: who pays the way back, and the restocking fee (percent)."""

    label: str = ""
    return_shipping: Literal["customer", "shop"] = "customer"
    restocking_fee_percent: float = 0.0

    def __post_init__(self) -> None:
        fee_basis_points(self.restocking_fee_percent)

    @property
    def shop_fault(self) -> bool:
        return self.return_shipping == "shop"


def fee_basis_points(percent: float) -> int:
    """A percent from the config as exact basis points (12.5 → 1250); at most 2 decimals."""
    try:
        value = Decimal(str(percent))
    except InvalidOperation:  # pragma: no cover - the config validator checks the type
        raise ValueError(f"not a percent: {percent!r}", "a number from 0 to 100") from None
    scaled = value * 100
    if not (0 <= value <= 100) or scaled != scaled.to_integral_value():
        raise ValueError(
            f"invalid restocking_fee_percent {percent!r}", "0 to 100 with at most 2 decimals"
        )
    return int(scaled)


def _default_reasons() -> dict[str, ReasonRule]:
    return {
        "changed_mind": ReasonRule("Changed my mind", "customer", 0.0),
        "wrong_size": ReasonRule("Wrong size or fit", "customer", 0.0),
        "ordered_wrong_item": ReasonRule("Ordered the wrong item", "customer", 0.0),
        "damaged": ReasonRule("Arrived damaged", "shop", 0.0),
        "defective": ReasonRule("Defective", "shop", 0.0),
        "not_as_described": ReasonRule("Not as described", "shop", 0.0),
        "wrong_item": ReasonRule("We sent the wrong item", "shop", 0.0),
        "arrived_late": ReasonRule("Arrived too late", "shop", 0.0),
        "other": ReasonRule("Other", "customer", 0.0),
    }


RESOLUTIONS = ("refund", "exchange", "store_credit")


@dataclass(frozen=True)
class ReturnPolicy:
    """The ``[returns]`` section. Amount limits are per currency, as decimal strings."""

    # Days a customer has, counted in shop-local calendar days from delivery (day N is allowed).
    window_days: int = 30
    # When only the shipment date is known, delivery is assumed this many days later.
    transit_allowance_days: int = 5
    # SKU patterns (fnmatch: "GIFT-*") and order tags that make an item final sale.
    non_returnable_skus: list[str] = field(default_factory=tuple)  # type: ignore[arg-type]
    non_returnable_tags: list[str] = field(default_factory=lambda: ("final-sale",))  # type: ignore[arg-type]
    # Reason code → who pays return shipping and the restocking fee.
    reasons: dict[str, ReasonRule] = field(default_factory=_default_reasons)
    # A reason code missing from the table: a person looks at it, or it is rejected.
    unknown_reason: Literal["review", "reject"] = "review"
    # Refund the order's original shipping: never, when the reason is the shop's fault, when the
    # return completes the whole order, or always (at most once per order in every case).
    refund_shipping: Literal["never", "shop_fault", "full_return", "always"] = "shop_fault"
    # Refund the returned items' share of the order's tax (for tax-exclusive prices).
    refund_tax: bool = False
    # Prepaid return label charged when the customer pays return shipping, per currency.
    return_label_fee: dict[str, str] = field(default_factory=dict)
    # Refunds above this amount (per currency) go to review; a currency not listed has no limit.
    auto_approve_max_refund: dict[str, str] = field(
        default_factory=lambda: {"CNY": "500", "USD": "100", "EUR": "100"}
    )
    # More returns than this by one customer within `frequent_window_days` go to review.
    auto_approve_max_returns: int = 3
    frequent_window_days: int = 90
    # Reason codes and item conditions that always go to a person.
    review_reasons: list[str] = field(default_factory=lambda: ("damaged", "defective"))  # type: ignore[arg-type]
    review_conditions: list[str] = field(default_factory=tuple)  # type: ignore[arg-type]
    # Customer notices: which decisions notify, the [channels.NAME] ("" = [messaging]
    # default_channel) and how long a queued notice may wait before it is dropped as expired.
    notify: list[str] = field(default_factory=lambda: ("approved", "rejected", "review"))  # type: ignore[arg-type]
    notice_channel: str = ""
    notice_expires_days: int = 14

    def __post_init__(self) -> None:
        for name in ("window_days", "transit_allowance_days", "frequent_window_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative", "a number of days ≥ 0")
        if self.auto_approve_max_returns < 0:
            raise ValueError("auto_approve_max_returns must not be negative", "an integer ≥ 0")
        for table_name in ("return_label_fee", "auto_approve_max_refund"):
            for currency, amount in getattr(self, table_name).items():
                if not valid_currency(currency):
                    raise ValueError(
                        f"{table_name}: {currency!r} is not a currency code", "like CNY or USD"
                    )
                try:
                    minor = to_minor(amount, currency)
                except ValueError as exc:
                    raise ValueError(
                        f"{table_name}.{currency}: {exc}", "an amount string like '300.00'"
                    ) from None
                if minor < 0:
                    raise ValueError(f"{table_name}.{currency} is negative", "an amount ≥ 0")
        for decision in self.notify:
            if decision not in ("approved", "rejected", "review"):
                raise ValueError(
                    f"notify: unknown decision {decision!r}", "approved, rejected or review"
                )
        for code in self.review_reasons:
            if code not in self.reasons:
                raise ValueError(
                    f"review_reasons: {code!r} is not in [returns.reasons]",
                    "one of " + ", ".join(sorted(self.reasons)),
                )

    def reason(self, code: str) -> ReasonRule | None:
        return self.reasons.get(code)

    def limit_minor(self, table: dict[str, str], currency: str) -> int | None:
        amount = table.get(currency.upper())
        return None if amount is None else to_minor(amount, currency)


def doctor_checks(config) -> list:
    """Every notice the policy sends has a template; the notice channel exists."""
    from csops.doctor import Check

    policy: ReturnPolicy = config.section("returns")
    checks = [
        Check(
            "returns",
            "policy",
            True,
            f"window {policy.window_days} days, {len(policy.reasons)} reason codes",
        )
    ]
    if not policy.notify:
        return checks
    try:
        from csops.messaging.render import template_locales
    except ImportError:  # pragma: no cover - messaging not installed
        return checks
    for decision in policy.notify:
        name = f"return_{decision}"
        locales = template_locales(config, name)
        checks.append(
            Check(
                "returns",
                f"template {name}",
                bool(locales),
                ", ".join(locales) or f"missing templates/messages/{name}/",
            )
        )
    channel = policy.notice_channel or config.section("messaging").default_channel
    checks.append(
        Check(
            "returns",
            "notice channel",
            channel in config.section("channels"),
            f"[channels.{channel}]",
        )
    )
    return checks
