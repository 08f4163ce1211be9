"""AT-22 P5: a Hypothesis state machine over the outbox agrees with a model after every step.

Steps: plan, deliver with a scripted receiver outcome (ok, 4xx, 5xx, drop after the dot), a
crash before or after hand-over, opt-out, operator retry and resolve, and time passing. The
receiver's own ledger is the oracle: no message is both suppressed and handed over, and none
is accepted twice unless the operator retried it while its outcome was unknown.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from tempfile import mkdtemp
from typing import ClassVar

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from csops import db, registry
from csops.config import load_config
from csops.customers import opt_out
from csops.messaging.channels.base import BaseChannel, Outcome
from csops.messaging.outbox import NewMessage, deliver, enqueue, resolve, retry
from csops.runs import RunContext

REPO = Path(__file__).resolve().parent.parent
ADDRESSES = [f"p{i}@example.test" for i in range(4)]


class Killed(BaseException):
    """Stands for SIGKILL: unwinds through deliver() without any handler running."""


class ScriptedChannel(BaseChannel):
    """A receiver whose next answer the state machine chooses; it keeps the ledger."""

    script: ClassVar[list[str]] = []
    ledger: ClassVar[dict[str, int]] = {}
    handed: ClassVar[list[int]] = []

    def __init__(self, name, settings, config) -> None:
        self.name = name

    def send(self, msg, mark_handed_over):
        what = ScriptedChannel.script.pop(0) if ScriptedChannel.script else "ok"
        ScriptedChannel.handed.append(msg.id)
        if what == "kill_before":
            raise Killed
        mark_handed_over()
        if what in ("ok", "drop", "kill_after"):
            ScriptedChannel.ledger[msg.message_id] = (
                ScriptedChannel.ledger.get(msg.message_id, 0) + 1
            )
        if what == "kill_after":
            raise Killed
        return {
            "ok": Outcome("sent", "250", "ok"),
            "4xx": Outcome("transient", "451", "later"),
            "5xx": Outcome("permanent", "550", "no"),
            "drop": Outcome("unknown", "lost_after_handover", "dropped"),
        }[what]


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        registry.REGISTRIES["channels"]["scripted"] = f"{__name__}:ScriptedChannel"
        root = self.root = Path(mkdtemp(prefix="csops-sm-"))
        cfg = root / "csops.toml"
        cfg.write_text(
            '[database]\npath = "db.sqlite"\n[paths]\noutbox_dir = "outbox"\n'
            '[messaging]\nquiet_hours = ""\ncap_period = "0d"\nbackoff = ["1h"]\n'
            'breaker_threshold = 1000\n[channels.s]\ntype = "scripted"\n'
        )
        self.config = load_config(cfg)
        self.conn = db.connect(self.config.db_path)
        self.now = datetime(2024, 4, 20, 2, 0, tzinfo=timezone.utc)
        self.n = 0
        self.model: dict[int, dict] = {}  # outbox id -> {state, addr, retried_unknown}
        self.opted: set[str] = set()
        self.pending_crash = False
        ScriptedChannel.script, ScriptedChannel.ledger, ScriptedChannel.handed = [], {}, []

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def ctx(self) -> RunContext:
        self.n += 1
        return RunContext(job="sm", run_id=f"run{self.n}", config=self.config, conn=self.conn,
                          now=self.now)  # fmt: skip

    def mid(self, oid: int) -> str:
        return self.conn.execute("SELECT message_id FROM outbox WHERE id=?", (oid,)).fetchone()[0]

    @rule(addr=st.sampled_from(ADDRESSES))
    def plan(self, addr: str) -> None:
        key = f"k{len(self.model)}"
        with db.write(self.conn):
            oid = enqueue(self.conn, NewMessage(key, "followup", "s", addr, "s", "t"), now=self.now)
            again = enqueue(self.conn, NewMessage(key, "followup", "s", addr, "s", "t"),
                            now=self.now)  # fmt: skip
        assert oid is not None and again is None
        self.model[oid] = {"state": "queued", "addr": addr, "retried_unknown": 0, "due": True}

    def _due(self) -> list[int]:
        return sorted(i for i, m in self.model.items() if m["state"] == "queued" and m["due"])

    @rule(outcome=st.sampled_from(["ok", "4xx", "5xx", "drop", "kill_before", "kill_after"]))
    def send_one(self, outcome: str) -> None:
        ScriptedChannel.script = [outcome]
        ScriptedChannel.handed = []
        before_crash = self.pending_crash
        killed = False
        try:
            report = deliver(self.ctx(), limit=1)
        except Killed:
            killed = True
        # Recovery of a previous crash happens first, at the start of deliver().
        if before_crash:
            self.pending_crash = False
            for m in self.model.values():
                if m["state"] == "sending":
                    m["state"] = "unknown" if m.pop("crash") == "kill_after" else "queued"
                    m["due"] = True
        if killed:
            self._sync_suppressed()
            self.pending_crash = True
            (oid,) = ScriptedChannel.handed
            self.model[oid]["state"] = "sending"
            self.model[oid]["crash"] = outcome
            return
        # Rows skipped as suppressed were never handed over.
        for row in report.rows:
            if row["state"] == "suppressed":
                assert self.model[row["id"]]["addr"] in self.opted
        self._sync_suppressed()
        if ScriptedChannel.handed:
            (oid,) = ScriptedChannel.handed
            m = self.model[oid]
            assert m["addr"] not in self.opted, "handed over to an opted-out address"
            m["state"] = {"ok": "sent", "4xx": "queued", "5xx": "failed", "drop": "unknown"}[
                outcome
            ]
            m["due"] = outcome != "4xx"
        else:
            ScriptedChannel.script = []

    def _sync_suppressed(self) -> None:
        """Queued rows to opted-out addresses may have been suppressed (never handed over)."""
        for oid, m in self.model.items():
            if m["state"] == "queued" and m["addr"] in self.opted:
                st_ = self.conn.execute("SELECT state FROM outbox WHERE id=?", (oid,)).fetchone()
                if st_[0] == "suppressed":
                    assert oid not in ScriptedChannel.handed
                    m["state"] = "suppressed"

    @rule(addr=st.sampled_from(ADDRESSES))
    def opt_out(self, addr: str) -> None:
        opt_out(self.conn, addr)
        self.opted.add(addr)

    @rule()
    def time_passes(self) -> None:
        self.now += timedelta(hours=2)
        for m in self.model.values():
            m["due"] = True

    @precondition(lambda self: any(m["state"] in ("failed", "unknown", "suppressed")
                                   for m in self.model.values()))  # fmt: skip
    @rule(data=st.data())
    def operator_retry(self, data) -> None:
        ids = sorted(i for i, m in self.model.items()
                     if m["state"] in ("failed", "unknown", "suppressed"))  # fmt: skip
        oid = data.draw(st.sampled_from(ids))
        self.model[oid]["retried_unknown"] += 1  # the operator's explicit choice
        retry(self.conn, oid, now=self.now)
        self.model[oid].update(state="queued", due=True)

    @precondition(lambda self: any(m["state"] == "unknown" for m in self.model.values()))
    @rule(data=st.data(), outcome=st.sampled_from(["sent", "failed"]))
    def operator_resolve(self, data, outcome: str) -> None:
        ids = sorted(i for i, m in self.model.items() if m["state"] == "unknown")
        oid = data.draw(st.sampled_from(ids))
        resolve(self.conn, oid, outcome, now=self.now)
        self.model[oid]["state"] = outcome

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        rows = dict(self.conn.execute("SELECT id, state FROM outbox").fetchall())
        assert rows == {i: m["state"] for i, m in self.model.items()}

    @invariant()
    def nothing_is_accepted_twice_without_an_operator_retry(self) -> None:
        for oid, m in self.model.items():
            copies = ScriptedChannel.ledger.get(self.mid(oid), 0)
            assert copies <= 1 + m["retried_unknown"]
            if m["state"] == "suppressed" and m["retried_unknown"] == 0:
                assert copies == 0 or m.get("was_sent")


def _examples(scale: int) -> int:
    """CSOPS_SM_EXAMPLES if set; else 60, or ACCEPTANCE.md's 20,000 with ``--nightly``."""
    return int(os.environ.get("CSOPS_SM_EXAMPLES") or (20_000 if scale > 1 else 60))


TestOutboxStateMachine = OutboxMachine.TestCase
TestOutboxStateMachine.settings = settings(
    max_examples=_examples(1),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def _nightly_examples(scale: int):
    """The TestCase cannot take fixtures; set its example count from ``--nightly`` instead."""
    before = TestOutboxStateMachine.settings
    TestOutboxStateMachine.settings = settings(before, max_examples=_examples(scale))
    yield
    TestOutboxStateMachine.settings = before
