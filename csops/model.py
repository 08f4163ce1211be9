"""Plain records shared by the jobs: money in integer minor units, orders, items, customers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

# ISO 4217 active currency codes (list one, 2025) by their minor-unit exponent; a code not
# listed is not a currency (ZZZ, ABC) and is refused rather than stored with a guessed exponent.
_ISO_4217 = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
        "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN "
        "ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IRR JMD "
        "KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR "
        "MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB "
        "SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY "
        "TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
    ),
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
_EXPONENTS = {code: exp for exp, codes in _ISO_4217.items() for code in codes.split()}
# names shops write for a currency that ISO spells otherwise
CURRENCY_ALIASES = {"RMB": "CNY"}
_SYMBOL_CHARS = re.compile("[¥$€£￥]")
_SYMBOLS = {"CNY": "¥", "JPY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$"}
ORDER_STATUSES = (
    "pending",
    "paid",
    "shipped",
    "delivered",
    "completed",
    "cancelled",
    "refunded",
    "partially_refunded",
)


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point for a currency (JPY 0, CNY/USD/EUR 2, KWD 3)."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: str | int | Decimal, currency: str) -> int:
    """Parse a decimal amount ("1,234.50", "¥99", "12.5") into exact integer minor units.

    Raises ValueError for anything that is not a plain amount or has more precision than the
    currency allows (a silent rounding of money is a bug, not a convenience).
    """
    if isinstance(amount, int) and not isinstance(amount, bool):
        return amount * 10 ** currency_exponent(currency)
    text = _SYMBOL_CHARS.sub("", str(amount).strip())
    text = text.replace(",", "").replace(" ", "").replace("\u00a0", "")
    if not text:
        raise ValueError("empty amount")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    if not value.is_finite():
        raise ValueError(f"not an amount: {amount!r}")
    exp = currency_exponent(currency)
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount!r} has more decimals than {currency} allows ({exp})")
    return int(scaled)


def format_money(minor: int, currency: str, *, symbol: bool = True) -> str:
    """Minor units → "¥1,234.50" / "$12.00" / "¥1,500" (JPY), for people, never for storage."""
    exp = currency_exponent(currency)
    sign = "-" if minor < 0 else ""
    value = Decimal(abs(minor)).scaleb(-exp)
    body = f"{value:,.{exp}f}"
    if symbol and currency.upper() in _SYMBOLS:
        return f"{sign}{_SYMBOLS[currency.upper()]}{body}"
    return f"{sign}{body} {currency.upper()}"


def valid_currency(code: str) -> bool:
    """Whether ``code`` is an ISO 4217 currency code (upper case, as stored)."""
    return code in _EXPONENTS


@dataclass(frozen=True)
class Money:
    """An exact amount: integer minor units plus an ISO 4217 currency code."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError("Money.minor must be an int")
        if not valid_currency(self.currency):
            raise ValueError(f"invalid currency {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")

    def __str__(self) -> str:
        return format_money(self.minor, self.currency)


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` minor units over ``weights`` exactly (largest remainder); sums to total."""
    if not weights:
        return []
    wsum = sum(weights)
    if wsum == 0:
        shares = [0] * len(weights)
        shares[0] = total
        return shares
    base = [total * w // wsum for w in weights]
    remainders = [(total * w % wsum, -i) for i, w in enumerate(weights)]
    left = total - sum(base)
    for _, neg_i in sorted(remainders, reverse=True)[:left]:
        base[-neg_i] += 1
    return base


@dataclass
class Customer:
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    locale: str | None = None
    birthday: str | None = None
    platform_buyer_id: str | None = None


@dataclass
class OrderItem:
    line_no: int
    sku: str | None
    name: str | None
    quantity: int
    unit_price_minor: int
    total_minor: int


@dataclass
class Order:
    """A normalized order, as every importer produces it (DESIGN.md §3)."""

    platform: str
    external_id: str
    number: str
    status: str
    currency: str
    created_at: str
    customer: Customer = field(default_factory=Customer)
    subtotal_minor: int = 0
    shipping_minor: int = 0
    tax_minor: int = 0
    discount_minor: int = 0
    total_minor: int = 0
    refunded_minor: int = 0
    paid_at: str | None = None
    shipped_at: str | None = None
    delivered_at: str | None = None
    cancelled_at: str | None = None
    updated_at: str | None = None
    tags: str | None = None
    items: list[OrderItem] = field(default_factory=list)
