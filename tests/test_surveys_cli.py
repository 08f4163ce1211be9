"""The survey commands as cron runs them: config errors, kinds, overlap, kill -9, summary."""

from __future__ import annotations

import collections
import signal
import time

import pytest

from tests.surveys_helpers import SIGNING_KEY, SURVEY_CONFIG, seed_orders, smtp_sink, use_smtp

NPS_RULE = """
[[surveys.rules]]
name = "nps-after-delivery"
kind = "nps"
trigger = "delivered"
delay = "3d"
send_within = "14d"
"""


@pytest.fixture
def shop(workspace):
    workspace.set_config(SURVEY_CONFIG)
    workspace.env.update({"CSOPS_SIGNING_KEYS": SIGNING_KEY, "CSOPS_NOW": "2024-04-20T02:00:00Z"})
    return workspace


@pytest.mark.parametrize(
    "old, new, field",
    [
        ('kind = "csat"', 'kind = "ces"', "surveys.rules[0].kind"),
        ('delay = "3d"', 'delay = "three days"', "surveys.rules[0]"),
        ("throttle_days = 90", 'throttle_days = "90"', "surveys.throttle_days"),
        ("max_body_bytes = 16384", "max_body_bytes = 10", "surveys"),
        ("token_expiry_days = 30", "token_secret = 'x'", "surveys.token_secret"),
    ],
)
def test_a_bad_surveys_config_is_exit_2_naming_the_key(shop, old, new, field):
    head, sep, tail = shop.config.read_text(encoding="utf-8").rpartition(old)
    assert sep
    shop.config.write_text(head + new + tail, encoding="utf-8")  # the live key, not the comment
    p = shop.run("surveys", "send")
    assert p.code == 2
    assert field in p.stderr and "csops.toml" in p.stderr and "Traceback" not in p.stderr


def test_serve_without_the_signing_keys_is_exit_2_naming_the_variable(shop):
    env = {k: v for k, v in shop.env.items() if k != "CSOPS_SIGNING_KEYS"}
    shop.env = env
    p = shop.run("surveys", "serve", "--port", "0", timeout=30)
    assert p.code == 2 and "CSOPS_SIGNING_KEYS" in p.stderr


def test_kind_sends_only_that_kind_and_the_throttle_spans_kinds(shop):
    shop.set_config(NPS_RULE)
    with smtp_sink() as sink:
        use_smtp(shop, sink.port, alerts=False)
        seed_orders(shop.db_path, 3)
        p = shop.run("surveys", "send", "--kind", "nps", "--json")
        assert p.code == 0, p.stderr
        assert {r["kind"] for r in p.json()} == {"nps"} and len(p.json()) == 3
        p = shop.run("surveys", "send", "--json")  # csat: same customers, within 90 days
        assert p.code == 0 and p.json() == []
        assert "skipped_throttled=3" in p.stderr
    assert len(sink.messages) == 3
    assert all("recommend" in m["Subject"] for m in sink.messages)


def test_limit_caps_how_many_surveys_one_run_plans(shop):
    with smtp_sink() as sink:
        use_smtp(shop, sink.port, alerts=False)
        seed_orders(shop.db_path, 5)
        assert len(shop.run("surveys", "send", "--limit", "2", "--json").json()) == 2
        assert len(shop.run("surveys", "send", "--json").json()) == 3
    assert len(sink.messages) == 5


def test_two_overlapping_sends_never_send_a_survey_twice(shop):
    with smtp_sink(delay=0.01) as sink:
        use_smtp(shop, sink.port, alerts=False)
        seed_orders(shop.db_path, 40)
        procs = [shop.popen("surveys", "send", "--wait", "120") for _ in range(2)]
        codes = [p.wait(timeout=120) for p in procs]
        assert codes == [0, 0], [p.stderr.read().decode() for p in procs]
        assert shop.run("surveys", "send").code == 0
    per_address = collections.Counter(m["To"] for m in sink.messages)
    assert len(per_address) == 40 and set(per_address.values()) == {1}
    assert shop.query("SELECT COUNT(*) AS n FROM surveys")[0]["n"] == 40


def test_a_send_killed_with_sigkill_and_rerun_loses_and_duplicates_nothing(shop):
    with smtp_sink(delay=0.05) as sink:
        use_smtp(shop, sink.port, alerts=False)
        seed_orders(shop.db_path, 60)
        proc = shop.popen("surveys", "send")
        deadline = time.monotonic() + 60
        while len(sink.messages) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        delivered_before = len(sink.messages)
        assert 10 <= delivered_before < 60
        p = shop.run("surveys", "send")
        assert p.code in (0, 3), p.stderr
    states = collections.Counter(
        r["state"] for r in shop.query("SELECT state FROM outbox WHERE kind = 'survey'")
    )
    assert sum(states.values()) == 60  # every survey planned exactly once
    assert set(states) <= {"sent", "unknown"} and states["unknown"] <= 1
    ids = collections.Counter(m["Message-ID"] for m in sink.messages)
    assert set(ids.values()) == {1}  # nothing handed over twice
    # The sink holds every `sent` message; an `unknown` one may or may not have arrived.
    assert states["sent"] <= len(ids) <= states["sent"] + states["unknown"]
    assert shop.query("SELECT COUNT(*) AS n FROM surveys")[0]["n"] == 60


def test_summary_prints_csat_and_nps_from_recorded_answers(shop, tmp_path):
    shop.set_config(NPS_RULE)
    seed_orders(shop.db_path, 6)
    answers = tmp_path / "answers.csv"
    answers.write_text(
        "order,score,kind\n#1001,5,csat\n#1002,4,csat\n#1003,2,csat\n"
        "#1004,10,nps\n#1005,8,nps\n#1006,3,nps\n",
        encoding="utf-8",
    )
    assert shop.run("surveys", "import", str(answers)).code == 0
    p = shop.run("surveys", "summary", "--json")
    assert p.code == 0, p.stderr
    rows = {r["kind"]: r for r in p.json()}
    assert rows["csat"]["score"] == pytest.approx(66.7)
    assert rows["nps"]["score"] == 0.0  # one promoter, one passive, one detractor
    assert rows["csat"]["detractors"] == 1 and rows["nps"]["detractors"] == 1
    assert "CSAT %: 66.7 (3 answers)" in p.stderr and "NPS: 0 (3 answers)" in p.stderr
