"""CSAT and NPS from the recorded answers: the formulas as pure functions, plus one query.

CSAT = share of answers scoring 4 or 5 on the 1–5 scale, in percent.
NPS  = percent promoters (9–10) minus percent detractors (0–6) on the 0–10 scale (−100…100).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from csops import timeutil
from csops.result import Result
from csops.surveys.settings import SurveySettings


def compute_csat(scores: Sequence[int]) -> float | None:
    """Percent of CSAT answers that are 4 or 5; None without answers."""
    if not scores:
        return None
    return round(100.0 * sum(1 for s in scores if s >= 4) / len(scores), 1)


def compute_nps(scores: Sequence[int]) -> float | None:
    """Percent promoters (9–10) minus percent detractors (0–6); None without answers."""
    if not scores:
        return None
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return round(100.0 * (promoters - detractors) / len(scores), 1)


def load_summary(
    conn: sqlite3.Connection, settings: SurveySettings, *, now: datetime, days: int | None = None
) -> list[dict[str, Any]]:
    """One row per kind: surveys sent, answers, response rate, average, CSAT or NPS."""
    since = timeutil.iso(now - timedelta(days=days)) if days else ""
    rows = []
    for kind in ("csat", "nps"):
        sent, answered_sent = conn.execute(
            "SELECT COUNT(*), COUNT(responded_at) FROM surveys "
            "WHERE kind = ? AND sent_at IS NOT NULL AND sent_at >= ?",
            (kind, since),
        ).fetchone()
        scores = [
            r[0]
            for r in conn.execute(
                "SELECT score FROM surveys WHERE kind = ? AND responded_at IS NOT NULL "
                "AND score IS NOT NULL AND responded_at >= ?",
                (kind, since),
            )
        ]
        value = compute_csat(scores) if kind == "csat" else compute_nps(scores)
        rows.append(
            {
                "kind": kind,
                "sent": sent,
                "answers": len(scores),
                "response_rate": round(100.0 * answered_sent / sent, 1) if sent else None,
                "average": round(sum(scores) / len(scores), 2) if scores else None,
                "detractors": sum(1 for s in scores if settings.is_detractor(kind, s)),
                "score": value,
                "score_name": "CSAT %" if kind == "csat" else "NPS",
            }
        )
    return rows


def summarize(ctx: Any, *, days: int | None = None) -> Result:
    settings: SurveySettings = ctx.config.section("surveys")
    rows = load_summary(ctx.conn, settings, now=ctx.now, days=days)
    result = Result(
        "surveys summary",
        rows=rows,
        columns=[
            "kind",
            "sent",
            "answers",
            "response_rate",
            "average",
            "detractors",
            "score_name",
            "score",
        ],
    )
    for r in rows:
        shown = "n/a" if r["score"] is None else f"{r['score']:g}"
        result.messages.append(f"{r['score_name']}: {shown} ({r['answers']} answers)")
    return result
