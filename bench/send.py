"""Benchmark: csops delivering N messages to a local aiosmtpd vs a raw smtplib loop.

csops does the whole job: render each message from the shipped template (Jinja2 sandbox),
plan it into the outbox (one INSERT per message, batched transactions), then deliver: claim
(BEGIN IMMEDIATE + UPDATE), record the hand-over after 354, send over one reused SMTP
connection, commit the outcome. The baseline sends the same pre-rendered bytes with
``smtplib.SMTP.sendmail`` in a loop over one connection. Both talk to the same sink process.

    python bench/send.py [--messages 10000]

Prints messages/s for both and the ratio (target: csops >= 0.7x the raw loop).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import smtplib
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _sink(port: int, ready) -> None:
    from aiosmtpd.smtp import SMTP

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    loop = asyncio.new_event_loop()
    loop.run_until_complete(
        loop.create_server(lambda: SMTP(Handler(), hostname="sink"), "127.0.0.1", port)
    )
    ready.set()
    loop.run_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    args = ap.parse_args()
    n = args.messages

    port = free_port()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=_sink, args=(port, ready), daemon=True)
    sink.start()
    ready.wait(10)

    os.environ["CSOPS_SIGNING_KEYS"] = "bench-signing-key"
    from csops import db, timeutil
    from csops.config import load_config
    from csops.messaging.channels.base import OutMessage, mime_bytes
    from csops.messaging.outbox import NewMessage, deliver, enqueue
    from csops.messaging.render import render_message, sample_context
    from csops.result import Result
    from csops.runs import run
    from csops.workspace import init_workspace

    root = Path(tempfile.mkdtemp(prefix="csops-bench-")) / "ws"
    init_workspace(root)
    cfg_path = root / "config" / "csops.toml"
    text = cfg_path.read_text()
    text = text.replace('quiet_hours = "21:00-09:00"', 'quiet_hours = ""')
    text = text.replace('default_channel = "outbox"', 'default_channel = "mail"')
    text += f'\n[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
    cfg_path.write_text(text)
    config = load_config(cfg_path)
    now = timeutil.now()

    # ---- csops: render + plan + deliver
    def job(ctx) -> Result:
        base = sample_context(config, "shipping_notice")
        batch = []
        for i in range(n):
            ctx_i = {**base, "order": {**base["order"], "number": f"#{100000 + i}"}}
            r = render_message(config, "shipping_notice", "en", ctx_i)
            batch.append(
                NewMessage(
                    dedupe_key=f"bench:{i}",
                    kind="followup",
                    channel="mail",
                    recipient=f"c{i}@example.test",
                    subject=r.subject,
                    body_text=r.text,
                    body_html=r.html,
                    rule="bench",
                )
            )
            if len(batch) == 500 or i == n - 1:
                with db.write(ctx.conn):
                    for m in batch:
                        enqueue(ctx.conn, m, now=now)
                batch.clear()
        phases["plan"] = time.perf_counter() - t0
        rep = deliver(ctx)
        return Result("bench", counts=rep.counts)

    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    res = run("followups", config, job)
    t_csops = time.perf_counter() - t0
    assert res.counts.get("sent") == n, res.counts

    # ---- baseline: the same messages, pre-rendered to bytes, raw smtplib over one connection
    conn = db.connect(config.db_path)
    rows = conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    wire = [
        (
            r["recipient"],
            mime_bytes(
                OutMessage.from_row(r),
                from_address=config.shop.email,
                from_name=config.shop.name,
                date=now,
            ),
        )
        for r in rows
    ]
    conn.close()
    t0 = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="bench")
    for rcpt, data in wire:
        smtp.sendmail(config.shop.email, [rcpt], data)
    smtp.quit()
    t_raw = time.perf_counter() - t0

    csops_rate, raw_rate = n / t_csops, n / t_raw
    print(f"messages            {n}")
    print(f"raw smtplib loop    {raw_rate:8.0f} msg/s  ({t_raw:.2f} s, pre-rendered bytes)")
    print(f"csops               {csops_rate:8.0f} msg/s  ({t_csops:.2f} s, render+plan+deliver)")
    plan = phases["plan"]
    print(
        f"  of which plan     {plan:8.2f} s (render 3 parts + enqueue), "
        f"deliver {t_csops - plan:.2f} s"
    )
    print(f"ratio csops/raw     {csops_rate / raw_rate:8.2f}x  (target >= 0.70x)")
    print(f"ratio deliver/raw   {n / (t_csops - plan) / raw_rate:8.2f}x  (delivery alone)")
    sink.terminate()


if __name__ == "__main__":
    main()
