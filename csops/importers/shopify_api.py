"""``--from shopify-api``: Admin REST ``orders.json``, incremental from a saved watermark.

Requests ``status=any&limit=250&order=updated_at asc&updated_at_min=<watermark − overlap>`` and
then follows the ``Link: <…page_info…>; rel="next"`` URLs exactly as given. Each page is written
in one transaction together with the new watermark, so a kill -9 between pages loses nothing and
the next run starts just before the last committed page's newest ``updated_at``. The watermark
never points past committed data: while more pages follow it is the page's newest time minus a
second (everything older is committed); only the last page sets it to the newest time.
``order`` is not among Shopify's documented parameters, so the order is checked within every
page and across pages: once a page is out of order the saved mark goes back to the run's
starting watermark (possibly none) until the last page. Every mark is also capped at the
server's clock when the run began (the first response's ``Date``), so an order edited during
the run after its page was read is read again by the next run.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

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
from csops.importers.http import (
    ApiSource,
    RetryLaterError,
    SyncOutcome,
    make_client,
    next_link,
    retry_when,
)
from csops.importers.settings import ImportSettings
from csops.importers.shopify_csv import FINANCIAL  # the same statuses as the export
from csops.importers.store import OrderStore, load_cursor
from csops.model import Customer, OrderItem, valid_currency
from csops.timeutil import parse_duration

SOURCE_NAME = "shopify-api"


def map_status(o: dict[str, Any], delivered: bool) -> str:
    raw = o.get("financial_status")
    financial = raw.lower() if isinstance(raw, str) else ""
    if financial not in FINANCIAL:
        raise FieldError(
            "financial_status",
            f"unknown status {str(raw)[:30]!r}" if raw not in (None, "") else "missing",
            ", ".join(sorted(FINANCIAL)),
        )
    fulfillment = (o.get("fulfillment_status") or "").lower()
    if financial == "refunded":
        return "refunded"
    if o.get("cancelled_at") or financial == "voided":
        return "cancelled"
    if financial == "partially_refunded":
        return "partially_refunded"
    if delivered:
        return "delivered"
    if fulfillment in ("fulfilled", "partial"):
        return "shipped"
    if financial in ("paid", "partially_paid", "authorized"):
        return "paid"
    return "pending"


def map_order(o: dict[str, Any]) -> ApiOrder:
    """One REST order object → a normalized order (docs/formats.md has the field table)."""
    if not isinstance(o, dict) or o.get("id") in (None, ""):
        raise FieldError("id", "order without id", "an order object with an id")
    currency = str(o.get("currency") or "").upper()
    if not valid_currency(currency):
        raise FieldError("currency", f"unknown currency {currency!r}", "an ISO 4217 code")
    created = api_time(o.get("created_at"), "created_at")
    if created is None:
        raise FieldError("created_at", "missing", "an ISO 8601 time")
    fulfillments = [f for f in o.get("fulfillments") or [] if isinstance(f, dict)]
    shipped = sorted(
        t for f in fulfillments if (t := api_time(f.get("created_at"), "fulfillments.created_at"))
    )
    delivered_times = sorted(
        t
        for f in fulfillments
        if f.get("shipment_status") == "delivered"
        and (t := api_time(f.get("updated_at"), "fulfillments.updated_at"))
    )
    delivered = bool(fulfillments) and all(
        f.get("shipment_status") == "delivered" for f in fulfillments
    )
    refunded = 0
    refund_times = []
    for r in o.get("refunds") or []:
        for t in r.get("transactions") or []:
            if t.get("kind") == "refund" and t.get("status") == "success":
                # a transaction is in the currency it was paid in: the presentment currency on
                # a multi-currency order. The REST order has no refund total in the shop's
                # currency to fall back on (current_total_price also moves with edits), so
                # such an order is rejected rather than stored with a wrong amount.
                t_currency = str(t.get("currency") or currency).upper()
                if t_currency != currency:
                    raise FieldError(
                        "refunds.transactions.currency",
                        f"refund of {str(t.get('amount'))[:20]} {t_currency[:10]} on an order in "
                        f"{currency}: no refund total in {currency} to use instead",
                        f"refund transactions in the order's currency ({currency})",
                    )
                refunded += api_money(t.get("amount"), currency, "refunds.transactions.amount")
        if (t := api_time(r.get("created_at"), "refunds.created_at")) is not None:
            refund_times.append(t)
    customer = o.get("customer") or {}
    billing = o.get("billing_address") or {}
    name = " ".join(
        p for p in (customer.get("first_name"), customer.get("last_name")) if p
    ) or billing.get("name")
    items = []
    for n, li in enumerate(o.get("line_items") or [], 1):
        qty = api_quantity(li.get("quantity"), "line_items.quantity")
        price = api_money(li.get("price"), currency, "line_items.price")
        discount = api_money(li.get("total_discount"), currency, "line_items.total_discount")
        items.append(
            OrderItem(
                line_no=n,
                sku=(li.get("sku") or None),
                name=(li.get("name") or li.get("title") or None),
                quantity=qty,
                unit_price_minor=price,
                total_minor=price * qty - discount,
            )
        )
    financial = (o.get("financial_status") or "").lower()
    return ApiOrder(
        platform="shopify",
        external_id=str(o["id"]),
        number=str(o.get("name") or o["id"]),
        status=map_status(o, delivered),
        currency=currency,
        created_at=created,
        customer=Customer(
            email=normalize_email(
                o.get("email") or o.get("contact_email") or customer.get("email")
            ),
            phone=o.get("phone") or customer.get("phone") or billing.get("phone") or None,
            name=name or None,
            platform_buyer_id=str(customer["id"]) if customer.get("id") else None,
        ),
        # subtotal_price is after discounts; stored before them, as for every source
        subtotal_minor=api_money(o.get("subtotal_price"), currency, "subtotal_price")
        + api_money(o.get("total_discounts"), currency, "total_discounts"),
        shipping_minor=sum(
            api_money(s.get("price"), currency, "shipping_lines.price")
            for s in o.get("shipping_lines") or []
        ),
        tax_minor=api_money(o.get("total_tax"), currency, "total_tax"),
        discount_minor=api_money(o.get("total_discounts"), currency, "total_discounts"),
        total_minor=api_money(o.get("total_price"), currency, "total_price"),
        refunded_minor=refunded,
        paid_at=api_time(o.get("processed_at"), "processed_at")
        if financial in ("paid", "partially_paid", "partially_refunded", "refunded", "authorized")
        else None,
        shipped_at=shipped[0] if shipped else None,
        delivered_at=delivered_times[-1] if delivered and delivered_times else None,
        cancelled_at=api_time(o.get("cancelled_at"), "cancelled_at"),
        updated_at=api_time(o.get("updated_at"), "updated_at"),
        refunded_at=max(refund_times) if refund_times else None,
        tags=o.get("tags") or None,
        items=items,
    )


def _throttle(resp: Any, sleep: Any) -> None:
    """Stay under the leaky bucket: pause when ``X-Shopify-Shop-Api-Call-Limit`` nears full."""
    used, _, size = (resp.headers.get("X-Shopify-Shop-Api-Call-Limit") or "").partition("/")
    if used.isdigit() and size.isdigit() and int(size) and int(used) >= int(size) - 2:
        sleep(1.0)


def sync(ctx: Any, store: OrderStore, settings: ImportSettings, since: str | None) -> SyncOutcome:
    s = settings.shopify
    if not (s.base_url or s.shop):
        raise ConfigError(
            "no shop configured for shopify-api",
            file=str(ctx.config.path),
            field="import.shopify.shop",
            expected="a domain like 'demo-shop.myshopify.com'",
        )
    token = ctx.config.secret(s.access_token_env, key="import.shopify.access_token_env")
    client = make_client(settings, {"X-Shopify-Access-Token": token})
    base = (s.base_url or f"https://{s.shop}").rstrip("/")
    state = load_cursor(ctx.conn, SOURCE_NAME) or {}
    old_mark = state.get("watermark")
    if since:
        start = since_instant(since, ctx.config.shop.timezone)
    elif old_mark:
        start = minus(old_mark, parse_duration(s.overlap))
    else:
        start = None
    url: str | None = f"{base}/admin/api/{s.api_version}/orders.json"
    params: dict[str, Any] | None = {
        "status": "any",
        "limit": s.page_size,
        "order": "updated_at asc",
    }
    if start:
        params["updated_at_min"] = start  # type: ignore[index]
    out = SyncOutcome(watermark=old_mark)
    newest = old_mark
    prev_page_max: str | None = None
    ascending = True
    run_start: str | None = None  # the server's clock at the first answer: no mark passes it
    while url:
        try:
            resp = client.get(url, params=params)
        except RetryLaterError as exc:
            out.partial = True
            out.messages.append(
                f"Shopify asked to wait {exc.seconds:.0f} s (cap {settings.retry_after_cap:.0f} s);"
                f" {out.pages} page(s) committed, watermark {out.watermark}; run again "
                f"{retry_when(exc.seconds)}"
            )
            break
        if run_start is None:
            run_start = server_now(resp)
        if resp.status_code in (401, 403):
            raise RemoteAuthError(
                f"Shopify refused the access token from ${s.access_token_env} "
                f"(HTTP {resp.status_code})",
                expected=f"a valid Admin API token in ${s.access_token_env}",
            )
        if resp.status_code != 200:
            raise RemoteError(
                f"Shopify answered HTTP {resp.status_code} after retries; "
                f"{out.pages} page(s) committed",
                file=url.split("?")[0],
            )
        try:
            batch = resp.json()["orders"]
            if not isinstance(batch, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise RemoteError("Shopify sent a page that is not an orders list", file=url) from None
        times = []  # in the order the server sent them
        for order in stored_orders(batch, map_order, store, SOURCE_NAME, out.rejects):
            if order.updated_at:
                times.append(order.updated_at)
        out.pages += 1
        url = next_link(resp.headers.get("Link"))
        params = None  # page_info URLs are used exactly as given
        if times:
            # sorted within the page and after the previous page, or the server ignores our order
            if any(b < a for a, b in itertools.pairwise(times)) or (
                prev_page_max is not None and times[0] < prev_page_max
            ):
                ascending = False
            prev_page_max = max(times)
            newest = max(newest or prev_page_max, prev_page_max)
        if url is None:
            mark = newest  # every page read
        elif ascending and prev_page_max:
            mark = minus(prev_page_max, timedelta(seconds=1))  # all older ones are committed
        else:
            mark = old_mark  # unsorted: nothing is known to be complete until the last page
        if mark and old_mark:
            mark = max(mark, old_mark)
        mark = not_after(mark, run_start)
        out.watermark = mark
        # always written, even a null mark: it must replace an earlier page's mark of this run
        cursor = json.dumps({"watermark": mark, "ascending": ascending})
        store.flush(cursor=None if store.dry_run else (SOURCE_NAME, cursor))
        _throttle(resp, client.sleep)
    out.messages.append(f"{client.requests_made} request(s), {out.pages} page(s)")
    return out


SOURCE = ApiSource(SOURCE_NAME, sync)
