"""Outbox behaviour through the CLI: respect for the customer, dry runs, operator commands."""

from __future__ import annotations

from messaging_helpers import Sink, env, no_quiet_hours, queue, seed_orders, smtp_channel, states


def test_the_rate_limit_hands_over_ten_per_minute_and_exits_zero_instead_of_waiting(
    workspace, tmp_path
):
    """AT-16: rate_per_minute = 10, 25 due messages."""
    with Sink(tmp_path) as sink:
        smtp_channel(workspace, sink.port, extra="rate_per_minute = 10\n")
        queue(workspace, 25)
        p = workspace.run("followups", "send", env=env("2024-04-20T02:00:00Z"))
        assert p.code == 0, p.stderr
        assert len(sink.ledger()) == 10
        queued = workspace.query("SELECT next_attempt_at FROM outbox WHERE state = 'queued'")
        assert len(queued) == 15
        assert all(r["next_attempt_at"] >= "2024-04-20T02:01:00Z" for r in queued)
        p = workspace.run("followups", "send", env=env("2024-04-20T02:00:30Z"))
        assert p.code == 0 and len(sink.ledger()) == 10
        # The run clock is the injected instant plus real elapsed time, so a slow machine moves
        # the first batch's sent_at a few seconds past 02:00:00; 02:01:30 is clear of it.
        p = workspace.run("followups", "send", env=env("2024-04-20T02:01:30Z"))
        assert len(sink.ledger()) == 20
        p = workspace.run("followups", "send", env=env("2024-04-20T02:03:00Z"))
        assert len(sink.ledger()) == 25 and states(workspace) == {"sent": 25}
        sent_at = sorted(r["sent_at"] for r in workspace.query("SELECT sent_at FROM outbox"))
        for i in range(len(sent_at) - 10):  # never more than 10 in any 60 s (csops clock)
            assert sent_at[i + 10] >= sent_at[i]


def test_the_frequency_cap_lets_one_message_through_and_defers_the_rest(workspace):
    """AT-16: one customer, five rules due the same day, cap 1 per 2 days."""
    no_quiet_hours(workspace)
    seed_orders(workspace, [], [{"id": 7, "email": "capped@example.test", "name": "Cap"}])
    for r in range(5):
        queue(workspace, 1, channel="outbox", prefix="capped", rule=f"r{r}", customer_id=7)
    queue(workspace, 1, channel="outbox", prefix="other", rule="r9")
    # The first recipient is capped@... ("capped0"); fix all five to the same address.
    conn = workspace.db()
    conn.execute("UPDATE outbox SET recipient = 'capped@example.test' WHERE customer_id = 7")
    conn.commit()
    conn.close()
    p = workspace.run("followups", "send", env=env())
    assert p.code == 0, p.stderr
    rows = workspace.query("SELECT state, last_error, next_attempt_at FROM outbox "
                           "WHERE customer_id = 7 ORDER BY id")  # fmt: skip
    assert [r["state"] for r in rows].count("sent") == 1
    deferred = [r for r in rows if r["state"] != "sent"]
    assert len(deferred) == 4
    assert all("frequency_cap" in r["last_error"] for r in deferred)
    assert all(r["next_attempt_at"] >= "2024-04-22T02:00:00Z" for r in deferred)
    assert states(workspace)["sent"] == 2  # the other customer is not affected
    assert len(list((workspace.root / "outbox").glob("*.eml"))) == 2


def test_rules_exempt_from_the_cap_are_never_held_by_it_nor_counted_in_it(workspace):
    no_quiet_hours(workspace)
    workspace.replace_config(
        'cap_exempt_kinds = ["return_notice", "alert"]',
        'cap_exempt_kinds = ["return_notice", "alert"]\ncap_exempt_rules = ["shipping_notice"]',
    )
    seed_orders(workspace, [], [{"id": 7, "email": "a@example.test", "name": "A"},
                                {"id": 8, "email": "b@example.test", "name": "B"}])  # fmt: skip
    for rule in ("review_request", "shipping_notice", "birthday"):  # customer 7, in this order
        queue(workspace, 1, channel="outbox", prefix=f"a-{rule}", rule=rule, customer_id=7)
    for rule in ("shipping_notice", "review_request"):  # customer 8: the exempt one first
        queue(workspace, 1, channel="outbox", prefix=f"b-{rule}", rule=rule, customer_id=8)
    p = workspace.run("followups", "send", env=env())
    assert p.code == 0, p.stderr
    got = {
        (r["customer_id"], r["rule"]): r["state"]
        for r in workspace.query("SELECT customer_id, rule, state FROM outbox")
    }
    assert got == {
        (7, "review_request"): "sent",
        (7, "shipping_notice"): "sent",  # never held: the review request used the cap
        (7, "birthday"): "queued",  # held by the review request
        (8, "shipping_notice"): "sent",
        (8, "review_request"): "sent",  # the shipping notice did not count
    }


def test_quiet_hours_hold_customer_mail_until_morning_but_not_staff_alerts(workspace):
    """AT-16: quiet hours 21:00-09:00 Asia/Shanghai; 22:30 local is 14:30 UTC."""
    queue(workspace, 3, channel="outbox")
    queue(workspace, 1, channel="outbox", prefix="ops", kind="alert", rule="kpi")
    p = workspace.run("followups", "send", env=env("2024-04-20T14:30:00Z"))
    assert p.code == 0, p.stderr
    assert "deferred_quiet_hours=3" in p.stderr
    rows = workspace.query("SELECT kind, state, next_attempt_at, last_error FROM outbox")
    for r in rows:
        if r["kind"] == "alert":
            assert r["state"] == "sent"
        else:
            assert r["state"] == "queued" and r["last_error"] == "deferred: quiet_hours"
            assert r["next_attempt_at"] == "2024-04-21T01:00:00Z"  # 09:00 local
    p = workspace.run("followups", "send", env=env("2024-04-21T01:00:00Z"))
    assert states(workspace) == {"sent": 4}


def test_opted_out_and_unsubscribed_addresses_are_suppressed_by_scope(workspace):
    no_quiet_hours(workspace)
    queue(workspace, 2, channel="outbox", prefix="all")  # all0, all1
    queue(workspace, 1, channel="outbox", prefix="mkt", is_marketing=True)
    queue(workspace, 1, channel="outbox", prefix="mkt", rule="tx")  # transactional, same addr
    assert workspace.run("customers", "optout", "all0@example.test", env=env()).code == 0
    conn = workspace.db()
    conn.execute(
        "INSERT INTO suppressions (address, channel, scope, reason, created_at) "
        "VALUES ('mkt0@example.test', 'email', 'marketing', 'one-click', '2024-04-01T00:00:00Z')"
    )
    conn.commit()
    conn.close()
    p = workspace.run("followups", "send", env=env())
    assert p.code == 0
    got = {
        (r["recipient"], r["rule"]): (r["state"], r["last_error"])
        for r in workspace.query("SELECT recipient, rule, state, last_error FROM outbox")
    }
    assert got[("all0@example.test", "bulk")] == ("suppressed", "opted_out")
    assert got[("all1@example.test", "bulk")][0] == "sent"
    assert got[("mkt0@example.test", "bulk")] == ("suppressed", "unsubscribed")
    assert got[("mkt0@example.test", "tx")][0] == "sent"  # transactional still goes
    names = [f.name for f in (workspace.root / "outbox").glob("*.eml")]
    assert len(names) == 2


def test_an_expired_message_is_suppressed_not_sent(workspace):
    no_quiet_hours(workspace)
    queue(workspace, 1, channel="outbox", expires_at="2024-04-19T00:00:00Z")
    p = workspace.run("followups", "send", env=env())
    assert p.code == 0
    assert workspace.query("SELECT state, last_error FROM outbox")[0] == {
        "state": "suppressed",
        "last_error": "expired",
    }


def test_dry_run_shows_what_would_go_out_and_changes_nothing(workspace):
    no_quiet_hours(workspace)
    queue(workspace, 3, channel="outbox")
    before = workspace.query("SELECT * FROM outbox ORDER BY id")
    p = workspace.run("followups", "send", "--dry-run", "--json", env=env())
    assert p.code == 0, p.stderr
    rows = p.json()
    assert [r["action"] for r in rows] == ["would_send"] * 3
    assert workspace.query("SELECT * FROM outbox ORDER BY id") == before
    assert not list((workspace.root / "outbox").glob("*.eml"))


def test_outbox_commands_reject_bad_ids_and_states_in_one_line(workspace):
    no_quiet_hours(workspace)
    queue(workspace, 1, channel="outbox")
    p = workspace.run("outbox", "retry", "999", env=env())
    assert p.code == 1 and "999" in p.stderr and "Traceback" not in p.stderr
    p = workspace.run("outbox", "resolve", "1", env=env())
    assert p.code == 2 and "--sent or --failed" in p.stderr
    workspace.run("followups", "send", env=env())
    p = workspace.run("outbox", "retry", "1", env=env())
    assert p.code == 2 and "sent" in p.stderr
    p = workspace.run("outbox", "list", "--status", "sent", "--csv", env=env())
    assert p.code == 0 and p.stdout.startswith("id,state,")


def test_a_message_to_an_unknown_channel_fails_with_its_reason(workspace):
    no_quiet_hours(workspace)
    queue(workspace, 1, channel="nosuch")
    p = workspace.run("followups", "send", env=env())
    assert p.code == 3
    row = workspace.query("SELECT state, last_error FROM outbox")[0]
    assert row["state"] == "failed" and "unknown_channel" in row["last_error"]


def test_marketing_mail_without_signing_keys_stops_with_exit_2_and_stays_queued(workspace):
    no_quiet_hours(workspace)
    queue(workspace, 2, channel="outbox", is_marketing=True)
    p = workspace.run("followups", "send", env={"CSOPS_NOW": "2024-04-20T02:00:00Z"})
    assert p.code == 2 and "CSOPS_SIGNING_KEYS" in p.stderr and "Traceback" not in p.stderr
    assert states(workspace) == {"queued": 2}
    p = workspace.run("followups", "send", env=env())
    assert p.code == 0 and states(workspace) == {"sent": 2}
