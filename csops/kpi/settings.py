"""``[kpi]`` and ``[alerts]``: how far back to recompute, what to watch, and whom to tell.

Thresholds are per metric name (any stored name, e.g. ``csat.avg`` or ``csat.avg.7d``) with a
direction and up to three levels. A single small day is noise, so a threshold is only judged
when the value's sample size reaches ``min_sample``. A ``[kpi.thresholds]`` table in the config
replaces the defaults below as a whole (the shipped config lists them all, ready to edit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LEVELS: tuple[str, ...] = ("notice", "warning", "critical")


@dataclass(frozen=True)
class Threshold:
    """Alert when the value is ``below`` (or ``above``) a level; the worst level breached wins."""

    direction: Literal["below", "above"]
    notice: float | None = None
    warning: float | None = None
    critical: float | None = None
    # Overrides [kpi] min_sample for this metric (e.g. 1 for counts of failures).
    min_sample: int | None = None

    def __post_init__(self) -> None:
        levels = [(name, getattr(self, name)) for name in LEVELS if getattr(self, name) is not None]
        if not levels:
            raise ValueError("a threshold needs at least one level", "notice, warning or critical")
        values = [v for _n, v in levels]
        ordered = sorted(values, reverse=self.direction == "below")
        if values != ordered:
            order = (
                "notice >= warning >= critical"
                if self.direction == "below"
                else ("notice <= warning <= critical")
            )
            raise ValueError(f"levels out of order for direction {self.direction!r}", order)
        if self.min_sample is not None and self.min_sample < 0:
            raise ValueError("min_sample must not be negative", "an integer >= 0")

    def levels(self) -> list[tuple[str, float]]:
        return [(name, getattr(self, name)) for name in LEVELS if getattr(self, name) is not None]


def _t(direction: str, notice=None, warning=None, critical=None, min_sample=None) -> Threshold:
    return Threshold(direction, notice, warning, critical, min_sample)  # type: ignore[arg-type]


# The shipped defaults (config/csops.toml repeats them under "### kpi & alerts ###").
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "csat.avg": _t("below", notice=4.3, warning=4.0, critical=3.5),
    "csat.satisfied_pct": _t("below", notice=85.0, warning=80.0, critical=70.0),
    "nps": _t("below", notice=30.0, warning=10.0, critical=-10.0, min_sample=10),
    "frt.median_minutes": _t("above", notice=5.0, warning=15.0, critical=60.0),
    "frt.within_5m_pct": _t("below", notice=80.0, warning=60.0, critical=40.0),
    "after_sales.answered_24h_pct": _t("below", notice=95.0, warning=90.0, critical=75.0),
    "cancellation_rate": _t("above", notice=5.0, warning=10.0, critical=20.0, min_sample=20),
    "return_rate.30d": _t("above", notice=8.0, warning=12.0, critical=20.0, min_sample=50),
    "complaint_rate": _t("above", notice=1.0, warning=2.0, critical=5.0, min_sample=20),
    "followups.failed": _t("above", notice=0.0, warning=5.0, critical=20.0, min_sample=1),
}


@dataclass(frozen=True)
class KpiSettings:
    """What ``csops kpi daily`` recomputes and what ``csops kpi check`` judges."""

    # `kpi daily` without a date recomputes the last N shop-local days (today included) ...
    recompute_days: int = 7
    # ... plus every day whose source rows changed since the previous run started, minus this
    # overlap (a long import stamps rows with its start time and may commit after we read).
    late_overlap_hours: int = 6
    # The first run (no previous run recorded) computes this many days back.
    backfill_days: int = 90
    # Days shown by `kpi report` when --days is not given.
    report_days: int = 30
    # Values with a smaller sample size are stored and shown but never alerted on.
    min_sample: int = 5
    # Lists are tuples once loaded (the config loader's shape), so defaults are tuples too.
    # Conversation kinds (as imported) counted as after-sales requests and as complaints.
    after_sales_kinds: list[str] = field(
        default_factory=lambda: ("after_sale", "after_sales", "return", "refund", "complaint")
    )
    complaint_kinds: list[str] = field(default_factory=lambda: ("complaint",))
    # Outbox kinds counted as follow-ups (surveys are "csat"/"nps", return notices
    # "return_notice", KPI alerts "alert").
    followup_kinds: list[str] = field(default_factory=lambda: ("followup",))
    thresholds: dict[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    def __post_init__(self) -> None:
        for name in ("recompute_days", "backfill_days", "report_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1", "an integer >= 1")
        if self.late_overlap_hours < 0 or self.min_sample < 0:
            raise ValueError("late_overlap_hours and min_sample must not be negative", ">= 0")
        from csops.kpi.metrics import is_known_metric

        for name in self.thresholds:
            if not is_known_metric(name):
                raise ValueError(
                    f"unknown KPI {name!r} in [kpi.thresholds]",
                    "a metric listed in docs/kpis.md, optionally with .7d or .30d",
                )


@dataclass(frozen=True)
class AlertSettings:
    """Where breaches go: a channel from ``[channels]`` and a recipient (default: shop email)."""

    # Name of a [channels.NAME] table (email via smtp/outbox-dir, or a webhook); "outbox" is the
    # built-in outbox-dir channel. Empty: breaches are listed by `kpi check` (and exit 4 at
    # critical) but no message is queued.
    channel: str = "outbox"
    recipient: str = ""
    # Levels that send a message; lower levels are only listed.
    send_levels: list[Literal["notice", "warning", "critical"]] = field(
        default_factory=lambda: ("notice", "warning", "critical")
    )


def doctor_checks(config) -> list:
    """The alert channel exists; the report template is readable; thresholds are listed."""
    from csops.doctor import Check

    checks = []
    alerts: AlertSettings = config.section("alerts")
    kpi: KpiSettings = config.section("kpi")
    if alerts.channel:
        try:
            from csops.messaging.settings import channel_table

            names = sorted(channel_table(config))
        except ImportError:
            names = sorted(config.section("channels") or {})
        checks.append(
            Check("kpi", "alert channel", alerts.channel in names,
                  f"{alerts.channel!r} ({', '.join(names) or 'no channels'})")
        )  # fmt: skip
    else:
        checks.append(
            Check("kpi", "alert channel", True, "none: breaches are listed, not sent",
                  level="warning")
        )  # fmt: skip
    try:
        from csops.kpi.report import _template_source

        _template_source(config.resolve(config.paths.templates))
        checks.append(Check("kpi", "report template", True, "reports/kpi_report.html"))
    except OSError as exc:
        checks.append(Check("kpi", "report template", False, f"cannot read: {exc}"))
    checks.append(Check("kpi", "thresholds", True, f"{len(kpi.thresholds)} KPIs watched"))
    return checks
