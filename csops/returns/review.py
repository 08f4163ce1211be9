"""Lines the policy sent to a person: list them, and record the person's decision.

``returns process`` sends a line to ``review`` with a code and a proposed outcome (the refund
the policy computed, exactly). A person then approves it (as proposed, or with an amount of
their own up to the line's value: the difference is recorded as the line's fee) or rejects it; the
decision is stored on the line (codes ``approved_by_person`` / ``rejected_by_person``, the
person's note), the customer's notice is queued in the same transaction (its own dedupe key,
so the earlier "we are reviewing it" notice does not block it), and the batch's refund file
is written again so the approved money shows up where the refunds are paid from.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from csops import db, timeutil
from csops.errors import NotFoundError, UsageError
from csops.model import to_minor
from csops.result import Result
from csops.returns.batch import COLUMNS, _amount, export_refunds, plan_notice, row_from_db

DECISIONS = ("approved", "rejected")
MONEY_COLUMNS = (
    "refund_minor",
    "fee_minor",
    "shipping_refund_minor",
    "item_minor",
    "discount_minor",
    "tax_minor",
)
# What a person's decision rewrites on the line (names are constants, never input).
DECIDED_COLUMNS = ("decision", "decision_code", "decision_note", "decided_at", *MONEY_COLUMNS)
PERSON_CODES = {"approved": "approved_by_person", "rejected": "rejected_by_person"}


def review_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every line waiting for a person, oldest request first."""
    return [
        row_from_db(r)
        for r in conn.execute(
            "SELECT * FROM return_lines WHERE decision = 'review' "
            "ORDER BY requested_at, batch_id, line_no, id"
        )
    ]


def _line(conn: sqlite3.Connection, return_ref: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM return_lines WHERE return_ref = ?", (return_ref,)).fetchone()
    if row is None:
        raise NotFoundError(
            f"no return line {return_ref!r}", expected="a return id listed by `returns review`"
        )
    if row["decision"] != "review":
        raise UsageError(
            f"return {return_ref} was already decided: {row['decision']} ({row['decision_code']})",
            expected="a line waiting in review (`returns review`)",
        )
    return row


def _person_refund(proposal: sqlite3.Row, amount: str) -> tuple[int, int]:
    """(refund, fee) in minor units for a person's amount: at most the line's gross value;
    what is kept back is recorded as the line's fee, so the parts still add up exactly."""
    currency = proposal["currency"]
    if not currency:
        raise UsageError("this line has no currency (no known order): no amount can be set")
    gross = (
        proposal["item_minor"]
        - proposal["discount_minor"]
        + proposal["tax_minor"]
        + proposal["shipping_refund_minor"]
    )
    expected = f"an amount in {currency} from 0 to {_amount(gross, currency)} (the line's value)"
    try:
        refund = to_minor(amount, currency)
    except ValueError as exc:
        raise UsageError(f"--refund {amount!r}: {exc}", expected=expected) from None
    if not 0 <= refund <= gross:
        raise UsageError(f"--refund {amount} is outside what the line is worth", expected=expected)
    return refund, gross - refund


def decide(
    ctx: Any, return_ref: str, decision: str, note: str | None, refund: str | None = None
) -> Result:
    """Approve (the proposed refund, or ``refund``) or reject one line in review."""
    if decision not in DECISIONS:
        raise UsageError(f"unknown decision {decision!r}", expected="approved or rejected")
    if refund is not None and decision != "approved":
        raise UsageError("--refund goes with --approve", expected="--approve --refund AMOUNT")
    if decision == "rejected" and not (note or "").strip():
        raise UsageError(
            "a rejection needs --note: the customer is told why",
            expected='--note "the photos show wear beyond normal use"',
        )
    conn: sqlite3.Connection = ctx.conn
    config = ctx.config
    policy = config.section("returns")
    now = ctx.now
    result = Result("returns decide", columns=list(COLUMNS))
    proposal = _line(conn, return_ref)
    record = dict(proposal)
    record.update(
        decision=decision,
        decision_code=PERSON_CODES[decision],
        decision_note=(note or "").strip()
        or f"approved by a person after review ({proposal['decision_code']})",
        decided_at=timeutil.iso(now),
    )
    if refund is not None:
        record["refund_minor"], record["fee_minor"] = _person_refund(proposal, refund)
    if decision == "rejected":
        record.update(dict.fromkeys(MONEY_COLUMNS, 0))
    if ctx.dry_run:
        result.rows = [row_from_db(record)]
        result.count("would_approve" if decision == "approved" else "would_reject")
        return result
    order_row = None
    if proposal["order_id"] is not None:
        order_row = conn.execute(
            "SELECT * FROM orders WHERE id = ?", (proposal["order_id"],)
        ).fetchone()
    with db.write(conn):
        _line(conn, return_ref)  # still in review now that this run holds the write lock
        conn.execute(
            f"UPDATE return_lines SET {', '.join(f'{c} = ?' for c in DECIDED_COLUMNS)} "
            "WHERE id = ?",
            (*(record[c] for c in DECIDED_COLUMNS), proposal["id"]),
        )
        outbox_id = plan_notice(
            conn, config, policy, record, order_row, now, key=f"{return_ref}:{decision}"
        )
        if outbox_id is not None:
            conn.execute(
                "UPDATE return_lines SET outbox_id = ? WHERE id = ?", (outbox_id, proposal["id"])
            )
            result.count("notices_queued")
    result.count(decision)
    if decision == "approved" and proposal["batch_id"] is not None:
        for path in export_refunds(conn, config, proposal["batch_id"]):
            result.messages.append(f"refund file written again: {path}")
    stored = conn.execute("SELECT * FROM return_lines WHERE id = ?", (proposal["id"],)).fetchone()
    result.rows = [row_from_db(stored)]
    return result
