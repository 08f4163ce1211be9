"""The ``[import]`` config section: batch size, limits, HTTP retry policy, API sources, mappings.

Secrets are never here: the Shopify token and the WooCommerce key/secret are read from the
environment variables these settings name (``*_env``), only when an API source runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from csops.model import valid_currency

MAPPED_FIELDS = (
    "order_id",
    "number",
    "created_at",
    "status",
    "currency",
    "subtotal",
    "shipping",
    "tax",
    "discount",
    "total",
    "refunded",
    "paid_at",
    "shipped_at",
    "delivered_at",
    "cancelled_at",
    "email",
    "phone",
    "name",
    "buyer_id",
    "sku",
    "item_name",
    "quantity",
    "unit_price",
    "line_total",
)


def _check_duration(value: str, key: str) -> None:
    from csops.timeutil import parse_duration

    try:
        parse_duration(value)
    except ValueError:
        raise ValueError(f"invalid duration {value!r} for {key}", "like '5m', '1h', '2d'") from None


@dataclass(frozen=True)
class ShopifySettings:
    """``[import.shopify]``: which shop, which API version, which env var holds the token."""

    shop: str = ""  # e.g. "demo-shop.myshopify.com"
    base_url: str = ""  # override the https://{shop} origin (tests, proxies)
    api_version: str = "2024-01"
    access_token_env: str = "CSOPS_SHOPIFY_TOKEN"
    page_size: int = 250
    overlap: str = "5m"  # re-read this much before the saved watermark (late writers)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 250:
            raise ValueError("page_size out of range", "1 to 250")
        _check_duration(self.overlap, "overlap")


@dataclass(frozen=True)
class WooCommerceSettings:
    """``[import.woocommerce]``: the store URL and the env vars holding the REST key pair."""

    url: str = ""  # e.g. "https://shop.example.com"
    consumer_key_env: str = "CSOPS_WC_KEY"
    consumer_secret_env: str = "CSOPS_WC_SECRET"
    page_size: int = 100
    overlap: str = "5m"
    timezone: str = ""  # unused when *_gmt dates are present (they always are in v3)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 100:
            raise ValueError("page_size out of range", "1 to 100")
        _check_duration(self.overlap, "overlap")


@dataclass(frozen=True)
class MappingSettings:
    """``[import.mappings.NAME]``: read any CSV by naming the column that holds each field."""

    columns: dict[str, str] = field(default_factory=dict)
    status_map: dict[str, str] = field(default_factory=dict)
    date_format: str = ""  # strptime format; empty = ISO 8601 / "YYYY-MM-DD HH:MM:SS"
    encoding: str = ""  # empty = detect (UTF-8, BOM, GB18030)
    delimiter: str = ","
    currency: str = ""  # when no currency column: this, else the shop's currency
    platform: str = "csv"  # what goes in orders.platform (part of the unique key)
    timezone: str = ""  # naive times are read here; empty = the shop's timezone
    decimal_comma: bool = False  # amounts like "1.234,56"

    def __post_init__(self) -> None:
        from csops.model import ORDER_STATUSES

        unknown = sorted(set(self.columns) - set(MAPPED_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) in columns: {', '.join(unknown)}",
                "fields among " + ", ".join(MAPPED_FIELDS),
            )
        for need in ("order_id", "created_at"):
            if need not in self.columns:
                raise ValueError(f"columns must name the {need} column", f"columns.{need}")
        bad = sorted({v for v in self.status_map.values() if v not in ORDER_STATUSES})
        if bad:
            raise ValueError(
                f"status_map maps to unknown status {bad[0]!r}", ", ".join(ORDER_STATUSES)
            )
        if len(self.delimiter) != 1:
            raise ValueError("delimiter must be one character", "',' or ';' or a tab")
        if self.currency and not valid_currency(self.currency):
            raise ValueError(f"invalid currency {self.currency!r}", "an ISO 4217 code like 'EUR'")
        _check_timezone(self.timezone)


def _check_timezone(name: str) -> None:
    if name:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {name!r}", "an IANA name like 'Asia/Shanghai'"
            ) from None


@dataclass(frozen=True)
class ImportSettings:
    """``[import]``: shared by every source."""

    batch_size: int = 1000  # orders per write transaction
    # a file import projected to insert at least this many orders (and at least a third of the
    # orders already stored) sets the secondary indexes aside and rebuilds them at the end;
    # 0 = never
    bulk_load_min_orders: int = 20000
    # a file at least this big (or stdin) is read and parsed by a second process while this one
    # writes (two cores); -1 = never
    reader_process_min_bytes: int = 1_000_000
    field_size_limit: int = 131072  # a longer CSV field rejects its row (bytes-ish)
    timezone: str = ""  # naive times in files; empty = the format's own zone, else the shop's
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 4  # per request, for 429/5xx/timeouts/dropped connections
    retry_after_cap: float = 60.0  # a longer Retry-After ends the run (cursor saved, exit 3)
    shopify: ShopifySettings = field(default_factory=ShopifySettings)
    woocommerce: WooCommerceSettings = field(default_factory=WooCommerceSettings)
    mappings: dict[str, MappingSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 100000:
            raise ValueError("batch_size out of range", "1 to 100000")
        if self.reader_process_min_bytes < -1:
            raise ValueError("reader_process_min_bytes out of range", "-1 (never) or more")
        if self.bulk_load_min_orders < 0:
            raise ValueError("bulk_load_min_orders out of range", "0 (never) or more")
        if self.field_size_limit < 1024:
            raise ValueError("field_size_limit too small", "at least 1024")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive", "seconds > 0")
        if not 0 <= self.max_retries <= 20:
            raise ValueError("max_retries out of range", "0 to 20")
        _check_timezone(self.timezone)


def doctor_checks(config):  # -> list[csops.doctor.Check]
    """Name the env vars an API source would need, without reading or printing their values."""
    import os

    from csops.doctor import Check

    settings: ImportSettings = config.section("import")
    checks = []
    if settings.shopify.shop or settings.shopify.base_url:
        env = settings.shopify.access_token_env
        checks.append(
            Check(
                "import",
                "shopify token",
                bool(os.environ.get(env)),
                f"${env} {'is set' if os.environ.get(env) else 'is not set'}",
                level="warning",
            )
        )
    if settings.woocommerce.url:
        for env in (
            settings.woocommerce.consumer_key_env,
            settings.woocommerce.consumer_secret_env,
        ):
            checks.append(
                Check(
                    "import",
                    "woocommerce key",
                    bool(os.environ.get(env)),
                    f"${env} {'is set' if os.environ.get(env) else 'is not set'}",
                    level="warning",
                )
            )
    return checks
