"""The one protocol every channel speaks, and the MIME builder the mail channels share.

A channel gets an :class:`OutMessage` (a planned outbox row) and answers with an
:class:`Outcome`:

- ``sent``: the receiver accepted it.
- ``transient``: refused for now (SMTP 4xx, HTTP 429/5xx, connect error, drop before the body):
  retry later, optionally not before ``retry_after`` seconds.
- ``permanent``: refused for good (SMTP 5xx, HTTP 4xx) with ``code`` and ``text``.
- ``unknown``: the message was handed over and the reply was lost: never re-sent silently.

Before the point of no return (the final dot, the POST) a channel calls ``mark_handed_over()``
so the outbox can record ``handed_over_at``; a run killed after that point leaves the row for
review instead of sending it twice.
"""

from __future__ import annotations

import binascii
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import Header
from email.utils import format_datetime
from functools import lru_cache
from typing import Any, Literal, Protocol

Kind = Literal["sent", "transient", "permanent", "unknown"]

# Headers a template or a caller may set; anything else is dropped (no Bcc, no Received ...).
ALLOWED_EXTRA_HEADERS = frozenset(
    {
        "list-unsubscribe",
        "list-unsubscribe-post",
        "reply-to",
        "x-csops-kind",
        "x-csops-rule",
        "auto-submitted",
        "precedence",
    }
)


@dataclass
class Outcome:
    kind: Kind
    code: str = ""
    text: str = ""
    retry_after: float | None = None  # seconds, a server hint (Retry-After, "in 120 seconds")

    def error(self) -> str:
        """The reason as stored in ``outbox.last_error`` and shown by commands.

        ``text`` is the remote end's reply, which can echo what it was sent (a webhook that
        returns the request headers, auth header included), so it is redacted here, the one
        place every outcome becomes stored or printed text.
        """
        from csops.secrets import redact

        return redact(f"{self.code} {self.text}".strip())[:500]


@dataclass
class OutMessage:
    """What a channel needs of an outbox row."""

    id: int
    message_id: str
    kind: str
    recipient: str
    subject: str
    body_text: str
    body_html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    rule: str | None = None
    order_id: int | None = None
    customer_id: int | None = None
    locale: str | None = None
    prepared: Any = None  # a channel's wire form, built by its ``prepare`` ahead of sending

    @classmethod
    def from_row(cls, row: Any) -> OutMessage:
        return cls(
            id=row["id"],
            message_id=row["message_id"],
            kind=row["kind"],
            recipient=row["recipient"],
            subject=row["subject"] or "",
            body_text=row["body_text"] or "",
            body_html=row["body_html"],
            headers=json.loads(row["headers_json"]) if row["headers_json"] else {},
            rule=row["rule"],
            order_id=row["order_id"],
            customer_id=row["customer_id"],
            locale=row["locale"],
        )


class Channel(Protocol):
    """One delivery channel: open once per batch, send many, close."""

    name: str

    def open(self) -> None: ...

    def send(self, msg: OutMessage, mark_handed_over: Callable[[], None]) -> Outcome: ...

    def close(self) -> None: ...

    def recover(self, msg: OutMessage, handed_over: bool) -> Kind | None:
        """Outcome of a row left ``sending`` by a dead run, if the channel can tell; else None."""
        ...


class HeaderInjection(ValueError):
    """A recipient or header value that would smuggle extra headers or recipients."""


_ADDR = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")


def mime_bytes(
    msg: OutMessage,
    *,
    from_address: str,
    from_name: str,
    date: Any,
) -> bytes:
    """The message as RFC 5322 bytes (CRLF), ``multipart/alternative`` when it has HTML.

    Written by hand rather than through ``email.message.EmailMessage``: the header registry
    costs more per message than the whole SMTP exchange, and our headers are few and known.
    Non-ASCII header text becomes RFC 2047 encoded-words; bodies are quoted-printable UTF-8
    (lines <= 76). Raises HeaderInjection for a recipient or header that could smuggle lines.
    ``date`` is a datetime, or the header text already formatted (a sender formats it once per
    second).
    """
    if not _ADDR.match(msg.recipient or ""):
        raise HeaderInjection(f"recipient is not one plain e-mail address: {msg.recipient!r}")
    if not _ADDR.match(from_address or ""):
        raise HeaderInjection(f"sender is not one plain e-mail address: {from_address!r}")
    out = [
        b"From: " + _address(from_name, from_address),
        b"To: " + msg.recipient.encode("ascii"),
        b"Subject: " + _header_text(_one_line(msg.subject)[:900]),
        b"Date: " + (date if isinstance(date, str) else format_datetime(date)).encode("ascii"),
        b"Message-ID: " + msg.message_id.encode("ascii"),
        b"MIME-Version: 1.0",
    ]
    for name, value in msg.headers.items():
        if name.lower() not in ALLOWED_EXTRA_HEADERS:
            continue
        if "\r" in value or "\n" in value or not name.isascii():
            raise HeaderInjection(f"header {name} contains a line break")
        out.append(name.encode("ascii") + b": " + _header_text(value))
    text = _qp(msg.body_text)
    if not msg.body_html:
        out += [
            b'Content-Type: text/plain; charset="utf-8"',
            b"Content-Transfer-Encoding: quoted-printable",
            b"",
            text,
        ]
    else:
        boundary = ("=_csops_" + uuid.uuid4().hex).encode("ascii")
        out += [
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"',
            b"",
            b"--" + boundary,
            b'Content-Type: text/plain; charset="utf-8"',
            b"Content-Transfer-Encoding: quoted-printable",
            b"",
            text,
            b"--" + boundary,
            b'Content-Type: text/html; charset="utf-8"',
            b"Content-Transfer-Encoding: quoted-printable",
            b"",
            _qp(msg.body_html),
            b"--" + boundary + b"--",
        ]
    return b"\r\n".join(out) + b"\r\n"


def _qp(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n").rstrip(b"\r\n")


def _header_text(value: str) -> bytes:
    """ASCII stays as is (folded at spaces past 78 chars); anything else is RFC 2047."""
    if value.isascii():
        return _fold(value).encode("ascii")
    encoded = Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")
    return encoded.encode("ascii")


def _fold(value: str, width: int = 76) -> str:
    if len(value) <= width:
        return value
    lines, line = [], ""
    for word in value.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


@lru_cache(maxsize=64)
def _address(name: str, address: str) -> bytes:
    name = _one_line(name)
    if not name:
        return address.encode("ascii")
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'.encode("ascii")
    return _header_text(name) + f" <{address}>".encode("ascii")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(value: str) -> str:
    return " ".join(_CONTROL.sub(" ", value or "").split())


class BaseChannel:
    """Defaults for channels: nothing to open or close, no way to tell after a crash."""

    name: str = ""

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def recover(self, msg: OutMessage, handed_over: bool) -> Kind | None:
        return None

    def cleanup(self) -> None:
        """Remove leftovers of a dead run (temporary files) before a batch."""
        return None
