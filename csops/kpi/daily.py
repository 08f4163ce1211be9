"""Compute KPIs per shop-local day, with trailing 7/30-day values, and upsert them in kpi_daily.

Which days: an explicit day or range; otherwise the last ``recompute_days`` days plus every day
whose source rows changed since the previous run (late data: a refund imported a week later,
a survey answered after the day it was sent). A changed row names the days of each timestamp
that puts it on a day for some metric; a day's change also moves the trailing 7/30-day values of
the 29 days after it, and an order's change moves the 90-day repurchase rate of the 89 days
after it. The previous run's start is kept in ``sync_state`` (source ``kpi.daily``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from csops import db, timeutil
from csops.kpi.metrics import METRICS, Value, Window, compute_window
from csops.kpi.settings import KpiSettings

WATERMARK = "kpi.daily"
TRAILING_DAYS = {".7d": 7, ".30d": 30}
REPURCHASE_DAYS = 90

# (table, "changed since" predicate, timestamps that put the row on a day, reach in days)
_CHANGES: tuple[tuple[str, str, tuple[str, ...], int], ...] = (
    (
        "orders",
        "updated_at >= :since OR imported_at >= :since",
        ("created_at", "refunded_at"),
        REPURCHASE_DAYS,
    ),
    (
        "return_lines r LEFT JOIN orders o ON o.id = r.order_id",
        "r.decided_at >= :since",
        ("r.decided_at", "o.created_at"),
        30,
    ),
    (
        "surveys",
        "updated_at >= :since OR responded_at >= :since",
        ("sent_at", "responded_at"),
        30,
    ),
    (
        "outbox",
        "updated_at >= :since OR sent_at >= :since OR queued_at >= :since",
        ("queued_at", "sent_at"),
        30,
    ),
    ("conversations", "imported_at >= :since", ("created_at", "resolved_at"), 30),
)


def compute_day(conn: sqlite3.Connection, day: date, tz: ZoneInfo, settings: KpiSettings) -> dict:
    """All KPI values of one day: the day itself and its trailing 7- and 30-day windows."""
    daily = compute_window(conn, Window.of_days(day, day, tz), settings)
    out: dict[str, Value] = {}
    trailing = {
        suffix: compute_window(
            conn, Window.of_days(day - timedelta(days=n - 1), day, tz), settings, trailing_only=True
        )
        for suffix, n in TRAILING_DAYS.items()
    }
    for m in METRICS:
        names = {k for k in daily if m.matches(k)}
        if m.trailing:
            for values in trailing.values():
                names |= {k for k in values if m.matches(k)}
        for name in sorted(names):
            out[name] = daily.get(name, m.empty)
            if m.trailing:
                for suffix, values in trailing.items():
                    out[name + suffix] = values.get(name, m.empty)
    return out


def store_day(
    conn: sqlite3.Connection, day: date, values: dict[str, Value], computed_at: str
) -> None:
    """Replace the day's rows in one short write transaction (a vanished currency goes too)."""
    with db.write(conn):
        conn.execute("DELETE FROM kpi_daily WHERE day = ?", (day.isoformat(),))
        conn.executemany(
            "INSERT INTO kpi_daily (day, metric, value, numerator, denominator, sample_size,"
            " computed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (day.isoformat(), name, v.value, v.numerator, v.denominator, v.sample_size,
                 computed_at)
                for name, v in values.items()
            ],
        )  # fmt: skip


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def changed_sql(table: str, changed: str, column: str) -> str:
    """Distinct minutes of ``column`` among rows changed since ``:since`` (index searches)."""
    return (
        f"SELECT DISTINCT substr({column}, 1, 16) AS ts FROM {table} "
        f"WHERE ({changed}) AND {column} IS NOT NULL"
    )


def changed_days(conn: sqlite3.Connection, since: str, tz: ZoneInfo, today: date) -> set[date]:
    """Days whose values may differ because source rows changed at or after ``since``."""
    days: set[date] = set()
    for table, changed, columns, reach in _CHANGES:
        for column in columns:
            for row in conn.execute(changed_sql(table, changed, column), {"since": since}):
                try:
                    event = timeutil.local_day(timeutil.parse_instant(row["ts"]), tz)
                except ValueError:
                    continue
                if event > today:
                    continue
                last = min(today, event + timedelta(days=reach - 1))
                days.update(day_range(event, last))
    return days


@dataclass
class Plan:
    """Which days to (re)compute and why."""

    days: list[date]
    recent: int = 0
    late: int = 0
    first_run: bool = False
    reasons: list[str] = field(default_factory=list)


def plan_days(conn: sqlite3.Connection, settings: KpiSettings, tz: ZoneInfo, now: datetime) -> Plan:
    """The default day set of ``kpi daily``: recent days plus days touched by late data."""
    today = timeutil.local_day(now, tz)
    row = conn.execute("SELECT cursor FROM sync_state WHERE source = ?", (WATERMARK,)).fetchone()
    if row is None or not row["cursor"]:
        first = today - timedelta(days=settings.backfill_days - 1)
        return Plan(day_range(first, today), recent=settings.backfill_days, first_run=True)
    recent = set(day_range(today - timedelta(days=settings.recompute_days - 1), today))
    since_dt = timeutil.parse_instant(row["cursor"]) - timedelta(hours=settings.late_overlap_hours)
    late = changed_days(conn, timeutil.iso(since_dt), tz, today) - recent
    return Plan(sorted(recent | late), recent=len(recent), late=len(late))


def save_watermark(conn: sqlite3.Connection, started: datetime) -> None:
    with db.write(conn):
        conn.execute(
            "INSERT INTO sync_state (source, cursor, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(source) DO UPDATE SET cursor = excluded.cursor, "
            "updated_at = excluded.updated_at",
            (WATERMARK, timeutil.iso(started), timeutil.iso(started)),
        )


def compute_days(
    conn: sqlite3.Connection,
    days: Iterable[date],
    tz: ZoneInfo,
    settings: KpiSettings,
    now: datetime,
    *,
    store: bool = True,
) -> dict[date, dict[str, Value]]:
    """Compute (and unless ``store`` is false, upsert) each day; one transaction per day."""
    results: dict[date, dict[str, Value]] = {}
    computed_at = timeutil.iso(now)
    for day in days:
        values = compute_day(conn, day, tz, settings)
        if store:
            store_day(conn, day, values, computed_at)
        results[day] = values
    return results


def stored_values(conn: sqlite3.Connection, day: date) -> dict[str, Value]:
    rows = conn.execute(
        "SELECT metric, value, numerator, denominator, sample_size FROM kpi_daily WHERE day = ?",
        (day.isoformat(),),
    )
    return {
        r["metric"]: Value(r["value"], r["numerator"], r["denominator"], r["sample_size"])
        for r in rows
    }


# ---------------------------------------------------------------------------------------------
# The `kpi daily` job.

MAX_RANGE_DAYS = 3660
COLUMNS = [
    "day", "metric", "value", "numerator", "denominator", "sample_size",
    "value_7d", "sample_7d", "value_30d", "sample_30d",
]  # fmt: skip


def day_rows(day: date, values: dict[str, Value]) -> list[dict]:
    """One row per KPI of the day, with its trailing values beside it."""
    rows = []
    for name, v in values.items():
        if name.endswith((".7d", ".30d")):
            continue
        v7, v30 = values.get(name + ".7d"), values.get(name + ".30d")
        rows.append(
            {
                "day": day.isoformat(),
                "metric": name,
                "value": v.value,
                "numerator": v.numerator,
                "denominator": v.denominator,
                "sample_size": v.sample_size,
                "value_7d": v7.value if v7 else None,
                "sample_7d": v7.sample_size if v7 else None,
                "value_30d": v30.value if v30 else None,
                "sample_30d": v30.sample_size if v30 else None,
            }
        )
    return rows


def run_daily(ctx, *, day: date | None = None, first: date | None = None, last: date | None = None):
    """``csops kpi daily``: compute and store; rows of the day asked for (default: yesterday)."""
    from csops.errors import UsageError
    from csops.result import Result

    settings: KpiSettings = ctx.config.section("kpi")
    tz = ZoneInfo(ctx.config.shop.timezone)
    today = timeutil.local_day(ctx.now, tz)
    result = Result("kpi daily", columns=COLUMNS)
    plan: Plan | None = None
    if day is not None:
        days, show = [day], [day]
    elif first is not None or last is not None:
        if first is None or last is None:
            raise UsageError("--from and --to go together", expected="--from D --to D")
        if last < first:
            raise UsageError("--to is before --from", field="--to", expected=f">= {first}")
        if (last - first).days >= MAX_RANGE_DAYS:
            raise UsageError("range too long", expected=f"at most {MAX_RANGE_DAYS} days")
        days = day_range(first, last)
        show = days
    else:
        plan = plan_days(ctx.conn, settings, tz, ctx.now)
        days = plan.days
        yesterday = today - timedelta(days=1)
        show = [yesterday if yesterday in days else days[-1]]
    results = compute_days(ctx.conn, days, tz, settings, ctx.now, store=not ctx.dry_run)
    if plan is not None and not ctx.dry_run:
        save_watermark(ctx.conn, ctx.now)
    rows = []
    for d in show:
        rows.extend(day_rows(d, results[d]))
    result.rows = rows
    result.count("days", len(days))
    result.count("values", sum(len(v) for v in results.values()))
    if plan is not None:
        if plan.first_run:
            result.messages.append(f"first run: computed the last {len(days)} days")
        else:
            result.count("late_days", plan.late)
            result.messages.append(
                f"recomputed {len(days)} days: the last {plan.recent} and {plan.late} "
                "touched by data changed since the previous run"
            )
    shown = ", ".join(d.isoformat() for d in show[:3]) + (" …" if len(show) > 3 else "")
    result.messages.append(f"showing {shown}")
    return result
