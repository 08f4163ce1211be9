"""Pieces both API sources share: the ``--since`` value, API money and times, page rejects."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from csops.errors import UsageError
from csops.importers.base import MAX_MINOR, FieldError, check_magnitudes, compact
from csops.importers.store import OrderStore, PendingReject
from csops.model import Order, to_minor
from csops.result import Reject
from csops.timeutil import iso


@dataclass
class ApiOrder(Order):
    """An order as APIs give it: they also tell when it was refunded."""

    refunded_at: str | None = None


def since_instant(value: str, tz_name: str) -> str:
    """``--since 2024-04-01`` (midnight in the shop's zone) or an ISO instant → stored ISO."""
    text = value.strip()
    try:
        if len(text) == 10:
            dt = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz_name))
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=ZoneInfo(tz_name))
    except ValueError:
        raise UsageError(
            f"invalid --since {value!r}", expected="YYYY-MM-DD or an ISO 8601 instant"
        ) from None
    return iso(dt)  # type: ignore[return-value]


def minus(instant: str, delta: timedelta) -> str:
    dt = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return iso(dt - delta)  # type: ignore[return-value]


def server_now(resp: Any) -> str:
    """The server's clock when it answered (its ``Date`` header), else ours, as stored ISO.

    Taken from a run's first response, it bounds every watermark the run saves: an order edited
    while the run was reading (after its page was read) has a later ``updated_at`` than this, so
    the next run, starting at ``watermark − overlap``, reads it again.
    """
    header = getattr(resp, "headers", {}).get("Date") if resp is not None else None
    if header:
        try:
            dt = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError, OverflowError):
            dt = None
        if dt is not None and dt.tzinfo is not None:
            return iso(dt)  # type: ignore[return-value]
    return iso(datetime.now(timezone.utc))  # type: ignore[return-value]


def not_after(mark: str | None, limit: str | None) -> str | None:
    """``mark`` but never later than ``limit`` (both stored ISO, which sort as text)."""
    if mark is None or limit is None:
        return mark
    return min(mark, limit)


def api_time(value: Any, fld: str, *, naive_utc: bool = False) -> str | None:
    """An API timestamp (ISO 8601, with offset; or naive UTC for ``*_gmt``) → stored ISO."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise FieldError(fld, f"not a time: {value!r}"[:60], "an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FieldError(fld, f"not a time: {value[:40]!r}", "an ISO 8601 string") from None
    if dt.tzinfo is None:
        if not naive_utc:
            raise FieldError(fld, f"time without offset: {value[:40]!r}", "an offset")
        dt = dt.replace(tzinfo=timezone.utc)
    if not 1990 <= dt.year <= 2100:  # as for files; year 1 with an offset cannot even be UTC
        raise FieldError(fld, f"date out of range: {value[:40]!r}", "a year between 1990 and 2100")
    return iso(dt)


def api_quantity(value: Any, fld: str) -> int:
    """A line's quantity: a JSON integer from 0 to 1,000,000 (as for files)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
        raise FieldError(fld, f"not a quantity: {value!r}"[:60], "an integer from 0 to 1000000")
    return value


def api_money(value: Any, currency: str, fld: str, *, signed: bool = False) -> int:
    """API money: strings like ``"409.94"`` (numbers tolerated); never through float math.

    Below zero only where the platform writes it so (``signed``: WooCommerce refunds); a
    negative price or total elsewhere is a defect that would turn refunds and KPIs upside down.
    """
    if value in (None, ""):
        return 0
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(fld, f"not an amount: {value!r}"[:60], "a decimal string")
    try:
        minor = to_minor(str(value), currency)
    except ValueError as exc:
        raise FieldError(fld, str(exc), "a decimal string") from None
    if minor < 0 and not signed:
        raise FieldError(fld, f"negative amount {str(value)[:20]}", "an amount ≥ 0")
    if abs(minor) >= MAX_MINOR:  # as for files: no shop sells for 10^13, SQLite stops at 2^63
        raise FieldError(fld, f"absurd amount: {str(value)[:40]!r}", "an amount below 10^13")
    return minor


def reject_api_order(store: OrderStore, source: str, raw: Any, exc: Exception) -> Reject:
    """An API record we cannot map: kept in ``rejects`` with the reason, the run goes on."""
    fld = getattr(exc, "field", None)
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    ident = raw.get("id") if isinstance(raw, dict) else None
    expected = getattr(exc, "expected", None)
    store.add_reject(
        PendingReject(
            file=source,
            line=None,
            field=fld,
            expected=expected,
            message=f"order {ident}: {message}",
            raw=json.dumps(raw, ensure_ascii=False, default=str)[:10000],
        )
    )
    return Reject(f"order {ident}: {message}", file=source, field=fld, expected=expected)


def stored_orders(
    batch: list[Any],
    map_order: Callable[[Any], ApiOrder],
    store: OrderStore,
    source: str,
    rejects: list[Reject],
) -> Iterator[ApiOrder]:
    """Map a page's records and hand each order to ``store``, yielding it (the caller reads
    its ``updated_at``); a record that does not map is rejected with its reason instead."""
    for raw in batch:
        try:
            order = map_order(raw)
            check_magnitudes(compact(order))
        except Exception as exc:  # any record the mapping cannot read is rejected, never the
            # run: a run stopped on it would stop on the same page every time after
            rejects.append(reject_api_order(store, source, raw, exc))
            continue
        store.add(order)
        yield order
