"""``surveys send``: read what is due, plan it (pure), queue it in the outbox, then deliver.

Each survey is one transaction: the ``surveys`` row (unique per kind and order), its signed
token, the rendered mail and the outbox row (dedupe key ``survey:<kind>:<order id>``) commit
together or not at all, so a kill -9 at any point leaves either a complete plan or none, and a
re-run never plans a survey twice. Delivery goes through the outbox like any message, which
re-checks suppressions, caps, quiet hours and expiry at send time.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

from csops import db as dbmod
from csops import timeutil
from csops.config import Config
from csops.result import Result
from csops.runs import RunContext
from csops.secrets import mask_email
from csops.surveys.links import scale_links, survey_token, survey_url
from csops.surveys.planning import (
    Candidate,
    PlannedSurvey,
    SentSurvey,
    plan_reminders,
    plan_surveys,
)
from csops.surveys.settings import SCALES, SurveyRule, SurveySettings

SURVEY_KIND = "survey"  # outbox.kind of a survey mail
REMINDER_KIND = "survey_reminder"  # outbox.kind of its one reminder
TRIGGER_COLUMNS = {"paid": "paid_at", "shipped": "shipped_at", "delivered": "delivered_at"}


def survey_channel(config: Config) -> str:
    """The channel survey mail goes out on: ``[surveys] channel``, else messaging's default."""
    settings: SurveySettings = config.section("surveys")
    if settings.channel:
        return settings.channel
    messaging = config.section("messaging")
    return messaging.default_channel


def load_candidates(
    conn: sqlite3.Connection, rules: list[SurveyRule], now: datetime
) -> tuple[list[Candidate], set[tuple[str, int]]]:
    """Orders whose trigger event puts them inside some rule's sending window."""
    by_id: dict[int, Candidate] = {}
    existing: set[tuple[str, int]] = set()
    for rule in rules:
        col = TRIGGER_COLUMNS[rule.trigger]
        newest = timeutil.iso(now - rule.delay_td)
        oldest = timeutil.iso(now - rule.delay_td - rule.send_within_td)
        rows = conn.execute(
            f"""SELECT o.id, o.customer_id, o.status, o.paid_at, o.shipped_at, o.delivered_at,
                   COALESCE(NULLIF(c.email, ''), o.email) AS email, c.locale, c.opted_out_at,
                   EXISTS (SELECT 1 FROM surveys s WHERE s.kind = ? AND s.order_id = o.id)
                       AS has_survey
                FROM orders o LEFT JOIN customers c ON c.id = o.customer_id
                WHERE o.{col} >= ? AND o.{col} <= ?""",
            (rule.kind, oldest, newest),
        ).fetchall()
        for r in rows:
            if r["has_survey"]:
                existing.add((rule.kind, r["id"]))
            if r["id"] in by_id:
                continue
            email = (r["email"] or "").strip().lower() or None
            suppressed = r["opted_out_at"] is not None
            if email and not suppressed:
                suppressed = (
                    conn.execute(
                        "SELECT 1 FROM suppressions WHERE address = ? AND channel = 'email'",
                        (email,),
                    ).fetchone()
                    is not None
                )
            by_id[r["id"]] = Candidate(
                order_id=r["id"],
                email=email,
                status=r["status"],
                events={k: timeutil.from_iso(r[c]) for k, c in TRIGGER_COLUMNS.items()},
                customer_id=r["customer_id"],
                locale=r["locale"],
                suppressed=suppressed,
            )
    return sorted(by_id.values(), key=lambda c: c.order_id), existing


def load_last_surveys(
    conn: sqlite3.Connection, now: datetime, throttle: timedelta
) -> dict[str, datetime]:
    """When each address was last sent (or queued) a survey, within the throttle window."""
    rows = conn.execute(
        "SELECT lower(m.recipient) AS addr, MAX(m.queued_at) AS at FROM surveys s "
        "JOIN outbox m ON m.id = s.outbox_id WHERE m.state NOT IN ('failed', 'suppressed') "
        "AND m.queued_at >= ? GROUP BY lower(m.recipient)",
        (timeutil.iso(now - throttle),),
    ).fetchall()
    return {r["addr"]: timeutil.parse_instant(r["at"]) for r in rows}


def sync_sent(conn: sqlite3.Connection) -> None:
    """Copy the outbox's sent time onto surveys (the reminder clock starts when mail left)."""
    with dbmod.write(conn):
        conn.execute(
            "UPDATE surveys SET sent_at = (SELECT m.sent_at FROM outbox m "
            "WHERE m.id = surveys.outbox_id) WHERE sent_at IS NULL AND outbox_id IN "
            "(SELECT id FROM outbox WHERE state = 'sent' AND sent_at IS NOT NULL)"
        )


def build_context(
    config: Config,
    conn: sqlite3.Connection,
    *,
    survey_id: int,
    kind: str,
    order_id: int,
    email: str,
    expires_at: datetime,
    now: datetime,
    rule: str = "",
) -> dict[str, Any]:
    """The messaging job's standard variables (docs/messaging.md) plus ``survey``.

    ``survey.links`` is the scale as one signed link per score; ``unsubscribe_url`` is the
    one-click unsubscribe link (surveys are marketing mail).
    """
    from csops.tokens import unsubscribe_url

    token = survey_token(config, survey_id, kind)
    order = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    customer = None
    if order is not None and order["customer_id"] is not None:
        customer = conn.execute(
            "SELECT * FROM customers WHERE id = ?", (order["customer_id"],)
        ).fetchone()
    name = (customer["name"] if customer is not None else "") or ""
    low, high = SCALES[kind]
    order_dict = dict(order) if order is not None else {}
    order_dict.setdefault("tracking_url", "")
    return {
        "shop": {
            "name": config.shop.name,
            "email": config.shop.email,
            "base_url": config.shop.base_url,
            "currency": config.shop.currency,
        },
        "customer": {
            "id": customer["id"] if customer is not None else None,
            "name": name,
            "first_name": name.split()[0] if name.split() else "",
            "email": email,
            "phone": customer["phone"] if customer is not None else None,
            "locale": customer["locale"] if customer is not None else None,
            "birthday": customer["birthday"] if customer is not None else None,
        },
        "order": order_dict,
        "items": [
            dict(r)
            for r in conn.execute(
                "SELECT line_no, sku, name, quantity, unit_price_minor, total_minor "
                "FROM order_items WHERE order_id = ? ORDER BY line_no",
                (order_id,),
            )
        ],
        "rule": {"name": rule or f"survey_{kind}", "trigger": "survey"},
        "vars": {},
        "now": timeutil.iso(now),
        "survey": {
            "id": survey_id,
            "kind": kind,
            "low": low,
            "high": high,
            "links": scale_links(config, token, kind),
            "url": survey_url(config, token),
            "expires_at": timeutil.iso(expires_at),
        },
        "unsubscribe_url": unsubscribe_url(config, email),
    }


def _queue_one(
    ctx: RunContext, p: PlannedSurvey, settings: SurveySettings, rule: SurveyRule
) -> dict[str, Any] | None:
    from csops.messaging.outbox import NewMessage, enqueue, message_id_domain
    from csops.messaging.render import pick_locale, render_message

    conn, config, now = ctx.conn, ctx.config, ctx.now
    expires_at = now + settings.token_max_age
    locale = pick_locale(p.locale, config)
    with dbmod.write(conn):
        cur = conn.execute(
            "INSERT OR IGNORE INTO surveys (kind, order_id, customer_id, expires_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (p.kind, p.order_id, p.customer_id, timeutil.iso(expires_at), timeutil.iso(now)),
        )
        if cur.rowcount == 0:
            return None
        survey_id = int(cur.lastrowid)
        context = build_context(
            config,
            conn,
            survey_id=survey_id,
            kind=p.kind,
            order_id=p.order_id,
            email=p.email,
            expires_at=expires_at,
            now=now,
            rule=p.rule,
        )
        rendered = render_message(config, p.template, locale, context)
        outbox_id = enqueue(
            conn,
            NewMessage(
                dedupe_key=f"survey:{p.kind}:{p.order_id}",
                kind=SURVEY_KIND,
                channel=survey_channel(config),
                recipient=p.email,
                subject=rendered.subject,
                body_text=rendered.text,
                body_html=rendered.html,
                rule=p.rule,
                order_id=p.order_id,
                customer_id=p.customer_id,
                locale=rendered.locale,
                is_marketing=True,
                expires_at=timeutil.iso(p.due_at + rule.send_within_td),
            ),
            now=now,
            domain=message_id_domain(config),
        )
        conn.execute("UPDATE surveys SET outbox_id = ? WHERE id = ?", (outbox_id, survey_id))
    return {
        "action": "planned",
        "survey_id": survey_id,
        "kind": p.kind,
        "rule": p.rule,
        "order_id": p.order_id,
        "recipient": mask_email(p.email),
        "outbox_id": outbox_id,
    }


def _queue_reminder(ctx: RunContext, survey_id: int, settings: SurveySettings) -> dict | None:
    from csops.messaging.outbox import NewMessage, enqueue, message_id_domain
    from csops.messaging.render import render_message

    conn, config, now = ctx.conn, ctx.config, ctx.now
    with dbmod.write(conn):
        row = conn.execute(
            "SELECT s.id, s.kind, s.order_id, s.customer_id, s.reminded_at, s.responded_at, "
            "m.recipient, m.locale, m.rule, m.channel FROM surveys s "
            "JOIN outbox m ON m.id = s.outbox_id WHERE s.id = ?",
            (survey_id,),
        ).fetchone()
        if row is None or row["reminded_at"] or row["responded_at"]:
            return None
        rules = {r.name: r for r in settings.rules}
        rule = rules.get(row["rule"] or "")
        template = (rule.template_name if rule else f"survey_{row['kind']}") + "_reminder"
        expires_at = now + settings.token_max_age
        context = build_context(
            config,
            conn,
            survey_id=row["id"],
            kind=row["kind"],
            order_id=row["order_id"],
            email=row["recipient"],
            expires_at=expires_at,
            now=now,
            rule=row["rule"] or "",
        )
        rendered = render_message(config, template, row["locale"] or config.shop.locale, context)
        outbox_id = enqueue(
            conn,
            NewMessage(
                dedupe_key=f"survey-reminder:{row['id']}",
                kind=REMINDER_KIND,
                channel=row["channel"],
                recipient=row["recipient"],
                subject=rendered.subject,
                body_text=rendered.text,
                body_html=rendered.html,
                rule=f"{row['rule'] or row['kind']}:reminder",
                order_id=row["order_id"],
                customer_id=row["customer_id"],
                locale=row["locale"],
                is_marketing=True,
                expires_at=timeutil.iso(now + timedelta(days=3)),
            ),
            now=now,
            domain=message_id_domain(config),
        )
        conn.execute(
            "UPDATE surveys SET reminded_at = ?, reminder_outbox_id = ?, expires_at = ?, "
            "updated_at = ? WHERE id = ?",
            (timeutil.iso(now), outbox_id, timeutil.iso(expires_at), timeutil.iso(now), row["id"]),
        )
    return {
        "action": "reminder",
        "survey_id": row["id"],
        "kind": row["kind"],
        "rule": row["rule"],
        "order_id": row["order_id"],
        "recipient": mask_email(row["recipient"]),
        "outbox_id": outbox_id,
    }


def load_reminder_candidates(conn: sqlite3.Connection, now: datetime, after: timedelta) -> list:
    rows = conn.execute(
        "SELECT s.id, s.sent_at, s.responded_at, s.reminded_at, m.queued_at FROM surveys s "
        "JOIN outbox m ON m.id = s.outbox_id WHERE s.responded_at IS NULL "
        "AND s.reminded_at IS NULL AND s.sent_at IS NOT NULL AND s.sent_at <= ?",
        (timeutil.iso(now - after),),
    ).fetchall()
    return [
        SentSurvey(
            survey_id=r["id"],
            issued_at=timeutil.parse_instant(r["queued_at"]),
            sent_at=timeutil.from_iso(r["sent_at"]),
        )
        for r in rows
    ]


def send_surveys(ctx: RunContext, *, kind: str | None = None, limit: int | None = None) -> Result:
    """Plan due surveys and reminders into the outbox, then deliver survey mail and alerts."""
    settings: SurveySettings = ctx.config.section("surveys")
    result = Result(
        "surveys send",
        columns=[
            "action",
            "survey_id",
            "kind",
            "rule",
            "order_id",
            "recipient",
            "outbox_id",
        ],
    )
    rows: list[dict[str, Any]] = []
    rules = [r for r in settings.rules if not kind or r.kind == kind]
    conn, now = ctx.conn, ctx.now
    if not ctx.dry_run:
        sync_sent(conn)
    candidates, existing = load_candidates(conn, rules, now)
    throttle = timedelta(days=settings.throttle_days)
    planned, skips = plan_surveys(
        candidates,
        rules,
        now=now,
        throttle=throttle,
        last_survey_at=load_last_surveys(conn, now, throttle),
        existing=existing,
        kind=kind,
        limit=limit,
    )
    for skip in skips:
        if skip.reason not in ("exists", "not_due"):
            result.count(f"skipped_{skip.reason}")
    by_name = {r.name: r for r in rules}
    for p in planned:
        if ctx.dry_run:
            rows.append(
                {
                    "action": "would_plan",
                    "survey_id": None,
                    "kind": p.kind,
                    "rule": p.rule,
                    "order_id": p.order_id,
                    "recipient": mask_email(p.email),
                    "outbox_id": None,
                }
            )
            result.count("would_plan")
            continue
        row = _queue_one(ctx, p, settings, by_name[p.rule])
        if row:
            rows.append(row)
            result.count("planned")
    reminder_ids = plan_reminders(
        load_reminder_candidates(conn, now, timedelta(days=settings.reminder_after_days))
        if settings.reminder_after_days
        else [],
        now=now,
        reminder_after=timedelta(days=settings.reminder_after_days),
        token_max_age=settings.token_max_age,
    )
    if kind:
        wanted = {
            r["id"]
            for r in conn.execute("SELECT id FROM surveys WHERE kind = ?", (kind,)).fetchall()
        }
        reminder_ids = [i for i in reminder_ids if i in wanted]
    if limit is not None:
        reminder_ids = reminder_ids[: max(0, limit - len(planned))]
    for survey_id in reminder_ids:
        if ctx.dry_run:
            rows.append({"action": "would_remind", "survey_id": survey_id})
            result.count("would_remind")
            continue
        row = _queue_reminder(ctx, survey_id, settings)
        if row:
            rows.append(row)
            result.count("reminders")
    if not ctx.dry_run:
        _deliver(ctx, result, kinds={SURVEY_KIND, REMINDER_KIND, "alert"})
        sync_sent(conn)
    result.rows = rows
    return result


def _deliver(ctx: RunContext, result: Result, *, kinds: set[str]) -> None:
    """Hand over what is due through the outbox; its counts join ours as ``sent``, ``failed``…"""
    from csops.messaging.outbox import deliver_into

    deliver_into(result, ctx, kinds=kinds)


def deliver_alerts(ctx: RunContext) -> Result:
    """Deliver queued alerts (detractor answers) now."""
    result = Result("surveys alerts")
    _deliver(ctx, result, kinds={"alert"})
    return result


def deliver_alerts_job(config: Config) -> Result:
    """Alert delivery as its own audited run (the survey server calls this after a detractor)."""
    from csops.runs import run

    return run("surveys alerts", config, deliver_alerts, argv=["surveys", "alerts"], wait=60)
