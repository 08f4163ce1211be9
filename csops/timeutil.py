"""Time made explicit: instants are stored as UTC ISO 8601; a "day" is a date in the shop's zone.

``now()`` is the one clock of the CLI. Tests inject an instant with ``CSOPS_NOW`` (honoured only
when ``CSOPS_TESTING=1``), so backoff, quiet hours and expiry are tested without sleeping.
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def now() -> datetime:
    """The current instant in UTC, or the injected test instant."""
    if os.environ.get("CSOPS_TESTING") == "1" and os.environ.get("CSOPS_NOW"):
        return parse_instant(os.environ["CSOPS_NOW"])
    return datetime.now(UTC)


def parse_instant(value: str, tz: ZoneInfo | timezone = UTC) -> datetime:
    """Parse an ISO 8601 instant; a naive value is read in ``tz``. Returns an aware UTC time."""
    text = value.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    """UTC ISO 8601 with seconds precision and a ``Z``: the one stored form of an instant."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        raise ValueError("naive datetime cannot be stored; give it a timezone")
    # isoformat is several times cheaper than strftime; the offset of a UTC time is "+00:00".
    return dt.astimezone(UTC).isoformat(timespec="seconds")[:-6] + "Z"


def from_iso(value: str | None) -> datetime | None:
    return parse_instant(value) if value else None


def parse_duration(value: str) -> timedelta:
    """``"3d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` → timedelta."""
    m = _DURATION.match(value or "")
    if not m:
        raise ValueError(f"invalid duration {value!r}", "a number and a unit: 30m, 12h, 3d, 2w")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def shop_zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(instant: datetime, tz: ZoneInfo) -> date:
    """The shop-local calendar day an instant falls on."""
    return instant.astimezone(tz).date()


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC half-open interval [start, end) of a shop-local day (23 or 25 hours around DST)."""
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid date {value!r}", "YYYY-MM-DD") from None
