"""plan_surveys / plan_reminders: pure decisions, table-tested."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from csops.surveys.planning import Candidate, SentSurvey, plan_reminders, plan_surveys
from csops.surveys.settings import SurveyRule, SurveySettings

NOW = datetime(2024, 4, 20, 2, 0, tzinfo=timezone.utc)
CSAT = SurveyRule(name="csat", kind="csat", trigger="delivered", delay="3d", send_within="14d")
NPS = SurveyRule(name="nps", kind="nps", trigger="delivered", delay="3d", send_within="14d")
DAY = timedelta(days=1)


def cand(order_id=1, *, days_ago=5, email="a@example.com", status="delivered", **kw):
    return Candidate(
        order_id=order_id,
        email=email,
        status=status,
        events={"delivered": NOW - days_ago * DAY, "paid": NOW - (days_ago + 3) * DAY},
        **kw,
    )


def plan(cands, rules=(CSAT,), last=None, existing=(), **kw):
    planned, skips = plan_surveys(
        cands,
        list(rules),
        now=NOW,
        throttle=90 * DAY,
        last_survey_at=last or {},
        existing=set(existing),
        **kw,
    )
    return [(p.order_id, p.kind) for p in planned], sorted((s.order_id, s.reason) for s in skips)


@pytest.mark.parametrize(
    "candidate, planned, skipped",
    [
        (cand(days_ago=5), [(1, "csat")], []),
        (cand(days_ago=3), [(1, "csat")], []),  # due exactly now
        (cand(days_ago=2), [], [(1, "not_due")]),
        (cand(days_ago=17), [(1, "csat")], []),  # due 14 days ago: last moment
        (cand(days_ago=18), [], [(1, "too_late")]),
        (cand(status="cancelled"), [], [(1, "status")]),
        (cand(status="refunded"), [], [(1, "status")]),
        (cand(status="completed"), [(1, "csat")], []),
        (cand(email=None), [], [(1, "no_email")]),
        (cand(email="not-an-address"), [], [(1, "no_email")]),
        (cand(suppressed=True), [], [(1, "suppressed")]),
        (Candidate(order_id=1, email="a@example.com", status="shipped", events={}), [], []),
    ],
)
def test_one_order_is_planned_or_skipped_for_the_right_reason(candidate, planned, skipped):
    assert plan([candidate]) == (planned, skipped)


def test_a_customer_surveyed_within_the_throttle_window_is_skipped():
    last = {"a@example.com": NOW - 89 * DAY}
    assert plan([cand()], last=last) == ([], [(1, "throttled")])
    last = {"a@example.com": NOW - 90 * DAY}
    assert plan([cand()], last=last) == ([(1, "csat")], [])


def test_the_throttle_counts_addresses_case_insensitively_and_within_one_run():
    cands = [cand(1, days_ago=6, email="A@Example.com"), cand(2, days_ago=4, email="a@example.com")]
    assert plan(cands) == ([(1, "csat")], [(2, "throttled")])  # the older order wins


def test_an_order_with_a_survey_of_that_kind_is_never_planned_again():
    assert plan([cand()], existing=[("csat", 1)]) == ([], [(1, "exists")])
    assert plan([cand()], rules=(CSAT, NPS), existing=[("csat", 1)]) == (
        [(1, "nps")],
        [(1, "exists")],
    )


def test_the_first_rule_wins_the_customers_slot_and_kind_filters_rules():
    assert plan([cand()], rules=(NPS, CSAT)) == ([(1, "nps")], [(1, "throttled")])
    assert plan([cand()], rules=(NPS, CSAT), kind="csat") == ([(1, "csat")], [])


def test_limit_keeps_the_oldest_due_first():
    cands = [cand(i, days_ago=3 + i, email=f"c{i}@example.com") for i in range(1, 6)]
    planned, _ = plan(cands, limit=2)
    assert planned == [(5, "csat"), (4, "csat")]


def test_a_trigger_other_than_delivered_uses_its_own_event():
    paid = SurveyRule(name="p", kind="nps", trigger="paid", delay="7d", send_within="3d")
    assert plan([cand(days_ago=5)], rules=(paid,)) == ([(1, "nps")], [])  # paid 8 days ago
    assert plan([cand(days_ago=1)], rules=(paid,)) == ([], [(1, "not_due")])  # paid 4 days ago


def sent(i, *, sent_days_ago=5, issued_days_ago=5, **kw):
    return SentSurvey(
        survey_id=i,
        issued_at=NOW - issued_days_ago * DAY,
        sent_at=None if sent_days_ago is None else NOW - sent_days_ago * DAY,
        **kw,
    )


@pytest.mark.parametrize(
    "survey, reminded",
    [
        (sent(1), True),
        (sent(1, sent_days_ago=4), True),
        (sent(1, sent_days_ago=3), False),
        (sent(1, sent_days_ago=None), False),  # never left the outbox
        (sent(1, responded_at=NOW - DAY), False),
        (sent(1, reminded_at=NOW - DAY), False),
        (sent(1, sent_days_ago=29, issued_days_ago=29), True),
        (sent(1, sent_days_ago=29, issued_days_ago=29.5), False),  # links die within a day
    ],
)
def test_one_reminder_only_for_a_sent_unanswered_survey_whose_links_still_work(survey, reminded):
    got = plan_reminders([survey], now=NOW, reminder_after=4 * DAY, token_max_age=30 * DAY)
    assert got == ([1] if reminded else [])


def test_reminders_are_off_when_reminder_after_is_zero():
    assert plan_reminders([sent(1)], now=NOW, reminder_after=0 * DAY, token_max_age=30 * DAY) == []


@pytest.mark.parametrize(
    "kind, score, detractor",
    [
        ("csat", 1, True),
        ("csat", 2, True),
        ("csat", 3, False),
        ("nps", 6, True),
        ("nps", 7, False),
        ("nps", 0, True),
        ("nps", 10, False),
    ],
)
def test_the_default_detractor_thresholds_are_csat_2_and_nps_6(kind, score, detractor):
    assert SurveySettings().is_detractor(kind, score) is detractor


@pytest.mark.parametrize(
    "kwargs",
    [
        {"csat_detractor_max": 6},
        {"nps_detractor_max": 11},
        {"token_expiry_days": 0},
        {"max_body_bytes": 10},
        {"rules": [CSAT, CSAT]},
    ],
)
def test_settings_refuse_values_that_cannot_work(kwargs):
    with pytest.raises(ValueError):
        SurveySettings(**kwargs)
