"""Record a survey answer (once per survey, later submissions update it) and raise the alarm.

The answer and, for a detractor, the service-recovery alert are written in ONE transaction: the
alert is an outbox row of kind ``alert`` (dedupe key ``survey-alert:<id>``, so one alert per
survey however often the customer resubmits), delivered at once by whoever recorded the answer
(the survey server's alert worker, or ``surveys import``) and by every later ``outbox`` run.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from csops import db as dbmod
from csops import timeutil
from csops.config import Config
from csops.errors import CsopsError, NotFoundError
from csops.surveys.settings import SCALES, SurveySettings

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class AnswerError(CsopsError):
    """A score outside the survey's scale or otherwise unusable answer."""

    code = "bad_answer"


@dataclass
class Outcome:
    survey_id: int
    kind: str
    score: int
    outcome: str  # created | updated | unchanged | stale
    detractor: bool
    alert_outbox_id: int | None = None


def parse_score(kind: str, raw: object) -> int:
    """The score as an integer within the kind's scale, or AnswerError."""
    low, high = SCALES[kind]
    text = str(raw).strip() if raw is not None else ""
    if not re.fullmatch(r"[0-9]{1,2}", text):
        raise AnswerError(f"score {text[:20]!r} is not a whole number", expected=f"{low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise AnswerError(f"score {value} is outside the scale", expected=f"{low} to {high}")
    return value


def clean_comment(raw: str | None, max_chars: int) -> str | None:
    """Strip control characters and surrounding space; cut to ``max_chars`` (documented)."""
    if raw is None:
        return None
    text = _CONTROL.sub("", raw.replace("\r\n", "\n")).strip()
    return text[:max_chars] or None


def record_answer(
    conn: sqlite3.Connection,
    config: Config,
    *,
    survey_id: int,
    score: int,
    comment: str | None,
    now: datetime,
    source: str,
    answered_at: datetime | None = None,
) -> Outcome:
    """Store the answer on the survey row; queue a detractor alert in the same transaction.

    ``answered_at`` (imports) keeps the latest answer: an older one than the stored answer is
    ``stale`` and changes nothing, so files can be re-imported in any order.
    """
    settings: SurveySettings = config.section("surveys")
    at = timeutil.iso(answered_at or now)
    with dbmod.write(conn):
        row = conn.execute(
            "SELECT s.id, s.kind, s.score, s.comment, s.responded_at, s.order_id, "
            "s.customer_id FROM surveys s WHERE s.id = ?",
            (survey_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no survey {survey_id}")
        kind = row["kind"]
        score = parse_score(kind, score)
        comment = clean_comment(comment, settings.max_comment_chars)
        detractor = settings.is_detractor(kind, score)
        if row["responded_at"] is None:
            outcome = "created"
        elif row["score"] == score and row["comment"] == comment:
            outcome = "unchanged"
        elif answered_at is not None and row["responded_at"] > at:
            outcome = "stale"
        else:
            outcome = "updated"
        if outcome in ("created", "updated"):
            conn.execute(
                "UPDATE surveys SET score = ?, comment = ?, responded_at = ?, "
                "response_source = ?, updated_at = ? WHERE id = ?",
                (score, comment, at, source, timeutil.iso(now), survey_id),
            )
        alert_id = None
        if detractor and outcome in ("created", "updated") and settings.alert_channel:
            alert_id = _queue_alert(conn, config, row, score, comment, now)
    return Outcome(survey_id, kind, score, outcome, detractor, alert_id)


_ALERT_TEXT = {
    "en": (
        "Detractor: {kind} {score} on order {order}",
        "A customer answered a {kind} survey with {score} (detractor: {max} or less).\n\n"
        "Order:    {order}\nCustomer: {customer} <{email}>\nScore:    {score}\n"
        "Comment:  {comment}\nAnswered: {at}\n\nPlease reach out to them today.\n",
    ),
    "zh-CN": (
        "差评预警：订单 {order} 的 {kind} 评分 {score}",
        "有顾客在 {kind} 调查中打了 {score} 分（{max} 分及以下为差评）。\n\n"
        "订单：{order}\n顾客：{customer} <{email}>\n评分：{score}\n"
        "留言：{comment}\n时间：{at}\n\n请今天联系顾客。\n",
    ),
}


def _queue_alert(
    conn: sqlite3.Connection,
    config: Config,
    survey: sqlite3.Row,
    score: int,
    comment: str | None,
    now: datetime,
) -> int | None:
    from csops.messaging.outbox import NewMessage, enqueue, message_id_domain

    settings: SurveySettings = config.section("surveys")
    order = conn.execute(
        "SELECT o.number, o.email, c.name, c.email AS customer_email FROM orders o "
        "LEFT JOIN customers c ON c.id = o.customer_id WHERE o.id = ?",
        (survey["order_id"],),
    ).fetchone()
    values = {
        "kind": survey["kind"].upper(),
        "score": score,
        "max": settings.detractor_max(survey["kind"]),
        "order": (order["number"] if order else None) or "-",
        "customer": (order["name"] if order else None) or "-",
        "email": (order and (order["customer_email"] or order["email"])) or "-",
        "comment": comment or "-",
        "at": timeutil.iso(now),
    }
    locale = config.shop.locale if config.shop.locale in _ALERT_TEXT else "en"
    subject, body = _ALERT_TEXT[locale]
    msg = NewMessage(
        dedupe_key=f"survey-alert:{survey['id']}",
        kind="alert",
        channel=settings.alert_channel,
        recipient=settings.alert_recipient or config.shop.email,
        subject=subject.format(**values),
        body_text=body.format(**values),
        rule="survey-detractor",
        order_id=survey["order_id"],
        customer_id=survey["customer_id"],
        locale=locale,
        is_marketing=False,
    )
    return enqueue(conn, msg, now=now, domain=message_id_domain(config))
