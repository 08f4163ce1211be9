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

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
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
        return f"{self.code} {self.text}".strip()[:500]


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
            headers=json.loads(row["headers_json"] or "{}"),
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


def build_email(
    msg: OutMessage,
    *,
    from_address: str,
    from_name: str,
    date: Any,
) -> EmailMessage:
    """A standards-conforming MIME message; raises HeaderInjection for unsafe values."""
    from email import policy

    if not _ADDR.match(msg.recipient or ""):
        raise HeaderInjection(f"recipient is not one plain e-mail address: {msg.recipient!r}")
    em = EmailMessage(policy=policy.SMTP)
    em["From"] = Address(display_name=_one_line(from_name), addr_spec=from_address)
    em["To"] = msg.recipient
    em["Subject"] = _one_line(msg.subject)[:900]
    em["Date"] = format_datetime(date)
    em["Message-ID"] = msg.message_id
    em["MIME-Version"] = "1.0"
    for name, value in msg.headers.items():
        if name.lower() not in ALLOWED_EXTRA_HEADERS:
            continue
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise HeaderInjection(f"header {name} contains a line break")
        em[name] = value
    em.set_content(msg.body_text, cte="quoted-printable")
    if msg.body_html:
        em.add_alternative(msg.body_html, subtype="html", cte="quoted-printable")
    return em


def _one_line(value: str) -> str:
    return " ".join("".join(c if c >= " " and c != "\x7f" else " " for c in value or "").split())


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


_WIRE = None


def email_bytes(em: EmailMessage) -> bytes:
    """CRLF bytes; headers fold at whitespace up to 998 characters (RFC 5322's hard limit)
    so a long List-Unsubscribe URL stays one plain line instead of RFC 2047 encoded-words."""
    global _WIRE
    if _WIRE is None:
        from email import policy

        _WIRE = policy.SMTP.clone(max_line_length=998)
    return em.as_bytes(policy=_WIRE)
