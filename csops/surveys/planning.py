"""Which orders get a survey now, and which surveys get their one reminder: pure decisions.

Values and ``now`` in, values out; no database, no clock. ``csops.surveys.send`` reads the
candidates, calls these functions, and writes what they decide in the same transaction as the
outbox row, so a survey is planned once ever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from csops.surveys.settings import SurveyRule

# Orders in these states are not asked how they went.
EXCLUDED_STATUSES = frozenset({"cancelled", "refunded", "pending"})


@dataclass(frozen=True)
class Candidate:
    """An order that may be surveyed: its events, its recipient and whether mail may reach them."""

    order_id: int
    email: str | None
    status: str
    events: Mapping[str, datetime | None] = field(default_factory=dict)
    customer_id: int | None = None
    locale: str | None = None
    suppressed: bool = False


@dataclass(frozen=True)
class PlannedSurvey:
    rule: str
    kind: str
    template: str
    order_id: int
    customer_id: int | None
    email: str
    locale: str | None
    due_at: datetime


@dataclass(frozen=True)
class Skip:
    rule: str
    order_id: int
    reason: str  # no_email | status | suppressed | not_due | too_late | throttled | exists


def customer_key(email: str) -> str:
    """Throttles count per address: what reaches the same person is the same customer."""
    return email.strip().lower()


def plan_surveys(
    candidates: Iterable[Candidate],
    rules: Sequence[SurveyRule],
    *,
    now: datetime,
    throttle: timedelta,
    last_survey_at: Mapping[str, datetime],
    existing: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset(),
    kind: str | None = None,
    limit: int | None = None,
) -> tuple[list[PlannedSurvey], list[Skip]]:
    """Surveys due at ``now``: the oldest due first, at most one per customer per ``throttle``.

    A rule is due ``delay`` after its trigger event and stays due for ``send_within``; later than
    that it is skipped (``too_late``), so an outage never sends a burst of stale surveys. Rules
    are tried in their configured order, so the first matching rule of an order wins the
    customer's throttle slot.
    """
    due: list[tuple[datetime, int, PlannedSurvey]] = []
    skips: list[Skip] = []
    for cand in candidates:
        for rank, rule in enumerate(rules):
            if kind and rule.kind != kind:
                continue
            if (rule.kind, cand.order_id) in existing:
                skips.append(Skip(rule.name, cand.order_id, "exists"))
                continue
            event = cand.events.get(rule.trigger)
            if event is None:
                continue
            due_at = event + rule.delay_td
            if due_at > now:
                skips.append(Skip(rule.name, cand.order_id, "not_due"))
                continue
            if now - due_at > rule.send_within_td:
                skips.append(Skip(rule.name, cand.order_id, "too_late"))
                continue
            if cand.status in EXCLUDED_STATUSES:
                skips.append(Skip(rule.name, cand.order_id, "status"))
                continue
            if not cand.email or "@" not in cand.email:
                skips.append(Skip(rule.name, cand.order_id, "no_email"))
                continue
            if cand.suppressed:
                skips.append(Skip(rule.name, cand.order_id, "suppressed"))
                continue
            planned = PlannedSurvey(
                rule=rule.name,
                kind=rule.kind,
                template=rule.template_name,
                order_id=cand.order_id,
                customer_id=cand.customer_id,
                email=cand.email.strip(),
                locale=cand.locale,
                due_at=due_at,
            )
            due.append((due_at, rank, planned))
    due.sort(key=lambda item: (item[0], item[1], item[2].order_id))
    taken: dict[str, datetime] = dict(last_survey_at)
    planned_orders: set[int] = set()
    out: list[PlannedSurvey] = []
    for _, _, p in due:
        key = customer_key(p.email)
        last = taken.get(key)
        if p.order_id in planned_orders or (last is not None and now - last < throttle):
            skips.append(Skip(p.rule, p.order_id, "throttled"))
            continue
        if limit is not None and len(out) >= limit:
            break
        out.append(p)
        taken[key] = now
        planned_orders.add(p.order_id)
    return out, skips


@dataclass(frozen=True)
class SentSurvey:
    """A survey as the reminder decision sees it."""

    survey_id: int
    issued_at: datetime
    sent_at: datetime | None
    responded_at: datetime | None = None
    reminded_at: datetime | None = None


def plan_reminders(
    surveys: Iterable[SentSurvey],
    *,
    now: datetime,
    reminder_after: timedelta,
    token_max_age: timedelta,
) -> list[int]:
    """Surveys that get their one reminder now.

    Only a survey actually sent, unanswered and not yet reminded, ``reminder_after`` after it was
    sent, and whose links still work for at least a day (a reminder with dead links is noise).
    ``reminder_after`` of zero turns reminders off.
    """
    if reminder_after <= timedelta(0):
        return []
    out = []
    for s in surveys:
        if s.sent_at is None or s.responded_at is not None or s.reminded_at is not None:
            continue
        if now - s.sent_at < reminder_after:
            continue
        if s.issued_at + token_max_age - now < timedelta(days=1):
            continue
        out.append(s.survey_id)
    return sorted(out)
