"""The survey server on loopback, driven by `requests`: scanners record nothing, people answer.

AT-27 (tampering, replay, expiry, rotation) and AT-28 (abuse and robustness) at small counts.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
import requests

from tests.surveys_helpers import (
    OLD_KEY,
    SIGNING_KEY,
    SURVEY_CONFIG,
    assert_no_leak,
    checksum,
    insert_surveys,
    seed_orders,
    serve_in_thread,
)


@pytest.fixture
def shop(workspace, monkeypatch):
    workspace.set_config(SURVEY_CONFIG)
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", SIGNING_KEY)
    monkeypatch.setenv("CSOPS_TESTING", "1")
    monkeypatch.setenv("CSOPS_NOW", "2024-04-20T02:00:00Z")
    workspace.env["CSOPS_SIGNING_KEYS"] = SIGNING_KEY
    return workspace


@pytest.fixture
def config(shop):
    from csops.config import load_config

    return load_config(shop.config)


def tokens_for(config, survey_ids, kind="csat"):
    from csops.surveys.links import survey_token

    return [survey_token(config, sid, kind) for sid in survey_ids]


def answers(shop):
    return shop.query("SELECT id, score, comment, responded_at FROM surveys ORDER BY id")


def test_a_get_shows_the_score_preselected_and_a_form_and_records_nothing(shop, config):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    before = checksum(shop.db_path)
    with serve_in_thread(shop.config) as srv:
        for method in ("GET", "HEAD", "GET"):
            r = requests.request(method, f"{srv.base}/s/{token}?score=4", timeout=10)
            assert r.status_code == 200
        assert 'value="4" checked' in r.text
        assert 'method="post"' in r.text
        assert "#1001" in r.text
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
    assert checksum(shop.db_path) == before
    assert answers(shop)[0]["responded_at"] is None


def test_a_post_records_the_answer_and_resubmitting_updates_the_one_answer(shop, config):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    with serve_in_thread(shop.config) as srv:
        url = f"{srv.base}/s/{token}"
        r = requests.post(url, data={"score": "2", "comment": "late parcel"}, timeout=10)
        assert r.status_code == 200 and 'data-score="2"' in r.text
        for _ in range(9):  # the same POST replayed
            r = requests.post(url, data={"score": "2", "comment": "late parcel"}, timeout=10)
            assert r.status_code == 200
        r = requests.post(url, data={"score": "4", "comment": "solved, thanks"}, timeout=10)
        assert r.status_code == 200
        page = requests.get(url, timeout=10).text
        assert 'value="4" checked' in page and "solved, thanks" in page
    rows = answers(shop)
    assert len(rows) == 1
    assert (rows[0]["score"], rows[0]["comment"]) == (4, "solved, thanks")


@pytest.mark.parametrize(
    "score", ["0", "6", "-1", "11", "5; DROP TABLE surveys", "", "3.5", "٣", "1e1"]
)
def test_an_out_of_range_or_malformed_score_is_a_400_and_writes_nothing(shop, config, score):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    before = checksum(shop.db_path)
    with serve_in_thread(shop.config) as srv:
        r = requests.post(f"{srv.base}/s/{token}", data={"score": score}, timeout=10)
    assert r.status_code == 400
    assert_no_leak(r.text)
    assert checksum(shop.db_path) == before


def _tamper(token: str, where: int) -> str:
    ch = token[where]
    return token[:where] + ("A" if ch != "A" else "B") + token[where + 1 :]


def test_forged_swapped_and_cross_purpose_tokens_get_a_plain_404_and_write_nothing(
    shop, config, monkeypatch
):
    from csops.tokens import make_token, unsubscribe_url

    sids = insert_surveys(shop.db_path, seed_orders(shop.db_path, 3))
    good = tokens_for(config, sids)
    payload1 = good[1].split(".")[0]
    forged = [
        _tamper(good[0], 3),  # payload
        _tamper(good[0], len(good[0]) - 3),  # signature
        payload1 + "." + good[0].split(".", 1)[1],  # payload swapped between tokens
        unsubscribe_url(config, "customer1@example.com").rsplit("/", 1)[1],  # other salt
        make_token(config, "unsubscribe", {"s": sids[0], "k": "csat"}),  # right shape, wrong salt
        tokens_for(config, [999999])[0],  # authentic, unknown survey
        tokens_for(config, [sids[0]], kind="nps")[0],  # authentic, wrong kind
        "x" * 40,
    ]
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", "a-key-that-is-not-listed-anymore")
    from csops.config import load_config

    forged.append(tokens_for(load_config(shop.config), [sids[0]])[0])  # unknown key
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", SIGNING_KEY)
    before = checksum(shop.db_path)
    with serve_in_thread(shop.config) as srv:
        for token in forged:
            for method in ("GET", "POST"):
                r = requests.request(
                    method,
                    f"{srv.base}/s/{token}?score=3",
                    data={"score": "3"} if method == "POST" else None,
                    headers={"Accept-Language": "zh-CN,zh;q=0.9"},
                    timeout=10,
                )
                assert r.status_code == 404, token
                assert "此链接无效" in r.text
                assert_no_leak(r.text)
    assert checksum(shop.db_path) == before
    assert all(a["responded_at"] is None for a in answers(shop))


def test_tokens_signed_with_the_old_key_verify_while_it_is_still_listed(shop, monkeypatch):
    from csops.config import load_config

    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", OLD_KEY)
    old_token = tokens_for(load_config(shop.config), [sid])[0]
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", f"{SIGNING_KEY},{OLD_KEY}")  # newest first
    new_token = tokens_for(load_config(shop.config), [sid])[0]
    assert new_token != old_token
    with serve_in_thread(shop.config) as srv:
        assert requests.get(f"{srv.base}/s/{old_token}", timeout=10).status_code == 200
        assert requests.get(f"{srv.base}/s/{new_token}", timeout=10).status_code == 200
    monkeypatch.setenv("CSOPS_SIGNING_KEYS", SIGNING_KEY)  # old key retired
    with serve_in_thread(shop.config) as srv:
        assert requests.get(f"{srv.base}/s/{old_token}", timeout=10).status_code == 404
        assert requests.get(f"{srv.base}/s/{new_token}", timeout=10).status_code == 200


def test_a_link_replayed_after_expiry_is_410_in_the_customers_language(shop, config, monkeypatch):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1, locale="zh-CN"))
    (token,) = tokens_for(config, [sid])  # signed at 2024-04-20T02:00:00Z, valid 30 days
    with serve_in_thread(shop.config) as srv:
        monkeypatch.setenv("CSOPS_NOW", "2024-05-20T02:00:00Z")  # exactly 30 days: still valid
        assert requests.get(f"{srv.base}/s/{token}", timeout=10).status_code == 200
        monkeypatch.setenv("CSOPS_NOW", "2024-05-20T02:00:01Z")  # expiry + 1 s
        before = checksum(shop.db_path)
        r = requests.post(f"{srv.base}/s/{token}", data={"score": "5"}, timeout=10)
        assert r.status_code == 410
        assert "此链接已过期" in r.text  # the customer's locale, not the browser's (en)
        r = requests.get(f"{srv.base}/s/{token}?score=5", timeout=10)
        assert r.status_code == 410
    assert checksum(shop.db_path) == before


def test_bodies_over_the_limit_get_413_without_being_read(shop, config):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    before = checksum(shop.db_path)
    with serve_in_thread(shop.config) as srv:
        r = requests.post(
            f"{srv.base}/s/{token}", data={"score": "5", "comment": "x" * 100_000}, timeout=10
        )
        assert r.status_code == 413
        r = requests.post(
            f"{srv.base}/s/{token}",
            data={"score": "5", "comment": "y" * 17_000},
            headers={"Accept-Language": "en-GB,en;q=0.8"},
            timeout=10,
        )
        assert r.status_code == 413 and "too long" in r.text
        # A declared gigabyte: answered 413 at once, the body is never sent.
        port = int(srv.base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                f"POST /s/{token} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                "application/x-www-form-urlencoded\r\nContent-Length: 1073741824\r\n\r\n".encode()
            )
            reply = s.recv(4096).decode("latin-1")
        assert reply.startswith("HTTP/1.1 413"), reply[:200]
        assert_no_leak(reply.split("\r\n\r\n", 1)[-1])
        # The server still answers.
        r = requests.post(f"{srv.base}/s/{token}", data={"score": "5"}, timeout=10)
        assert r.status_code == 200
    assert [a["score"] for a in answers(shop)] == [5]
    assert before != checksum(shop.db_path)


def test_a_long_comment_within_the_body_limit_is_cut_to_the_configured_length(shop, config):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    with serve_in_thread(shop.config) as srv:
        r = requests.post(
            f"{srv.base}/s/{token}", data={"score": "3", "comment": "z" * 5000}, timeout=10
        )
    assert r.status_code == 200
    assert len(answers(shop)[0]["comment"]) == 2000


def test_broken_encodings_are_400_and_the_server_keeps_serving(shop, config):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    with serve_in_thread(shop.config) as srv:
        url = f"{srv.base}/s/{token}"
        for body in (b"score=5&comment=%ff%fe", b"score=5&comment=\xff\xfe", b"score=%zz5"):
            r = requests.post(url, data=body, headers=ctype, timeout=10)
            assert r.status_code == 400, body
            assert_no_leak(r.text)
        r = requests.post(url, data=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 415
        assert requests.get(f"{srv.base}/s/%ff%00", timeout=10).status_code == 404
        many = "&".join(f"f{i}=1" for i in range(50))
        r = requests.get(f"{url}?{many}&score=%zz%ff", timeout=10)
        assert r.status_code == 200 and '" checked' not in r.text
        assert requests.put(url, data=b"score=5", timeout=10).status_code == 405
        assert requests.get(f"{srv.base}/../../etc/passwd", timeout=10).status_code == 404
        r = requests.post(
            url, data={"score": "5", "comment": "你好 <script>x</script>"}, timeout=10
        )
        assert r.status_code == 200
        page = requests.get(url, timeout=10).text
        assert "&lt;script&gt;" in page and "<script>" not in page
    assert answers(shop)[0]["comment"] == "你好 <script>x</script>"


def test_more_posts_per_minute_on_one_token_than_allowed_get_429(shop, config):
    sids = insert_surveys(shop.db_path, seed_orders(shop.db_path, 2))
    t1, t2 = tokens_for(config, sids)
    with serve_in_thread(shop.config) as srv:
        codes = [
            requests.post(f"{srv.base}/s/{t1}", data={"score": "5"}, timeout=10).status_code
            for _ in range(50)
        ]
        assert codes[:20] == [200] * 20
        assert set(codes[20:]) == {429}
        # Another token is not affected.
        assert requests.post(f"{srv.base}/s/{t2}", data={"score": "1"}, timeout=10).ok


def test_a_forced_exception_is_a_plain_500_page_and_the_details_go_to_the_log(shop, caplog):
    with serve_in_thread(shop.config) as srv, caplog.at_level(logging.ERROR):
        r = requests.get(f"{srv.base}/_test/fail", headers={"Accept-Language": "zh-CN"}, timeout=10)
        assert r.status_code == 500
        assert "我们这边出了点问题" in r.text
        assert_no_leak(r.text)
        assert requests.get(f"{srv.base}/healthz", timeout=10).text == "ok\n"
    assert "forced failure for tests" in caplog.text
    assert "Traceback" in caplog.text or "RuntimeError" in caplog.text


def test_a_slow_client_is_closed_by_the_channel_timeout_without_blocking_others(shop, config):
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    with serve_in_thread(shop.config) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        slow = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"POST /s/" + token.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        started = time.monotonic()
        r = requests.post(f"{srv.base}/s/{token}", data={"score": "4"}, timeout=10)
        assert r.status_code == 200 and time.monotonic() - started < 5
        for s in slow:  # channel_timeout_s = 5 in the test config
            assert s.recv(1024) == b""
            s.close()
        assert time.monotonic() - started < 25


def test_a_storm_of_mixed_clients_gets_no_5xx_and_the_server_keeps_serving(shop, config):
    import random
    import threading

    sids = insert_surveys(shop.db_path, seed_orders(shop.db_path, 30))
    tokens = tokens_for(config, sids)
    bodies: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    with serve_in_thread(shop.config) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        for s in slow:
            s.sendall(b"POST /s/" + tokens[0].encode() + b" HTTP/1.1\r\nHost: x\r\nContent-")

        def client(seed: int) -> None:
            rng = random.Random(seed)
            session = requests.Session()
            end = time.monotonic() + 5
            while time.monotonic() < end:
                token = rng.choice(tokens)
                pick = rng.random()
                valid = True
                try:
                    if pick < 0.3:
                        r = session.get(f"{srv.base}/s/{token}?score=3", timeout=10)
                    elif pick < 0.5:
                        r = session.post(
                            f"{srv.base}/s/{token}",
                            data={"score": str(rng.randint(1, 5)), "comment": "storm"},
                            timeout=10,
                        )
                    elif pick < 0.6:
                        valid = False
                        r = session.post(
                            f"{srv.base}/s/{_tamper(token, 5)}", data={"score": "5"}, timeout=10
                        )
                    elif pick < 0.7:
                        valid = False
                        r = session.post(
                            f"{srv.base}/s/{token}",
                            data={"score": "5", "comment": "x" * 40_000},
                            timeout=10,
                        )
                    elif pick < 0.8:
                        valid = False
                        r = session.post(
                            f"{srv.base}/s/{token}",
                            data=b"score=%ff%fe",
                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                            timeout=10,
                        )
                    elif pick < 0.9:
                        valid = False
                        r = session.get(f"{srv.base}/s/{token}%zz?score=%%", timeout=10)
                    else:
                        r = session.get(f"{srv.base}/u/{token}", timeout=10)  # wrong salt: 404
                        valid = False
                except requests.RequestException as exc:
                    if valid:
                        with lock:
                            failures.append(f"{type(exc).__name__}")
                    session = requests.Session()
                    continue
                with lock:
                    bodies.append(r.text)
                    if r.status_code >= 500 or (valid and r.status_code not in (200, 429)):
                        failures.append(f"{r.request.method} -> {r.status_code}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for s in slow:
            s.close()
        r = requests.post(f"{srv.base}/s/{tokens[-1]}", data={"score": "2"}, timeout=10)
        assert r.status_code in (200, 429)
        assert requests.get(f"{srv.base}/healthz", timeout=10).status_code == 200
    assert failures == []
    assert len(bodies) > 100
    for body in set(bodies):
        assert_no_leak(body)
    answered = shop.query("SELECT COUNT(*) AS n FROM surveys WHERE responded_at IS NOT NULL")
    assert answered[0]["n"] <= 30  # never more than one answer per survey


def test_one_click_unsubscribe_acts_on_post_only_and_is_idempotent(shop, config):
    from csops.tokens import unsubscribe_url

    seed_orders(shop.db_path, 2, locale="zh-CN")
    url1 = unsubscribe_url(config, "Customer1@Example.com")
    url2 = unsubscribe_url(config, "customer2@example.com")
    conn = shop.db()
    with conn:
        conn.execute(
            "INSERT INTO suppressions (address, channel, scope, reason, created_at) "
            "VALUES ('customer2@example.com', 'email', 'all', 'operator', '2024-01-01T00:00:00Z')"
        )
    conn.close()
    before = checksum(shop.db_path)
    with serve_in_thread(shop.config) as srv:
        u1 = url1.replace(config.shop.base_url, srv.base)
        for method in ("GET", "HEAD", "GET"):
            assert requests.request(method, u1, timeout=10).status_code == 200
        page = requests.get(u1, timeout=10).text
        assert "退订" in page and 'method="post"' in page and "customer1@" not in page
        assert checksum(shop.db_path) == before
        # A mail provider's RFC 8058 POST, multipart this time; no cookies, no redirect.
        r = requests.post(
            u1, files={"List-Unsubscribe": (None, "One-Click")}, allow_redirects=False, timeout=10
        )
        assert r.status_code == 200
        assert requests.post(u1, data="List-Unsubscribe=One-Click", timeout=10).status_code == 200
        # An 'all' suppression is never weakened to 'marketing'.
        u2 = url2.replace(config.shop.base_url, srv.base)
        assert requests.post(u2, data="List-Unsubscribe=One-Click", timeout=10).status_code == 200
        bad = requests.post(_tamper(u1, len(u1) - 4), data="List-Unsubscribe=One-Click", timeout=10)
        assert bad.status_code == 404
        assert requests.post(u1, data={"x": "y" * 20000}, timeout=10).status_code == 413
    assert shop.query("SELECT address, scope, reason FROM suppressions ORDER BY address") == [
        {
            "address": "customer1@example.com",
            "scope": "marketing",
            "reason": "one-click unsubscribe",
        },
        {"address": "customer2@example.com", "scope": "all", "reason": "operator"},
    ]


def test_a_workspace_without_its_own_pages_falls_back_to_the_packaged_ones(shop, config):
    import shutil

    shutil.rmtree(shop.root / "templates" / "pages")
    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    with serve_in_thread(shop.config) as srv:
        r = requests.get(f"{srv.base}/s/{token}?score=2", timeout=10)
    assert r.status_code == 200 and 'value="2" checked' in r.text


def test_random_hostile_requests_never_get_a_5xx_or_leak_internals(shop, config):
    import random

    from csops.tokens import unsubscribe_url

    (sid,) = insert_surveys(shop.db_path, seed_orders(shop.db_path, 1))
    (token,) = tokens_for(config, [sid])
    utoken = unsubscribe_url(config, "customer1@example.com").rsplit("/", 1)[1]
    rng = random.Random(8058)
    junk = ["%", "%zz", "%ff", "'", '"', "<", ">", "\\", "&", "=", ";", "..", "/", "?", "é", "中"]

    def rs(n: int) -> str:
        return "".join(rng.choice([*junk, *"abcXYZ019-_."]) for _ in range(n))

    with serve_in_thread(shop.config) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        for _ in range(300):
            method = rng.choice(["GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE"])
            path = rng.choice(
                [f"/s/{token}", f"/u/{utoken}", f"/s/{token[:-3]}{rs(3)}", "/", f"/s/{rs(20)}"]
            ) + rng.choice(["", "?score=" + rs(3), "?" + rs(10)])
            body = rng.choice(
                [
                    b"",
                    f"score=3&comment={rs(10)}".encode(),
                    bytes(rng.randrange(256) for _ in range(40)),
                ]
            )
            ctype = rng.choice(["application/x-www-form-urlencoded", "text/plain", "multipart/x"])
            head = (
                f"{method} {path.replace(' ', '%20')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Type: {ctype}\r\nAccept-Language: {rng.choice(['zh', 'en;q=x', '*'])}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(head.encode("utf-8") + body)
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
            assert reply[9:10] in (b"2", b"4"), (head, reply[:200])
            assert_no_leak(reply.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace"))
