"""Helpers for the survey tests: seeded orders, a survey server on loopback, table checksums."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import free_port

SIGNING_KEY = "test-signing-key-0123456789"
OLD_KEY = "old-signing-key-9876543210"

SURVEY_CONFIG = """
[surveys]
throttle_days = 90
reminder_after_days = 4
token_expiry_days = 30
max_body_bytes = 16384
max_comment_chars = 2000
posts_per_token_per_minute = 20
posts_per_client_per_minute = 1000
channel_timeout_s = 5

[[surveys.rules]]
name = "csat-after-delivery"
kind = "csat"
trigger = "delivered"
delay = "3d"
send_within = "14d"
"""


def seed_orders(
    db_path: Path,
    n: int,
    *,
    delivered_at: str = "2024-04-10T08:00:00Z",
    locale: str | None = "en",
    start: int = 1,
    domain: str = "example.com",
) -> list[int]:
    """n delivered orders, one customer each (customer<i>@domain); returns the order ids."""
    conn = sqlite3.connect(db_path, timeout=30)
    ids = []
    with conn:
        for i in range(start, start + n):
            email = f"customer{i}@{domain}"
            conn.execute(
                "INSERT OR IGNORE INTO customers (email, name, locale, created_at, updated_at) "
                "VALUES (?, ?, ?, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')",
                (email, f"Customer {i}", locale),
            )
            (cust_id,) = conn.execute(
                "SELECT id FROM customers WHERE email = ?", (email,)
            ).fetchone()
            (n_orders,) = conn.execute("SELECT COUNT(*) FROM orders").fetchone()
            number = f"#{1000 + i}"
            if conn.execute("SELECT 1 FROM orders WHERE number = ?", (number,)).fetchone():
                number = f"#{5000 + n_orders}"
            cur = conn.execute(
                "INSERT INTO orders (platform, external_id, number, customer_id, email, status, "
                "currency, total_minor, created_at, paid_at, shipped_at, delivered_at) "
                "VALUES ('shopify', ?, ?, ?, ?, 'delivered', 'USD', 2500, "
                "'2024-04-01T08:00:00Z', '2024-04-01T08:00:00Z', '2024-04-03T08:00:00Z', ?)",
                (f"ext-{n_orders + 1}", number, cust_id, email, delivered_at),
            )
            ids.append(cur.lastrowid)
    conn.close()
    return ids


def insert_surveys(db_path: Path, order_ids: list[int], kind: str = "csat") -> list[int]:
    """Survey rows as `surveys send` leaves them (without the mail), for server-only tests."""
    conn = sqlite3.connect(db_path, timeout=30)
    ids = []
    with conn:
        for oid in order_ids:
            cust = conn.execute("SELECT customer_id FROM orders WHERE id = ?", (oid,)).fetchone()
            cur = conn.execute(
                "INSERT INTO surveys (kind, order_id, customer_id, expires_at, updated_at) "
                "VALUES (?, ?, ?, '2099-01-01T00:00:00Z', '2024-04-20T02:00:00Z')",
                (kind, oid, cust[0]),
            )
            ids.append(cur.lastrowid)
    conn.close()
    return ids


def checksum(db_path: Path, tables: tuple[str, ...] = ("surveys", "suppressions", "outbox")) -> str:
    """A digest of every row of the given tables: equal digests, nothing changed."""
    conn = sqlite3.connect(db_path, timeout=30)
    h = hashlib.sha256()
    for table in tables:
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid"):
            h.update(repr(row).encode())
    conn.close()
    return h.hexdigest()


@dataclass
class Server:
    base: str
    app: Any
    server: Any


@contextmanager
def serve_in_thread(config_path: Path) -> Iterator[Server]:
    """`make_server` on a free loopback port in a thread (the env must hold the signing keys)."""
    from csops.config import load_config
    from csops.surveys.server import make_server, serve_until

    config = load_config(config_path)
    server = make_server(config, host="127.0.0.1", port=0)

    stop = threading.Event()
    thread = threading.Thread(target=serve_until, args=(server, stop), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.effective_port}", server.csops_app, server)
    finally:
        stop.set()
        thread.join(timeout=10)


LEAK = re.compile(r"Traceback|File \"|/tmp/|/work/|\.py\b|sqlite|SELECT |Error:|Exception")


def assert_no_leak(text: str) -> None:
    m = LEAK.search(text)
    assert m is None, f"response leaks internals: {text[max(0, m.start() - 80) : m.end() + 80]!r}"


class _Collect:
    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[Any] = []
        self.lock = threading.Lock()
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        import asyncio
        from email import message_from_bytes, policy

        if self.delay:
            await asyncio.sleep(self.delay)

        msg = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(msg)
        return "250 OK"


@contextmanager
def smtp_sink(delay: float = 0.0) -> Iterator[_Collect]:
    """A real SMTP server (aiosmtpd) on loopback collecting every message it accepts."""
    from aiosmtpd.controller import Controller

    handler = _Collect(delay)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        controller.stop()


def use_smtp(ws: Any, port: int, *, alerts: bool = True) -> None:
    """Survey mail and detractor alerts over SMTP to the sink; no quiet hours, no cap."""
    ws.replace_config('quiet_hours = "21:00-09:00"', 'quiet_hours = ""')
    ws.replace_config('cap_period = "2d"', 'cap_period = "0d"')
    ws.set_config(f'[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n')
    extra = 'alert_channel = "mail"\nalert_recipient = "care-team@shop.example"\n' if alerts else ""
    ws.replace_config("\n[surveys]\n", f'\n[surveys]\nchannel = "mail"\n{extra}')


def body_text(msg: Any) -> str:
    return msg.get_body(("plain",)).get_content()


def links_in(msg: Any) -> list[str]:
    return re.findall(r"https?://[^\s<>\"]+", body_text(msg))
