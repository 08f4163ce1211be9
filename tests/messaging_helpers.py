"""Helpers for the messaging tests: a real SMTP sink process, a webhook receiver, seeding."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import free_port, wait_for  # noqa: F401 - re-exported for the messaging tests

HERE = Path(__file__).resolve().parent
NOW = "2024-04-20T02:00:00Z"  # 10:00 in Asia/Shanghai: outside the default quiet hours
KEYS = "messaging-test-signing-key"


def sized(scale: int, small: int, full: int) -> int:
    """A count for an acceptance test: ``small`` in the normal suite, ACCEPTANCE.md's ``full``
    with ``--nightly`` (the ``scale`` fixture is 10 then)."""
    return full if scale > 1 else small


class Sink:
    """aiosmtpd in its own process with a fault script and an fsync'ed JSON-lines ledger."""

    def __init__(
        self,
        tmp: Path,
        *,
        faults: dict[str, Any] | None = None,
        delay_ms: float = 0,
        mail_reply: str | None = None,
        drop_every: int = 0,
        pidfile: Path | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.ledger_path = tmp / f"ledger-{self.port}.jsonl"
        self.pidfile = pidfile or tmp / "csops.pid"
        args = [
            sys.executable,
            str(HERE / "messaging_sink.py"),
            "--port",
            str(self.port),
            "--ledger",
            str(self.ledger_path),
            "--delay-ms",
            str(delay_ms),
            "--pidfile",
            str(self.pidfile),
            "--drop-every",
            str(drop_every),
        ]
        if faults:
            fpath = tmp / f"faults-{self.port}.json"
            fpath.write_text(json.dumps(faults))
            args += ["--faults", str(fpath)]
        if mail_reply:
            args += ["--mail-reply", mail_reply]
        args += extra_args or []
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        assert line.startswith("READY"), self.proc.stderr.read().decode()

    def ledger(self) -> list[dict[str, Any]]:
        if not self.ledger_path.exists():
            return []
        return [json.loads(x) for x in self.ledger_path.read_text().splitlines() if x.strip()]

    def copies(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.ledger():
            counts[e["message_id"]] = counts.get(e["message_id"], 0) + 1
        return counts

    def kills(self) -> list[dict[str, Any]]:
        """The kills the sink carried out (``--kill-at``): point, transaction, Message-ID."""
        p = Path(str(self.ledger_path) + ".kills")
        if not p.exists():
            return []
        lines = p.read_text().splitlines(keepends=True)
        return [json.loads(x) for x in lines if x.endswith("\n") and x.strip()]  # whole lines

    def refusals(self) -> int:
        """How many RCPTs the sink refused at random (``--random-reply``)."""
        p = Path(str(self.ledger_path) + ".refusals")
        return int(p.read_text()) if p.exists() else 0

    def mail_count(self) -> int:
        p = Path(str(self.ledger_path) + ".mailcount")
        return int(p.read_text()) if p.exists() else 0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def smtp_channel(ws, port: int, extra: str = "", name: str = "mail") -> None:
    """Make ``name`` an SMTP channel to the sink and the default channel; no quiet hours."""
    security = "" if "security" in extra else 'security = "none"\n'
    ws.set_config(
        f'[channels.{name}]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
        f"{security}timeout = 5\n{extra}"
    )
    ws.replace_config('default_channel = "outbox"', f'default_channel = "{name}"')
    no_quiet_hours(ws)


def no_quiet_hours(ws) -> None:
    ws.replace_config('quiet_hours = "21:00-09:00"', 'quiet_hours = ""')


def env(now: str = NOW, **extra: str) -> dict[str, str]:
    return {"CSOPS_NOW": now, "CSOPS_SIGNING_KEYS": KEYS, **extra}


def queue(
    ws,
    n: int,
    *,
    channel: str = "mail",
    prefix: str = "u",
    kind: str = "followup",
    rule: str = "bulk",
    domain: str = "example.test",
    now: str = NOW,
    **fields: Any,
) -> list[int]:
    """Plan ``n`` messages straight into the outbox through the real enqueue()."""
    from csops import db
    from csops.messaging.outbox import NewMessage, enqueue
    from csops.timeutil import parse_instant

    at: datetime = parse_instant(now)
    conn = db.connect(ws.db_path)
    ids = []
    try:
        with db.write(conn):
            for i in range(n):
                oid = enqueue(
                    conn,
                    NewMessage(
                        dedupe_key=f"test:{rule}:{prefix}:{i}",
                        kind=kind,
                        channel=channel,
                        recipient=f"{prefix}{i}@{domain}",
                        subject=f"Message {i}",
                        body_text=f"Hello {i}\n.\nA line with a dot above.\n",
                        body_html=f"<p>Hello {i}</p>",
                        rule=rule,
                        **fields,
                    ),
                    now=at,
                )
                ids.append(oid)
    finally:
        conn.close()
    return ids


def converge(ws, runs: int = 5) -> list[int]:
    """Re-run ``followups send`` until nothing is queued or sending (at most ``runs`` times)."""
    codes = []
    for _ in range(runs):
        r = ws.run("followups", "send", env=env())
        assert "Traceback" not in r.stderr, r.stderr
        codes.append(r.code)
        if not ws.query("SELECT 1 FROM outbox WHERE state IN ('queued','sending')"):
            break
    return codes


def states(ws) -> dict[str, int]:
    rows = ws.query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


def seed_orders(ws, orders: list[dict[str, Any]], customers: list[dict[str, Any]]) -> None:
    """Insert customers and orders as an importer would have left them."""
    conn = ws.db()
    try:
        for c in customers:
            c = {"created_at": NOW, "updated_at": NOW, **c}
            cols = ",".join(c)
            conn.execute(
                f"INSERT INTO customers ({cols}) VALUES ({','.join('?' * len(c))})",
                tuple(c.values()),
            )
        for o in orders:
            items = o.pop("items", [])
            o = {
                "platform": "shopify",
                "status": "paid",
                "currency": "USD",
                "total_minor": 1000,
                "created_at": "2024-04-01T00:00:00Z",
                **o,
            }
            o.setdefault("external_id", str(o["id"]))
            o.setdefault("number", f"#{1000 + o['id']}")
            cols = ",".join(o)
            conn.execute(
                f"INSERT INTO orders ({cols}) VALUES ({','.join('?' * len(o))})",
                tuple(o.values()),
            )
            for i, it in enumerate(items, 1):
                conn.execute(
                    "INSERT INTO order_items (order_id, line_no, sku, name, quantity, "
                    "unit_price_minor, total_minor) VALUES (?,?,?,?,?,?,?)",
                    (o["id"], i, it.get("sku"), it.get("name", "Item"), 1, 1000, 1000),
                )
        conn.commit()
    finally:
        conn.close()


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    """Wait for processes started with pipes, reading their output meanwhile (a run's result
    table can outgrow a pipe's buffer); ``(exit code, stderr)`` of each."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(procs)) as pool:
        outs = list(pool.map(lambda p: p.communicate(timeout=timeout), procs))
    return [(p.returncode, err.decode()) for p, (_, err) in zip(procs, outs, strict=True)]
