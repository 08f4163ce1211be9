"""Judge a day's KPIs against the thresholds and queue one alert per KPI, day and level.

:func:`evaluate_thresholds` is pure (table-tested). :func:`queue_alerts` plans each breach as an
outbox message of kind ``alert`` with ``dedupe_key = kpi:{day}:{metric}:{level}``, in the same
short write transaction for all breaches; running the check again queues nothing new, so an
alert goes out once however often cron runs ``csops kpi check``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from csops.kpi.metrics import Value, metric_for
from csops.kpi.settings import LEVELS, AlertSettings, Threshold

LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}


@dataclass(frozen=True)
class Breach:
    """The worst level a KPI value crossed, with what it was compared against."""

    metric: str
    level: str
    value: float
    limit: float
    direction: str
    sample_size: int

    @property
    def critical(self) -> bool:
        return self.level == "critical"

    def describe(self) -> str:
        return (
            f"{self.level.upper()}: {self.metric} = {format_value(self.metric, self.value)} "
            f"is {self.direction} {format_value(self.metric, self.limit)} "
            f"(sample size {self.sample_size})"
        )


def crossed(value: float, limit: float, direction: str) -> bool:
    """Strictly past the limit: 'below 4.0' fires at 3.99, not at 4.0."""
    return value < limit if direction == "below" else value > limit


def evaluate_thresholds(
    values: Mapping[str, Value], thresholds: Mapping[str, Threshold], min_sample: int
) -> list[Breach]:
    """The breaches of one day, worst level per KPI; values without enough sample are skipped."""
    breaches: list[Breach] = []
    for metric, threshold in sorted(thresholds.items()):
        v = values.get(metric)
        if v is None or v.value is None:
            continue
        needed = threshold.min_sample if threshold.min_sample is not None else min_sample
        if v.sample_size < needed:
            continue
        worst: tuple[str, float] | None = None
        for level, limit in threshold.levels():
            if crossed(v.value, limit, threshold.direction):
                worst = (level, limit)
        if worst:
            breaches.append(
                Breach(metric, worst[0], v.value, worst[1], threshold.direction, v.sample_size)
            )
    breaches.sort(key=lambda b: (-LEVEL_RANK[b.level], b.metric))
    return breaches


def format_value(metric: str, value: float | None) -> str:
    """A value as people read it: 12.5%, 4.21, 35.0 min, 12345 minor units → 123.45."""
    if value is None:
        return "–"
    m = metric_for(metric)
    unit = m.unit if m else "count"
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "money":
        from csops.model import currency_exponent

        currency = metric.split(".")[1]
        exp = currency_exponent(currency)
        return f"{currency} {value / 10**exp:,.{exp}f}"
    if unit == "minutes":
        return f"{value:.1f} min"
    if unit == "hours":
        return f"{value:.1f} h"
    if unit == "score":
        return f"{value:.2f}"
    if unit == "nps":
        return f"{value:+.0f}"
    return f"{value:g}" if value != int(value) else f"{int(value)}"


def dedupe_key(day: date, breach: Breach) -> str:
    return f"kpi:{day.isoformat()}:{breach.metric}:{breach.level}"


def alert_text(shop: str, day: date, breach: Breach) -> tuple[str, str]:
    subject = f"[{shop}] KPI {breach.level}: {breach.metric} on {day.isoformat()}"
    body = (
        f"{breach.describe()}\n\n"
        f"Day: {day.isoformat()} (shop time)\n"
        f"KPI: {breach.metric}\n"
        f"Level: {breach.level}\n"
        f"Value: {format_value(breach.metric, breach.value)}\n"
        f"Threshold: {breach.direction} {format_value(breach.metric, breach.limit)}\n"
        f"Sample size: {breach.sample_size}\n\n"
        "Definitions: docs/kpis.md. Report: csops kpi report --out report.html\n"
    )
    return subject, body


def queue_alerts(
    conn: sqlite3.Connection,
    day: date,
    breaches: list[Breach],
    alerts: AlertSettings,
    *,
    shop_name: str,
    recipient: str,
    now: datetime,
    domain: str = "csops.local",
) -> list[tuple[Breach, str]]:
    """Plan an outbox message per breach at a sending level; returns (breach, queued|already)."""
    from csops import db
    from csops.messaging.outbox import NewMessage, enqueue

    outcome: list[tuple[Breach, str]] = []
    with db.write(conn):
        for breach in breaches:
            if breach.level not in alerts.send_levels:
                outcome.append((breach, "listed"))
                continue
            subject, body = alert_text(shop_name, day, breach)
            msg = NewMessage(
                dedupe_key=dedupe_key(day, breach),
                kind="alert",
                channel=alerts.channel,
                recipient=recipient,
                subject=subject,
                body_text=body,
                is_marketing=False,
            )
            new_id = enqueue(conn, msg, now=now, domain=domain)
            outcome.append((breach, "queued" if new_id is not None else "already queued"))
    return outcome


# ---------------------------------------------------------------------------------------------
# The `kpi check` job.

CHECK_COLUMNS = ["day", "metric", "level", "value", "threshold", "sample_size", "alert"]


def run_check(ctx, *, day: date | None = None):
    """``csops kpi check``: recompute the day (default: yesterday), judge it, alert, exit 4."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from csops import timeutil
    from csops.errors import ConfigError
    from csops.kpi.daily import compute_days
    from csops.result import Result

    settings = ctx.config.section("kpi")
    alerts: AlertSettings = ctx.config.section("alerts")
    tz = ZoneInfo(ctx.config.shop.timezone)
    if day is None:
        day = timeutil.local_day(ctx.now, tz) - timedelta(days=1)
    if alerts.channel:
        from csops.messaging.settings import channel_table

        channels = channel_table(ctx.config)
        if alerts.channel not in channels:
            raise ConfigError(
                f"[alerts] channel {alerts.channel!r} is not a configured channel",
                file=str(ctx.config.path),
                field="alerts.channel",
                expected="one of " + ", ".join(sorted(channels)),
            )
    values = compute_days(ctx.conn, [day], tz, settings, ctx.now, store=not ctx.dry_run)[day]
    breaches = evaluate_thresholds(values, settings.thresholds, settings.min_sample)
    result = Result("kpi check", columns=CHECK_COLUMNS)
    outcome: list[tuple[Breach, str]]
    if not breaches:
        outcome = []
    elif ctx.dry_run:
        outcome = [(b, "dry run") for b in breaches]
    elif not alerts.channel:
        outcome = [(b, "no [alerts] channel") for b in breaches]
    else:
        from csops.messaging.outbox import message_id_domain

        outcome = queue_alerts(
            ctx.conn,
            day,
            breaches,
            alerts,
            shop_name=ctx.config.shop.name,
            recipient=alerts.recipient or ctx.config.shop.email,
            now=ctx.now,
            domain=message_id_domain(ctx.config),
        )
    if breaches and alerts.channel and not ctx.dry_run:
        from csops.messaging.outbox import deliver_into

        deliver_into(result, ctx, kinds={"alert"}, prefix="alerts_")
    result.rows = [
        {
            "day": day.isoformat(),
            "metric": b.metric,
            "level": b.level,
            "value": b.value,
            "threshold": f"{b.direction} {b.limit:g}",
            "sample_size": b.sample_size,
            "alert": state,
        }
        for b, state in outcome
    ]
    for b, _state in outcome:
        result.count(b.level)
        result.messages.append(f"{day.isoformat()} {b.describe()}")
    result.count("queued", sum(1 for _b, s in outcome if s == "queued"))
    if not breaches:
        result.messages.append(f"{day.isoformat()}: every KPI within its thresholds")
    if any(b.critical for b in breaches):
        result.status = "critical"
    return result
