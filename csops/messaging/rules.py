"""What is due: ``[[followups]]`` rules applied to order facts (pure), then planned into the outbox.

:func:`plan_followups` is a plain function of rules, facts and ``now`` with no I/O, tested by
tables. :func:`plan_due` does the I/O around it: reads candidate orders in each rule's time
window, renders the template, and enqueues each message with its dedupe key in short
transactions, so a message is planned once ever however often cron runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from csops import db as dbmod
from csops.timeutil import iso, parse_duration, parse_instant

TRIGGER_COLUMNS = {
    "paid": "paid_at",
    "shipped": "shipped_at",
    "delivered": "delivered_at",
    "cancelled": "cancelled_at",
    "refunded": "refunded_at",
    "return_decided": "return_decided_at",
}


@dataclass(frozen=True)
class OrderFacts:
    """What a rule may look at for one order."""

    order_id: int
    customer_id: int | None
    status: str
    platform: str
    total_minor: int
    currency: str
    times: dict[str, str | None]  # trigger -> UTC ISO instant (or None)
    tags: tuple[str, ...] = ()
    skus: tuple[str, ...] = ()
    order_rank: int = 1  # 1 = the customer's first order


@dataclass(frozen=True)
class CustomerFacts:
    customer_id: int
    birthday: str | None  # YYYY-MM-DD or --MM-DD / MM-DD


@dataclass(frozen=True)
class Due:
    rule: str
    dedupe_key: str
    due_at: datetime
    expires_at: datetime
    order_id: int | None = None
    customer_id: int | None = None
    variables: dict[str, Any] = field(default_factory=dict)


def dedupe_key(rule: str, order_id: int | None = None, customer_id: int | None = None,
               year: int | None = None) -> str:  # fmt: skip
    if order_id is not None:
        return f"followup:{rule}:order:{order_id}"
    return f"followup:{rule}:customer:{customer_id}:{year}"


def conditions_hold(rule: Any, o: OrderFacts) -> bool:
    """Every condition of ``rule`` holds for order ``o`` (empty lists mean "any")."""
    if rule.statuses and o.status not in rule.statuses:
        return False
    if rule.platforms and o.platform not in rule.platforms:
        return False
    if o.total_minor < rule.min_total_minor:
        return False
    if rule.tags_any and not {t.lower() for t in rule.tags_any} & {t.lower() for t in o.tags}:
        return False
    if rule.skus_any and not set(rule.skus_any) & set(o.skus):
        return False
    if rule.customer == "first_order" and o.order_rank != 1:
        return False
    return not (rule.customer == "repeat" and o.order_rank < 2)


def _birthday_md(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    text = value.strip().lstrip("-")
    parts = text.split("-")
    try:
        if len(parts) == 3:
            return int(parts[1]), int(parts[2])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return None


def _birthday_in(year: int, md: tuple[int, int]) -> date | None:
    month, day = md
    try:
        return date(year, month, day)
    except ValueError:
        if (month, day) == (2, 29):
            return date(year, 2, 28)
        return None


def plan_followups(
    rules: Sequence[Any],
    orders: Iterable[OrderFacts],
    *,
    now: datetime,
    tz: ZoneInfo,
    customers: Iterable[CustomerFacts] = (),
) -> list[Due]:
    """The messages due at ``now``: trigger + delay has passed and expiry has not."""
    due: list[Due] = []
    order_list = list(orders)
    customer_list = list(customers)
    for rule in rules:
        if not rule.enabled:
            continue
        delay = parse_duration(rule.delay)
        expire = parse_duration(rule.expire_after)
        if rule.trigger == "birthday":
            local_today = now.astimezone(tz).date()
            for c in customer_list:
                md = _birthday_md(c.birthday)
                if md is None:
                    continue
                for year in (local_today.year - 1, local_today.year):
                    bday = _birthday_in(year, md)
                    if bday is None:
                        continue
                    start = datetime.combine(bday, time(0), tzinfo=tz) + delay
                    if start <= now <= start + expire:
                        due.append(
                            Due(
                                rule.name,
                                dedupe_key(rule.name, customer_id=c.customer_id, year=year),
                                start,
                                start + expire,
                                customer_id=c.customer_id,
                            )
                        )
            continue
        for o in order_list:
            at = o.times.get(rule.trigger)
            if not at:
                continue
            start = parse_instant(at) + delay
            if not (start <= now <= start + expire):
                continue
            if not conditions_hold(rule, o):
                continue
            due.append(
                Due(
                    rule.name,
                    dedupe_key(rule.name, order_id=o.order_id),
                    start,
                    start + expire,
                    order_id=o.order_id,
                    customer_id=o.customer_id,
                )
            )
    return due


# --------------------------------------------------------------------------- I/O around it


_ORDER_SQL = """
SELECT o.*, (SELECT MAX(decided_at) FROM return_lines r WHERE r.order_id = o.id)
       AS return_decided_at
FROM orders o
"""


def _facts(conn: sqlite3.Connection, row: sqlite3.Row) -> OrderFacts:
    skus = tuple(
        r[0]
        for r in conn.execute(
            "SELECT sku FROM order_items WHERE order_id = ? AND sku IS NOT NULL", (row["id"],)
        )
    )
    rank = 1
    if row["customer_id"] is not None:
        rank = conn.execute(
            "SELECT COUNT(*) FROM orders WHERE customer_id = ? AND (created_at < ? OR "
            "(created_at = ? AND id <= ?))",
            (row["customer_id"], row["created_at"], row["created_at"], row["id"]),
        ).fetchone()[0]
    tags = tuple(t.strip() for t in (row["tags"] or "").replace(";", ",").split(",") if t.strip())
    return OrderFacts(
        order_id=row["id"],
        customer_id=row["customer_id"],
        status=row["status"],
        platform=row["platform"],
        total_minor=row["total_minor"],
        currency=row["currency"],
        times={t: row[c] for t, c in TRIGGER_COLUMNS.items()},
        tags=tags,
        skus=skus,
        order_rank=rank,
    )


def candidate_orders(
    conn: sqlite3.Connection, rule: Any, now: datetime
) -> Iterable[tuple[sqlite3.Row, OrderFacts]]:
    """Orders whose trigger time falls in the rule's window and not yet planned for it."""
    col = TRIGGER_COLUMNS[rule.trigger]
    delay = parse_duration(rule.delay)
    expire = parse_duration(rule.expire_after)
    lo, hi = iso(now - delay - expire), iso(now - delay)
    if rule.trigger == "return_decided":
        sql = (
            f"SELECT * FROM ({_ORDER_SQL}) WHERE return_decided_at BETWEEN ? AND ? "
            "AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.dedupe_key = "
            "'followup:' || ? || ':order:' || id)"
        )
    else:
        sql = (
            f"{_ORDER_SQL} WHERE o.{col} BETWEEN ? AND ? AND NOT EXISTS (SELECT 1 FROM outbox "
            "x WHERE x.dedupe_key = 'followup:' || ? || ':order:' || o.id)"
        )
    for row in conn.execute(sql, (lo, hi, rule.name)).fetchall():
        yield row, _facts(conn, row)


@dataclass
class PlanReport:
    planned: int = 0
    already: int = 0
    template_errors: int = 0
    no_recipient: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _context(conn, config, rule, order: sqlite3.Row | None, customer: sqlite3.Row | None,
             recipient: str, now: datetime) -> dict[str, Any]:  # fmt: skip
    shop = config.shop
    ctx: dict[str, Any] = {
        "shop": {
            "name": shop.name,
            "email": shop.email,
            "base_url": shop.base_url,
            "currency": shop.currency,
        },
        "rule": {"name": rule.name, "trigger": rule.trigger},
        "vars": dict(rule.variables),
        "now": iso(now),
    }
    if customer is not None:
        name = customer["name"] or ""
        ctx["customer"] = {
            "id": customer["id"],
            "name": name,
            "first_name": name.split()[0] if name.split() else "",
            "email": customer["email"],
            "phone": customer["phone"],
            "locale": customer["locale"],
            "birthday": customer["birthday"],
        }
    else:
        ctx["customer"] = {
            "id": None,
            "name": "",
            "first_name": "",
            "email": recipient,
            "phone": None,
            "locale": None,
            "birthday": None,
        }
    if order is not None:
        o = dict(zip(order.keys(), tuple(order), strict=True))
        o.setdefault("tracking_url", "")
        ctx["order"] = o
        ctx["items"] = [
            dict(r)
            for r in conn.execute(
                "SELECT line_no, sku, name, quantity, unit_price_minor, total_minor "
                "FROM order_items WHERE order_id = ? ORDER BY line_no",
                (order["id"],),
            )
        ]
    else:
        ctx["order"] = None
        ctx["items"] = []
    ctx["unsubscribe_url"] = ""
    if "@" in recipient and getattr(rule, "marketing", False):
        try:
            from csops.tokens import unsubscribe_url

            ctx["unsubscribe_url"] = unsubscribe_url(config, recipient)
        except Exception:
            if rule.marketing:
                raise
    return ctx


def plan_due(
    conn: sqlite3.Connection,
    config: Any,
    now: datetime,
    *,
    rule_names: set[str] | None = None,
    dry_run: bool = False,
) -> PlanReport:
    """Plan every due follow-up into the outbox (or just list them with ``dry_run``)."""
    report = PlanReport()
    for _ in plan_steps(conn, config, now, report, rule_names=rule_names, dry_run=dry_run):
        pass
    return report


def plan_steps(
    conn: sqlite3.Connection,
    config: Any,
    now: datetime,
    report: PlanReport,
    *,
    rule_names: set[str] | None = None,
    dry_run: bool = False,
    batch_size: int = 200,
) -> Iterator[bool]:
    """:func:`plan_due` one message at a time, so a caller can interleave it with delivery.

    Yields after each message rendered (``False``) and after each batch committed to the
    outbox (``True``: new rows are due). Bad rule names are refused before the first step.
    """
    _check_rule_names(config, rule_names)
    return _plan_steps(conn, config, now, report, rule_names, dry_run, batch_size)


def _check_rule_names(config: Any, rule_names: set[str] | None) -> None:
    if rule_names:
        from csops.errors import UsageError

        unknown = rule_names - {r.name for r in config.section("followups")}
        if unknown:
            raise UsageError(
                f"no follow-up rule named {', '.join(sorted(unknown))}",
                expected="one of " + ", ".join(r.name for r in config.section("followups")),
            )


def _plan_steps(conn, config, now, report, rule_names, dry_run, batch_size) -> Iterator[bool]:
    from csops.messaging.outbox import NewMessage, enqueue, message_id_domain
    from csops.messaging.render import TemplateError, pick_locale, render_message
    from csops.messaging.settings import channel_table

    settings = config.section("messaging")
    rules = [r for r in config.section("followups") if r.enabled]
    if rule_names:
        rules = [r for r in rules if r.name in rule_names]
    tz = ZoneInfo(config.shop.timezone)
    channels = channel_table(config)
    domain = message_id_domain(config)
    batch: list[tuple[NewMessage, str | None]] = []

    def flush() -> None:
        if dry_run or not batch:
            batch.clear()
            return
        with dbmod.write(conn):
            for msg, err in batch:
                state = "failed" if err else "queued"
                if enqueue(conn, msg, now=now, domain=domain, state=state, last_error=err):
                    report.planned += 1
                else:
                    report.already += 1
        batch.clear()

    for rule in rules:
        if rule.trigger == "birthday":
            custs = conn.execute(
                "SELECT id, birthday FROM customers WHERE birthday IS NOT NULL AND "
                "opted_out_at IS NULL"
            ).fetchall()
            dues = plan_followups(
                [rule],
                [],
                now=now,
                tz=tz,
                customers=[CustomerFacts(c["id"], c["birthday"]) for c in custs],
            )
            orders_by_id: dict[int, sqlite3.Row] = {}
        else:
            cands = list(candidate_orders(conn, rule, now))
            orders_by_id = {row["id"]: row for row, _ in cands}
            dues = plan_followups([rule], [f for _, f in cands], now=now, tz=tz)
        channel_name = rule.channel or settings.default_channel
        ch_settings = channels.get(channel_name)
        is_email = ch_settings is None or ch_settings.type in ("smtp", "outbox-dir")
        for d in dues:
            if conn.execute(
                "SELECT 1 FROM outbox WHERE dedupe_key = ?", (d.dedupe_key,)
            ).fetchone():
                report.already += 1
                continue
            order = orders_by_id.get(d.order_id) if d.order_id else None
            customer = None
            cid = d.customer_id
            if cid is not None:
                customer = conn.execute("SELECT * FROM customers WHERE id = ?", (cid,)).fetchone()
            if is_email:
                recipient = (order["email"] if order is not None else None) or (
                    customer["email"] if customer is not None else None
                )
            else:
                recipient = (customer["phone"] if customer is not None else None) or (
                    customer["email"] if customer is not None else None
                )
            if not recipient:
                report.no_recipient += 1
                continue
            locale = pick_locale(customer["locale"] if customer is not None else None, config)
            err = None
            try:
                ctx = _context(conn, config, rule, order, customer, recipient, now)
                rendered = render_message(config, rule.template, locale, ctx)
                subject, text, html = rendered.subject, rendered.text, rendered.html
                locale = rendered.locale
            except TemplateError as exc:
                err = f"template_error: {exc}"[:500]
                subject, text, html = "", "", None
                report.template_errors += 1
                report.errors.append(f"rule {rule.name}: {exc}")
            msg = NewMessage(
                dedupe_key=d.dedupe_key,
                kind="followup",
                channel=channel_name,
                recipient=recipient,
                subject=subject,
                body_text=text,
                body_html=html,
                rule=rule.name,
                order_id=d.order_id,
                customer_id=cid,
                locale=locale,
                is_marketing=rule.marketing,
                expires_at=iso(d.expires_at),
                headers={"X-Csops-Rule": rule.name},
            )
            batch.append((msg, err))
            report.rows.append(
                {
                    "rule": rule.name,
                    "order_id": d.order_id,
                    "customer_id": cid,
                    "due_at": iso(d.due_at),
                    "state": "template_error" if err else "planned",
                }
            )
            if len(batch) >= batch_size:
                flush()
                yield True
            else:
                yield False
    if batch:
        flush()
        yield True
