"""Opt-out and opt-in: the customer's "stop" always wins, and it outlives every purge.

``optout`` suppresses an address on every channel for every kind of message (scope ``all``);
the one-click unsubscribe of a marketing mail sets scope ``marketing`` (surveys server).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from csops import db as dbmod
from csops import timeutil
from csops.errors import UsageError


def normalize_address(address: str) -> tuple[str, str]:
    """(normalized address, channel): e-mails are lower-cased, phones keep digits and ``+``."""
    text = address.strip()
    if "@" in text:
        return text.lower(), "email"
    digits = "".join(ch for ch in text if ch.isdigit() or ch == "+")
    if len(digits.lstrip("+")) < 5:
        raise UsageError(f"not an e-mail address or phone number: {address!r}")
    return digits, "sms"


@dataclass
class OptResult:
    address: str
    channel: str
    changed: bool
    customers: int


def opt_out(
    conn: sqlite3.Connection, address: str, *, scope: str = "all", reason: str = "operator"
) -> OptResult:
    addr, channel = normalize_address(address)
    at = timeutil.iso(timeutil.now())
    with dbmod.write(conn):
        before = conn.execute(
            "SELECT scope FROM suppressions WHERE address = ? AND channel = ?", (addr, channel)
        ).fetchone()
        if before is None:
            conn.execute(
                "INSERT INTO suppressions (address, channel, scope, reason, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (addr, channel, scope, reason, at),
            )
        elif before["scope"] != "all" and scope == "all":
            conn.execute(
                "UPDATE suppressions SET scope = 'all', reason = ? WHERE address = ? "
                "AND channel = ?",
                (reason, addr, channel),
            )
        column = "email" if channel == "email" else "phone"
        if scope == "all":
            # opted_out_at means "contact never": a marketing-only stop leaves it unset.
            cur = conn.execute(
                f"UPDATE customers SET opted_out_at = COALESCE(opted_out_at, ?), updated_at = ? "
                f"WHERE {column} = ?",
                (at, at, addr),
            )
            matched = cur.rowcount
        else:
            matched = conn.execute(
                f"SELECT COUNT(*) FROM customers WHERE {column} = ?", (addr,)
            ).fetchone()[0]
    changed = before is None or (before["scope"] != "all" and scope == "all")
    return OptResult(addr, channel, changed, matched)


def opt_in(conn: sqlite3.Connection, address: str) -> OptResult:
    addr, channel = normalize_address(address)
    at = timeutil.iso(timeutil.now())
    with dbmod.write(conn):
        gone = conn.execute(
            "DELETE FROM suppressions WHERE address = ? AND channel = ?", (addr, channel)
        ).rowcount
        column = "email" if channel == "email" else "phone"
        cur = conn.execute(
            f"UPDATE customers SET opted_out_at = NULL, updated_at = ? WHERE {column} = ?",
            (at, addr),
        )
    return OptResult(addr, channel, bool(gone), cur.rowcount)


def suppression_scope(conn: sqlite3.Connection, address: str, channel: str) -> str | None:
    """``all``, ``marketing`` or None for an address (normalized by the caller)."""
    row = conn.execute(
        "SELECT scope FROM suppressions WHERE address = ? AND channel = ?",
        (address.strip().lower() if channel == "email" else address, channel),
    ).fetchone()
    return row["scope"] if row else None
