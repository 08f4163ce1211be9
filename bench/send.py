"""Benchmark: csops delivering N messages to a local aiosmtpd vs a raw smtplib loop.

What each side includes (the same SMTP work, one connection each, the same sink process):

- **raw**: connect + EHLO once, then ``smtplib.SMTP.sendmail`` per message (MAIL, RCPT, DATA,
  body, reply), QUIT. The messages are rendered and turned into MIME bytes *before* the clock
  starts: the baseline is the SMTP exchange alone.
- **csops**: ``runs.run`` (job lock, audit row), then per message: render the shipped
  ``shipping_notice`` template (subject, text, HTML in the Jinja2 sandbox) and INSERT it into the
  outbox (batches of 500 per transaction), then ``outbox.deliver``: recover, read due rows,
  per message a claim transaction (send-time checks + guarded UPDATE), MIME building, MAIL/RCPT/
  DATA, the hand-over mark committed before the final dot, the body, the reply, the outcome
  committed (with the next claim). Every message ends ``sent`` in the database.

The sides run alternately (raw, csops, raw, csops, ...) after a short warm-up of the sink, each
csops run in a fresh workspace; the figure is best and median over ``--runs``, and the median
of each run pair's ratio (a pair runs back to back, so it shares the machine's load). Client
and sink CPU per message are printed so a reader can see where the time goes (if the sink's
CPU per message is close to the raw wall time per message, the sink is the bottleneck).

    python bench/send.py [--messages 10000] [--runs 3]

Prints messages/s for both and the ratio (target: csops >= 0.7x the raw loop).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import smtplib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
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


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0.0 where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def make_workspace(port: int):
    from csops.config import load_config
    from csops.workspace import init_workspace

    root = Path(tempfile.mkdtemp(prefix="csops-bench-")) / "ws"
    init_workspace(root)
    cfg_path = root / "config" / "csops.toml"
    text = cfg_path.read_text()
    text = text.replace('quiet_hours = "21:00-09:00"', 'quiet_hours = ""')
    text = text.replace('default_channel = "outbox"', 'default_channel = "mail"')
    text += f'\n[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
    cfg_path.write_text(text)
    return load_config(cfg_path)


def variant(base: dict, i: int) -> dict:
    return {**base, "order": {**base["order"], "number": f"#{100000 + i}"}}


def run_csops(port: int, n: int, serial: bool = False) -> dict[str, float]:
    """Render + plan + deliver ``n`` messages in a fresh workspace; wall and CPU figures."""
    from csops import db, timeutil
    from csops.messaging.outbox import NewMessage, deliver, enqueue
    from csops.messaging.render import render_message, sample_context
    from csops.result import Result
    from csops.runs import run

    config = make_workspace(port)
    now = timeutil.now()
    phases: dict[str, float] = {}

    def planner(ctx) -> Iterator[bool]:
        """Render and plan the n messages the way ``followups send`` plans (rules.plan_steps):
        one step per message rendered, a committed batch every 200."""
        base = sample_context(config, "shipping_notice")
        batch = []
        for i in range(n):
            r = render_message(config, "shipping_notice", "en", variant(base, i))
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
            if len(batch) == 200 or i == n - 1:
                with db.write(ctx.conn):
                    for m in batch:
                        enqueue(ctx.conn, m, now=now)
                batch.clear()
                yield True
            else:
                yield False

    def job(ctx) -> Result:
        if serial:  # plan everything, then deliver
            for _ in planner(ctx):
                pass
            phases["plan"] = time.perf_counter() - t0
            rep = deliver(ctx)
        else:  # as followups send does: planning runs in the waits of delivery
            phases["plan"] = 0.0
            rep = deliver(ctx, background=planner(ctx))
        return Result("bench", counts=rep.counts)

    c0 = time.process_time()
    t0 = time.perf_counter()
    res = run("followups", config, job)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    assert res.counts.get("sent") == n, res.counts
    conn = db.connect(config.db_path)
    sent = conn.execute("SELECT count(*) FROM outbox WHERE state = 'sent'").fetchone()[0]
    conn.close()
    assert sent == n, sent
    return {"wall": wall, "cpu": cpu, "plan": phases["plan"]}


def raw_wire(port: int, n: int) -> tuple[str, list[tuple[str, bytes]]]:
    """The same messages csops sends, rendered and MIME-encoded ahead of time (not timed)."""
    from csops import timeutil
    from csops.messaging.channels.base import OutMessage, mime_bytes
    from csops.messaging.outbox import new_message_id
    from csops.messaging.render import render_message, sample_context

    config = make_workspace(port)
    base = sample_context(config, "shipping_notice")
    now = timeutil.now()
    wire = []
    for i in range(n):
        r = render_message(config, "shipping_notice", "en", variant(base, i))
        msg = OutMessage(
            id=i,
            message_id=new_message_id(now),
            kind="followup",
            recipient=f"c{i}@example.test",
            subject=r.subject,
            body_text=r.text,
            body_html=r.html,
        )
        data = mime_bytes(msg, from_address=config.shop.email, from_name=config.shop.name, date=now)
        wire.append((msg.recipient, data))
    return config.shop.email, wire


def run_raw(port: int, sender: str, wire: list[tuple[str, bytes]]) -> dict[str, float]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="bench")
    for rcpt, data in wire:
        smtp.sendmail(sender, [rcpt], data)
    smtp.quit()
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each side")
    ap.add_argument(
        "--serial",
        action="store_true",
        help="csops plans all messages first, then delivers (no planning in delivery's waits)",
    )
    args = ap.parse_args()
    n = args.messages

    port = free_port()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=_sink, args=(port, ready), daemon=True)
    sink.start()
    ready.wait(10)
    os.environ["CSOPS_SIGNING_KEYS"] = "bench-signing-key"

    sender, wire = raw_wire(port, n)
    run_raw(port, sender, wire[: min(n, 200)])  # warm the sink up (imports, caches)

    raw: list[dict[str, float]] = []
    cs: list[dict[str, float]] = []
    for k in range(args.runs):
        s0 = proc_cpu(sink.pid)
        raw.append(run_raw(port, sender, wire))
        raw[-1]["sink"] = proc_cpu(sink.pid) - s0
        s0 = proc_cpu(sink.pid)
        cs.append(run_csops(port, n, serial=args.serial))
        cs[-1]["sink"] = proc_cpu(sink.pid) - s0
        r, c = raw[-1], cs[-1]
        split = f"(plan {c['plan']:.2f} s, deliver {c['wall'] - c['plan']:.2f} s)  " * args.serial
        print(
            f"run {k + 1}: raw {n / r['wall']:6.0f} msg/s  csops {n / c['wall']:6.0f} msg/s "
            f"{split}ratio {r['wall'] / c['wall']:.2f}x",
            flush=True,
        )
    sink.terminate()

    def ms(x: float) -> str:
        return f"{x / n * 1000:.3f}"

    rw = [r["wall"] for r in raw]
    cw = [c["wall"] for c in cs]
    dw = [c["wall"] - c["plan"] for c in cs]
    print(f"messages            {n}  ({args.runs} alternating runs per side)")
    for label, walls, what in (
        ("raw smtplib loop", rw, "SMTP only: bytes pre-rendered"),
        ("csops", cw, "render + plan + deliver" + (", serially" if args.serial else "")),
    ):
        print(
            f"{label:19s} best {n / min(walls):6.0f} msg/s  "
            f"median {n / statistics.median(walls):6.0f} msg/s   ({what})"
        )
    print(
        "per message (median) raw: wall "
        f"{ms(statistics.median(rw))} ms, client cpu {ms(statistics.median(r['cpu'] for r in raw))}"
        f", sink cpu {ms(statistics.median(r['sink'] for r in raw))}"
    )
    print(
        "                   csops: wall "
        f"{ms(statistics.median(cw))} ms, client cpu {ms(statistics.median(c['cpu'] for c in cs))}"
        f", sink cpu {ms(statistics.median(c['sink'] for c in cs))}"
    )
    pairs = [r / c for r, c in zip(rw, cw, strict=True)]
    print(
        f"ratio csops/raw     best {min(rw) / min(cw):.2f}x  median "
        f"{statistics.median(rw) / statistics.median(cw):.2f}x  median of run pairs "
        f"{statistics.median(pairs):.2f}x  (target >= 0.70x)"
    )
    if args.serial:
        print(
            f"ratio deliver/raw   best {min(rw) / min(dw):.2f}x  median "
            f"{statistics.median(rw) / statistics.median(dw):.2f}x  (delivery alone)"
        )


if __name__ == "__main__":
    main()
