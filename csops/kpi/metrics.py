"""Every KPI as one registry entry: its name, unit, written definition and the SQL behind it.

A metric is computed over a :class:`Window` — a half-open UTC interval ``[start, end)`` covering
whole shop-local days (from :func:`csops.timeutil.day_bounds`, so a DST day is 23 or 25 hours).
Every query restricts its rows with a range predicate on one indexed UTC ISO timestamp column
(``created_at >= :start AND created_at < :end``), so computing a day costs time proportional to
that day's rows, not to the size of the database. ``docs/kpis.md`` documents each name in
:data:`METRICS`; a test keeps the two in agreement.

Conventions: rates are percentages (0–100); money is in integer minor units of its currency
(``gmv.CNY`` = 12345 means CNY 123.45); durations are minutes or hours as the name says. Each
value carries ``numerator``, ``denominator`` (where a ratio has one) and ``sample_size``.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from csops import timeutil

if TYPE_CHECKING:
    from csops.kpi.settings import KpiSettings

Unit = Literal["count", "money", "percent", "minutes", "hours", "score", "nps"]
TRAILING = (".7d", ".30d")


@dataclass(frozen=True)
class Value:
    """One KPI value with what it was computed from."""

    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    sample_size: int = 0


@dataclass(frozen=True)
class Window:
    """Whole shop-local days ``first_day..last_day`` as the UTC interval ``[start, end)``."""

    first_day: date
    last_day: date
    tz: ZoneInfo
    start: str
    end: str

    @classmethod
    def of_days(cls, first_day: date, last_day: date, tz: ZoneInfo) -> Window:
        start, _ = timeutil.day_bounds(first_day, tz)
        _, end = timeutil.day_bounds(last_day, tz)
        return cls(first_day, last_day, tz, timeutil.iso(start), timeutil.iso(end))

    def params(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end}


Compute = Callable[[sqlite3.Connection, Window, "KpiSettings"], dict[str, Value]]


@dataclass(frozen=True)
class Metric:
    """A KPI: ``name`` may hold ``{currency}`` (one value per ISO currency code seen)."""

    name: str
    title: str
    unit: Unit
    better: Literal["up", "down"] | None
    definition: str
    sql: str
    compute: Compute
    trailing: bool = True
    # Stored for a window where the metric had no rows (per-currency values absent that day).
    empty: Value = Value(None, 0, 0, 0)

    @property
    def per_currency(self) -> bool:
        return "{currency}" in self.name

    def matches(self, name: str) -> bool:
        if not self.per_currency:
            return name == self.name
        pattern = re.escape(self.name).replace(re.escape("{currency}"), "[A-Z]{3}")
        return re.fullmatch(pattern, name) is not None


# ---------------------------------------------------------------------------------------------
# Small pure helpers (the formulas), table-tested.


def ratio(num: float, den: float, scale: float = 100.0) -> Value:
    """``scale * num / den`` with its parts; no value when the denominator is 0."""
    return Value(scale * num / den if den else None, num, den, int(den))


def median(values: Sequence[float]) -> float | None:
    """The middle value (mean of the two middle ones for an even count)."""
    return statistics.median(values) if values else None


def p90(values: Sequence[float]) -> float | None:
    """90th percentile by nearest rank: the ceil(0.9·n)-th smallest value."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def nps_score(promoters: int, passives: int, detractors: int) -> float | None:
    """Net Promoter Score: % promoters (9–10) minus % detractors (0–6), from −100 to 100."""
    n = promoters + passives + detractors
    return 100.0 * (promoters - detractors) / n if n else None


def _one(conn: sqlite3.Connection, sql: str, params: dict) -> sqlite3.Row:
    return conn.execute(sql, params).fetchone()


def _column(conn: sqlite3.Connection, sql: str, params: dict) -> list[float | None]:
    return [None if r[0] is None else round(float(r[0]), 3) for r in conn.execute(sql, params)]


# ---------------------------------------------------------------------------------------------
# Orders. An order is on the day its created_at falls on (shop timezone).

# Not cancelled. The unary + keeps SQLite off idx_orders_cancelled (cancelled_at IS NULL matches
# nearly every order, a scan of the whole history): the created_at range must drive the query.
_LIVE = "status != 'cancelled' AND +cancelled_at IS NULL"

SQL_ORDERS = """
SELECT COUNT(*) AS n FROM orders
WHERE created_at >= :start AND created_at < :end
"""


def _orders(conn, w, s):
    n = _one(conn, SQL_ORDERS, w.params())["n"]
    return {"orders": Value(n, n, None, n)}


SQL_GMV = f"""
SELECT currency, SUM(total_minor) AS total, COUNT(*) AS n FROM orders
WHERE created_at >= :start AND created_at < :end AND {_LIVE}
GROUP BY currency
"""


def _gmv(conn, w, s):
    return {
        f"gmv.{r['currency']}": Value(r["total"], r["total"], None, r["n"])
        for r in conn.execute(SQL_GMV, w.params())
    }


def _aov(conn, w, s):
    return {
        f"aov.{r['currency']}": Value(r["total"] / r["n"], r["total"], r["n"], r["n"])
        for r in conn.execute(SQL_GMV, w.params())
    }


SQL_CANCELLATION = """
SELECT COUNT(*) AS den, COALESCE(SUM(status = 'cancelled' OR cancelled_at IS NOT NULL), 0) AS num
FROM orders WHERE created_at >= :start AND created_at < :end
"""


def _cancellation(conn, w, s):
    r = _one(conn, SQL_CANCELLATION, w.params())
    return {"cancellation_rate": ratio(r["num"], r["den"])}


SQL_RETURN_RATE = f"""
SELECT COUNT(*) AS den, COALESCE(SUM(EXISTS (
    SELECT 1 FROM return_lines r WHERE r.order_id = o.id AND r.decision != 'rejected')), 0) AS num
FROM orders o WHERE o.created_at >= :start AND o.created_at < :end AND {_LIVE}
"""


def _return_rate(conn, w, s):
    r = _one(conn, SQL_RETURN_RATE, w.params())
    return {"return_rate": ratio(r["num"], r["den"])}


# A refund is on the day of refunded_at; a platform export without refund times leaves it
# empty, and then the refund is put on the day the order was placed (two index range searches).
SQL_REFUND = """
SELECT currency, SUM(refunded_minor) AS total, COUNT(*) AS n FROM (
    SELECT currency, refunded_minor FROM orders
    WHERE refunded_at >= :start AND refunded_at < :end AND refunded_minor > 0
    UNION ALL
    SELECT currency, refunded_minor FROM orders
    WHERE created_at >= :start AND created_at < :end AND +refunded_at IS NULL
      AND refunded_minor > 0
)
GROUP BY currency
"""


def _refund(conn, w, s):
    return {
        f"refund.{r['currency']}": Value(r["total"], r["total"], None, r["n"])
        for r in conn.execute(SQL_REFUND, w.params())
    }


SQL_REFUND_RATE = f"""
SELECT COUNT(*) AS den,
       COALESCE(SUM(refunded_minor > 0 OR status IN ('refunded', 'partially_refunded')), 0) AS num
FROM orders WHERE created_at >= :start AND created_at < :end AND {_LIVE}
"""


def _refund_rate(conn, w, s):
    r = _one(conn, SQL_REFUND_RATE, w.params())
    return {"refund_rate": ratio(r["num"], r["den"])}


SQL_REPURCHASE = f"""
SELECT COUNT(*) AS den, COALESCE(SUM(n >= 2), 0) AS num FROM (
    SELECT COALESCE(CAST(customer_id AS TEXT), lower(email)) AS who, COUNT(*) AS n FROM orders
    WHERE created_at >= :start90 AND created_at < :end AND {_LIVE}
      AND COALESCE(CAST(customer_id AS TEXT), lower(email)) IS NOT NULL
    GROUP BY who
)
"""


def _repurchase(conn, w, s):
    start90, _ = timeutil.day_bounds(w.last_day - timedelta(days=89), w.tz)
    r = _one(conn, SQL_REPURCHASE, {"start90": timeutil.iso(start90), "end": w.end})
    return {"repurchase_rate": ratio(r["num"], r["den"])}


# ---------------------------------------------------------------------------------------------
# Returns. A return decision is on the day of decided_at.

SQL_RETURN_DECISION = """
SELECT (julianday(decided_at) - julianday(requested_at)) * 24.0 AS hours FROM return_lines
WHERE decided_at >= :start AND decided_at < :end AND decision != 'review'
  AND requested_at IS NOT NULL AND julianday(decided_at) >= julianday(requested_at)
"""


def _return_decision(conn, w, s):
    hours = [h for h in _column(conn, SQL_RETURN_DECISION, w.params()) if h is not None]
    return {"return_decision.median_hours": Value(median(hours), None, None, len(hours))}


# ---------------------------------------------------------------------------------------------
# Surveys. A response is on the day of responded_at; a sent survey on the day of sent_at.

SQL_CSAT = """
SELECT COUNT(*) AS n, COALESCE(SUM(score), 0) AS total, COALESCE(SUM(score >= 4), 0) AS satisfied
FROM surveys WHERE +kind = 'csat' AND responded_at >= :start AND responded_at < :end
  AND score BETWEEN 1 AND 5
"""


def _csat_avg(conn, w, s):
    r = _one(conn, SQL_CSAT, w.params())
    return {"csat.avg": ratio(r["total"], r["n"], scale=1.0)}


def _csat_satisfied(conn, w, s):
    r = _one(conn, SQL_CSAT, w.params())
    return {"csat.satisfied_pct": ratio(r["satisfied"], r["n"])}


SQL_NPS = """
SELECT COUNT(*) AS n, COALESCE(SUM(score >= 9), 0) AS promoters,
       COALESCE(SUM(score <= 6), 0) AS detractors
FROM surveys WHERE +kind = 'nps' AND responded_at >= :start AND responded_at < :end
  AND score BETWEEN 0 AND 10
"""


def _nps_counts(conn, w) -> tuple[int, int, int]:
    r = _one(conn, SQL_NPS, w.params())
    return r["promoters"], r["n"] - r["promoters"] - r["detractors"], r["detractors"]


def _nps(conn, w, s):
    p, m, d = _nps_counts(conn, w)
    return {"nps": Value(nps_score(p, m, d), p - d, p + m + d, p + m + d)}


def _nps_part(name: str, index: int) -> Compute:
    def compute(conn, w, s):
        counts = _nps_counts(conn, w)
        n = sum(counts)
        return {name: Value(counts[index], counts[index], n, n)}

    return compute


SQL_SURVEY_RESPONSE = """
SELECT COUNT(*) AS den, COALESCE(SUM(responded_at IS NOT NULL), 0) AS num FROM surveys
WHERE sent_at >= :start AND sent_at < :end
"""


def _survey_response(conn, w, s):
    r = _one(conn, SQL_SURVEY_RESPONSE, w.params())
    return {"survey_response_rate": ratio(r["num"], r["den"])}


# ---------------------------------------------------------------------------------------------
# Outbox. Messages whose kind is in [kpi] followup_kinds (default: the follow-up rules' kind
# 'followup'; survey invitations, return notices and KPI alerts are other kinds).

_FOLLOWUP = "kind IN (SELECT value FROM json_each(:kinds))"

SQL_FOLLOWUPS_SENT = f"""
SELECT COUNT(*) AS n FROM outbox
WHERE sent_at >= :start AND sent_at < :end AND +state = 'sent' AND {_FOLLOWUP}
"""


def _followup_params(w: Window, s: KpiSettings) -> dict:
    return {**w.params(), "kinds": json.dumps(list(s.followup_kinds))}


def _followups_sent(conn, w, s):
    n = _one(conn, SQL_FOLLOWUPS_SENT, _followup_params(w, s))["n"]
    return {"followups.sent": Value(n, n, None, n)}


SQL_FOLLOWUPS_FAILED = f"""
SELECT COUNT(*) AS den, COALESCE(SUM(state = 'failed'), 0) AS num FROM outbox
WHERE queued_at >= :start AND queued_at < :end AND {_FOLLOWUP}
"""


def _followups_failed(conn, w, s):
    r = _one(conn, SQL_FOLLOWUPS_FAILED, _followup_params(w, s))
    return {"followups.failed": Value(r["num"], r["num"], r["den"], r["den"])}


# ---------------------------------------------------------------------------------------------
# Conversations. A conversation is on the day of created_at; a resolution on resolved_at's day.

SQL_COMPLAINT = """
SELECT (SELECT COUNT(*) FROM conversations WHERE created_at >= :start AND created_at < :end
          AND lower(kind) IN (SELECT lower(value) FROM json_each(:kinds))) AS num,
       (SELECT COUNT(*) FROM orders WHERE created_at >= :start AND created_at < :end) AS den
"""


def _complaint(conn, w, s):
    params = {**w.params(), "kinds": json.dumps(list(s.complaint_kinds))}
    r = _one(conn, SQL_COMPLAINT, params)
    return {"complaint_rate": ratio(r["num"], r["den"])}


SQL_FIRST_RESPONSE = """
SELECT (julianday(first_response_at) - julianday(created_at)) * 86400.0 AS seconds
FROM conversations WHERE created_at >= :start AND created_at < :end
"""

# Negative delays (a response stamped before the request) are data errors and left out.
_VALID = "(first_response_at IS NULL OR julianday(first_response_at) >= julianday(created_at))"


def _response_seconds(conn, w) -> tuple[list[float], int]:
    """Seconds to first response of answered conversations, and the count of all (valid) ones."""
    rows = _column(conn, SQL_FIRST_RESPONSE + f" AND {_VALID}", w.params())
    return [x for x in rows if x is not None], len(rows)


def _frt_median(conn, w, s):
    answered, _ = _response_seconds(conn, w)
    m = median(answered)
    return {"frt.median_minutes": Value(None if m is None else m / 60, None, None, len(answered))}


def _frt_p90(conn, w, s):
    answered, _ = _response_seconds(conn, w)
    q = p90(answered)
    return {"frt.p90_minutes": Value(None if q is None else q / 60, None, None, len(answered))}


def _frt_within_5m(conn, w, s):
    answered, total = _response_seconds(conn, w)
    return {"frt.within_5m_pct": ratio(sum(1 for x in answered if x <= 300), total)}


SQL_AFTER_SALES = (
    SQL_FIRST_RESPONSE
    + f" AND {_VALID} AND lower(kind) IN (SELECT lower(value) FROM json_each(:kinds))"
)


def _after_sales(conn, w, s):
    params = {**w.params(), "kinds": json.dumps(list(s.after_sales_kinds))}
    rows = _column(conn, SQL_AFTER_SALES, params)
    num = sum(1 for x in rows if x is not None and x <= 86400)
    return {"after_sales.answered_24h_pct": ratio(num, len(rows))}


SQL_RESOLUTION = """
SELECT (julianday(resolved_at) - julianday(created_at)) * 24.0 AS hours FROM conversations
WHERE resolved_at >= :start AND resolved_at < :end
  AND julianday(resolved_at) >= julianday(created_at)
"""


def _resolution(conn, w, s):
    hours = [h for h in _column(conn, SQL_RESOLUTION, w.params()) if h is not None]
    return {"resolution.median_hours": Value(median(hours), None, None, len(hours))}


_ZERO = Value(0, 0, None, 0)

METRICS: tuple[Metric, ...] = (
    Metric("orders", "Orders", "count", None,
           "Orders placed (created) on the day, any status.", SQL_ORDERS, _orders, empty=_ZERO),
    Metric("gmv.{currency}", "GMV", "money", "up",
           "Sum of total_minor of orders placed on the day, cancelled orders excluded.",
           SQL_GMV, _gmv, empty=_ZERO),
    Metric("aov.{currency}", "Average order value", "money", "up",
           "GMV divided by the number of non-cancelled orders placed on the day.", SQL_GMV, _aov),
    Metric("cancellation_rate", "Cancellation rate", "percent", "down",
           "% of orders placed on the day that are cancelled.", SQL_CANCELLATION, _cancellation),
    Metric("return_rate", "Return rate", "percent", "down",
           "% of non-cancelled orders placed on the day with a return request not rejected.",
           SQL_RETURN_RATE, _return_rate),
    Metric("refund.{currency}", "Refund amount", "money", "down",
           "Sum of refunded_minor of orders refunded on the day (refunded_at, else created_at).",
           SQL_REFUND, _refund, empty=_ZERO),
    Metric("refund_rate", "Refund rate", "percent", "down",
           "% of non-cancelled orders placed on the day that were (partly) refunded.",
           SQL_REFUND_RATE, _refund_rate),
    Metric("return_decision.median_hours", "Median return decision time", "hours", "down",
           "Median hours from return request to decision, for decisions made on the day.",
           SQL_RETURN_DECISION, _return_decision),
    Metric("csat.avg", "CSAT (average, 1–5)", "score", "up",
           "Average CSAT score (1–5) of answers received on the day.", SQL_CSAT, _csat_avg),
    Metric("csat.satisfied_pct", "CSAT (% satisfied, 4–5)", "percent", "up",
           "% of CSAT answers received on the day scoring 4 or 5.", SQL_CSAT, _csat_satisfied),
    Metric("nps", "NPS", "nps", "up",
           "% promoters (9–10) minus % detractors (0–6) of NPS answers received on the day.",
           SQL_NPS, _nps),
    Metric("nps.promoters", "NPS promoters", "count", "up",
           "NPS answers scoring 9–10 received on the day.", SQL_NPS, _nps_part("nps.promoters", 0)),
    Metric("nps.passives", "NPS passives", "count", None,
           "NPS answers scoring 7–8 received on the day.", SQL_NPS, _nps_part("nps.passives", 1)),
    Metric("nps.detractors", "NPS detractors", "count", "down",
           "NPS answers scoring 0–6 received on the day.", SQL_NPS,
           _nps_part("nps.detractors", 2)),
    Metric("survey_response_rate", "Survey response rate", "percent", "up",
           "% of surveys sent on the day that have been answered.", SQL_SURVEY_RESPONSE,
           _survey_response),
    Metric("followups.sent", "Follow-ups sent", "count", None,
           "Follow-up messages the outbox sent on the day.",
           SQL_FOLLOWUPS_SENT, _followups_sent, empty=_ZERO),
    Metric("followups.failed", "Follow-ups failed", "count", "down",
           "Follow-up messages queued on the day that ended failed.", SQL_FOLLOWUPS_FAILED,
           _followups_failed),
    Metric("repurchase_rate", "Repurchase rate (90 days)", "percent", "up",
           "% of customers with an order in the 90 days ending on the day who have 2 or more.",
           SQL_REPURCHASE, _repurchase, trailing=False),
    Metric("complaint_rate", "Complaint rate", "percent", "down",
           "Complaint conversations opened on the day per 100 orders placed on the day.",
           SQL_COMPLAINT, _complaint),
    Metric("frt.median_minutes", "First response time (median)", "minutes", "down",
           "Median minutes to first response of conversations opened on the day and answered.",
           SQL_FIRST_RESPONSE, _frt_median),
    Metric("frt.p90_minutes", "First response time (p90)", "minutes", "down",
           "90th percentile (nearest rank) of minutes to first response, as above.",
           SQL_FIRST_RESPONSE, _frt_p90),
    Metric("frt.within_5m_pct", "First responses within 5 minutes", "percent", "up",
           "% of conversations opened on the day answered within 5 minutes.",
           SQL_FIRST_RESPONSE, _frt_within_5m),
    Metric("after_sales.answered_24h_pct", "After-sales answered within 24 h", "percent", "up",
           "% of after-sales conversations opened on the day answered within 24 hours.",
           SQL_AFTER_SALES, _after_sales),
    Metric("resolution.median_hours", "Resolution time (median)", "hours", "down",
           "Median hours from opening to resolution of conversations resolved on the day.",
           SQL_RESOLUTION, _resolution),
)  # fmt: skip


def metric_for(name: str) -> Metric | None:
    """The registry entry a stored name belongs to (``gmv.CNY.7d`` → ``gmv.{currency}``)."""
    base = strip_trailing(name)
    for m in METRICS:
        if m.matches(base):
            return m if base == name or m.trailing else None
    return None


def strip_trailing(name: str) -> str:
    for suffix in TRAILING:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_known_metric(name: str) -> bool:
    return metric_for(name) is not None


def compute_window(
    conn: sqlite3.Connection, window: Window, settings: KpiSettings, *, trailing_only: bool = False
) -> dict[str, Value]:
    """Every metric over one window (``trailing_only``: skip metrics without trailing values)."""
    out: dict[str, Value] = {}
    for m in METRICS:
        if trailing_only and not m.trailing:
            continue
        out.update(m.compute(conn, window, settings))
    return out
