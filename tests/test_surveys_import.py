"""`csops surveys import PATH`: answers from a form tool's CSV, validated, idempotent, alerting."""

from __future__ import annotations

import csv
import re

import pytest

from tests.surveys_helpers import SIGNING_KEY, SURVEY_CONFIG, seed_orders, smtp_sink, use_smtp


@pytest.fixture
def shop(workspace):
    workspace.set_config(SURVEY_CONFIG)
    workspace.env.update({"CSOPS_SIGNING_KEYS": SIGNING_KEY, "CSOPS_NOW": "2024-04-20T02:00:00Z"})
    return workspace


@pytest.fixture
def sent(shop):
    """Four surveys sent over SMTP; yields (workspace, sink)."""
    with smtp_sink() as sink:
        use_smtp(shop, sink.port)
        seed_orders(shop.db_path, 4)
        seed_orders(shop.db_path, 1, start=50, delivered_at="2024-01-01T00:00:00Z")  # no survey
        assert shop.run("surveys", "send").code == 0
        assert len(sink.messages) == 4
        yield shop, sink


def token_of(sink, to: str) -> str:
    from tests.surveys_helpers import links_in

    msg = next(m for m in sink.messages if m["To"] == to)
    url = next(u for u in links_in(msg) if "/s/" in u)
    return url.split("/s/")[1].split("?")[0]


def write(path, rows, header=("token", "order", "score", "comment", "time", "kind")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_good_rows_land_bad_rows_are_rejected_with_line_and_field_and_exit_3(sent, tmp_path):
    shop, sink = sent
    t1 = token_of(sink, "customer1@example.com")
    t2 = token_of(sink, "customer2@example.com")
    forged = t2[:-4] + ("AAAA" if not t2.endswith("AAAA") else "BBBB")
    path = write(
        tmp_path / "answers.csv",
        [
            (t1, "", "5", "great", "2024-04-20 10:30", ""),
            ("", "#1003", "2", '=HYPERLINK("http://evil")', "2024-04-20T03:00:00Z", ""),
            ("", "1004", "4", "", "", "csat"),  # number without '#', no time: now
            ("", "#1050", "9", "would recommend", "2024-04-20 11:00", "nps"),  # no survey sent
            (forged, "", "5", "", "", ""),  # line 6
            ("", "#1002", "6", "", "", ""),  # line 7: CSAT 6
            ("", "#9999", "5", "", "", "csat"),  # line 8: unknown order
            ("", "#1002", "4", "", "tomorrow", ""),  # line 9: bad time
            ("", "", "4", "", "", ""),  # line 10: neither
            ("", "#1050", "3", "", "", ""),  # line 11: 1050 has an nps survey now? no kind → ok
        ],
    )
    p = shop.run("surveys", "import", str(path), "--json")
    assert p.code == 3, p.stderr
    assert "answers.csv:6: token:" in p.stderr
    assert "answers.csv:7: score: score 6 is outside the scale (expected 1 to 5)" in p.stderr
    assert "answers.csv:8: order: unknown order '#9999'" in p.stderr
    assert "answers.csv:9: time:" in p.stderr
    assert "answers.csv:10: token:" in p.stderr
    assert "Traceback" not in p.stderr
    got = {
        (r["order_id"], r["kind"]): (r["score"], r["comment"], r["response_source"])
        for r in shop.query("SELECT * FROM surveys WHERE responded_at IS NOT NULL")
    }
    assert got == {
        (1, "csat"): (5, "great", "import"),
        (3, "csat"): (2, '=HYPERLINK("http://evil")', "import"),  # raw in the database
        (4, "csat"): (4, None, "import"),
        (5, "nps"): (3, None, "import"),  # line 11 updated the answer of line 5 (later row)
    }
    rejects = list((shop.root / "rejects").glob("surveys-answers-*.csv"))
    assert len(rejects) == 1
    text = rejects[0].read_text(encoding="utf-8")
    assert text.count("\n") == 6  # header + 5 rejects
    stored = shop.query(
        "SELECT line, field FROM rejects WHERE job = 'surveys import' ORDER BY line"
    )
    assert [r["line"] for r in stored] == [6, 7, 8, 9, 10]
    # Two detractors (CSAT 2 on #1003, NPS 3 on #1050): alerts went out at once over SMTP.
    alerts = [m for m in sink.messages if m["To"] == "care-team@shop.example"]
    assert sorted(re.search(r"#\d+", m["Subject"]).group(0) for m in alerts) == ["#1003", "#1050"]


def test_reimporting_the_same_file_changes_nothing(sent, tmp_path):
    shop, _sink = sent
    path = write(
        tmp_path / "a.csv",
        [
            ("", "#1001", "5", "ok", "2024-04-20 10:30", ""),
            ("", "#1003", "1", "bad", "2024-04-20 10:31", ""),
        ],
    )
    assert shop.run("surveys", "import", str(path)).code == 0
    before = shop.query("SELECT * FROM surveys ORDER BY id")
    outbox = shop.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"]
    p = shop.run("surveys", "import", str(path), "--json")
    assert p.code == 0
    assert {r["outcome"] for r in p.json()} == {"unchanged"}
    assert shop.query("SELECT * FROM surveys ORDER BY id") == before
    assert shop.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == outbox  # one alert only


def test_an_older_answer_never_overwrites_a_newer_one(sent, tmp_path):
    shop, _sink = sent
    new = write(tmp_path / "new.csv", [("", "#1001", "5", "new", "2024-04-20 11:00", "")])
    old = write(tmp_path / "old.csv", [("", "#1001", "2", "old", "2024-04-20 10:00", "")])
    assert shop.run("surveys", "import", str(new)).code == 0
    p = shop.run("surveys", "import", str(old), "--json")
    assert p.code == 0 and p.json()[0]["outcome"] == "stale"
    assert shop.query("SELECT score, comment FROM surveys WHERE order_id = 1") == [
        {"score": 5, "comment": "new"}
    ]


def test_dry_run_validates_and_writes_nothing(sent, tmp_path):
    shop, _sink = sent
    path = write(
        tmp_path / "a.csv", [("", "#1001", "5", "", "", ""), ("", "#1001", "x", "", "", "")]
    )
    before = shop.query("SELECT * FROM surveys ORDER BY id")
    p = shop.run("surveys", "import", str(path), "--dry-run", "--json")
    assert p.code == 3
    assert [r["outcome"] for r in p.json()] == ["would_record"]
    assert shop.query("SELECT * FROM surveys ORDER BY id") == before
    assert shop.query("SELECT COUNT(*) AS n FROM rejects")[0]["n"] == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"name,email\nx,y\n", "missing columns"),
        (b"", "missing columns"),
    ],
)
def test_a_file_without_the_needed_columns_is_one_clear_error(shop, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    p = shop.run("surveys", "import", str(path))
    assert p.code == 2
    assert message in p.stderr and "bad.csv" in p.stderr and "Traceback" not in p.stderr


def test_a_missing_file_is_exit_2_naming_it(shop, tmp_path):
    p = shop.run("surveys", "import", str(tmp_path / "nope.csv"))
    assert p.code == 2 and "nope.csv" in p.stderr and "file not found" in p.stderr


def test_gb18030_chinese_headers_from_a_form_tool_are_read(sent, tmp_path):
    shop, _sink = sent
    path = tmp_path / "问卷.csv"
    path.write_bytes("订单号,评分,留言,提交时间\n#1002,4,很好,2024-04-20 10:00\n".encode("gb18030"))
    p = shop.run("surveys", "import", str(path))
    assert p.code == 0, p.stderr
    assert shop.query("SELECT score, comment FROM surveys WHERE order_id = 2") == [
        {"score": 4, "comment": "很好"}
    ]


def test_a_detractor_alert_can_go_to_a_webhook_at_once(shop, tmp_path, httpserver):
    import json

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    shop.set_config(f'[channels.hook]\ntype = "webhook"\nurl = "{httpserver.url_for("/hook")}"\n')
    shop.config.write_text(
        shop.config.read_text(encoding="utf-8").replace(
            "\n[surveys]\n", '\n[surveys]\nalert_channel = "hook"\n', 1
        ),
        encoding="utf-8",
    )
    seed_orders(shop.db_path, 1)
    path = write(tmp_path / "a.csv", [("", "#1001", "3", "我要退货", "", "nps")])
    p = shop.run("surveys", "import", str(path))
    assert p.code == 0, p.stderr
    (req,) = [r for r, _ in httpserver.log]
    body = json.loads(req.data)
    text = json.dumps(body, ensure_ascii=False)
    assert "#1001" in text and "我要退货" in text and "3" in text
    assert req.headers.get("Idempotency-Key")
    assert shop.query("SELECT state FROM outbox WHERE kind = 'alert'") == [{"state": "sent"}]


def test_answers_can_be_piped_on_stdin(sent):
    shop, _sink = sent
    p = shop.run("surveys", "import", "-", "--json", input="order,score\n#1004,5\n#1004,0\n")
    assert p.code == 3
    assert "-:3: score:" in p.stderr
    assert shop.query("SELECT score FROM surveys WHERE order_id = 4") == [{"score": 5}]
    assert list((shop.root / "rejects").glob("surveys-stdin-*.csv"))
