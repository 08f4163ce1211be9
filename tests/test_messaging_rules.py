"""Follow-up rules: the pure planner by table, then planning end to end through the CLI."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from messaging_helpers import env, no_quiet_hours, seed_orders, states

from csops.messaging.rules import CustomerFacts, OrderFacts, plan_followups
from csops.messaging.settings import FollowupRule

UTC = timezone.utc
NOW = datetime(2024, 4, 20, 2, 0, tzinfo=UTC)
SH = ZoneInfo("Asia/Shanghai")


def order(**kw) -> OrderFacts:
    times = kw.pop("times", {})
    base = dict(
        order_id=1,
        customer_id=1,
        status="delivered",
        platform="shopify",
        total_minor=5000,
        currency="USD",
        times={"paid": None, "shipped": None, "delivered": None, "cancelled": None,
               "refunded": None, "return_decided": None, **times},
    )  # fmt: skip
    base.update(kw)
    return OrderFacts(**base)


def rule(**kw) -> FollowupRule:
    base = dict(name="r", trigger="delivered", template="delivery_checkin", delay="3d",
                expire_after="4d")  # fmt: skip
    base.update(kw)
    return FollowupRule(**base)


CASES = [
    # (description, rule kwargs, order kwargs, due?)
    ("due exactly at trigger + delay", {}, {"times": {"delivered": "2024-04-17T02:00:00Z"}}, True),
    ("not yet due one second early", {}, {"times": {"delivered": "2024-04-17T02:00:01Z"}}, False),
    ("still due on the last moment", {}, {"times": {"delivered": "2024-04-13T02:00:00Z"}}, True),
    ("expired one second later", {}, {"times": {"delivered": "2024-04-13T01:59:59Z"}}, False),
    ("no trigger time, never due", {}, {}, False),
    ("status condition holds", {"statuses": ["delivered"]},
     {"times": {"delivered": "2024-04-16T00:00:00Z"}}, True),
    ("status condition fails", {"statuses": ["completed"]},
     {"times": {"delivered": "2024-04-16T00:00:00Z"}}, False),
    ("platform condition fails", {"platforms": ["taobao"]},
     {"times": {"delivered": "2024-04-16T00:00:00Z"}}, False),
    ("minimum total fails", {"min_total_minor": 5001},
     {"times": {"delivered": "2024-04-16T00:00:00Z"}}, False),
    ("minimum total holds at equality", {"min_total_minor": 5000},
     {"times": {"delivered": "2024-04-16T00:00:00Z"}}, True),
    ("tag match is case-insensitive", {"tags_any": ["VIP"]},
     {"tags": ("vip", "x"), "times": {"delivered": "2024-04-16T00:00:00Z"}}, True),
    ("tag missing", {"tags_any": ["vip"]},
     {"tags": ("x",), "times": {"delivered": "2024-04-16T00:00:00Z"}}, False),
    ("sku match", {"skus_any": ["MUG-1"]},
     {"skus": ("MUG-1",), "times": {"delivered": "2024-04-16T00:00:00Z"}}, True),
    ("first order only, first order", {"customer": "first_order"},
     {"order_rank": 1, "times": {"delivered": "2024-04-16T00:00:00Z"}}, True),
    ("first order only, repeat customer", {"customer": "first_order"},
     {"order_rank": 2, "times": {"delivered": "2024-04-16T00:00:00Z"}}, False),
    ("repeat only, repeat customer", {"customer": "repeat"},
     {"order_rank": 3, "times": {"delivered": "2024-04-16T00:00:00Z"}}, True),
    ("disabled rule", {"enabled": False}, {"times": {"delivered": "2024-04-16T00:00:00Z"}}, False),
    ("shipping notice with no delay", {"trigger": "shipped", "delay": "0h", "expire_after": "2d"},
     {"times": {"shipped": "2024-04-20T01:00:00Z"}}, True),
    ("cancellation one hour later", {"trigger": "cancelled", "delay": "1h"},
     {"times": {"cancelled": "2024-04-20T01:30:00Z"}}, False),
    ("return decided", {"trigger": "return_decided", "delay": "0h"},
     {"times": {"return_decided": "2024-04-19T00:00:00Z"}}, True),
]  # fmt: skip


@pytest.mark.parametrize(("desc", "rkw", "okw", "expected"), CASES, ids=[c[0] for c in CASES])
def test_the_planner_decides_by_trigger_delay_expiry_and_conditions(desc, rkw, okw, expected):
    due = plan_followups([rule(**rkw)], [order(**okw)], now=NOW, tz=SH)
    assert bool(due) is expected, desc
    if due:
        assert due[0].dedupe_key == "followup:r:order:1"


BIRTHDAYS = [
    ("birthday today after 09:00 local", "1990-04-20", True),
    ("birthday today, written as --MM-DD", "--04-20", True),
    ("birthday tomorrow", "1990-04-21", False),
    ("birthday yesterday, past the one-day expiry", "1990-04-18", False),
    ("no birthday", None, False),
    ("nonsense birthday", "soon", False),
]


@pytest.mark.parametrize(("desc", "bday", "expected"), BIRTHDAYS, ids=[b[0] for b in BIRTHDAYS])
def test_birthday_greetings_are_due_on_the_local_birthday_once_a_year(desc, bday, expected):
    r = rule(trigger="birthday", delay="9h", expire_after="1d", template="birthday_greeting")
    due = plan_followups([r], [], now=NOW, tz=SH, customers=[CustomerFacts(5, bday)])
    assert bool(due) is expected, desc
    if due:
        assert due[0].dedupe_key == "followup:r:customer:5:2024"


def test_a_leap_day_birthday_is_greeted_on_february_28th():
    r = rule(trigger="birthday", delay="0h", expire_after="1d", template="birthday_greeting")
    now = datetime(2023, 2, 28, 5, 0, tzinfo=UTC)
    due = plan_followups([r], [], now=now, tz=SH, customers=[CustomerFacts(5, "2000-02-29")])
    assert len(due) == 1


def test_bad_rules_are_config_errors_naming_the_key(workspace):
    workspace.set_config(
        '[[followups]]\nname = "x"\ntrigger = "delivered"\ntemplate = "t"\ndelay = "soon"\n'
    )
    p = workspace.run("followups", "send", env=env())
    assert p.code == 2 and "followups[5]" in p.stderr and "delay" in p.stderr
    assert "Traceback" not in p.stderr


def test_default_rules_plan_each_due_order_once_ever(workspace):
    no_quiet_hours(workspace)
    seed_orders(
        workspace,
        [
            {"id": 1, "customer_id": 1, "email": "ann@example.test", "status": "delivered",
             "shipped_at": "2024-04-12T00:00:00Z", "delivered_at": "2024-04-16T00:00:00Z",
             "items": [{"sku": "MUG", "name": "Mug"}]},
            {"id": 2, "customer_id": 2, "email": "bo@example.test", "status": "shipped",
             "shipped_at": "2024-04-19T12:00:00Z"},
            {"id": 3, "customer_id": 3, "email": "cy@example.test", "status": "cancelled",
             "cancelled_at": "2024-04-19T10:00:00Z", "paid_at": "2024-04-18T00:00:00Z"},
            {"id": 4, "customer_id": 3, "email": "cy@example.test", "status": "delivered",
             "delivered_at": "2024-01-01T00:00:00Z"},  # far too late for any rule
        ],
        [
            {"id": 1, "email": "ann@example.test", "name": "Ann", "locale": "en"},
            {"id": 2, "email": "bo@example.test", "name": "王伟", "locale": "zh-CN"},
            {"id": 3, "email": "cy@example.test", "name": "Cy", "locale": None},
        ],
    )  # fmt: skip
    p = workspace.run("followups", "send", "--json", env=env())
    assert p.code == 0, p.stderr
    got = {(r["rule"], r["order_id"], r["locale"]) for r in workspace.query(
        "SELECT rule, order_id, locale FROM outbox")}  # fmt: skip
    assert got == {
        ("delivery_checkin", 1, "en"),
        ("shipping_notice", 2, "zh-CN"),
        ("cancellation_apology", 3, "zh-CN"),  # shop default locale
    }
    subj = {r["rule"]: r["subject"] for r in workspace.query("SELECT rule, subject FROM outbox")}
    assert subj["shipping_notice"] == "您的订单 #1002 已发货"
    assert states(workspace) == {"sent": 3}
    again = workspace.run("followups", "send", env=env("2024-04-20T03:00:00Z"))
    assert again.code == 0 and "planned=0" in again.stderr
    assert len(list((workspace.root / "outbox").glob("*.eml"))) == 3


def test_rule_option_limits_planning_and_an_unknown_rule_is_a_usage_error(workspace):
    no_quiet_hours(workspace)
    seed_orders(
        workspace,
        [{"id": 2, "customer_id": 2, "email": "bo@example.test", "status": "shipped",
          "shipped_at": "2024-04-19T12:00:00Z"}],
        [{"id": 2, "email": "bo@example.test", "name": "Bo"}],
    )  # fmt: skip
    p = workspace.run("followups", "send", "--rule", "delivery_checkin", env=env())
    assert p.code == 0 and workspace.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0
    p = workspace.run("followups", "send", "--rule", "nope", env=env())
    assert p.code == 2 and "nope" in p.stderr
    p = workspace.run("followups", "send", "--rule", "shipping_notice", "--limit", "1", env=env())
    assert p.code == 0 and states(workspace) == {"sent": 1}


def _shipped_orders(n: int) -> list[dict]:
    orders = [
        {"id": i, "customer_id": i, "email": f"c{i}@example.test", "status": "shipped",
         "shipped_at": "2024-04-19T12:00:00Z"}
        for i in range(1, n + 1)
    ]  # fmt: skip
    return orders


def test_planning_in_delivery_waits_plans_and_sends_every_due_message_once(workspace, tmp_path):
    """`followups send` plans in the pauses of SMTP delivery (batches of 200): 450 due orders
    are planned and sent exactly once; --limit stops delivery, never planning."""
    from messaging_helpers import Sink, smtp_channel

    orders = _shipped_orders(450)
    seed_orders(workspace, orders, [
        {"id": o["id"], "email": o["email"], "name": f"C{o['id']}"} for o in orders
    ])  # fmt: skip
    with Sink(tmp_path) as sink:
        smtp_channel(workspace, sink.port)
        p = workspace.run("followups", "send", "--rule", "shipping_notice", "--limit", "10",
                          env=env())  # fmt: skip
        assert p.code == 0, p.stderr
        assert "planned=450" in p.stderr
        assert states(workspace) == {"sent": 10, "queued": 440}
        p = workspace.run("followups", "send", env=env())
        assert p.code == 0, p.stderr
        assert states(workspace) == {"sent": 450}
        copies = sink.copies()
        assert len(copies) == 450 and set(copies.values()) == {1}


def test_delivery_stopped_by_the_breaker_still_plans_everything_due(workspace):
    from messaging_helpers import free_port, smtp_channel

    orders = _shipped_orders(450)
    seed_orders(workspace, orders, [
        {"id": o["id"], "email": o["email"], "name": f"C{o['id']}"} for o in orders
    ])  # fmt: skip
    smtp_channel(workspace, free_port())  # nobody listens: connect errors, the breaker trips
    p = workspace.run("followups", "send", "--rule", "shipping_notice", env=env())
    assert p.code == 3, p.stderr
    assert "circuit breaker" in p.stderr and "planned=450" in p.stderr
    assert states(workspace) == {"queued": 450}
    tried = workspace.query("SELECT COUNT(*) AS n FROM outbox WHERE attempts > 0")[0]["n"]
    assert tried == 5  # the next claim made during the last attempt was given back
