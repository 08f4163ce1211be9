"""``import conversations --from zendesk-csv``: Zendesk's ticket CSV export (one row per ticket).

Read by name: ``Id``, ``Via`` (channel), ``Ticket type`` (kind), ``Created at``, ``Solved at``,
``First reply time in minutes`` (first response = created + that many minutes) and, when the
shop has such a custom field, ``Order number``. Zendesk writes times like ``2024-04-02 09:14``
in the account's timezone without an offset; they are read in the shop's timezone.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from csops.importers.base import FieldError, ParseEnv, Row, clean_text, parse_time, require, unwrap
from csops.importers.conversations_csv import Conversation, ConversationFormat, check_order
from csops.timeutil import iso


def _plus_minutes(created: str, minutes: str) -> str | None:
    text = unwrap(minutes)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise FieldError(
            "First reply time in minutes", f"not a number: {text[:20]!r}", "minutes"
        ) from None
    if not 0 <= value < 10**7:
        raise FieldError("First reply time in minutes", "out of range", "minutes ≥ 0")
    start = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return iso(start + timedelta(minutes=value))


def parse_row(row: Row, env: ParseEnv) -> Conversation:
    created = parse_time(row.get("Created at", ""), env, "Created at")
    if created is None:
        raise FieldError("Created at", "empty", "the ticket's creation time")
    return check_order(
        Conversation(
            external_id=require(row, "Id"),
            channel=clean_text(row.get("Via"), 40),
            order_ref=clean_text(row.get("Order number"), 80),
            kind=clean_text(row.get("Ticket type"), 40),
            created_at=created,
            first_response_at=_plus_minutes(created, row.get("First reply time in minutes", "")),
            resolved_at=parse_time(row.get("Solved at", ""), env, "Solved at"),
        )
    )


SOURCE = ConversationFormat(
    name="zendesk-csv",
    required=("Id", "Created at", "Solved at", "First reply time in minutes"),
    parse_row=parse_row,
)
