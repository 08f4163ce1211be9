"""``import conversations --from csv``: our generic helpdesk export.

The layout of scripts/samples/conversations.csv.

Columns (by name): ``conversation_id, channel, order_number, customer_email, kind, created_at,
first_response_at, resolved_at`` (``agent`` and others are ignored). Times are ISO 8601; naive
ones are read in the shop's timezone.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field

from csops.importers.base import FieldError, ParseEnv, Row, clean_text, parse_time, require


@dataclass
class Conversation:
    external_id: str
    channel: str | None
    order_ref: str | None
    kind: str | None
    created_at: str
    first_response_at: str | None
    resolved_at: str | None


@dataclass
class ConversationFormat:
    """A helpdesk export layout: which headers it needs and how a row becomes a Conversation."""

    name: str
    required: tuple[str, ...]
    parse_row: Callable[[Row, ParseEnv], Conversation]
    delimiter: str = ","
    quoting: int = csv.QUOTE_MINIMAL
    aliases: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None


def check_order(conv: Conversation) -> Conversation:
    """Responses cannot come before the conversation; a bad export is rejected, not stored."""
    if conv.first_response_at and conv.first_response_at < conv.created_at:
        raise FieldError("first_response_at", "before created_at", "a time after created_at")
    if conv.resolved_at and conv.resolved_at < conv.created_at:
        raise FieldError("resolved_at", "before created_at", "a time after created_at")
    return conv


def parse_row(row: Row, env: ParseEnv) -> Conversation:
    created = parse_time(row.get("created_at", ""), env, "created_at")
    if created is None:
        raise FieldError("created_at", "empty", "the time the customer wrote")
    return check_order(
        Conversation(
            external_id=require(row, "conversation_id"),
            channel=clean_text(row.get("channel"), 40),
            order_ref=clean_text(row.get("order_number"), 80),
            kind=clean_text(row.get("kind"), 40),
            created_at=created,
            first_response_at=parse_time(
                row.get("first_response_at", ""), env, "first_response_at"
            ),
            resolved_at=parse_time(row.get("resolved_at", ""), env, "resolved_at"),
        )
    )


SOURCE = ConversationFormat(
    name="conversations csv",
    required=("conversation_id", "channel", "created_at", "first_response_at", "resolved_at"),
    parse_row=parse_row,
)
