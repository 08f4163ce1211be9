"""``--from woocommerce-api``: REST v3 ``/wp-json/wc/v3/orders``, incremental by ``modified_after``.

Pages go by ``offset`` in id order (``orderby=id``), so the set of orders modified after the
start instant keeps its order while we read it (new orders append at the end). Each page after
the first starts one order early: that order must be the one the previous page ended on. If it
is not there, orders before it left the listing meanwhile (deleted, trashed) and every later
one moved up, so one may have been passed over: the run still reads to the end, but the
watermark does not move and the next run reads the same window again (orders that entered
before it, pushing the listing down, are read twice and counted once). The cursor saves the
run's start instant, the position and the last order id with each page's rows: a run killed
mid-way resumes there. The ``modified_after`` watermark moves only when a run has read every
page (a short page, or ``X-WP-Total`` reached), to the newest ``date_modified_gmt`` but never
past the server's clock when the run began (its first ``Date``): an order edited after its page
was read is read again. HTTP Basic with the consumer key and secret read from the env vars the
config names, over HTTPS only (plain http:// is refused unless the host is loopback).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from csops.errors import ConfigError, RemoteAuthError, RemoteError
from csops.importers.api_common import (
    ApiOrder,
    api_money,
    api_quantity,
    api_time,
    minus,
    not_after,
    server_now,
    since_instant,
    stored_orders,
)
from csops.importers.base import FieldError, normalize_email
from csops.importers.http import ApiSource, RetryLaterError, SyncOutcome, make_client
from csops.importers.settings import ImportSettings
from csops.importers.store import OrderStore, load_cursor
from csops.model import Customer, OrderItem, valid_currency
from csops.timeutil import parse_duration

SOURCE_NAME = "woocommerce-api"
STATUS = {
    "pending": "pending",
    "on-hold": "pending",
    "checkout-draft": "pending",
    "processing": "paid",
    "completed": "completed",
    "cancelled": "cancelled",
    "failed": "cancelled",
    "trash": "cancelled",
    "refunded": "refunded",
}


def map_order(o: dict[str, Any]) -> ApiOrder:
    if not isinstance(o, dict) or o.get("id") in (None, ""):
        raise FieldError("id", "order without id", "an order object with an id")
    raw_status = str(o.get("status") or "")
    status = STATUS.get(raw_status)
    if status is None:
        raise FieldError("status", f"unknown status {raw_status[:30]!r}", ", ".join(STATUS))
    currency = str(o.get("currency") or "").upper()
    if not valid_currency(currency):
        raise FieldError("currency", f"unknown currency {currency!r}", "an ISO 4217 code")
    created = api_time(o.get("date_created_gmt"), "date_created_gmt", naive_utc=True)
    if created is None:
        raise FieldError("date_created_gmt", "missing", "a time")
    refunded = sum(
        abs(api_money(r.get("total"), currency, "refunds.total", signed=True))
        for r in o.get("refunds") or []
    )
    if refunded and status not in ("refunded", "cancelled"):
        status = "partially_refunded"
    items = []
    for n, li in enumerate(o.get("line_items") or [], 1):
        qty = api_quantity(li.get("quantity"), "line_items.quantity")
        subtotal = api_money(li.get("subtotal"), currency, "line_items.subtotal")
        items.append(
            OrderItem(
                line_no=n,
                sku=li.get("sku") or None,
                name=li.get("name") or None,
                quantity=qty,
                unit_price_minor=subtotal // qty if qty else subtotal,
                total_minor=api_money(li.get("total"), currency, "line_items.total"),
            )
        )
    billing = o.get("billing") or {}
    name = " ".join(p for p in (billing.get("first_name"), billing.get("last_name")) if p)
    buyer = o.get("customer_id")
    return ApiOrder(
        platform="woocommerce",
        external_id=str(o["id"]),
        number=str(o.get("number") or o["id"]),
        status=status,
        currency=currency,
        created_at=created,
        customer=Customer(
            email=normalize_email(billing.get("email")),
            phone=billing.get("phone") or None,
            name=name or None,
            platform_buyer_id=str(buyer) if buyer else None,
        ),
        subtotal_minor=sum(
            api_money(li.get("subtotal"), currency, "line_items.subtotal")
            for li in o.get("line_items") or []
        ),
        shipping_minor=api_money(o.get("shipping_total"), currency, "shipping_total"),
        tax_minor=api_money(o.get("total_tax"), currency, "total_tax"),
        discount_minor=api_money(o.get("discount_total"), currency, "discount_total"),
        total_minor=api_money(o.get("total"), currency, "total"),
        refunded_minor=refunded,
        paid_at=api_time(o.get("date_paid_gmt"), "date_paid_gmt", naive_utc=True),
        shipped_at=api_time(o.get("date_completed_gmt"), "date_completed_gmt", naive_utc=True),
        cancelled_at=None,
        updated_at=api_time(o.get("date_modified_gmt"), "date_modified_gmt", naive_utc=True),
        items=items,
    )


def _order_id(record: Any) -> int | None:
    value = record.get("id") if isinstance(record, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _after_overlap(raw: list[Any], last_id: int | None) -> tuple[list[Any], bool]:
    """A page's records past the one the previous page ended on (``last_id``), and whether
    the listing moved up meanwhile (that order is gone from its place: orders before it left,
    so one may have been passed over). Records it repeats (orders that entered before it
    pushed the listing down) are dropped: they were stored already."""
    if last_id is None:
        return raw, False
    if not raw:
        return raw, True  # the order the last page ended on is no longer where it was
    first = _order_id(raw[0])
    if first == last_id:
        return raw[1:], False
    if first is not None and first < last_id:  # pushed down: skip what was read already
        rest = [r for r in raw if (_order_id(r) or last_id + 1) > last_id]
        return rest, False
    return raw, True


def _refuse_basic_auth_in_clear(url: str, ctx: Any) -> None:
    """FORMATS §3: Basic auth only over HTTPS (plain HTTP needs OAuth 1.0a); loopback is fine."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = (parts.hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if parts.scheme == "http" and loopback:
        return
    raise ConfigError(
        f"refusing to send the WooCommerce key pair to {parts.scheme}://{host} in clear text"
        if parts.scheme == "http"
        else f"unsupported scheme {parts.scheme!r} for the WooCommerce URL",
        file=str(ctx.config.path),
        field="import.woocommerce.url",
        expected="an https:// URL (plain http:// only for a loopback host)",
    )


def sync(ctx: Any, store: OrderStore, settings: ImportSettings, since: str | None) -> SyncOutcome:
    w = settings.woocommerce
    if not w.url:
        raise ConfigError(
            "no store URL configured for woocommerce-api",
            file=str(ctx.config.path),
            field="import.woocommerce.url",
            expected="like 'https://shop.example.com'",
        )
    _refuse_basic_auth_in_clear(w.url, ctx)
    key = ctx.config.secret(w.consumer_key_env, key="import.woocommerce.consumer_key_env")
    secret = ctx.config.secret(w.consumer_secret_env, key="import.woocommerce.consumer_secret_env")
    client = make_client(settings)
    client.session.auth = (key, secret)
    state = load_cursor(ctx.conn, SOURCE_NAME) or {}
    old_mark = state.get("watermark")
    resume = state.get("resume") or {}
    run_start: str | None = None  # the server's clock when the run (or the run resumed) began
    fresh = max(1, min(w.page_size, 99))  # new orders a page brings (+ 1 overlap ≤ 100)
    pos, last_id, shifted = 0, None, False  # orders of the listing read; id of the last one
    if since:
        start, newest = since_instant(since, ctx.config.shop.timezone), old_mark
    elif resume.get("start") is not None or resume.get("page") or resume.get("pos"):
        start, newest = resume.get("start"), resume.get("newest")
        run_start = resume.get("server_start")
        pos = int(resume.get("pos") or (int(resume.get("page", 1)) - 1) * w.page_size)
        last_id, shifted = resume.get("last_id"), bool(resume.get("shifted"))
    else:
        start = minus(old_mark, parse_duration(w.overlap)) if old_mark else None
        newest = old_mark
    url = f"{w.url.rstrip('/')}/wp-json/wc/v3/orders"
    out = SyncOutcome(watermark=old_mark)
    while True:
        # Pages go by id with an offset, each starting one order early: that order must be the
        # one the last page ended on. If orders before it left the listing meanwhile (deleted,
        # trashed), every later one moved up and one may never be read: see `shifted`.
        offset = max(0, pos - 1)
        params: dict[str, Any] = {
            "per_page": fresh + (1 if pos else 0),
            "offset": offset,
            "orderby": "id",
            "order": "asc",
            "dates_are_gmt": "true",
        }
        if start:
            params["modified_after"] = start.replace("Z", "")
        try:
            resp = client.get(url, params=params)
        except RetryLaterError as exc:
            out.partial = True
            out.messages.append(
                f"WooCommerce asked to wait {exc.seconds:.0f} s; {out.pages} page(s) committed; "
                "the next run resumes at the page it stopped on"
            )
            break
        if run_start is None:
            run_start = server_now(resp)
        if resp.status_code in (401, 403):
            raise RemoteAuthError(
                f"WooCommerce refused the key pair from ${w.consumer_key_env}/"
                f"${w.consumer_secret_env} (HTTP {resp.status_code})",
                expected="a valid REST API key with read access",
            )
        if resp.status_code != 200:  # pages go by offset: no "page past the last" 400 either
            raise RemoteError(
                f"WooCommerce answered HTTP {resp.status_code} after retries; "
                f"{out.pages} page(s) committed",
                file=url,
            )
        try:
            raw: list[Any] = resp.json()
            if not isinstance(raw, list):
                raise TypeError
        except (ValueError, TypeError):
            raise RemoteError(
                "WooCommerce sent a page that is not an orders list", file=url
            ) from None
        out.pages += 1
        batch, moved = _after_overlap(raw, last_id if pos else None)
        shifted = shifted or moved
        for order in stored_orders(batch, map_order, store, SOURCE_NAME, out.rejects):
            if order.updated_at and (newest is None or order.updated_at > newest):
                newest = order.updated_at
        if raw:
            pos, last_id = offset + len(raw), _order_id(raw[-1])
        total = resp.headers.get("X-WP-Total", "")
        last = len(raw) < params["per_page"] or (total.isdigit() and pos >= int(total))
        if last:
            # pages go by id, so an order edited after its page was read is only caught by a
            # mark no later than the run's start; if orders left the listing while it was read,
            # one may have been passed over: the mark stays, the next run reads it all again
            mark = old_mark if shifted else not_after(newest, run_start)
            if shifted:
                out.messages.append(
                    "orders left the listing while it was read (deleted or trashed): the "
                    "watermark stays where it was, so the next run reads this window again"
                )
            cursor: dict[str, Any] = {"watermark": mark}
            out.watermark = mark
        else:
            cursor = {
                "watermark": old_mark,
                "resume": {
                    "start": start,
                    "pos": pos,
                    "last_id": last_id,
                    "shifted": shifted,
                    "newest": newest,
                    "server_start": run_start,
                },
            }
        store.flush(cursor=None if store.dry_run else (SOURCE_NAME, json.dumps(cursor)))
        if last:
            break
    out.messages.append(f"{client.requests_made} request(s), {out.pages} page(s)")
    return out


SOURCE = ApiSource(SOURCE_NAME, sync)
