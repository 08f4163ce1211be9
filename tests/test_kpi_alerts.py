"""Thresholds at three levels: the pure judgement, and `csops kpi check` alerting once, exit 4."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from kpi_helpers import DAY, NOW, env_at, insert_fixture

from csops.kpi.alerts import evaluate_thresholds
from csops.kpi.metrics import Value
from csops.kpi.settings import Threshold

CSAT = {"csat.avg": Threshold("below", notice=4.3, warning=4.0, critical=3.5)}
FRT = {"frt.median_minutes": Threshold("above", notice=5, warning=15, critical=60)}


@pytest.mark.parametrize(
    "thresholds, value, sample, min_sample, expected",
    [
        (CSAT, 4.5, 10, 5, None),
        (CSAT, 4.3, 10, 5, None),  # on the line is not a breach
        (CSAT, 4.29, 10, 5, "notice"),
        (CSAT, 4.0, 10, 5, "notice"),
        (CSAT, 3.99, 10, 5, "warning"),
        (CSAT, 3.2, 10, 5, "critical"),  # only the worst level
        (CSAT, 3.2, 4, 5, None),  # too small a sample
        (CSAT, None, 10, 5, None),  # no value (no answers)
        (FRT, 4.0, 10, 5, None),
        (FRT, 15.5, 10, 5, "warning"),
        (FRT, 61, 10, 5, "critical"),
        ({"x": Threshold("above", warning=0, min_sample=1)}, 1, 1, 5, "warning"),  # own minimum
        ({"x": Threshold("below", critical=0.5)}, 0.4, 0, 0, "critical"),
    ],
)
def test_evaluate_thresholds_reports_the_worst_level_crossed(
    thresholds, value, sample, min_sample, expected
):
    name = next(iter(thresholds))
    breaches = evaluate_thresholds({name: Value(value, None, None, sample)}, thresholds, min_sample)
    assert [b.level for b in breaches] == ([expected] if expected else [])


def test_a_missing_metric_is_not_a_breach():
    assert evaluate_thresholds({}, CSAT, 0) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "below", "notice": 3.0, "warning": 4.0},  # below: notice must be highest
        {"direction": "above", "warning": 10.0, "critical": 5.0},
        {"direction": "below"},
    ],
)
def test_thresholds_out_of_order_or_empty_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Threshold(**kwargs)


@pytest.fixture
def shop(workspace):
    insert_fixture(workspace.db_path)
    return workspace


def _alerts(ws) -> list[dict]:
    return ws.query(
        "SELECT * FROM outbox WHERE kind = 'alert' AND dedupe_key LIKE 'kpi:%' ORDER BY id"
    )


def test_check_alerts_once_per_kpi_day_and_level_and_exits_4_at_critical(shop):
    first = shop.run("kpi", "check", "--date", DAY, "--json", env=env_at(NOW))
    assert first.code == 4, first.stderr
    breaches = {(r["metric"], r["level"]) for r in first.json()}
    # by hand: 2 of 7 within 5 min (critical < 40), after-sales 60% (critical < 75), median
    # FRT 7.5 min (notice > 5), one failed follow-up (notice > 0). CSAT (4 answers < 5), NPS,
    # cancellations and complaints lack the sample size to be judged.
    assert breaches == {
        ("frt.within_5m_pct", "critical"),
        ("after_sales.answered_24h_pct", "critical"),
        ("frt.median_minutes", "notice"),
        ("followups.failed", "notice"),
    }
    assert "CRITICAL: frt.within_5m_pct = 28.6% is below 40.0%" in first.stderr
    alerts = _alerts(shop)
    assert {a["dedupe_key"] for a in alerts} == {f"kpi:{DAY}:{m}:{lvl}" for m, lvl in breaches}
    assert {a["state"] for a in alerts} == {"sent"}
    files = sorted((shop.root / "outbox").glob("*.eml"))
    assert len(files) == 4
    assert any("frt.within_5m_pct" in f.read_text() for f in files)

    second = shop.run("kpi", "check", "--date", DAY, "--json", env=env_at(NOW))
    assert second.code == 4
    assert {r["alert"] for r in second.json()} == {"already queued"}
    assert len(_alerts(shop)) == 4
    assert len(list((shop.root / "outbox").glob("*.eml"))) == 4


def test_a_day_within_thresholds_exits_0_and_queues_nothing(shop):
    proc = shop.run("kpi", "check", "--date", "2024-04-01", "--json", env=env_at(NOW))
    assert proc.code == 0, proc.stderr
    assert proc.json() == []
    assert "every KPI within its thresholds" in proc.stderr
    assert _alerts(shop) == []


def test_check_defaults_to_yesterday_in_shop_time(shop):
    # 2024-04-18T17:00Z is 2024-04-19 01:00 in Shanghai: yesterday is the fixture day.
    proc = shop.run("kpi", "check", "--json", env=env_at("2024-04-18T17:00:00Z"))
    assert proc.code == 4
    assert {r["day"] for r in proc.json()} == {DAY}


def test_dry_run_check_lists_breaches_but_queues_nothing(shop):
    proc = shop.run("kpi", "check", "--date", DAY, "--dry-run", "--json", env=env_at(NOW))
    assert proc.code == 4
    assert {r["alert"] for r in proc.json()} == {"dry run"}
    assert _alerts(shop) == []


def test_an_alert_channel_that_does_not_exist_is_a_config_error(shop):
    shop.replace_config('[alerts]\nchannel = "outbox"', '[alerts]\nchannel = "pager"')
    proc = shop.run("kpi", "check", "--date", DAY, env=env_at(NOW))
    assert proc.code == 2
    assert "alerts.channel" in proc.stderr and "pager" in proc.stderr


def test_a_wrong_threshold_in_the_config_names_the_key(shop):
    shop.replace_config(
        '[kpi.thresholds.nps]\ndirection = "below"', '[kpi.thresholds.nps]\ndirection = "under"'
    )
    proc = shop.run("kpi", "check", "--date", DAY, env=env_at(NOW))
    assert proc.code == 2
    assert "kpi.thresholds.nps.direction" in proc.stderr


class _Receiver(BaseHTTPRequestHandler):
    """A webhook receiver keeping its own ledger of what it was handed."""

    ledger: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.ledger.append({"key": self.headers.get("Idempotency-Key"), "body": body.decode()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alerts_go_to_a_webhook_on_loopback_once(shop):
    _Receiver.ledger = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        shop.replace_config(
            '[alerts]\nchannel = "outbox"',
            f'[channels.ops-hook]\ntype = "webhook"\nurl = "{url}"\n\n'
            '[alerts]\nchannel = "ops-hook"',
        )
        for _ in range(2):
            proc = shop.run("kpi", "check", "--date", DAY, "--json", env=env_at(NOW))
            assert proc.code == 4, proc.stderr
    finally:
        server.shutdown()
    assert len(_Receiver.ledger) == 4
    assert len({hit["key"] for hit in _Receiver.ledger}) == 4
    assert any("after_sales.answered_24h_pct" in json.dumps(hit) for hit in _Receiver.ledger)


def test_alerts_go_by_smtp_to_the_shop_address_once(shop):
    from aiosmtpd.controller import Controller

    class Ledger:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
            self.messages.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
            return "250 OK"

    from conftest import free_port

    port = free_port()
    ledger = Ledger()
    controller = Controller(ledger, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        shop.replace_config(
            '[alerts]\nchannel = "outbox"',
            f'[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n\n'
            '[alerts]\nchannel = "mail"',
        )
        for _ in range(2):
            proc = shop.run("kpi", "check", "--date", DAY, "--json", env=env_at(NOW))
            assert proc.code == 4, proc.stderr
    finally:
        controller.stop()
    assert len(ledger.messages) == 4
    assert {tuple(rcpt) for rcpt, _ in ledger.messages} == {("service@demo-shop.example",)}
    subjects = sorted(line for _, m in ledger.messages for line in m.splitlines()
                      if line.startswith("Subject:"))  # fmt: skip
    assert (
        subjects[0] == f"Subject: [Demo Shop] KPI critical: after_sales.answered_24h_pct on {DAY}"
    )
