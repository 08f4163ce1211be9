"""Helpers for the import tests: platform files in their real layouts and loopback API servers."""

from __future__ import annotations

import base64
import csv
import email.utils
import io
import json
import random
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

SAMPLES = Path(__file__).resolve().parent.parent / "scripts" / "samples"
SHOPIFY_HEADER = (SAMPLES / "shopify_orders_export.csv").read_text("utf-8").splitlines()[0]
SHOPIFY_COLUMNS = SHOPIFY_HEADER.split(",")
SHOPIFY_73 = [
    c
    for c in SHOPIFY_COLUMNS
    if c
    not in (
        "Outstanding Balance",
        "Employee",
        "Location",
        "Device ID",
        "Payment ID",
        "Payment References",
    )
]
TAOBAO_COLUMNS = (
    (SAMPLES / "taobao_orders_export.csv").read_bytes().decode("gb18030").splitlines()[0].split(",")
)


# ------------------------------------------------------------------ generated orders


@dataclass
class GenItem:
    sku: str
    name: str
    quantity: int
    price_minor: int


@dataclass
class GenOrder:
    number: str
    id: int
    email: str
    name: str
    created: datetime
    currency: str
    financial: str
    fulfillment: str
    items: list[GenItem]
    shipping_minor: int = 0
    cancelled: datetime | None = None
    refunded_minor: int = 0
    fulfilled: datetime | None = None

    @property
    def subtotal_minor(self) -> int:
        return sum(i.price_minor * i.quantity for i in self.items)

    @property
    def total_minor(self) -> int:
        return self.subtotal_minor + self.shipping_minor


def money(minor: int, exp: int = 2) -> str:
    return str(Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp)))


def gen_orders(n: int, seed: int = 1, *, start: int = 1001) -> list[GenOrder]:
    rng = random.Random(seed)
    base = datetime(2024, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=-5)))
    out = []
    for k in range(n):
        created = base + timedelta(minutes=37 * k)
        items = [
            GenItem(
                f"SKU-{rng.randrange(100)}",
                rng.choice(["Mug", 'Towel, "big"', "Candle\nTall", "茶巾", "=1+1"]),
                rng.randint(1, 4),
                rng.randrange(0, 20000),
            )
            for _ in range(rng.choice([1, 1, 2, 3]))
        ]
        kind = rng.random()
        financial, fulfillment, cancelled, fulfilled = "paid", "fulfilled", None, None
        if kind < 0.1:
            financial, fulfillment, cancelled = (
                "voided",
                "unfulfilled",
                created + timedelta(hours=2),
            )
        elif kind < 0.2:
            financial = "refunded"
        elif kind < 0.3:
            financial = "partially_refunded"
        elif kind < 0.4:
            financial, fulfillment = "pending", "unfulfilled"
        if fulfillment == "fulfilled":
            fulfilled = created + timedelta(days=1)
        o = GenOrder(
            number=f"#{start + k}",
            id=9_000_000 + start + k,
            email=f"buyer{k % 50}@example.com",
            name=rng.choice(["Ana", "O'Neil, Jr.", "王小鹿", '=HYPERLINK("x")']),
            created=created,
            currency="USD",
            financial=financial,
            fulfillment=fulfillment,
            items=items,
            shipping_minor=rng.choice([0, 650]),
            cancelled=cancelled,
            fulfilled=fulfilled,
        )
        if financial == "refunded":
            o.refunded_minor = o.total_minor
        elif financial == "partially_refunded":
            o.refunded_minor = o.total_minor // 3
        out.append(o)
    return out


def shopify_ts(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S %z") if dt else ""


def shopify_rows(orders: Iterable[GenOrder], columns: list[str] = SHOPIFY_COLUMNS):
    for o in orders:
        for i, item in enumerate(o.items):
            r = dict.fromkeys(columns, "")
            r.update(
                {
                    "Name": o.number,
                    "Email": o.email,
                    "Created at": shopify_ts(o.created),
                    "Lineitem quantity": str(item.quantity),
                    "Lineitem name": item.name,
                    "Lineitem price": money(item.price_minor),
                    "Lineitem sku": item.sku,
                    "Lineitem discount": "0.00",
                }
            )
            if i == 0:
                r.update(
                    {
                        "Financial Status": o.financial,
                        "Fulfillment Status": o.fulfillment,
                        "Fulfilled at": shopify_ts(o.fulfilled),
                        "Paid at": shopify_ts(o.created) if o.financial != "pending" else "",
                        "Currency": o.currency,
                        "Subtotal": money(o.subtotal_minor),
                        "Shipping": money(o.shipping_minor),
                        "Taxes": "0.00",
                        "Total": money(o.total_minor),
                        "Discount Amount": "0.00",
                        "Billing Name": o.name,
                        "Cancelled at": shopify_ts(o.cancelled),
                        "Refunded Amount": money(o.refunded_minor),
                        "Id": str(o.id),
                    }
                )
            yield {k: r[k] for k in columns}


def write_shopify(
    path: Path,
    orders: Iterable[GenOrder],
    columns: list[str] = SHOPIFY_COLUMNS,
    *,
    encoding: str = "utf-8",
) -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        w = csv.DictWriter(fh, columns, lineterminator="\n")
        w.writeheader()
        w.writerows(shopify_rows(orders, columns))
    return path


def taobao_text(n: int, *, with_astral: bool = True, seed: int = 3) -> str:
    """A 54-column 订单报表 with Chinese names/titles, ``="…"`` ids, ``'`` phones."""
    rng = random.Random(seed)
    names = ["小鹿乱撞", "tb_咖啡不加糖", "晴天", "阿杰"] + (
        ["𠮷野家"] if with_astral else ["吉野家"]
    )
    statuses = ["交易成功", "卖家已发货，等待买家确认", "买家已付款，等待卖家发货", "等待买家付款"]
    lines = [",".join(TAOBAO_COLUMNS)]
    for k in range(n):
        r = dict.fromkeys(TAOBAO_COLUMNS, "")
        goods = rng.randrange(100, 100000)
        r.update(
            {
                "订单编号": f'="{3861220470000000000 + k}"',
                "买家会员名": names[k % len(names)],
                "买家应付货款": money(goods),
                "买家应付邮费": "0.00",
                "总金额": money(goods),
                "买家实际支付金额": money(goods),
                "订单状态": statuses[k % len(statuses)],
                "收货人姓名": names[(k + 1) % len(names)],
                "联系手机": f"'1380000{k:04d}",
                "订单创建时间": f'="2024-04-{1 + k % 28:02d} 10:{k % 60:02d}:00"',
                "宝贝标题 ": "亚麻餐巾 鼠尾草绿",
                "宝贝种类 ": "1",
                "宝贝总数量": "1",
                "退款金额": "0.00",
            }
        )
        lines.append(",".join(r[c] for c in TAOBAO_COLUMNS))
    return "\r\n".join(lines) + "\r\n"


# ------------------------------------------------------------------ loopback Shopify API


def iso_z(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def shopify_api_order(k: int, updated: datetime) -> dict[str, Any]:
    created = datetime(2024, 3, 1, tzinfo=timezone.utc) + timedelta(minutes=k)
    return {
        "id": 5_000_000 + k,
        "name": f"#{1000 + k}",
        "email": f"api{k % 40}@Example.com",
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
        "processed_at": created.isoformat(),
        "cancelled_at": None,
        "financial_status": "paid",
        "fulfillment_status": None,
        "currency": "USD",
        "subtotal_price": "20.00",
        "total_price": "26.50",
        "total_tax": "0.00",
        "total_discounts": "0.00",
        "shipping_lines": [{"price": "6.50"}],
        "customer": {"id": 70 + k % 40, "first_name": "Api", "last_name": f"Buyer{k % 40}"},
        "line_items": [
            {"sku": "MUG", "name": "Mug", "quantity": 2, "price": "10.00", "total_discount": "0.00"}
        ],
        "fulfillments": [],
        "refunds": [],
    }


class QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-answer (timeouts, kills) are expected here: no noise."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class ShopifyServer:
    """A loopback Admin REST ``orders.json`` with keyset ``page_info`` cursors and faults."""

    token: str = "shpat_test_token_value"
    page_size: int = 250
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    faults: dict[int, list[str]] = field(default_factory=dict)  # page -> ["429:2", "503", …]
    log: list[dict[str, Any]] = field(default_factory=list)
    stall_event: threading.Event = field(default_factory=threading.Event)
    hold_page: int | None = None  # requests for this page stall until released
    release: threading.Event = field(default_factory=threading.Event)
    # "updated_at" (what csops asks for), "newest_first" or "id": servers that ignore `order`
    sort: str = "updated_at"
    now: datetime | None = None  # the server's clock in its Date header (None: the real one)
    call_limit: str = "1/40"  # X-Shopify-Shop-Api-Call-Limit on every page: the bucket's fill

    def start(self) -> str:
        self.httpd = QuietServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self.base

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def set_order(self, k: int, updated: datetime) -> None:
        self.orders[k] = shopify_api_order(k, updated)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "page_info" in q:
            state = json.loads(base64.urlsafe_b64decode(q["page_info"]))
        else:
            state = {"min": q.get("updated_at_min"), "after": None, "n": 1}
        page = state["n"]
        entry = {
            "t": time.monotonic(),
            "page": page,
            "query": q,
            "path": url.path,
            "token": h.headers.get("X-Shopify-Access-Token"),
        }
        self.log.append(entry)
        if h.headers.get("X-Shopify-Access-Token") != self.token:
            return self._send(h, 401, {"errors": "[API] Invalid API key or access token"})
        pending = self.faults.get(page) or []
        if pending:
            fault = pending.pop(0)
            entry["fault"] = fault
            kind, _, arg = fault.partition(":")
            if kind == "429":
                if arg.startswith("date+"):  # an HTTP date that many seconds from now
                    arg = email.utils.formatdate(time.time() + float(arg[5:]), usegmt=True)
                return self._send(
                    h, 429, {"errors": "Exceeded 2 calls per second"}, {"Retry-After": arg or "2.0"}
                )
            if kind == "503":
                return self._send(h, 503, {"errors": "unavailable"})
            if kind == "redirect":  # to another base URL ("self": this one), same path and query
                target = self.base if arg == "self" else arg
                return self._send(h, 302, {}, {"Location": target + h.path})
            if kind == "stall":  # say nothing for that long (or until the server stops)
                self.release.wait(float(arg))
            if kind == "reset":
                body = self._page_body(state)[0]
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
                return None
        if self.hold_page is not None and page == self.hold_page:
            self.stall_event.set()
            self.release.wait(60)
        body, link = self._page_body(state)
        headers = {"X-Shopify-Shop-Api-Call-Limit": self.call_limit}
        if link:
            headers["Link"] = link
        return self._send(h, 200, None, headers, raw=body)

    def _key(self, o: dict[str, Any]) -> list[Any]:
        return [o["id"]] if self.sort == "id" else [_utc(o["updated_at"]), o["id"]]

    def _page_body(self, state: dict[str, Any]) -> tuple[bytes, str | None]:
        desc = self.sort == "newest_first"
        rows = sorted(self.orders.values(), key=self._key, reverse=desc)
        if state["min"]:
            lo = _utc(state["min"])
            rows = [o for o in rows if _utc(o["updated_at"]) >= lo]
        if state["after"]:  # keyset: strictly past the last row sent
            after = state["after"]
            rows = [o for o in rows if (self._key(o) < after if desc else self._key(o) > after)]
        chunk = rows[: self.page_size]
        link = None
        if len(rows) > self.page_size:
            last = chunk[-1]
            token = base64.urlsafe_b64encode(
                json.dumps(
                    {"min": state["min"], "after": self._key(last), "n": state["n"] + 1}
                ).encode()
            ).decode()
            link = (
                f"<{self.base}/admin/api/2024-01/orders.json?"
                f'{urlencode({"limit": self.page_size, "page_info": token})}>; rel="next"'
            )
        return json.dumps({"orders": chunk}).encode(), link

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)


def _handler(server: Any) -> type[BaseHTTPRequestHandler]:
    """A request handler that hands GETs to ``server.handle`` and dates answers by its clock."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def date_time_string(self, timestamp: float | None = None) -> str:
            now = getattr(server, "now", None)
            if timestamp is None and now is not None:
                return email.utils.formatdate(now.timestamp(), usegmt=True)
            return super().date_time_string(timestamp)

        def do_GET(self) -> None:
            server.handle(self)

    return Handler


def _utc(value: str) -> str:
    return iso_z(datetime.fromisoformat(value.replace("Z", "+00:00")))


def shopify_config(base: str, *, read_timeout: float = 2, cap: float = 10) -> str:
    return (
        "[import]\n"
        f"read_timeout = {read_timeout}\n"
        "connect_timeout = 2\n"
        f"retry_after_cap = {cap}\n"
        "batch_size = 200\n"
        "[import.shopify]\n"
        f'base_url = "{base}"\n'
        'access_token_env = "CSOPS_TEST_SHOPIFY_TOKEN"\n'
        "page_size = 250\n"
    )


def csv_text(rows: list[dict[str, str]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------ loopback WooCommerce API


def woo_order(k: int, modified: datetime) -> dict[str, Any]:
    created = datetime(2024, 3, 1) + timedelta(minutes=k)
    return {
        "id": 800 + k,
        "number": str(800 + k),
        "status": ["processing", "completed", "on-hold", "cancelled", "refunded"][k % 5],
        "currency": "EUR",
        "date_created": created.isoformat(),
        "date_created_gmt": created.isoformat(),
        "date_modified_gmt": modified.astimezone(timezone.utc).replace(tzinfo=None).isoformat(),
        "date_paid_gmt": created.isoformat() if k % 5 in (0, 1) else None,
        "date_completed_gmt": (created + timedelta(days=2)).isoformat() if k % 5 == 1 else None,
        "discount_total": "0.00",
        "shipping_total": "4.90",
        "total_tax": "0.00",
        "total": "34.90",
        "customer_id": 0 if k % 7 == 0 else 30 + k % 9,
        "billing": {
            "first_name": "Léa",
            "last_name": f"M{k % 9}",
            "email": f"Woo{k % 9}@example.de",
            "phone": "",
        },
        "line_items": [
            {
                "id": 1,
                "name": "Teller",
                "sku": "PLATE",
                "quantity": 3,
                "subtotal": "30.00",
                "total": "30.00",
                "price": 10,
            }
        ],
        "refunds": [{"id": 9, "reason": "", "total": "-5.00"}] if k % 11 == 3 else [],
    }


@dataclass
class WooServer:
    """A loopback ``/wp-json/wc/v3/orders`` with Basic auth, page numbers or offsets, faults."""

    key: str = "ck_test_key"
    secret: str = "cs_test_secret"
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    faults: dict[int, list[str]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    hold_page: int | None = None
    stall_event: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    now: datetime | None = None  # the server's clock in its Date header (None: the real one)
    total_pages_header: bool = True  # False: no X-WP-TotalPages (some hosts strip it)
    past_last: str = "empty"  # a page past the last: "empty" list or "400" (rest_invalid_page)

    def start(self) -> str:
        self.httpd = QuietServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self.base

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        per = int(q.get("per_page", "10"))
        offset = int(q["offset"]) if "offset" in q else None
        # csops starts each page after the first one order early (per_page = page_size + 1)
        page = (offset + 1) // max(1, per - 1) + 1 if offset else int(q.get("page", "1"))
        self.log.append({"t": time.monotonic(), "page": page, "query": q})
        expected = "Basic " + base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            return ShopifyServer._send(h, 401, {"code": "woocommerce_rest_cannot_view"})
        pending = self.faults.get(page) or []
        if pending:
            kind, _, arg = pending.pop(0).partition(":")
            if kind == "429":
                return ShopifyServer._send(h, 429, {}, {"Retry-After": arg or "1"})
            if kind == "503":
                return ShopifyServer._send(h, 503, {})
        if self.hold_page is not None and page == self.hold_page:
            self.stall_event.set()
            self.release.wait(60)
        rows = sorted(self.orders.values(), key=lambda o: o["id"])
        if "modified_after" in q:
            rows = [o for o in rows if o["date_modified_gmt"] > q["modified_after"]]
        total_pages = max(1, -(-len(rows) // per))
        if offset is not None:  # WordPress: an offset overrides the page number
            chunk = rows[offset : offset + per]
        else:
            chunk = rows[(page - 1) * per : page * per]
        if not chunk and page > 1 and self.past_last == "400":
            return ShopifyServer._send(
                h,
                400,
                {
                    "code": "woocommerce_rest_invalid_page_number",
                    "message": "The page number requested is larger than the number of pages "
                    "available.",
                    "data": {"status": 400},
                },
            )
        headers = {"X-WP-Total": str(len(rows))}
        if self.total_pages_header:
            headers["X-WP-TotalPages"] = str(total_pages)
        return ShopifyServer._send(h, 200, chunk, headers)


def woo_config(base: str) -> str:
    return (
        "[import]\nread_timeout = 2\nretry_after_cap = 10\n"
        "[import.woocommerce]\n"
        f'url = "{base}"\n'
        'consumer_key_env = "CSOPS_TEST_WC_KEY"\n'
        'consumer_secret_env = "CSOPS_TEST_WC_SECRET"\n'
        "page_size = 20\n"
    )


# ---------------------------------------------------------------- AT-21: planted defects


def shopify_line(k: int, **over: str) -> dict[str, str]:
    """Export row ``k``: a one-item order ``#(10000 + k)``, every cell valid; ``over`` replaces
    cells."""
    r = dict.fromkeys(SHOPIFY_COLUMNS, "")
    r.update(
        {
            "Name": f"#{10000 + k}",
            "Email": f"b{k}@example.com",
            "Financial Status": "paid",
            "Fulfillment Status": "fulfilled",
            "Currency": "USD",
            "Subtotal": "10.00",
            "Shipping": "0.00",
            "Taxes": "0.00",
            "Total": "10.00",
            "Created at": "2024-03-01 10:00:00 -0500",
            "Lineitem quantity": "1",
            "Lineitem name": "Mug",
            "Lineitem price": "10.00",
            "Lineitem sku": "MUG",
            "Id": str(70000 + k),
        }
    )
    r.update(over)
    return r


# one kind of defect per entry: (cells replaced, field named in the reject or None, reason);
# the last kind (None) is a row three columns short
DEFECT_KINDS: list[tuple[dict[str, str], str | None, str] | None] = [
    ({"Created at": "2024-02-30 10:00:00 -0500"}, "Created at", "not a date"),
    ({"Lineitem quantity": "-2"}, "Lineitem quantity", "not a quantity"),
    ({"Lineitem quantity": "abc"}, "Lineitem quantity", "not a quantity"),
    ({"Total": "1.234,56"}, "Total", "not an amount"),
    ({"Currency": "ZZ1"}, "Currency", "unknown currency"),
    ({"Billing Name": "Ana\x00Bel"}, "Billing Name", "NUL byte"),
    ({"Notes": "OVERSIZED"}, None, "longer than the limit"),
    ({"Financial Status": "kinda_paid"}, "Financial Status", "unknown status"),
    ({"Name": ""}, "Name", "empty"),
    ({"Lineitem price": "9e999"}, "Lineitem price", "not an amount"),
    None,
]


def write_planted_defects(
    path: Path, rows: int = 10_000, defects: int = 99, big_field: int = 5_000_000
) -> dict[int, tuple[str | None, str]]:
    """AT-21 (a): a Shopify export of ``rows`` one-item orders, ``defects`` of them planted
    with the kinds above in turn, spread evenly. One oversized cell in nine (so one per 99
    defects) is ``big_field`` characters, the others just over the default field limit
    (131,072). Streams; returns {file line: (field, reason fragment)} of every planted row."""
    plants: dict[int, tuple[str | None, str]] = {}
    at = {(i + 1) * rows // (defects + 1): i for i in range(defects)}
    oversized = 0
    template = [shopify_line(0)[c] for c in SHOPIFY_COLUMNS]
    name_at, email_at, id_at = (SHOPIFY_COLUMNS.index(c) for c in ("Name", "Email", "Id"))
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SHOPIFY_COLUMNS)
        for k in range(rows):
            i = at.get(k)
            kind = DEFECT_KINDS[i % len(DEFECT_KINDS)] if i is not None else ()
            over: dict[str, str] = {}
            if kind is None:
                plants[k + 2] = (None, f"columns where the header has {len(SHOPIFY_COLUMNS)}")
            elif kind:
                over, fld, reason = dict(kind[0]), kind[1], kind[2]
                if over.get("Notes") == "OVERSIZED":
                    over["Notes"] = "x" * (big_field if oversized % 9 == 0 else 140_000)
                    oversized += 1
                plants[k + 2] = (fld, reason)
            if over or kind is None or not k % 1000:
                row = [shopify_line(k, **over)[c] for c in SHOPIFY_COLUMNS]
            else:  # the same cells as shopify_line(k), without a dict per row
                row = template.copy()
                row[name_at], row[email_at], row[id_at] = (
                    f"#{10000 + k}",
                    f"b{k}@example.com",
                    str(70000 + k),
                )
            w.writerow(row[:-3] if kind is None else row)
    return plants
