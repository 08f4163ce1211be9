"""The durable outbox: plan a message once, claim it in one run, hand it over, record the outcome.

States: ``queued → sending → sent | failed | unknown | suppressed``. A message is planned with a
unique ``dedupe_key`` inside the caller's transaction (:func:`enqueue`); :func:`deliver` claims
due rows one at a time (``BEGIN IMMEDIATE``; ``UPDATE … WHERE state='queued'``), re-checks
suppression, expiry, quiet hours, the frequency cap and the channel's rate limit *at send
time*, hands the message to its channel outside any transaction, then commits the outcome.
A run killed in between leaves a ``sending`` row that the next run settles from its journaled
reply (``outbox_outcomes``), or turns into ``unknown`` (when the channel recorded
``handed_over_at``) or back into ``queued``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time as _time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from csops import db as dbmod
from csops.errors import NotFoundError, RemoteAuthError, UsageError
from csops.timeutil import iso, parse_duration, parse_instant

STATES = ("queued", "sending", "sent", "failed", "unknown", "suppressed")
TERMINAL = ("sent", "failed", "unknown", "suppressed")


@dataclass
class NewMessage:
    """A message to plan. ``dedupe_key`` is unique forever: planning it twice is a no-op."""

    dedupe_key: str
    kind: str
    channel: str
    recipient: str
    subject: str
    body_text: str
    body_html: str | None = None
    rule: str | None = None
    order_id: int | None = None
    customer_id: int | None = None
    locale: str | None = None
    is_marketing: bool = False
    not_before: str | None = None
    expires_at: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def message_id_domain(config: Any) -> str:
    """The right-hand side of our Message-IDs: ``[messaging] message_id_domain``, else the shop's
    sender domain — one for every kind of message, so receivers see one sender."""
    settings = config.section("messaging")
    return settings.message_id_domain or config.shop.email.rpartition("@")[2] or "csops.local"


def new_message_id(now: datetime, domain: str = "csops.local") -> str:
    return f"<{now:%Y%m%d%H%M%S}.{uuid.uuid4().hex[:20]}@{domain or 'csops.local'}>"


def enqueue(
    conn: sqlite3.Connection,
    msg: NewMessage,
    *,
    now: datetime,
    domain: str = "csops.local",
    state: str = "queued",
    last_error: str | None = None,
) -> int | None:
    """Plan ``msg`` inside the caller's ``db.write()`` transaction; None if its key exists.

    The Message-ID is fixed here and reused on every attempt, so a receiver that dedupes can
    absorb an operator's retry.
    """
    if not conn.in_transaction:
        raise RuntimeError("enqueue() must run inside db.write(conn)")
    cur = conn.execute(
        "INSERT OR IGNORE INTO outbox (dedupe_key, message_id, kind, rule, is_marketing, "
        "order_id, customer_id, channel, recipient, locale, subject, body_text, body_html, "
        "headers_json, state, attempts, next_attempt_at, expires_at, last_error, queued_at, "
        "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?,?)",
        (
            msg.dedupe_key,
            new_message_id(now, domain),
            msg.kind,
            msg.rule,
            int(msg.is_marketing),
            msg.order_id,
            msg.customer_id,
            msg.channel,
            msg.recipient,
            msg.locale,
            msg.subject,
            msg.body_text,
            msg.body_html,
            json.dumps(msg.headers, ensure_ascii=False) if msg.headers else None,
            state,
            msg.not_before or iso(now),
            msg.expires_at,
            last_error,
            iso(now),
            iso(now),
        ),
    )
    return cur.lastrowid if cur.rowcount == 1 else None


@dataclass
class DeliveryReport:
    """What one delivery pass did; ``partial`` (exit 3) if anything failed or stayed unknown."""

    counts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    breaker_tripped: bool = False
    _rows: list[dict[str, Any]] = field(default_factory=list)
    _unformatted: list[tuple[sqlite3.Row, str, str | None]] = field(default_factory=list)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def add_row(self, row: sqlite3.Row, state: str, error: str | None) -> None:
        """Note a settled row; formatted for output only when read (off the send path)."""
        self._unformatted.append((row, state, error))

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._unformatted:
            self._rows.extend(_row_out(*r) for r in self._unformatted)
            self._unformatted.clear()
        return self._rows

    @property
    def partial(self) -> bool:
        return bool(self.breaker_tripped or self.counts.get("failed") or self.counts.get("unknown"))


# --------------------------------------------------------------------------- helpers


def _channel_objects(config: Any) -> tuple[dict[str, Any], Callable[[str], Any]]:
    """A lazy name → channel instance cache."""
    from csops.messaging.settings import channel_table
    from csops.registry import load

    table = channel_table(config)
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            settings = table.get(name)
            if settings is None:
                cache[name] = None
            else:
                cls = load("channels", settings.type)
                ch = cls(name, settings, config)
                ch.rate_per_minute = getattr(settings, "rate_per_minute", 0)
                ch.channel_type = settings.type
                ch.cleanup()
                ch.open()
                cache[name] = ch
        return cache[name]

    return cache, get


def recover(ctx: Any, get_channel: Callable[[str], Any], report: DeliveryReport) -> None:
    """Settle ``sending`` rows left by runs that are gone (killed, crashed)."""
    from csops.messaging.channels.base import Outcome, OutMessage

    conn = ctx.conn
    settings = ctx.config.section("messaging")
    rows = conn.execute(
        "SELECT o.*, r.pid AS run_pid, r.finished_at AS run_finished, j.kind AS j_kind, "
        "j.code AS j_code, j.text AS j_text, j.retry_after AS j_retry, j.at AS j_at "
        "FROM outbox o LEFT JOIN runs r ON r.run_id = o.claimed_by "
        "LEFT JOIN outbox_outcomes j ON j.outbox_id = o.id WHERE o.state = 'sending'"
    ).fetchall()
    now = iso(ctx.now)
    for row in rows:
        if row["claimed_by"] == ctx.run_id:
            continue
        alive = row["run_pid"] is not None and row["run_finished"] is None
        if alive and dbmod.pid_alive(row["run_pid"]) and row["run_pid"] != os.getpid():
            continue
        if row["j_kind"] is not None:  # the reply was heard and journaled: apply it
            heard = Outcome(row["j_kind"], row["j_code"] or "", row["j_text"] or "", row["j_retry"])
            with dbmod.write(conn):
                # Applied and deleted in one transaction: a row still here is still owed
                # (another run recovering at the same time may have taken it already).
                if conn.execute(
                    "DELETE FROM outbox_outcomes WHERE outbox_id = ? RETURNING outbox_id",
                    (row["id"],),
                ).fetchone():
                    _apply_outcome(
                        conn, row, row["attempts"], heard, parse_instant(row["j_at"]), settings,
                        report,
                    )  # fmt: skip
                    report.count("recovered_journal")
            continue
        handed = row["handed_over_at"] is not None
        verdict = None
        ch = get_channel(row["channel"])
        if ch is not None:
            verdict = ch.recover(OutMessage.from_row(row), handed)
        if verdict is None:
            verdict = "unknown" if handed else "transient"
        with dbmod.write(conn):
            if verdict == "sent":
                conn.execute(
                    "UPDATE outbox SET state='sent', sent_at=?, updated_at=?, last_error=NULL "
                    "WHERE id=? AND state='sending'",
                    (now, now, row["id"]),
                )
                report.count("recovered_sent")
            elif verdict == "unknown":
                conn.execute(
                    "UPDATE outbox SET state='unknown', updated_at=?, last_error=? "
                    "WHERE id=? AND state='sending'",
                    (now, "run died after hand-over: outcome unknown", row["id"]),
                )
                report.count("recovered_unknown")
                report.count("unknown")
            else:
                conn.execute(
                    "UPDATE outbox SET state='queued', handed_over_at=NULL, updated_at=?, "
                    "next_attempt_at=? WHERE id=? AND state='sending'",
                    (now, now, row["id"]),
                )
                report.count("recovered_queued")
    if any(k.startswith("recovered_") for k in report.counts):
        report.messages.append(
            "recovered rows left 'sending' by a dead run: "
            f"{report.counts.get('recovered_unknown', 0)} unknown, "
            f"{report.counts.get('recovered_queued', 0)} queued again, "
            f"{report.counts.get('recovered_sent', 0)} sent, "
            f"{report.counts.get('recovered_journal', 0)} settled from their recorded reply"
        )
    # Journal rows whose message is no longer in flight (settled by hand meanwhile).
    if conn.execute("SELECT 1 FROM outbox_outcomes LIMIT 1").fetchone():
        with dbmod.write(conn):
            conn.execute(
                "DELETE FROM outbox_outcomes WHERE outbox_id NOT IN "
                "(SELECT id FROM outbox WHERE state = 'sending')"
            )


def _in_quiet_hours(settings: Any, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The UTC end of the quiet window if ``now`` is inside it, else None."""
    window = settings.quiet_window()
    if window is None:
        return None
    start, end = window
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    if start == end:
        return None
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    end_dt = datetime.combine(local.date(), end, tzinfo=tz)
    if end_dt <= local:
        end_dt = datetime.combine(local.date() + timedelta(days=1), end, tzinfo=tz)
    return end_dt.astimezone(ZoneInfo("UTC"))


def _suppression(
    conn: sqlite3.Connection, row: sqlite3.Row, known: _OptOuts | None = None
) -> str | None:
    """``opted_out`` / ``unsubscribed`` if the customer or the address said stop, else None."""
    from csops.customers import normalize_address

    try:
        key: tuple[str, str] | None = normalize_address(row["recipient"])
    except Exception:
        key = None
    if known is not None and known.valid():
        opted = row["customer_id"] in known.opted
        scope = known.scopes.get(key) if key else None
    else:
        opted = False
        if row["customer_id"] is not None:
            c = conn.execute(
                "SELECT opted_out_at FROM customers WHERE id = ?", (row["customer_id"],)
            ).fetchone()
            opted = bool(c is not None and c["opted_out_at"])
        scope = None
        if key is not None and not opted:
            s = conn.execute(
                "SELECT scope FROM suppressions WHERE address = ? AND channel = ?", key
            ).fetchone()
            scope = s["scope"] if s is not None else None
    if opted or scope == "all":
        return "opted_out"
    if scope is not None and row["is_marketing"]:
        return "unsubscribed"
    return None


class _OptOuts:
    """The opt-outs and suppressions of one batch's recipients, read before its claims.

    Each claim transaction still decides on the database's current answer, cheaply: delivery
    never writes these tables, so if no other connection has committed since the batch was read
    (``PRAGMA data_version`` unchanged) the batch's answer is the current one; otherwise
    :func:`_suppression` asks the database again, inside the claim transaction.
    """

    def __init__(self, conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> None:
        from csops.customers import normalize_address

        self.conn = conn
        self.version = self._version()
        ids = sorted({r["customer_id"] for r in rows if r["customer_id"] is not None})
        keys: set[tuple[str, str]] = set()
        for r in rows:
            with contextlib.suppress(Exception):
                keys.add(normalize_address(r["recipient"]))
        self.opted: set[int] = set()
        self.scopes: dict[tuple[str, str], str] = {}
        for part in _chunks(ids):
            self.opted.update(
                c["id"]
                for c in conn.execute(
                    f"SELECT id, opted_out_at FROM customers WHERE id IN ({_marks(part)})", part
                )
                if c["opted_out_at"]
            )
        addresses = sorted({a for a, _ in keys})
        for part in _chunks(addresses):
            for s in conn.execute(
                "SELECT address, channel, scope FROM suppressions "
                f"WHERE address IN ({_marks(part)})",
                part,
            ):
                self.scopes[(s["address"], s["channel"])] = s["scope"]

    def _version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def valid(self) -> bool:
        return self._version() == self.version


def _chunks(values: list[Any], size: int = 500) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _marks(values: list[Any]) -> str:
    return ",".join("?" * len(values))


def _cap_until(conn: sqlite3.Connection, row: sqlite3.Row, settings: Any, now: datetime):
    """When the customer's frequency cap opens again, or None if not capped now."""
    if (
        row["customer_id"] is None
        or row["kind"] in settings.cap_exempt_kinds
        or (row["rule"] is not None and row["rule"] in settings.cap_exempt_rules)
    ):
        return None
    period = parse_duration(settings.cap_period)
    if period.total_seconds() <= 0:
        return None
    since = iso(now - period)
    exempt = list(settings.cap_exempt_kinds) or [""]
    rules = list(settings.cap_exempt_rules) or [""]
    recent = conn.execute(
        "SELECT COALESCE(sent_at, claimed_at) AS at FROM outbox WHERE customer_id = ? "
        "AND state IN ('sent','sending','unknown') AND id != ? "
        f"AND kind NOT IN ({_marks(exempt)}) AND COALESCE(rule, '') NOT IN ({_marks(rules)}) "
        "AND COALESCE(sent_at, claimed_at) > ? ORDER BY at",
        (row["customer_id"], row["id"], *exempt, *rules, since),
    ).fetchall()
    if len(recent) < settings.cap_messages:
        return None
    return parse_instant(recent[0]["at"]) + period


def _rate_until(conn: sqlite3.Connection, channel: str, per_minute: int, now: datetime):
    if not per_minute:
        return None
    since = iso(now - timedelta(seconds=60))
    rows = conn.execute(
        "SELECT COALESCE(handed_over_at, sent_at) AS at FROM outbox WHERE channel = ? "
        "AND sent_at > ? AND state IN ('sent','unknown') "
        "UNION ALL SELECT COALESCE(handed_over_at, claimed_at) FROM outbox WHERE channel = ? "
        "AND state = 'sending' AND claimed_at > ? ORDER BY 1",
        (channel, since, channel, since),
    ).fetchall()
    if len(rows) < per_minute:
        return None
    return parse_instant(rows[0]["at"]) + timedelta(seconds=60)


def _unsubscribe_headers(config: Any, recipient: str) -> dict[str, str]:
    from csops.tokens import unsubscribe_url

    url = unsubscribe_url(config, recipient)
    return {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


# --------------------------------------------------------------------------- deliver


def _due_sql(kinds: set[str] | None, rules: set[str] | None) -> tuple[str, list[Any]]:
    """Filters beyond state and time (kinds, rules) as SQL and parameters."""
    where: list[str] = []
    params: list[Any] = []
    if kinds:
        where.append(f"kind IN ({','.join('?' * len(kinds))})")
        params += sorted(kinds)
    if rules:
        where.append(f"rule IN ({','.join('?' * len(rules))})")
        params += sorted(rules)
    return "".join(f" AND {w}" for w in where), params


def _due_batch(
    conn: sqlite3.Connection, now: str, extra: str, params: list[Any], size: int = 200
) -> list[sqlite3.Row]:
    """The next due queued rows, oldest first (an index range scan on idx_outbox_state).

    Read outside any transaction: each row is re-checked by the guarded claim, so a row
    another run took or deferred meanwhile is simply skipped.
    """
    return conn.execute(
        f"SELECT * FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?{extra} "
        f"ORDER BY next_attempt_at, id LIMIT {int(size)}",
        (now, *params),
    ).fetchall()


_DONE = object()


@dataclass
class _Claimed:
    """A row this run holds as ``sending``: the message and the channel that will carry it."""

    row: sqlite3.Row
    attempts: int
    msg: Any = None
    channel: Any = None


def deliver(
    ctx: Any,
    *,
    kinds: set[str] | None = None,
    limit: int | None = None,
    rules: set[str] | None = None,
    background: Iterator[Any] | None = None,
) -> DeliveryReport:
    """Deliver due queued messages one at a time; see the module docstring for the protocol.

    ``background`` is other work cut in steps (planning: ``rules.plan_steps``) that runs in
    the channel's waits and always to its end; a step yielding a true value has queued new
    messages, which this pass then delivers too.

    Commits per message, in order: the *claim* (send-time checks + guarded UPDATE), the
    *hand-over mark* before the body, the *reply* before the next exchange starts. A channel
    that waits for replies (``overlaps_reply``: SMTP) calls ``idle`` while each reply is due;
    the claim and preparation of the next message, then background work, run in those waits,
    and the reply is journaled as one small ``outbox_outcomes`` row, applied by the next claim.
    What a crash can leave: at most one message handed over with no reply recorded (the
    current one; the previous one's reply is durable before the next MAIL), plus at most one
    claimed-but-never-handed-over row, which :func:`recover` puts back in the queue.
    """
    config = ctx.config
    settings = config.section("messaging")
    tz = ZoneInfo(config.shop.timezone)
    conn = ctx.conn
    report = DeliveryReport()
    if ctx.dry_run:
        for _ in background or ():
            pass
        return preview(ctx, kinds=kinds, limit=limit, rules=rules)
    cache, get_channel = _channel_objects(config)
    t0 = _time.monotonic()

    def clock() -> datetime:
        return ctx.now + timedelta(seconds=_time.monotonic() - t0)

    extra, params = _due_sql(kinds, rules)
    pending: list[tuple[sqlite3.Row, int, Any, datetime]] = []  # heard, not yet committed
    batch: list[sqlite3.Row] = []
    known: _OptOuts | None = None
    claims = 0
    journaled: set[int] = set()  # pending outcomes also written to outbox_outcomes

    def flush() -> None:
        while pending:
            row = pending[0][0]
            _apply_outcome(conn, *pending.pop(0), settings, report)
            if row["id"] in journaled:
                journaled.discard(row["id"])
                conn.execute("DELETE FROM outbox_outcomes WHERE outbox_id = ?", (row["id"],))

    def claim_next() -> _Claimed | None:
        """Claim the next due message (settling the ones that must not go), or None."""
        nonlocal batch, known, claims
        while True:
            if limit is not None and claims >= limit:
                return None
            now = clock()
            nows = iso(now)
            if not batch:
                batch = _due_batch(conn, nows, extra, params)
                batch.reverse()
                known = _OptOuts(conn, batch)
            with dbmod.write(conn):
                flush()
                if not batch:
                    return None
                row = batch.pop()
                decision = _precheck(conn, row, config, settings, now, tz, get_channel, known)
                if decision is not None:
                    _apply_precheck(conn, row, decision, nows, report)
                    continue
                # Guarded: a row another run claimed or deferred since the batch was read
                # does not match, and is skipped. RETURNING gives the row as claimed.
                claimed = conn.execute(
                    "UPDATE outbox SET state='sending', claimed_by=?, claimed_at=?, "
                    "attempts=attempts+1, handed_over_at=NULL, updated_at=? "
                    "WHERE id=? AND state='queued' AND next_attempt_at <= ? RETURNING attempts",
                    (ctx.run_id, nows, nows, row["id"], nows),
                ).fetchone()
            if claimed is not None:
                claims += 1
                return _Claimed(row, claimed[0])

    def prepare(item: _Claimed) -> None:
        try:
            item.msg, item.channel = _prepare(config, get_channel, item.row)
        except Exception:
            with dbmod.write(conn):
                release(item)
            raise

    def release(item: _Claimed | None) -> None:
        """Give back a claim that was never handed over (inside the caller's transaction)."""
        if item is not None:
            conn.execute(
                "UPDATE outbox SET state='queued', attempts=attempts-1, updated_at=? "
                "WHERE id=? AND state='sending' AND claimed_by=? AND handed_over_at IS NULL",
                (iso(clock()), item.row["id"], ctx.run_id),
            )

    def work_ahead(ahead: list[_Claimed | None]) -> Iterator[None]:
        """The next message's claim, then its preparation: one step per wait for a reply."""
        item = claim_next()
        ahead.append(item)
        yield
        if item is not None:
            prepare(item)
            yield

    bg = iter(background) if background is not None else None

    def background_step() -> Any:
        """One step of the background work; None once it is done."""
        nonlocal bg
        if bg is None:
            return None
        try:
            return next(bg)
        except StopIteration:
            bg = None
            return None

    def next_claim() -> _Claimed | None:
        """The next claimed and prepared message, planning ahead while none is due."""
        while True:
            item = claim_next()
            if item is not None:
                prepare(item)
                return item
            if bg is None or (limit is not None and claims >= limit):
                return None
            while bg is not None and not background_step():
                pass

    consecutive = 0
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(dbmod.background_checkpoints(conn))
        recover(ctx, get_channel, report)
        with dbmod.write(conn):  # rows queued by older code without a time are due now
            conn.execute(
                "UPDATE outbox SET next_attempt_at = queued_at "
                "WHERE state = 'queued' AND next_attempt_at IS NULL"
            )
        cur = next_claim()
        while cur is not None:
            ahead: list[_Claimed | None] = []
            steps = work_ahead(ahead)
            failure: list[Exception] = []

            def idle(steps: Iterator[None] = steps, failure: list[Exception] = failure) -> bool:
                """One step of the work ahead, else of the background; errors wait for cur.

                True while there may be more to do."""
                if failure:
                    return False
                try:
                    if next(steps, _DONE) is not _DONE:
                        return False  # one step of the next message's work per wait
                    background_step()
                    return bg is not None
                except Exception as exc:
                    failure.append(exc)
                    return False

            marked: list[bool] = []

            def mark(row_id: int = cur.row["id"], marked: list[bool] = marked) -> None:
                sql = "UPDATE outbox SET handed_over_at=? WHERE id=?"
                if pending:  # outcomes still to apply go in the same transaction
                    with dbmod.write(conn):
                        flush()
                        conn.execute(sql, (iso(clock()), row_id))
                else:  # one statement: its own transaction (autocommit)
                    conn.execute(sql, (iso(clock()), row_id))
                marked.append(True)

            overlapped = getattr(cur.channel, "overlaps_reply", False)
            try:
                if overlapped:
                    outcome = cur.channel.send(cur.msg, mark, idle=idle)
                else:
                    outcome = cur.channel.send(cur.msg, mark)
            except Exception as exc:  # a channel bug or a stop (bad credentials): settle, re-raise
                # A refusal of our credentials (webhook 401/403) is the receiver's answer: it
                # took nothing, even after the hand-over mark, so the message stays queued.
                doubt = bool(marked) and not isinstance(exc, RemoteAuthError)
                with dbmod.write(conn):
                    flush()
                    release(ahead[0] if ahead else None)
                    conn.execute(
                        "UPDATE outbox SET state=?, last_error=?, updated_at=?, "
                        "handed_over_at=CASE WHEN ? THEN handed_over_at END "
                        "WHERE id=? AND state='sending'",
                        (
                            "unknown" if doubt else "queued",
                            "channel error during hand-over" if doubt else None,
                            iso(clock()),
                            doubt,
                            cur.row["id"],
                        ),
                    )
                raise
            pending.append((cur.row, cur.attempts, outcome, clock()))
            stop = False
            if outcome.kind == "transient":
                consecutive += 1
                if consecutive >= settings.breaker_threshold:
                    report.breaker_tripped = True
                    report.messages.append(
                        f"circuit breaker: {consecutive} transient failures in a row "
                        f"(last: {outcome.error()}); stopping, the rest stays queued"
                    )
                    stop = True
            else:
                consecutive = 0
            # The outcome is durable before the next exchange starts: a run killed once the
            # next MAIL is out leaves nothing in doubt but (at most) the next message. On the
            # overlapped path it is journaled (one small row, a page, instead of rewriting the
            # message row and four index entries) and applied during the next wait; recover()
            # applies a journaled outcome left by a dead run. A channel that does not overlap
            # has its next claim still to come, which applies it.
            if stop or failure:
                with dbmod.write(conn):
                    flush()
                    release(ahead[0] if ahead else None)
            elif overlapped:  # one statement: its own transaction (autocommit)
                _journal(conn, cur.row["id"], outcome, pending[-1][3])
                journaled.add(cur.row["id"])
            if stop:
                break
            if not failure:  # steps the channel left undone (no waits, or an early refusal)
                try:
                    for _ in steps:
                        pass
                except Exception as exc:
                    failure.append(exc)
            if failure:
                with dbmod.write(conn):
                    flush()
                    release(ahead[0] if ahead else None)
                raise failure[0]
            cur = ahead[0]
            if cur is None:  # nothing was due a moment ago; planning may have queued more
                cur = next_claim()
        if pending:
            with dbmod.write(conn):
                flush()
        while bg is not None:
            background_step()
    except Exception:
        if bg is not None:  # planning is owed to the end even when delivery fails
            with contextlib.suppress(Exception):
                for _ in bg:
                    pass
        raise
    finally:
        for ch in cache.values():
            if ch is not None:
                with contextlib.suppress(Exception):
                    ch.close()
        stack.close()
    return report


def deliver_into(result: Any, ctx: Any, *, kinds: set[str], prefix: str = "") -> DeliveryReport:
    """Deliver due messages of ``kinds`` for another job: counts join ``result`` (as
    ``prefix`` + state), its messages too, and a failed or unknown hand-over makes it partial."""
    report = deliver(ctx, kinds=kinds)
    for key, value in report.counts.items():
        result.count(f"{prefix}{key}", int(value))
    result.messages.extend(report.messages)
    if report.partial:
        result.status = "partial"
    return report


def _journal(conn: sqlite3.Connection, outbox_id: int, outcome: Any, at: datetime) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO outbox_outcomes (outbox_id, kind, code, text, retry_after, at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (outbox_id, outcome.kind, outcome.code, outcome.text[:1000], outcome.retry_after, iso(at)),
    )


def _prepare(config: Any, get_channel: Callable[[str], Any], row: sqlite3.Row) -> tuple[Any, Any]:
    """The message of a claimed row, ready for its channel (headers added, wire form built)."""
    from csops.messaging.channels.base import OutMessage

    channel = get_channel(row["channel"])
    msg = OutMessage.from_row(row)
    if (
        row["is_marketing"]
        and "@" in msg.recipient
        and not any(k.lower() == "list-unsubscribe" for k in msg.headers)
    ):
        msg.headers.update(_unsubscribe_headers(config, msg.recipient))
    prepare = getattr(channel, "prepare", None)
    if prepare is not None:
        prepare(msg)
    return msg, channel


def _precheck(conn, row, config, settings, now, tz, get_channel, known=None):
    """Send-time checks: (state, next_attempt_at, reason) to apply instead of sending, or None."""
    if row["expires_at"] and parse_instant(row["expires_at"]) < now:
        return ("suppressed", None, "expired")
    reason = _suppression(conn, row, known)
    if reason:
        return ("suppressed", None, reason)
    if get_channel(row["channel"]) is None:
        return ("failed", None, f"unknown_channel: no [channels.{row['channel']}] configured")
    if row["kind"] not in settings.quiet_exempt_kinds:
        until = _in_quiet_hours(settings, now, tz)
        if until is not None:
            return ("queued", until, "quiet_hours")
    until = _cap_until(conn, row, settings, now)
    if until is not None:
        if settings.cap_action == "suppress":
            return ("suppressed", None, "frequency_cap")
        if row["expires_at"] and parse_instant(row["expires_at"]) < until:
            return ("suppressed", None, "frequency_cap")
        return ("queued", until, "frequency_cap")
    ch = get_channel(row["channel"])
    until = _rate_until(conn, row["channel"], getattr(ch, "rate_per_minute", 0), now)
    if until is not None:
        return ("queued", until, "rate_limit")
    return None


def _apply_precheck(conn, row, decision, nows, report) -> None:
    state, until, reason = decision
    if state == "queued":
        if reason == "rate_limit":  # one update defers the whole channel's due queue
            n = conn.execute(
                "UPDATE outbox SET next_attempt_at=?, last_error=?, updated_at=? "
                "WHERE state='queued' AND channel=? AND (next_attempt_at IS NULL OR "
                "next_attempt_at < ?)",
                (iso(until), "deferred: rate_limit", nows, row["channel"], iso(until)),
            ).rowcount
            report.count("deferred_rate_limit", n)
            return
        conn.execute(
            "UPDATE outbox SET next_attempt_at=?, last_error=?, updated_at=? "
            "WHERE id=? AND state='queued'",
            (iso(until), f"deferred: {reason}", nows, row["id"]),
        )
        report.count(f"deferred_{reason}")
        return
    conn.execute(
        "UPDATE outbox SET state=?, last_error=?, updated_at=? WHERE id=? AND state='queued'",
        (state, reason, nows, row["id"]),
    )
    report.count(state)
    if state == "suppressed":
        report.count(f"suppressed_{reason}")
    report.add_row(row, state, reason)


def _backoff(settings: Any, attempts: int, hint: float | None) -> timedelta:
    steps = settings.backoff
    wait = parse_duration(steps[min(max(attempts, 1), len(steps)) - 1])
    if hint and hint > wait.total_seconds():
        wait = timedelta(seconds=hint)
    return wait


def _apply_outcome(conn, row, attempts, outcome, now, settings, report) -> None:
    """Record a channel's outcome (inside the caller's transaction); ``attempts`` as claimed."""
    nows = iso(now)
    if outcome.kind == "sent":
        conn.execute(
            "UPDATE outbox SET state='sent', sent_at=?, last_error=NULL, updated_at=? WHERE id=?",
            (nows, nows, row["id"]),
        )
        report.count("sent")
        report.add_row(row, "sent", None)
        return
    if outcome.kind == "transient" and attempts < settings.max_attempts:
        nxt = now + _backoff(settings, attempts, outcome.retry_after)
        conn.execute(
            "UPDATE outbox SET state='queued', next_attempt_at=?, last_error=?, "
            "handed_over_at=NULL, updated_at=? WHERE id=?",
            (iso(nxt), outcome.error(), nows, row["id"]),
        )
        report.count("retry_later")
        report.add_row(row, "queued", outcome.error())
        return
    state = "unknown" if outcome.kind == "unknown" else "failed"
    error = outcome.error()
    if outcome.kind == "transient":
        error = f"too many attempts ({attempts}): {error}"
    conn.execute(
        "UPDATE outbox SET state=?, last_error=?, updated_at=? WHERE id=?",
        (state, error, nows, row["id"]),
    )
    report.count(state)
    report.add_row(row, state, error)


def _row_out(row: sqlite3.Row, state: str, error: str | None) -> dict[str, Any]:
    from csops.secrets import mask_email

    return {
        "id": row["id"],
        "state": state,
        "kind": row["kind"],
        "rule": row["rule"],
        "channel": row["channel"],
        "recipient": mask_email(row["recipient"]) if "@" in row["recipient"] else row["recipient"],
        "message_id": row["message_id"],
        "error": error,
    }


def preview(
    ctx: Any,
    *,
    kinds: set[str] | None = None,
    limit: int | None = None,
    rules: set[str] | None = None,
) -> DeliveryReport:
    """What :func:`deliver` would do now, changing nothing (``--dry-run``)."""
    from csops.messaging.settings import channel_table

    config = ctx.config
    settings = config.section("messaging")
    tz = ZoneInfo(config.shop.timezone)
    table = channel_table(config)
    report = DeliveryReport()
    extra, params = _due_sql(kinds, rules)
    sql = (
        "SELECT * FROM outbox WHERE state = 'queued' AND (next_attempt_at IS NULL OR "
        f"next_attempt_at <= ?){extra} ORDER BY next_attempt_at, id"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"

    class _Stub:
        def __init__(self, rate: int) -> None:
            self.rate_per_minute = rate

    def get(name: str) -> Any:
        s = table.get(name)
        return _Stub(s.rate_per_minute) if s else None

    for row in ctx.conn.execute(sql, (iso(ctx.now), *params)).fetchall():
        decision = _precheck(ctx.conn, row, config, settings, ctx.now, tz, get)
        state, reason = ("would_send", None) if decision is None else (decision[0], decision[2])
        label = state if state == "would_send" else f"would_{state}_{reason}".split(":")[0]
        report.count(label)
        report.add_row(row, state, reason)
    return report


# --------------------------------------------------------------------------- operator commands


LIST_COLUMNS = [
    "id",
    "state",
    "kind",
    "rule",
    "channel",
    "recipient",
    "subject",
    "attempts",
    "next_attempt_at",
    "message_id",
    "last_error",
    "queued_at",
    "sent_at",
]


def list_rows(
    conn: sqlite3.Connection, *, status: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    if status and status not in STATES:
        raise UsageError(f"unknown status {status!r}", expected="one of " + ", ".join(STATES))
    sql = f"SELECT {', '.join(LIST_COLUMNS)} FROM outbox"
    params: tuple = ()
    if status:
        sql += " WHERE state = ?"
        params = (status,)
    sql += " ORDER BY id DESC LIMIT ?"
    return [dict(r) for r in conn.execute(sql, (*params, limit)).fetchall()]


def _get(conn: sqlite3.Connection, outbox_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no outbox message with id {outbox_id}", field="ID")
    return row


def retry(conn: sqlite3.Connection, outbox_id: int, *, now: datetime) -> dict[str, Any]:
    """Queue a ``failed``/``unknown``/``suppressed`` message again (same Message-ID).

    For an ``unknown`` message this is the operator's explicit choice to risk a duplicate. A
    message that failed on its template is removed so the next run re-plans it.
    """
    with dbmod.write(conn):
        row = _get(conn, outbox_id)
        if row["state"] in ("queued", "sending", "sent"):
            raise UsageError(
                f"message {outbox_id} is {row['state']}; only failed, unknown or suppressed "
                "messages can be retried"
            )
        if (row["last_error"] or "").startswith("template_error") and not row["body_text"]:
            conn.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))
            return {"id": outbox_id, "state": "replan", "message_id": row["message_id"]}
        conn.execute(
            "UPDATE outbox SET state='queued', next_attempt_at=?, handed_over_at=NULL, "
            "expires_at=NULL, last_error=?, updated_at=? WHERE id=?",
            (iso(now), f"operator retry (was {row['state']})", iso(now), outbox_id),
        )
    return {"id": outbox_id, "state": "queued", "message_id": row["message_id"]}


def resolve(
    conn: sqlite3.Connection, outbox_id: int, outcome: str, *, now: datetime
) -> dict[str, Any]:
    """Settle an ``unknown`` (or stuck) message by hand: ``sent`` or ``failed``."""
    if outcome not in ("sent", "failed"):
        raise UsageError("resolve needs --sent or --failed")
    with dbmod.write(conn):
        row = _get(conn, outbox_id)
        if row["state"] not in ("unknown", "queued", "failed"):
            raise UsageError(
                f"message {outbox_id} is {row['state']}; resolve settles unknown, queued or "
                "failed messages"
            )
        conn.execute(
            "UPDATE outbox SET state=?, sent_at=CASE WHEN ?='sent' THEN COALESCE(sent_at, ?) "
            "ELSE sent_at END, last_error=?, updated_at=? WHERE id=?",
            (
                outcome,
                outcome,
                iso(now),
                f"resolved by operator as {outcome} (was {row['state']})",
                iso(now),
                outbox_id,
            ),
        )
    return {"id": outbox_id, "state": outcome, "message_id": row["message_id"]}
