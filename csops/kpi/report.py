"""``csops kpi report``: one self-contained HTML file with an inline SVG chart per KPI.

The file needs nothing but a browser: no scripts, no fonts, no images or styles from the
network. Each chart shows the daily value (dots), the trailing 7-day value (line), threshold
lines per level, the latest value against the previous 7-day period, and sample sizes. The page
is a Jinja2 template (``reports/kpi_report.html`` in the workspace templates, else the packaged
one) rendered in the sandbox with autoescape; the SVG is built here with every text escaped.
"""

from __future__ import annotations

import html
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path

from csops import timeutil
from csops.kpi.alerts import format_value
from csops.kpi.metrics import METRICS, Metric, Value, metric_for
from csops.kpi.settings import LEVELS, Threshold

TEMPLATE = "reports/kpi_report.html"
# NPS counts are shown in the NPS card, not charted on their own.
NOT_CHARTED = {"nps.promoters", "nps.passives", "nps.detractors"}
LEVEL_COLOURS = {"notice": "#2f80ed", "warning": "#f2994a", "critical": "#eb5757"}
W, H, LEFT, RIGHT, TOP, BOTTOM = 520, 180, 58, 14, 12, 26


@dataclass
class Card:
    """One KPI in the report: its chart and the figures printed beside it."""

    name: str
    title: str
    definition: str
    svg: str
    latest: str
    latest_n: int
    latest_7d: str
    latest_7d_n: int
    previous_7d: str
    change: str
    trend: str  # "better" | "worse" | "same" | ""
    thresholds: list[str] = field(default_factory=list)
    extra: str = ""


def load_series(conn: sqlite3.Connection, first: date, last: date) -> dict[str, dict[date, Value]]:
    """Stored values by metric name, then day, for ``first..last`` (uses the primary key)."""
    series: dict[str, dict[date, Value]] = {}
    rows = conn.execute(
        "SELECT day, metric, value, numerator, denominator, sample_size FROM kpi_daily "
        "WHERE day >= ? AND day <= ? ORDER BY day",
        (first.isoformat(), last.isoformat()),
    )
    for r in rows:
        series.setdefault(r["metric"], {})[date.fromisoformat(r["day"])] = Value(
            r["value"], r["numerator"], r["denominator"], r["sample_size"]
        )
    return series


def _fmt(name: str, v: Value | None) -> str:
    return format_value(name, None if v is None else v.value)


def _scale(lo: float, hi: float) -> tuple[float, float]:
    """The y range with a little air; a scale of non-negative values does not dip below 0."""
    if lo == hi:
        pad = abs(lo) * 0.1 or 1.0
        return max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return (max(lo - pad, 0.0) if lo >= 0 else lo - pad), hi + pad


def tick_label(name: str, value: float) -> str:
    """Short axis labels: money in major units without the code, thousands as k."""
    metric = metric_for(name)
    unit = metric.unit if metric else "count"
    if unit == "money":
        from csops.model import currency_exponent

        value = value / 10 ** currency_exponent(name.split(".")[1])
    if unit == "percent":
        return f"{value:.0f}%" if abs(value) >= 10 else f"{value:.1f}%"
    if abs(value) >= 10_000:
        return f"{value / 1000:,.0f}k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.2f}"


def chart_svg(
    name: str,
    days: list[date],
    daily: dict[date, Value],
    trailing: dict[date, Value],
    lines: list[tuple[str, float]],
) -> str:
    """An inline SVG line chart: daily dots, 7-day line, dashed threshold lines."""
    points = [v.value for v in daily.values() if v.value is not None]
    points += [v.value for v in trailing.values() if v.value is not None]
    points += [limit for _level, limit in lines]
    lo, hi = _scale(min(points), max(points)) if points else (0.0, 1.0)
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = inner_w / max(1, len(days) - 1)

    def x(i: int) -> float:
        return LEFT + i * step if len(days) > 1 else LEFT + inner_w / 2

    def y(value: float) -> float:
        return TOP + inner_h - (value - lo) / (hi - lo) * inner_h

    esc = html.escape
    parts = [
        f'<svg class="chart" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="{esc(name)} over time" '
        f'data-metric="{esc(name)}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" fill="#fafbfc" '
        'stroke="#e1e4e8"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        value = lo + (hi - lo) * frac
        yy = y(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eef0f2"/>'
            f'<text x="{LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end" class="tick">'
            f"{esc(tick_label(name, value))}</text>"
        )
    for i in sorted({0, len(days) // 2, len(days) - 1}):
        if 0 <= i < len(days):
            parts.append(
                f'<text x="{x(i):.1f}" y="{H - 8}" text-anchor="middle" class="tick">'
                f"{days[i].strftime('%m-%d')}</text>"
            )
    for level, limit in lines:
        yy = y(limit)
        colour = LEVEL_COLOURS[level]
        parts.append(
            f'<line class="threshold {level}" x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" '
            f'y2="{yy:.1f}" stroke="{colour}" stroke-dasharray="6 4" stroke-width="1.5">'
            f"<title>{level} threshold {esc(format_value(name, limit))}</title></line>"
        )
    # The 7-day line, broken where there is no value.
    path, pen_down = [], False
    for i, d in enumerate(days):
        v = trailing.get(d)
        if v is None or v.value is None:
            pen_down = False
            continue
        path.append(f"{'L' if pen_down else 'M'}{x(i):.1f},{y(v.value):.1f}")
        pen_down = True
    if path:
        parts.append(
            f'<path class="trailing" d="{" ".join(path)}" fill="none" stroke="#1b4f8a" '
            'stroke-width="2.5" stroke-linejoin="round"/>'
        )
    for i, d in enumerate(days):
        v = daily.get(d)
        if v is None or v.value is None:
            continue
        parts.append(
            f'<circle class="daily" cx="{x(i):.1f}" cy="{y(v.value):.1f}" r="3" fill="#7a8794">'
            f"<title>{d.isoformat()}: {esc(format_value(name, v.value))} "
            f"(n={v.sample_size})</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _thresholds_for(name: str, thresholds: dict[str, Threshold]) -> tuple[list, list[str]]:
    """Threshold lines drawn on this chart (daily and 7-day ones) and their captions."""
    lines, captions = [], []
    for suffix in ("", ".7d", ".30d"):
        t = thresholds.get(name + suffix)
        if t is None:
            continue
        for level, limit in t.levels():
            if suffix != ".30d":
                lines.append((level, limit))
            captions.append(
                f"{level} {t.direction} {format_value(name, limit)}"
                f" ({'day' if not suffix else suffix[1:]})"
            )
    return lines, captions


def _change(metric: Metric, name: str, latest: Value | None, previous: Value | None):
    if latest is None or previous is None or latest.value is None or previous.value is None:
        return "–", ""
    delta = latest.value - previous.value
    if abs(delta) < 1e-9:
        return "no change", "same"
    sign = "+" if delta > 0 else "−"
    shown = format_value(name, abs(delta)).lstrip("+")
    if metric.unit == "percent":
        shown = f"{abs(delta):.1f} pts"
    trend = ""
    if metric.better:
        trend = "better" if (delta > 0) == (metric.better == "up") else "worse"
    return f"{sign}{shown}", trend


def build_cards(
    series: dict[str, dict[date, Value]], days: list[date], thresholds: dict[str, Threshold]
) -> list[Card]:
    order = {m.name: i for i, m in enumerate(METRICS)}
    names = [n for n in series if metric_for(n) and n == _base(n) and n not in NOT_CHARTED]
    names.sort(key=lambda n: (order[metric_for(n).name], n))
    last = days[-1]
    prev = last - timedelta(days=7)
    cards = []
    for name in names:
        metric = metric_for(name)
        daily = series.get(name, {})
        trailing = series.get(name + ".7d", {}) if metric.trailing else {}
        lines, captions = _thresholds_for(name, thresholds)
        latest = daily.get(last)
        latest7 = trailing.get(last)
        prev7 = trailing.get(prev)
        change, trend = _change(metric, name, latest7, prev7)
        extra = ""
        if name == "nps":
            counts = [
                f"{part} {int(series.get('nps.' + part, {}).get(last, Value(0)).value or 0)}"
                for part in ("promoters", "passives", "detractors")
            ]
            counts7 = [
                f"{int(series.get('nps.' + part + '.7d', {}).get(last, Value(0)).value or 0)}"
                for part in ("promoters", "passives", "detractors")
            ]
            extra = f"Last day: {', '.join(counts)}; last 7 days: {' / '.join(counts7)}"
        title = metric.title + (f" ({name.split('.')[1]})" if metric.per_currency else "")
        cards.append(
            Card(
                name=name,
                title=title,
                definition=metric.definition,
                svg=chart_svg(name, days, daily, trailing, lines),
                latest=_fmt(name, latest),
                latest_n=latest.sample_size if latest else 0,
                latest_7d=_fmt(name, latest7) if metric.trailing else "–",
                latest_7d_n=latest7.sample_size if latest7 else 0,
                previous_7d=_fmt(name, prev7) if metric.trailing else "–",
                change=change,
                trend=trend,
                thresholds=captions,
                extra=extra,
            )
        )
    return cards


def _base(name: str) -> str:
    for suffix in (".7d", ".30d"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _template_source(templates_dir: Path | None) -> str:
    if templates_dir is not None:
        custom = templates_dir / TEMPLATE
        if custom.is_file():
            return custom.read_text(encoding="utf-8")
    return resources.files("csops.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")


def render_report(
    conn: sqlite3.Connection,
    *,
    last_day: date,
    days: int,
    thresholds: dict[str, Threshold],
    shop_name: str,
    timezone: str,
    generated_at: datetime,
    templates_dir: Path | None = None,
) -> tuple[str, int]:
    """The report's HTML and the number of KPI charts in it."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from markupsafe import Markup

    first = last_day - timedelta(days=days - 1)
    day_list = [first + timedelta(days=i) for i in range(days)]
    series = load_series(conn, first, last_day)
    cards = build_cards(series, day_list, thresholds)
    for card in cards:
        card.svg = Markup(card.svg)  # built above with every text escaped
    env = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
    page = env.from_string(_template_source(templates_dir)).render(
        shop=shop_name,
        timezone=timezone,
        first=first.isoformat(),
        last=last_day.isoformat(),
        generated=timeutil.iso(generated_at),
        cards=cards,
        levels=LEVELS,
        colours=LEVEL_COLOURS,
    )
    return page, len(cards)


def write_report(text: str, out: Path) -> Path:
    """Write to a temporary name, then rename: a reader never sees half a report."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


def run_report(ctx, *, out: Path, days: int | None = None, last_day: date | None = None):
    """``csops kpi report``: write the HTML report of the last N days ([kpi] report_days)."""
    from zoneinfo import ZoneInfo

    from csops.result import Result

    settings = ctx.config.section("kpi")
    tz = ZoneInfo(ctx.config.shop.timezone)
    # Default: yesterday, the last complete day (today's partial values would read as a drop).
    last_day = last_day or timeutil.local_day(ctx.now, tz) - timedelta(days=1)
    n = days or settings.report_days
    page, charts = render_report(
        ctx.conn,
        last_day=last_day,
        days=n,
        thresholds=settings.thresholds,
        shop_name=ctx.config.shop.name,
        timezone=ctx.config.shop.timezone,
        generated_at=ctx.now,
        templates_dir=ctx.config.resolve(ctx.config.paths.templates),
    )
    result = Result("kpi report", columns=["path", "days", "charts"])
    if ctx.dry_run:
        result.messages.append(f"dry run: would write {out}")
        path = out
    else:
        path = write_report(page, out)
    result.rows = [{"path": str(path), "days": n, "charts": charts}]
    result.count("charts", charts)
    if charts == 0:
        result.messages.append(
            "no KPIs stored for these days: run 'csops kpi daily --from D --to D' first"
        )
    return result
