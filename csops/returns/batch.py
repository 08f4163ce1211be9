"""``returns process``: read a batch, decide every line, persist, export refunds, queue notices.

The flow is read → decide → persist → act, in file order:

* A batch is known by the SHA-256 of its bytes (``return_batches.file_sha256``). A file seen
  before and completed decides nothing and says so; one whose run was killed resumes where it
  stopped, and the lines it had already decided come back unchanged.
* Lines are decided and written in short ``BEGIN IMMEDIATE`` chunks. Each line's facts (what was
  already returned, the customer's recent returns) are read inside the chunk's transaction, so
  earlier lines of the same batch count exactly as earlier batches do, and a re-run after a kill
  decides the remaining lines exactly as an uninterrupted run would have.
* A customer notice is planned through the outbox in the same transaction as its decision (its
  ``dedupe_key`` is the return id), so it is queued exactly once.
* Files (decisions ``--out``, refund exports, rejects) are written to a temporary name and
  renamed: they are either absent or complete, never truncated.
* ``--dry-run`` decides in memory against the database as it is and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from csops import db as dbmod
from csops import registry, timeutil
from csops.csvio import SafeCsvWriter
from csops.errors import ConfigError
from csops.inputs import open_input
from csops.model import format_money
from csops.result import Reject, Result
from csops.returns.formats import ReturnFormat, Skipped
from csops.returns.policy import (
    Decision,
    History,
    OrderFacts,
    PriorDecision,
    ReturnRequest,
    decide_line,
)
from csops.returns.refunds import ItemFacts
from csops.returns.settings import ReturnPolicy

CHUNK = 200
DECIDING = ("approved", "review")  # lines that hold units, refunds and shipping back
COLUMNS = [
    "line",
    "return_id",
    "order_number",
    "sku",
    "quantity",
    "resolution",
    "reason_code",
    "reason_text",
    "decision",
    "code",
    "note",
    "currency",
    "refund",
    "refund_minor",
    "item_minor",
    "discount_minor",
    "tax_minor",
    "shipping_minor",
    "fee_minor",
    "days_since_delivery",
    "return_shipping",
    "batch_id",
]
EXPORT_COLUMNS = [
    "batch_id",
    "return_id",
    "platform",
    "order_number",
    "order_external_id",
    "sku",
    "quantity",
    "method",
    "refund_amount",
    "refund_minor",
    "currency",
    "item_minor",
    "discount_minor",
    "tax_minor",
    "shipping_minor",
    "fee_minor",
    "reason_code",
    "decided_at",
]
NOTICE_TEMPLATES = {
    "approved": "return_approved",
    "rejected": "return_rejected",
    "review": "return_review",
}


@dataclass
class BatchRequest:
    """What the command asked for."""

    path: str
    format_name: str = "csv"
    out: str | None = None
    out_format: str = "csv"  # csv or json, for --out
    stdin: IO[bytes] | None = None
    send: bool = False  # hand the queued return notices over right away


@dataclass
class _State:
    batch_id: int | None = None
    resumed: bool = False
    seen: dict[str, int] = field(default_factory=dict)  # return ref -> first line
    pending: list[dict[str, Any]] = field(default_factory=list)  # dry run: undecided in DB


# --- reading ------------------------------------------------------------------------------


def _spool_input(req: BatchRequest) -> tuple[IO[bytes], str, str]:
    """The batch as a seekable binary file, its display name and its SHA-256."""
    fh, name = open_input(req.path, req.stdin)
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
    fh.seek(0)
    return fh, name, digest.hexdigest()


# --- loading facts ------------------------------------------------------------------------


def _dt(value: str | None) -> datetime | None:
    return timeutil.from_iso(value) if value else None


def find_order(
    conn: sqlite3.Connection, ref: str, platform: str | None
) -> tuple[sqlite3.Row | None, str | None]:
    """The order a batch line names (by number, then external id); or why none is chosen."""
    ref = ref.strip()
    candidates = [ref]
    if ref.startswith("#"):
        candidates.append(ref[1:])
    else:
        candidates.append("#" + ref)
    for column in ("number", "external_id"):
        for value in candidates:
            rows = conn.execute(f"SELECT * FROM orders WHERE {column} = ?", (value,)).fetchall()
            if platform and len(rows) > 1:
                rows = [r for r in rows if r["platform"] == platform] or rows
            if len(rows) == 1:
                return rows[0], None
            if len(rows) > 1:
                platforms = ", ".join(sorted({r["platform"] for r in rows}))
                return None, f"{ref!r} matches {len(rows)} orders ({platforms})"
    return None, None


def load_order(conn: sqlite3.Connection, row: sqlite3.Row) -> OrderFacts:
    items = tuple(
        ItemFacts(
            line_no=i["line_no"],
            sku=i["sku"],
            name=i["name"],
            quantity=int(i["quantity"]),
            unit_price_minor=int(i["unit_price_minor"]),
            total_minor=int(i["total_minor"]),
        )
        for i in conn.execute(
            "SELECT line_no, sku, name, quantity, unit_price_minor, total_minor "
            "FROM order_items WHERE order_id = ? ORDER BY line_no",
            (row["id"],),
        )
    )
    tags = tuple(t.strip().lower() for t in (row["tags"] or "").split(",") if t.strip())
    if row["customer_id"] is not None:
        customer_key = f"id:{row['customer_id']}"
    elif row["email"]:
        customer_key = f"email:{row['email'].strip().lower()}"
    else:
        customer_key = None
    return OrderFacts(
        id=row["id"],
        number=row["number"],
        platform=row["platform"],
        status=row["status"],
        currency=row["currency"],
        items=items,
        customer_key=customer_key,
        tags=tags,
        shipped_at=_dt(row["shipped_at"]),
        delivered_at=_dt(row["delivered_at"]),
        cancelled_at=_dt(row["cancelled_at"]),
        shipping_minor=int(row["shipping_minor"] or 0),
        discount_minor=int(row["discount_minor"] or 0),
        tax_minor=int(row["tax_minor"] or 0),
        total_minor=int(row["total_minor"] or 0),
        refunded_minor=int(row["refunded_minor"] or 0),
    )


def load_history(
    conn: sqlite3.Connection,
    order: OrderFacts,
    requested_at: datetime,
    policy: ReturnPolicy,
    pending: list[dict[str, Any]],
) -> History:
    """What earlier lines (stored, plus ``pending`` ones of a dry run) already took back."""
    returned: dict[str, int] = {}
    shipping = False
    refunded = 0
    for r in conn.execute(
        "SELECT sku, quantity, refund_minor, shipping_refund_minor FROM return_lines "
        "WHERE order_id = ? AND decision IN ('approved', 'review')",
        (order.id,),
    ):
        returned[r["sku"]] = returned.get(r["sku"], 0) + int(r["quantity"])
        shipping = shipping or int(r["shipping_refund_minor"]) > 0
        refunded += int(r["refund_minor"])
    since = timeutil.iso(requested_at - timedelta(days=policy.frequent_window_days))
    until = timeutil.iso(requested_at)
    customer_returns = 0
    if order.customer_key:
        kind, _, value = order.customer_key.partition(":")
        where = "o.customer_id = ?" if kind == "id" else "lower(o.email) = ?"
        customer_returns = conn.execute(
            "SELECT COUNT(*) FROM return_lines rl JOIN orders o ON o.id = rl.order_id "
            f"WHERE {where} AND rl.decision IN ('approved', 'review') "
            "AND rl.requested_at >= ? AND rl.requested_at <= ?",
            (int(value) if kind == "id" else value, since, until),
        ).fetchone()[0]
    for p in pending:
        if p["decision"] not in DECIDING:
            continue
        if p["order_id"] == order.id:
            returned[p["sku"]] = returned.get(p["sku"], 0) + p["quantity"]
            shipping = shipping or p["shipping_refund_minor"] > 0
            refunded += p["refund_minor"]
        if (
            order.customer_key
            and p["customer_key"] == order.customer_key
            and since <= p["requested_at"] <= until
        ):
            customer_returns += 1
    return History(
        returned_by_sku=returned,
        shipping_refunded=shipping,
        refunded_minor=refunded,
        customer_returns=int(customer_returns),
    )


def _prior(conn: sqlite3.Connection, ref: str) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT rl.*, o.number AS order_number FROM return_lines rl "
        "LEFT JOIN orders o ON o.id = rl.order_id WHERE rl.return_ref = ?",
        (ref,),
    ).fetchone()


# --- rows ---------------------------------------------------------------------------------


def _amount(minor: int, currency: str | None) -> str:
    if not currency:
        return ""
    return format_money(minor, currency, symbol=False).rsplit(" ", 1)[0].replace(",", "")


def row_from_db(r: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    """A decisions row from a stored ``return_lines`` row."""
    return {
        "line": r["line_no"],
        "return_id": r["return_ref"],
        "order_number": r["order_ref"],
        "sku": r["sku"],
        "quantity": r["quantity"],
        "resolution": r["resolution"],
        "reason_code": r["reason_code"],
        "reason_text": r["reason_text"],
        "decision": r["decision"],
        "code": r["decision_code"],
        "note": r["decision_note"],
        "currency": r["currency"],
        "refund": _amount(r["refund_minor"], r["currency"]),
        "refund_minor": r["refund_minor"],
        "item_minor": r["item_minor"],
        "discount_minor": r["discount_minor"],
        "tax_minor": r["tax_minor"],
        "shipping_minor": r["shipping_refund_minor"],
        "fee_minor": r["fee_minor"],
        "days_since_delivery": r["days_since_delivery"],
        "return_shipping": r["return_shipping"],
        "batch_id": r["batch_id"],
    }


def _line_record(
    request: ReturnRequest,
    decision: Decision,
    order: OrderFacts | None,
    batch_id: int | None,
    decided_at: str,
) -> dict[str, Any]:
    parts = decision.refund
    return {
        "batch_id": batch_id,
        "line_no": request.line_no,
        "return_ref": request.return_ref,
        "order_id": order.id if order else None,
        "order_ref": request.order_ref,
        "sku": decision.sku or request.sku,
        "quantity": decision.quantity,
        "reason_code": request.reason_code,
        "reason_text": request.reason_text,
        "item_condition": request.condition,
        "requested_at": timeutil.iso(request.requested_at) if request.requested_at else None,
        "resolution": request.resolution,
        "decision": decision.decision,
        "decision_code": decision.code,
        "decision_note": decision.note,
        "currency": decision.currency or (order.currency if order else None),
        "refund_minor": parts.refund_minor,
        "fee_minor": parts.fee_minor,
        "shipping_refund_minor": parts.shipping_minor,
        "item_minor": parts.item_minor,
        "discount_minor": parts.discount_minor,
        "tax_minor": parts.tax_minor,
        "days_since_delivery": decision.days_since_delivery,
        "return_shipping": decision.return_shipping,
        "decided_at": decided_at,
    }


_DB_COLUMNS = [
    "batch_id",
    "line_no",
    "return_ref",
    "order_id",
    "order_ref",
    "sku",
    "quantity",
    "reason_code",
    "reason_text",
    "item_condition",
    "requested_at",
    "resolution",
    "decision",
    "decision_code",
    "decision_note",
    "currency",
    "refund_minor",
    "fee_minor",
    "shipping_refund_minor",
    "item_minor",
    "discount_minor",
    "tax_minor",
    "days_since_delivery",
    "return_shipping",
    "decided_at",
]


def _insert_line(conn: sqlite3.Connection, record: dict[str, Any]) -> int:
    cols = ", ".join(_DB_COLUMNS)
    marks = ", ".join("?" for _ in _DB_COLUMNS)
    cur = conn.execute(
        f"INSERT INTO return_lines ({cols}) VALUES ({marks})",
        [record[c] for c in _DB_COLUMNS],
    )
    return int(cur.lastrowid)


# --- notices ------------------------------------------------------------------------------


def notice_context(
    conn: sqlite3.Connection,
    config: Any,
    policy: ReturnPolicy,
    record: dict[str, Any],
    order_row: sqlite3.Row,
    customer: sqlite3.Row | None,
    now: datetime,
) -> dict[str, Any]:
    """The standard template variables (docs/messaging.md) plus ``return_line``."""
    items = [
        dict(i)
        for i in conn.execute(
            "SELECT line_no, sku, name, quantity, unit_price_minor, total_minor FROM order_items "
            "WHERE order_id = ? ORDER BY line_no",
            (order_row["id"],),
        )
    ]
    item_name = next((i["name"] for i in items if i["sku"] == record["sku"] and i["name"]), None)
    currency = record["currency"] or order_row["currency"]
    name = (customer["name"] if customer else None) or ""
    shop = config.shop
    return {
        "shop": {
            "name": shop.name,
            "email": shop.email,
            "base_url": shop.base_url,
            "currency": shop.currency,
        },
        "customer": {
            "id": order_row["customer_id"],
            "name": name,
            "first_name": name.split(" ")[0] if name else "",
            "email": (customer["email"] if customer else None) or order_row["email"],
            "locale": customer["locale"] if customer else None,
        },
        "order": {**dict(order_row), "return_decided_at": record["decided_at"]},
        "items": items,
        "return_line": {
            "id": record["return_ref"],
            "sku": record["sku"],
            "item_name": item_name or record["sku"] or "",
            "quantity": record["quantity"],
            "decision": record["decision"],
            "code": record["decision_code"],
            "note": record["decision_note"],
            "resolution": record["resolution"],
            "refund": format_money(record["refund_minor"], currency),
            "refund_minor": record["refund_minor"],
            "fee": format_money(record["fee_minor"], currency),
            "fee_minor": record["fee_minor"],
            "shipping_refund": format_money(record["shipping_refund_minor"], currency),
            "shipping_refund_minor": record["shipping_refund_minor"],
            "currency": currency,
            "return_shipping": record["return_shipping"] or "",
            "days_since_delivery": record["days_since_delivery"],
            "window_days": policy.window_days,
            "reason_code": record["reason_code"],
        },
        "rule": {"name": NOTICE_TEMPLATES[record["decision"]], "trigger": "return_decided"},
        "vars": {},
        "unsubscribe_url": "",  # transactional: no unsubscribe link
        "now": timeutil.iso(now),
    }


def plan_notice(
    conn: sqlite3.Connection,
    config: Any,
    policy: ReturnPolicy,
    record: dict[str, Any],
    order_row: sqlite3.Row | None,
    now: datetime,
    *,
    key: str | None = None,
) -> int | None:
    """Plan the customer's notice in the current transaction; the outbox id or None.

    Planned once per ``key`` (the return id for the batch's decision; a person's later
    decision on a line in review uses its own key)."""
    if order_row is None or record["decision"] not in policy.notify:
        return None
    from csops.messaging.outbox import NewMessage, enqueue, message_id_domain
    from csops.messaging.render import pick_locale, render_message

    customer = None
    if order_row["customer_id"] is not None:
        customer = conn.execute(
            "SELECT email, name, locale FROM customers WHERE id = ?", (order_row["customer_id"],)
        ).fetchone()
    recipient = (order_row["email"] or (customer["email"] if customer else None) or "").strip()
    if not recipient:
        return None
    locale = pick_locale(customer["locale"] if customer else None, config)
    context = notice_context(conn, config, policy, record, order_row, customer, now)
    template = NOTICE_TEMPLATES[record["decision"]]
    rendered = render_message(config, template, locale, context)
    msg = NewMessage(
        dedupe_key=f"return_notice:{key or record['return_ref']}",
        kind="return_notice",
        channel=notice_channel(config, policy),
        recipient=recipient,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
        rule=template,
        order_id=order_row["id"],
        customer_id=order_row["customer_id"],
        locale=rendered.locale,
        is_marketing=False,
        expires_at=timeutil.iso(now + timedelta(days=policy.notice_expires_days)),
    )
    return enqueue(conn, msg, now=now, domain=message_id_domain(config))


def notice_channel(config: Any, policy: ReturnPolicy) -> str:
    return policy.notice_channel or config.section("messaging").default_channel


# --- files --------------------------------------------------------------------------------


def write_atomic(path: Path, write: Any, *, encoding: str = "utf-8") -> Path:
    """Write through ``write(stream)`` to a temporary name, fsync, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_decisions(path: Path, rows: list[dict[str, Any]], fmt: str) -> Path:
    if fmt == "json":
        return write_atomic(
            path, lambda fh: fh.write(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
        )

    def csv_out(fh: IO[str]) -> None:
        SafeCsvWriter(fh, COLUMNS).write_all(rows)

    return write_atomic(path, csv_out)


def export_refunds(conn: sqlite3.Connection, config: Any, batch_id: int) -> list[Path]:
    """One refund file per platform for the batch's approved money-back lines."""
    rows = conn.execute(
        "SELECT rl.*, o.platform, o.number, o.external_id FROM return_lines rl "
        "JOIN orders o ON o.id = rl.order_id WHERE rl.batch_id = ? AND rl.decision = 'approved' "
        "AND rl.resolution IN ('refund', 'store_credit') ORDER BY rl.line_no, rl.id",
        (batch_id,),
    ).fetchall()
    by_platform: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_platform.setdefault(r["platform"], []).append(
            {
                "batch_id": batch_id,
                "return_id": r["return_ref"],
                "platform": r["platform"],
                "order_number": r["number"],
                "order_external_id": r["external_id"],
                "sku": r["sku"],
                "quantity": r["quantity"],
                "method": r["resolution"],
                "refund_amount": _amount(r["refund_minor"], r["currency"]),
                "refund_minor": r["refund_minor"],
                "currency": r["currency"],
                "item_minor": r["item_minor"],
                "discount_minor": r["discount_minor"],
                "tax_minor": r["tax_minor"],
                "shipping_minor": r["shipping_refund_minor"],
                "fee_minor": r["fee_minor"],
                "reason_code": r["reason_code"],
                "decided_at": r["decided_at"],
            }
        )
    folder = config.resolve(config.paths.exports_dir)
    written = []
    for platform, items in sorted(by_platform.items()):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in platform)
        path = folder / f"refunds-batch{batch_id}-{safe}.csv"
        # Chinese platforms' back offices and Excel there expect GB18030; others get UTF-8.
        encoding = "gb18030" if platform in ("taobao", "tmall", "jd", "pinduoduo") else "utf-8"
        written.append(
            write_atomic(
                path,
                lambda fh, items=items: SafeCsvWriter(fh, EXPORT_COLUMNS).write_all(items),
                encoding=encoding,
            )
        )
    return written


def write_rejects(config: Any, sha: str, rejects: list[Reject]) -> Path | None:
    if not rejects:
        return None
    path = config.resolve(config.paths.rejects_dir) / f"returns-{sha[:12]}.csv"
    cols = ["file", "line", "field", "expected", "message", "raw"]
    return write_atomic(
        path,
        lambda fh: SafeCsvWriter(fh, cols).write_all(
            {**r.as_dict(), "raw": r.raw} for r in rejects
        ),
    )


# --- the job ------------------------------------------------------------------------------


def _batch_rows(conn: sqlite3.Connection, batch_id: int) -> list[dict[str, Any]]:
    return [
        row_from_db(r)
        for r in conn.execute(
            "SELECT * FROM return_lines WHERE batch_id = ? ORDER BY line_no, id", (batch_id,)
        )
    ]


def _load_format(name: str) -> ReturnFormat:
    fmt = registry.load("return_formats", name)
    if not isinstance(fmt, ReturnFormat):
        raise ConfigError(f"return format {name!r} is not a ReturnFormat")
    return fmt


def _check_templates(ctx: Any, policy: ReturnPolicy) -> None:
    """Fail before deciding anything if a notice template or its channel is unusable."""
    if not policy.notify:
        return
    from csops.messaging.render import (
        TemplateError,
        render_message,
        sample_context,
        template_locales,
    )

    config = ctx.config
    channel = notice_channel(config, policy)
    if channel not in config.section("channels"):
        raise ConfigError(
            f"[returns] notice_channel {channel!r} is not a configured channel",
            file=str(config.path),
            field="returns.notice_channel",
            expected="a [channels.NAME] of the config",
        )
    for decision in policy.notify:
        name = NOTICE_TEMPLATES[decision]
        locales = template_locales(config, name)
        if not locales:
            raise ConfigError(
                f"no message template {name} for return notices",
                expected=f"templates/messages/{name}/<locale>.txt (docs/messaging.md), "
                "or leave the decision out of [returns] notify",
            )
        for locale in locales:
            try:
                render_message(config, name, locale, sample_context(config, name))
            except TemplateError as exc:
                raise ConfigError(
                    f"return notice template {name} ({locale}) does not render: {exc}",
                    expected="a template that renders with its sample.json (csops templates check)",
                ) from None


def process_batch(ctx: Any, req: BatchRequest) -> Result:
    """Decide one batch file (see the module docstring); returns the decisions as rows.

    With ``req.send``, the queued return notices are then handed over through the outbox
    (the same protocol as ``followups send``); a failed or unknown hand-over makes it partial.
    """
    result = _process(ctx, req)
    if req.send and not ctx.dry_run:
        from csops.messaging.outbox import deliver_into

        deliver_into(result, ctx, kinds={"return_notice"}, prefix="notices_")
    return result


def _process(ctx: Any, req: BatchRequest) -> Result:
    config = ctx.config
    policy: ReturnPolicy = config.section("returns")
    tz = ZoneInfo(config.shop.timezone)
    fmt = _load_format(req.format_name)
    result = Result("returns process", columns=list(COLUMNS))
    fh, name, sha = _spool_input(req)
    conn: sqlite3.Connection = ctx.conn
    now = ctx.now
    decided_at = timeutil.iso(now)
    with fh:
        batch = conn.execute(
            "SELECT * FROM return_batches WHERE file_sha256 = ?", (sha,)
        ).fetchone()
        if batch is not None and batch["completed_at"]:
            rows = _batch_rows(conn, batch["id"])
            result.rows = rows
            result.count("decided", 0)
            result.count("already_in_batch", len(rows))
            result.messages.append(
                f"{name}: this file (sha256 {sha[:12]}…) was already processed as batch "
                f"{batch['id']} on {batch['completed_at']}; nothing new decided"
            )
            if not ctx.dry_run:
                _finish_files(ctx, req, result, rows, batch["id"], only_missing=True)
            return result
        if policy.notify and not ctx.dry_run:
            _check_templates(ctx, policy)
        state = _State()
        if batch is not None:
            state.batch_id, state.resumed = batch["id"], True
            result.messages.append(
                f"{name}: resuming batch {batch['id']} (an earlier run stopped part-way)"
            )
        rows: list[dict[str, Any]] = []
        skipped = 0
        lines = fmt.read(fh, name, tz)
        for chunk in _chunks(lines, CHUNK):
            txn = nullcontext() if ctx.dry_run else dbmod.write(conn)
            with txn:
                if state.batch_id is None and not ctx.dry_run:
                    state.batch_id = int(
                        conn.execute(
                            "INSERT INTO return_batches (file_name, file_sha256, format, "
                            "processed_at) VALUES (?, ?, ?, ?)",
                            (Path(name).name, sha, fmt.name, decided_at),
                        ).lastrowid
                    )
                for item in chunk:
                    if isinstance(item, Reject):
                        result.reject(item)
                        continue
                    if isinstance(item, Skipped):
                        skipped += 1
                        result.messages.append(
                            f"{name}:{item.line_no}: refund {item.return_ref} skipped: {item.why}"
                        )
                        continue
                    row = _decide_one(ctx, policy, tz, fmt, item, state, result, name, now)
                    if row is not None:
                        rows.append(row)
        result.rows = rows
        if ctx.dry_run:
            result.messages.append(f"{name}: dry run: nothing written, no notices queued")
            return result
        if state.batch_id is None:  # an empty file: still remember it was seen
            with dbmod.write(conn):
                state.batch_id = int(
                    conn.execute(
                        "INSERT INTO return_batches (file_name, file_sha256, format, "
                        "processed_at) VALUES (?, ?, ?, ?)",
                        (Path(name).name, sha, fmt.name, decided_at),
                    ).lastrowid
                )
        rejects_path = write_rejects(config, sha, result.rejects)
        _finish_files(ctx, req, result, rows, state.batch_id, only_missing=False, write_out=False)
        with dbmod.write(conn):
            count = conn.execute(
                "SELECT COUNT(*) FROM return_lines WHERE batch_id = ?", (state.batch_id,)
            ).fetchone()[0]
            conn.execute(
                "UPDATE return_batches SET completed_at = ?, line_count = ?, rejected_count = ?, "
                "skipped_count = ? WHERE id = ?",
                (decided_at, count, len(result.rejects), skipped, state.batch_id),
            )
            for r in result.rejects:
                conn.execute(
                    "INSERT INTO rejects (run_id, job, source, file, line, field, expected, "
                    "message, raw, created_at) VALUES (?, 'returns', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ctx.run_id,
                        fmt.name,
                        r.file,
                        r.line,
                        r.field,
                        r.expected,
                        r.message,
                        r.raw,
                        decided_at,
                    ),
                )
        if rejects_path:
            result.messages.append(f"rejected lines: {rejects_path}")
        if req.out:
            write_decisions(Path(req.out), rows, req.out_format)
            result.messages.append(f"decisions: {req.out}")
        if skipped:
            result.count("skipped", skipped)
        result.messages.append(
            f"{name}: batch {state.batch_id}: " + _summary_counts(rows, result.rejects)
        )
    return result


def _summary_counts(rows: list[dict[str, Any]], rejects: list[Reject]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["decision"]] = counts.get(r["decision"], 0) + 1
    parts = [f"{k}={v}" for k, v in sorted(counts.items())]
    if rejects:
        parts.append(f"bad lines={len(rejects)}")
    return " ".join(parts) or "no lines"


def _finish_files(
    ctx: Any,
    req: BatchRequest,
    result: Result,
    rows: list[dict[str, Any]],
    batch_id: int,
    *,
    only_missing: bool,
    write_out: bool = True,
) -> None:
    folder = ctx.config.resolve(ctx.config.paths.exports_dir)
    if not only_missing or not any(folder.glob(f"refunds-batch{batch_id}-*.csv")):
        for path in export_refunds(ctx.conn, ctx.config, batch_id):
            result.messages.append(f"refund export: {path}")
    if write_out and req.out:
        write_decisions(Path(req.out), rows, req.out_format)
        result.messages.append(f"decisions: {req.out}")


def _decide_one(
    ctx: Any,
    policy: ReturnPolicy,
    tz: ZoneInfo,
    fmt: ReturnFormat,
    request: ReturnRequest,
    state: _State,
    result: Result,
    name: str,
    now: datetime,
) -> dict[str, Any] | None:
    conn = ctx.conn
    ref = request.return_ref
    first = state.seen.get(ref)
    if first is not None:
        result.reject(
            Reject(
                f"return id {ref} already appears on line {first}",
                file=name,
                line=request.line_no,
                field="return_id",
                expected="each return id once per file",
            )
        )
        return None
    state.seen[ref] = request.line_no or 0
    if request.requested_at is not None and request.requested_at > now + timedelta(days=1):
        result.reject(
            Reject(
                f"requested_at {timeutil.iso(request.requested_at)} is in the future",
                file=name,
                line=request.line_no,
                field="requested_at",
                expected=f"a time before now ({timeutil.iso(now)})",
            )
        )
        return None
    prior = _prior(conn, ref)
    if prior is not None:
        if state.batch_id is not None and prior["batch_id"] == state.batch_id:
            result.count("resumed")
            return row_from_db(prior)  # decided by this batch in a run that was killed
        result.count("already_decided")
        decision = decide_line(
            request,
            None,
            History(
                prior=PriorDecision(
                    prior["decision"],
                    prior["decision_code"],
                    prior["batch_id"],
                    prior["decided_at"],
                    prior["refund_minor"],
                )
            ),
            policy,
            tz=tz,
            now=now,
        )
        row = row_from_db(
            {
                **dict(prior),
                "line_no": request.line_no,
                "decision_code": decision.code,
                "decision_note": decision.note,
                "refund_minor": 0,
                "fee_minor": 0,
                "shipping_refund_minor": 0,
                "item_minor": 0,
                "discount_minor": 0,
                "tax_minor": 0,
            }
        )
        return row
    order_row, problem = find_order(conn, request.order_ref, fmt.platform)
    if problem:
        result.reject(
            Reject(
                problem,
                file=name,
                line=request.line_no,
                field="order_number",
                expected="a number that names one order",
            )
        )
        return None
    order = load_order(conn, order_row) if order_row is not None else None
    requested_at = request.requested_at or now
    history = load_history(conn, order, requested_at, policy, state.pending) if order else History()
    decision = decide_line(request, order, history, policy, tz=tz, now=now)
    record = _line_record(request, decision, order, state.batch_id, timeutil.iso(now))
    if record["requested_at"] is None:
        record["requested_at"] = timeutil.iso(requested_at)
    result.count(decision.decision)
    if ctx.dry_run:
        state.pending.append({**record, "customer_key": order.customer_key if order else None})
        return row_from_db(record)
    line_id = _insert_line(conn, record)
    outbox_id = plan_notice(conn, ctx.config, policy, record, order_row, now)
    if outbox_id is not None:
        conn.execute("UPDATE return_lines SET outbox_id = ? WHERE id = ?", (outbox_id, line_id))
        result.count("notices_queued")
    return row_from_db(record)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
