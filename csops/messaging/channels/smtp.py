"""SMTP channel: SSL or STARTTLS, auth from an env var, one connection reused across a batch.

The exchange is driven by hand instead of ``smtplib.sendmail`` so the outbox can record the
hand-over before the body goes out: the mark is committed right after the DATA command, while
the server prepares its 354, so it is durable before the first byte of the body leaves. A reply
lost after the body went out means the server may hold the message, so the row becomes
``unknown``; a drop before it (or a refusal of DATA) is a plain transient or permanent outcome.
A run killed between the mark and the body leaves an ``unknown`` that was in fact never
delivered: doubt on the safe side, never a duplicate.

While each reply is due, the channel lets ``deliver()`` work ahead (``idle``): claim and
prepare the next message, plan more. The server works on the command meanwhile.

Commands are written with ``putcmd`` rather than ``smtplib``'s ``mail``/``rcpt``: both
addresses are already checked by :func:`mime_bytes` (one plain address each), so smtplib's
re-parsing of them (about 30 us a message) buys nothing.
"""

from __future__ import annotations

import contextlib
import re
import select
import smtplib
import ssl
import time
from collections.abc import Callable
from email.utils import format_datetime

from csops import timeutil
from csops.errors import ChannelError, RemoteAuthError
from csops.messaging.channels.base import (
    BaseChannel,
    HeaderInjection,
    Outcome,
    OutMessage,
    mime_bytes,
)

_HINT = re.compile(r"(\d+)\s*(seconds?|secs?|s\b|minutes?|mins?)", re.I)
_DOTS = re.compile(rb"(?m)^\.")


def retry_hint(text: str) -> float | None:
    """Seconds from a reply like ``421 4.7.0 Try again in 120 seconds``."""
    m = _HINT.search(text or "")
    if not m:
        return None
    n = float(m.group(1))
    return n * 60 if m.group(2).lower().startswith("min") else n


def _wait(conn: smtplib.SMTP, idle: Callable[[], bool] | None) -> None:
    """Do the caller's work ahead while the server works on what was just sent.

    One step at least, then more for as long as the server's reply has not arrived (a step
    is small: one claim, one message's MIME, one message planned).
    """
    if idle is None:
        return
    sock = conn.sock
    while idle():
        if sock is None or (getattr(sock, "pending", None) and sock.pending()):
            return
        if select.select([sock], [], [], 0)[0]:
            return


def classify(code: int, text: str) -> Outcome:
    if 200 <= code < 300:
        return Outcome("sent", str(code), text)
    if 400 <= code < 500:
        return Outcome("transient", str(code), text, retry_hint(text))
    return Outcome("permanent", str(code), text)


class SmtpChannel(BaseChannel):
    """Deliver over one reused SMTP connection; reconnect after a drop."""

    def __init__(self, name: str, settings, config) -> None:
        self.name = name
        self.settings = settings
        self.config = config
        self.from_address = settings.from_address or config.shop.email
        self.from_name = settings.from_name or config.shop.name
        self.helo = settings.helo or self.from_address.rpartition("@")[2] or "localhost"
        self.conn: smtplib.SMTP | None = None
        self._date: tuple[int, str] = (0, "")
        self.password = (
            config.secret(settings.password_env, key=f"channels.{name}.password_env")
            if settings.username
            else None
        )

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        cafile = str(self.config.resolve(s.ca_file)) if s.ca_file else None
        ctx = ssl.create_default_context(cafile=cafile)
        if s.security == "ssl":
            try:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, local_hostname=self.helo, timeout=s.timeout, context=ctx
                )
            except ssl.SSLCertVerificationError as exc:
                raise ChannelError(
                    f"TLS certificate of {s.host}:{s.port} is not trusted: {exc.verify_message}",
                    field=f"channels.{self.name}.ca_file",
                    expected="a certificate trusted by the system or by ca_file",
                ) from None
        else:
            conn = smtplib.SMTP(s.host, s.port, local_hostname=self.helo, timeout=s.timeout)
        try:
            conn.ehlo()
            if s.security == "starttls":
                conn.starttls(context=ctx)
                conn.ehlo()
            if s.username:
                conn.login(s.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            self._drop(conn)
            raise RemoteAuthError(
                f"SMTP server {s.host}:{s.port} refused the login ({exc.smtp_code})",
                field=f"channels.{self.name}.password_env",
                expected=f"valid credentials in ${s.password_env}",
            ) from None
        except ssl.SSLCertVerificationError as exc:
            self._drop(conn)
            raise ChannelError(
                f"TLS certificate of {s.host}:{s.port} is not trusted: {exc.verify_message}",
                field=f"channels.{self.name}.ca_file",
                expected="a certificate trusted by the system or by ca_file",
            ) from None
        except BaseException:
            self._drop(conn)
            raise
        return conn

    @staticmethod
    def _drop(conn: smtplib.SMTP | None) -> None:
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.quit()
            self._drop(self.conn)
            self.conn = None

    def _reset(self) -> None:
        try:
            assert self.conn is not None
            self.conn.rset()
        except Exception:
            self._drop(self.conn)
            self.conn = None

    def _date_header(self) -> str:
        """The Date header text, formatted once per second."""
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, format_datetime(timeutil.now().replace(microsecond=0)))
        return self._date[1]

    # deliver() may run the next message's claim while this channel waits for a final reply.
    overlaps_reply = True

    def prepare(self, msg: OutMessage) -> None:
        """Build the wire form ahead of the exchange (dot-stuffed, ending in the final dot)."""
        try:
            data = mime_bytes(
                msg,
                from_address=self.from_address,
                from_name=self.from_name,
                date=self._date_header(),
            )
        except HeaderInjection as exc:
            msg.prepared = Outcome("permanent", "header_injection", str(exc))
            return
        data = _DOTS.sub(b"..", data)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        msg.prepared = data + b".\r\n"

    def send(
        self,
        msg: OutMessage,
        mark_handed_over: Callable[[], None],
        idle: Callable[[], bool] | None = None,
    ) -> Outcome:
        """One SMTP transaction; ``idle`` runs after each command, while its reply is due."""
        if msg.prepared is None:
            self.prepare(msg)
        data = msg.prepared
        if isinstance(data, Outcome):
            return data
        handed = False
        try:
            if self.conn is None:
                self.conn = self._connect()
            conn = self.conn
            conn.putcmd("mail", f"FROM:<{self.from_address}>")
            _wait(conn, idle)
            code, resp = conn.getreply()
            if code != 250:
                return self._refused(code, resp)
            conn.putcmd("rcpt", f"TO:<{msg.recipient}>")
            _wait(conn, idle)
            code, resp = conn.getreply()
            if code not in (250, 251):
                return self._refused(code, resp)
            conn.putcmd("data")
            mark_handed_over()  # committed while the server prepares its 354
            _wait(conn, idle)
            code, resp = conn.getreply()
            if code != 354:
                return self._refused(code, resp)
            handed = True
            conn.send(data)
            _wait(conn, idle)
            code, resp = conn.getreply()
        except (RemoteAuthError, ChannelError):
            raise
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            self._drop(self.conn)
            self.conn = None
            text = f"{type(exc).__name__}: {exc}"[:300]
            if handed:
                return Outcome("unknown", "lost_after_handover", text)
            return Outcome("transient", "connection", text)
        outcome = classify(code, resp.decode("utf-8", "replace"))
        if code == 421:
            self._drop(self.conn)
            self.conn = None
        return outcome

    def _refused(self, code: int, resp: bytes) -> Outcome:
        outcome = classify(code, resp.decode("utf-8", "replace"))
        if code == 421 or code < 0:
            self._drop(self.conn)
            self.conn = None
            if code < 0:
                return Outcome("transient", "connection", "connection closed")
        else:
            self._reset()
        return outcome
