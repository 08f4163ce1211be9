"""A fault-injecting SMTP sink (aiosmtpd) run in its own process: the oracle for "delivered".

Usage: python tests/messaging_sink.py --port P --ledger L [--faults F.json] [--delay-ms N]
       [--pidfile PIDFILE] [--mail-reply "421 ..."]

The ledger (JSON lines: message_id, rcpt, time, headers) gets one line, fsync'ed, for every
message the sink answered 250 or read completely before dropping. Faults are keyed by recipient
and apply to the first attempt only unless ``"always": true``:

  {"a@x.test": {"at": "rcpt", "reply": "451 4.3.0 busy"},
   "b@x.test": {"at": "rcpt", "action": "close"},          # drop before DATA
   "c@x.test": {"at": "data", "reply": "554 5.6.0 no"},     # read the body, then refuse
   "d@x.test": {"at": "data", "action": "close"},           # read, record, drop without reply
   "e@x.test": {"at": "data", "action": "kill"},            # read, record, SIGKILL csops
   "f@x.test": {"at": "rcpt", "action": "kill"},            # SIGKILL csops after RCPT
   "g@x.test": {"at": "after250", "action": "kill", "ms": 5}}

Kill points keyed by position instead (AT-03): ``--kill-at POINT --kill-tx K [--kill-ms MS]``
SIGKILLs csops once, in the K-th mail transaction the sink sees (counted by MAIL commands over
all connections), at POINT:

  connect  after the 220 greeting of a connection opened when K-1 transactions were seen
  mail     after MAIL FROM arrived, before replying
  rcpt     after RCPT TO arrived, before replying
  354      right after writing the 354 reply to DATA, before reading the body
  dot      after the final dot: the message is read and recorded, no reply yet
  250      MS milliseconds after writing the 250 reply to the final dot (QUIT is answered only
           after the kill, so csops is still alive when it lands)

Every kill appends a JSON line (point, tx, time, message_id/rcpt when known) to LEDGER.kills.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
import sys
import threading
import time
from email.parser import BytesHeaderParser

from aiosmtpd.smtp import SMTP, AuthResult


class Handler:
    def __init__(self, args: argparse.Namespace) -> None:
        self.ledger = open(args.ledger, "a", encoding="utf-8")  # noqa: SIM115
        self.faults = json.load(open(args.faults)) if args.faults else {}  # noqa: SIM115
        self.attempts: dict[str, int] = {}
        self.delay = args.delay_ms / 1000
        self.pidfile = args.pidfile
        self.mail_reply = args.mail_reply
        self.mail_count = 0
        self.count_file = args.ledger + ".mailcount"
        self.drop_every = args.drop_every
        self.data_count = 0
        self.random_reply = args.random_reply
        self.random_rate = args.random_rate
        self.rng = random.Random(1234)
        self.refusals = 0
        self.refusals_file = args.ledger + ".refusals"
        self.kill_at = args.kill_at
        self.kill_tx = args.kill_tx
        self.kill_ms = args.kill_ms
        self.kill_fired = False
        self.kill_fired_tx = 0
        self.kill_done = threading.Event()
        self.kills_file = args.ledger + ".kills"

    def kill_point(self, point: str, tx: int | None = None) -> bool:
        """True (once) when ``point`` in transaction ``tx`` is the scripted kill point."""
        if self.kill_fired or self.kill_at != point:
            return False
        if (self.mail_count if tx is None else tx) != self.kill_tx:
            return False
        self.kill_fired = True
        self.kill_fired_tx = self.kill_tx
        return True

    def kill_logged(self, point: str, envelope=None, pid: int | None = None) -> None:
        """SIGKILL csops and note where (the test checks the kill really landed there)."""
        self.kill(pid)
        entry = {"point": point, "tx": self.kill_fired_tx, "time": time.time()}
        if envelope is not None:
            entry["rcpt"] = list(envelope.rcpt_tos)
            if envelope.original_content:
                headers = BytesHeaderParser().parsebytes(envelope.original_content)
                entry["message_id"] = headers.get("Message-ID")
        with open(self.kills_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.kill_done.set()

    def fault(self, rcpt: str, at: str) -> dict | None:
        f = self.faults.get(rcpt)
        if not f or f.get("at") != at:
            return None
        if not f.get("always") and self.attempts.get(rcpt, 0) > 1:
            return None
        return f

    def target_pid(self) -> int | None:
        try:
            with open(self.pidfile) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError, TypeError):
            return None

    def kill(self, pid: int | None = None) -> None:
        pid = pid or self.target_pid()
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def record(self, envelope) -> None:
        headers = BytesHeaderParser().parsebytes(envelope.original_content or b"")
        entry = {
            "message_id": headers.get("Message-ID"),
            "rcpt": list(envelope.rcpt_tos),
            "time": time.time(),
            "headers": [[k, str(v)] for k, v in headers.items()],
        }
        self.ledger.write(json.dumps(entry) + "\n")
        self.ledger.flush()
        os.fsync(self.ledger.fileno())

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_count += 1
        with open(self.count_file, "w") as fh:
            fh.write(str(self.mail_count))
        if self.kill_point("mail"):
            self.kill_logged("mail")
            await asyncio.sleep(0.5)
            server.transport.close()
            return "421 closing"
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.attempts[address] = self.attempts.get(address, 0) + 1
        if self.kill_point("rcpt"):
            envelope.rcpt_tos.append(address)
            self.kill_logged("rcpt", envelope)
            await asyncio.sleep(0.5)
            server.transport.close()
            return "421 closing"
        if self.random_reply and self.rng.random() < self.random_rate:
            self.refusals += 1
            with open(self.refusals_file, "w") as fh:
                fh.write(str(self.refusals))
            return self.random_reply
        f = self.fault(address, "rcpt")
        if f:
            if f.get("action") == "kill":
                self.kill()
                await asyncio.sleep(0.5)
            if f.get("action") in ("close", "kill"):
                server.transport.close()
                return "421 closing"
            return f["reply"]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        self.data_count += 1
        if self.drop_every and self.data_count % self.drop_every == 0:
            self.record(envelope)
            server.transport.close()
            return "250 never seen"
        if self.kill_point("dot"):
            self.record(envelope)
            self.kill_logged("dot", envelope)
            await asyncio.sleep(0.5)
            server.transport.close()
            return "250 never seen"
        if self.kill_point("250"):
            self.record(envelope)
            server.kill_after_reply = (self.kill_ms / 1000, envelope)
            return "250 Message accepted"
        f = self.fault(rcpt, "data")
        if f:
            if f.get("action") in ("close", "kill"):
                self.record(envelope)
                if f.get("action") == "kill":
                    self.kill()
                    await asyncio.sleep(0.5)
                server.transport.close()
                return "250 never seen"
            return f["reply"]
        self.record(envelope)
        f = self.fault(rcpt, "after250")
        if f and f.get("action") == "kill":
            threading.Timer(f.get("ms", 5) / 1000, self.kill).start()
        return "250 Message accepted"

    async def handle_QUIT(self, server, session, envelope):
        if self.kill_fired and not self.kill_done.is_set():
            # A kill is due shortly after a 250: keep csops waiting for this reply until it lands.
            await asyncio.get_running_loop().run_in_executor(None, self.kill_done.wait, 5)
        return "221 Bye"


class KillingSMTP(SMTP):
    """aiosmtpd's server with kill points where no handler hook exists: after a reply is written
    (the 220 greeting, 354, the 250 that follows the final dot)."""

    kill_after_reply: tuple[float, object] | None = None

    def __init__(self, handler: Handler, *args, **kwargs) -> None:
        super().__init__(handler, *args, **kwargs)
        self.killer = handler

    async def push(self, status) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        h = self.killer
        if text.startswith("354") and h.kill_point("354"):
            # The signal leaves right behind the reply (pid read first, no drain in between),
            # so it usually lands before csops has sent the body; the sink then goes on as a
            # normal server and records the message only if the body does arrive complete.
            pid = h.target_pid()
            self._writer.write(text.encode("utf-8") + b"\r\n")
            h.kill_logged("354", self.envelope, pid=pid)
            await self._writer.drain()
            return
        await super().push(status)
        if text.startswith("220 ") and h.kill_point("connect", h.mail_count + 1):
            h.kill_logged("connect")
        elif text.startswith("250") and self.kill_after_reply is not None:
            delay, envelope = self.kill_after_reply
            self.kill_after_reply = None
            threading.Timer(delay, h.kill_logged, args=("250", envelope)).start()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--faults")
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--pidfile")
    p.add_argument("--mail-reply")
    p.add_argument("--drop-every", type=int, default=0)
    p.add_argument("--random-reply")  # e.g. "454 4.7.0 busy" at RCPT ...
    p.add_argument("--random-rate", type=float, default=0.0)  # ... for this share of attempts
    p.add_argument("--tls", choices=["starttls", "ssl"])
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth")  # user:password
    p.add_argument("--kill-at", choices=["connect", "mail", "rcpt", "354", "dot", "250"])
    p.add_argument("--kill-tx", type=int, default=0)
    p.add_argument("--kill-ms", type=float, default=5)
    args = p.parse_args()
    handler = Handler(args)
    loop = asyncio.new_event_loop()
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    kwargs = {}
    if args.auth:
        user, _, password = args.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == user.encode() and auth_data.password == password.encode()
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticator, auth_required=True)
    if args.tls == "starttls":
        kwargs.update(tls_context=ctx, require_starttls=True)
    else:
        kwargs.update(auth_require_tls=False)

    def factory() -> SMTP:
        return KillingSMTP(
            handler, hostname="sink.test", ident="sink", enable_SMTPUTF8=True, **kwargs
        )

    server = loop.run_until_complete(
        loop.create_server(factory, "127.0.0.1", args.port, ssl=ctx if args.tls == "ssl" else None)
    )
    print("READY", flush=True)
    sys.stdout.close()
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
