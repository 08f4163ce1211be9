"""Templates: sandbox, strictness, locales, filters, hostile data and hostile templates."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest
from messaging_helpers import env, no_quiet_hours, seed_orders, sized, states

from csops.config import load_config
from csops.messaging.render import (
    TemplateError,
    check_templates,
    pick_locale,
    render_message,
    sample_context,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config():
    return load_config(REPO / "config" / "csops.toml")


@pytest.mark.parametrize(
    ("customer", "shop_default", "expected"),
    [("en", "zh-CN", "en"), ("zh_CN", "en", "zh-CN"), ("zh", "en", "zh-CN"),
     ("fr", "zh-CN", "zh-CN"), (None, "zh-CN", "zh-CN"), ("en-GB", "zh-CN", "en")],
)  # fmt: skip
def test_the_locale_is_the_customers_then_the_shops_then_english(customer, shop_default, expected):
    class Shop:
        locale = shop_default

    class Cfg:
        shop = Shop()

    assert pick_locale(customer, Cfg()) == expected


def test_every_shipped_template_renders_in_both_locales(config):
    assert check_templates(config) == []


def test_money_and_dates_render_in_the_orders_currency_and_the_shop_timezone(config):
    ctx = sample_context(config, "shipping_notice")
    ctx["order"].update(currency="JPY", total_minor=1500, shipped_at="2024-04-19T17:30:00Z")
    r = render_message(config, "shipping_notice", "zh-CN", ctx)
    assert "2024年4月20日" in r.text  # 01:30 next day in Asia/Shanghai
    assert "1,500" in r.text or "1500" in r.text
    r = render_message(config, "shipping_notice", "en", ctx)
    assert "20 Apr 2024" in r.text


def test_a_missing_variable_is_an_error_never_a_blank(config):
    ctx = sample_context(config, "shipping_notice")
    del ctx["order"]["number"]
    with pytest.raises(TemplateError) as exc:
        render_message(config, "shipping_notice", "en", ctx)
    assert "number" in str(exc.value)


def _write(ws, name: str, text: str, subject: str = "Hi", html: str | None = None) -> None:
    d = ws.root / "templates" / "messages" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "en.subject.txt").write_text(subject)
    (d / "en.txt").write_text(text)
    if html is not None:
        (d / "en.html").write_text(html)


HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    "{{ 7*7 }}",
    "{% include 'x' %}",
    "Bob\r\nBcc: victim@example.net",
    "\u202eevil",
    "N" * 10_000,
    "",
    "Zoë 🎉",
    "王小明",
]


def test_hostile_customer_data_renders_inert_and_never_reaches_a_header(workspace, scale):
    """AT-24: hostile names inside good templates, delivered to the outbox folder (the hostile
    customers alone; ``--nightly``: among ordinary ones, 1,000 messages in all)."""
    no_quiet_hours(workspace)
    _write(
        workspace,
        "hello",
        "Hello {{ customer.name }}!\n",
        subject="Hi {{ customer.name }}",
        html="<p>Hello {{ customer.name }}</p>",
    )
    workspace.set_config(
        '[[followups]]\nname = "hello"\ntrigger = "shipped"\ndelay = "0h"\ntemplate = "hello"\n'
    )
    customers, orders = [], []
    for i, name in enumerate(HOSTILE_NAMES, 1):
        customers.append({"id": i, "email": f"c{i}@example.test", "name": name, "locale": "en"})
        orders.append({"id": i, "customer_id": i, "email": f"c{i}@example.test",
                       "status": "shipped", "shipped_at": "2024-04-20T01:00:00Z"})  # fmt: skip
    # One recipient that tries to smuggle a header: it fails alone, the batch goes on.
    customers.append({"id": 99, "email": "x@example.test\r\nBcc: v@example.net", "name": "X"})
    orders.append({"id": 99, "customer_id": 99, "email": "x@example.test\r\nBcc: v@example.net",
                   "status": "shipped", "shipped_at": "2024-04-20T01:00:00Z"})  # fmt: skip
    ordinary = sized(scale, 0, 1000 - len(orders))
    for i in range(1000, 1000 + ordinary):
        customers.append({"id": i, "email": f"c{i}@example.test", "name": f"Ann {i}",
                          "locale": "en"})  # fmt: skip
        orders.append({"id": i, "customer_id": i, "email": f"c{i}@example.test",
                       "status": "shipped", "shipped_at": "2024-04-20T01:00:00Z"})  # fmt: skip
    seed_orders(workspace, orders, customers)
    p = workspace.run("followups", "send", "--rule", "hello", env=env())
    assert p.code == 3, p.stderr  # the one header-injection failure
    rows = workspace.query("SELECT customer_id, state, last_error FROM outbox")
    by_customer = {r["customer_id"]: r for r in rows}
    assert by_customer[99]["state"] == "failed"
    assert by_customer[99]["last_error"].startswith("header_injection")
    assert states(workspace) == {"sent": len(HOSTILE_NAMES) + ordinary, "failed": 1}
    allowed = {"from", "to", "subject", "date", "message-id", "mime-version", "x-csops-rule",
               "content-type", "content-transfer-encoding"}  # fmt: skip
    for f in (workspace.root / "outbox").glob("*.eml"):
        raw = f.read_bytes()
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert {k.lower() for k in msg} <= allowed
        assert "bcc" not in {k.lower() for k in msg}
        assert len(msg.get_all("To")) == 1 and "," not in msg["To"]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        if "script" in text:
            assert "&lt;script&gt;" in html and "<script>" not in html
        if "7*7" in text:
            assert "{{ 7*7 }}" in text and "49" not in text
        if "include" in text:
            assert "{% include 'x' %}" in text


BAD_TEMPLATES = {
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "format": '{{ "{0.__class__}".format(1) }}',
    "attr": '{{ ""|attr("format") }}',
    "bomb": "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx"
    "{% endfor %}{% endfor %}",
    "spin": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "include": "{% include '../config/csops.toml' %}",
    "extends": "{% extends '../../../etc/passwd' %}",
    "undefined": "Hello {{ nobody_defined_me }}",
    "syntax": "Hello\n{% if %}\n",
}


def test_templates_check_lists_each_hostile_template_with_its_file_and_no_traceback(workspace):
    """AT-25: every attack is caught; nothing leaks; the good templates still pass."""
    workspace.replace_config("max_render_seconds = 2.0", "max_render_seconds = 0.5")
    for name, text in BAD_TEMPLATES.items():
        _write(workspace, f"bad_{name}", text)
    p = workspace.run("templates", "check", "--json", env=env())
    assert p.code == 1, p.stderr
    assert "Traceback" not in p.stderr
    problems = {r["template"]: r["error"] for r in p.json()}
    assert set(problems) == {f"bad_{n}" for n in BAD_TEMPLATES}
    for n in ("mro", "globals", "format"):
        assert "SecurityError" in problems[f"bad_{n}"] or "unsafe" in problems[f"bad_{n}"]
    assert "larger than" in problems["bad_bomb"]
    assert "longer than" in problems["bad_spin"] or "too long" in problems["bad_spin"]
    assert "not found" in problems["bad_include"] and "not found" in problems["bad_extends"]
    assert "nobody_defined_me" in problems["bad_undefined"]
    assert "messages/bad_syntax/en.txt:2" in problems["bad_syntax"]
    assert "root:" not in p.stdout and "[shop]" not in p.stdout


def test_a_broken_template_fails_only_its_rules_messages(workspace):
    """AT-25: followups send marks the affected rule's messages failed, sends the rest."""
    no_quiet_hours(workspace)
    _write(workspace, "broken", "{{ customer.name.__class__.__mro__ }}")
    workspace.set_config(
        '[[followups]]\nname = "broken"\ntrigger = "shipped"\ndelay = "0h"\ntemplate = "broken"\n'
    )
    seed_orders(
        workspace,
        [{"id": i, "customer_id": i, "email": f"c{i}@example.test", "status": "shipped",
          "shipped_at": "2024-04-20T01:00:00Z"} for i in (1, 2)],
        [{"id": i, "email": f"c{i}@example.test", "name": f"C{i}"} for i in (1, 2)],
    )  # fmt: skip
    p = workspace.run("followups", "send", env=env())
    assert p.code == 3 and "Traceback" not in p.stderr
    rows = workspace.query("SELECT rule, state, last_error FROM outbox ORDER BY id")
    broken = [r for r in rows if r["rule"] == "broken"]
    assert len(broken) == 2
    assert all(r["state"] == "failed" and r["last_error"].startswith("template_error")
               for r in broken)  # fmt: skip
    assert [r["state"] for r in rows if r["rule"] == "shipping_notice"] == ["sent", "sent"]
    # After fixing the template, retry re-plans the message.
    _write(workspace, "broken", "Fixed for {{ customer.name }}\n")
    broken_id = workspace.query("SELECT id FROM outbox WHERE rule = 'broken' LIMIT 1")[0]["id"]
    assert workspace.run("outbox", "retry", str(broken_id), env=env()).code == 0
    p = workspace.run("followups", "send", "--rule", "broken", env=env())
    assert (
        workspace.query(
            "SELECT COUNT(*) AS n FROM outbox WHERE rule = 'broken' AND state != 'failed'"
        )[0]["n"]
        == 1
    )


def test_templates_render_previews_a_real_order_and_list_shows_the_rules(workspace):
    seed_orders(
        workspace,
        [{"id": 1, "customer_id": 1, "email": "a@example.test", "status": "delivered",
          "delivered_at": "2024-04-16T00:00:00Z", "total_minor": 12345}],
        [{"id": 1, "email": "a@example.test", "name": "<b>Ann</b>", "locale": "en"}],
    )  # fmt: skip
    p = workspace.run("templates", "render", "delivery_checkin", "--order", "1", env=env())
    assert p.code == 0, p.stderr
    assert "Subject: How is everything with order #1001?" in p.stdout
    assert "&lt;b&gt;Ann&lt;/b&gt;" in p.stdout and "Hello <b>Ann</b>" in p.stdout
    p = workspace.run("templates", "render", "delivery_checkin", "--order", "77", env=env())
    assert p.code == 1 and "77" in p.stderr
    p = workspace.run("templates", "list", "--json", env=env())
    rows = {r["name"]: r for r in p.json()}
    assert rows["review_request"]["rules"] == "review_request"
    assert rows["birthday_greeting"]["locales"] == "en,zh-CN"


def test_doctor_checks_the_jinja2_version_and_the_templates(workspace):
    p = workspace.run("doctor", "--json", env=env())
    checks = {r["check"]: r for r in p.json()}
    assert checks["jinja2 version"]["status"] == "ok"
    assert checks["render"]["status"] == "ok"
