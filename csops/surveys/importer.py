"""``surveys import PATH``: answers collected elsewhere (a form tool's CSV export).

Columns (header names are matched case-insensitively; Chinese names accepted):
``token`` or ``order`` (the order number as the shop shows it), ``score``, ``comment``, ``time``,
and optionally ``kind`` (csat/nps). Each good row lands like a web answer (same validation, same
detractor alert); a bad row is rejected with its line, field and what was expected, and the run
exits 3. Re-importing the same file changes nothing; an answer older than the stored one is kept
out, so files may be imported in any order.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from csops import db as dbmod
from csops import timeutil
from csops.csvio import BadRecord, SafeCsvWriter, iter_dict_rows, open_text
from csops.errors import InputError
from csops.result import Reject, Result
from csops.runs import RunContext
from csops.surveys.links import read_survey_token
from csops.surveys.responses import AnswerError, clean_comment, parse_score, record_answer
from csops.surveys.settings import SCALES, SurveySettings
from csops.tokens import TokenError

ALIASES = {
    "token": ("token", "survey_token", "link_token"),
    "order": ("order", "order_number", "order number", "order_no", "订单号", "订单编号"),
    "score": ("score", "rating", "评分", "分数"),
    "comment": ("comment", "comments", "feedback", "留言", "评论"),
    "time": ("time", "submitted_at", "timestamp", "answered_at", "提交时间", "时间"),
    "kind": ("kind", "type", "survey", "类型"),
}
MAX_FIELD = 20000


def _columns(header: list[str]) -> dict[str, str]:
    lowered = {h.strip().lower(): h for h in header}
    found = {}
    for field, names in ALIASES.items():
        for name in names:
            if name in lowered:
                found[field] = lowered[name]
                break
    return found


class RowError(Exception):
    def __init__(self, field: str, message: str, expected: str | None = None) -> None:
        super().__init__(message)
        self.field, self.message, self.expected = field, message, expected


def import_answers(ctx: RunContext, path: str, stream: IO[bytes] | None = None) -> Result:
    """Validate and record every row; rejects are listed, stored, and written to rejects_dir."""
    config = ctx.config
    result = Result(
        "surveys import",
        columns=["line", "survey_id", "kind", "score", "outcome", "alert_outbox_id"],
    )
    name = "-" if stream is not None else path
    if stream is None:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise InputError("file not found", file=path) from None
        except OSError as exc:
            raise InputError(f"cannot read file: {exc.strerror}", file=path) from None
    try:
        text, _enc = open_text(stream)
        try:
            header, rows = iter_dict_rows(text)
        except UnicodeDecodeError:
            raise InputError("file is not UTF-8 or GB18030 text", file=name) from None
        cols = _columns(header)
        if "score" not in cols or not ({"token", "order"} & set(cols)):
            raise InputError(
                "missing columns",
                file=name,
                line=1,
                expected="a header with score and token or order (and comment, time, kind)",
            )
        out_rows: list[dict[str, Any]] = []
        alerts = 0
        try:
            for line, raw in rows:
                try:
                    row = _validate(ctx, cols, raw)
                except RowError as exc:
                    result.reject(
                        Reject(exc.message, name, line, exc.field, exc.expected, _raw(raw))
                    )
                    continue
                if ctx.dry_run:
                    out_rows.append({"line": line, **row, "outcome": "would_record"})
                    result.count("would_record")
                    continue
                survey_id = row["survey_id"] or _create_survey(ctx.conn, row, ctx.now)
                outcome = record_answer(
                    ctx.conn,
                    config,
                    survey_id=survey_id,
                    score=row["score"],
                    comment=row["comment"],
                    now=ctx.now,
                    source="import",
                    answered_at=row["answered_at"],
                )
                alerts += 1 if outcome.alert_outbox_id else 0
                result.count(outcome.outcome)
                out_rows.append(
                    {
                        "line": line,
                        "survey_id": survey_id,
                        "kind": outcome.kind,
                        "score": outcome.score,
                        "outcome": outcome.outcome,
                        "alert_outbox_id": outcome.alert_outbox_id,
                    }
                )
        except UnicodeDecodeError as exc:
            raise InputError(
                f"undecodable bytes after line {len(out_rows) + len(result.rejects) + 1}",
                file=name,
                expected="UTF-8 or GB18030 text",
            ) from exc
    finally:
        stream.close()
    result.rows = out_rows
    if result.rejects:
        result.count("rejected", len(result.rejects))
        if not ctx.dry_run:
            _save_rejects(ctx, name, result.rejects, result)
    if alerts and not ctx.dry_run:
        from csops.surveys.send import _deliver

        _deliver(ctx, result, kinds={"alert"})
        result.count("alerts", alerts)
    return result


def _raw(raw: dict[str, str]) -> str:
    return ",".join(f"{k}={(v or '')[:80]}" for k, v in raw.items())[:500]


def _validate(ctx: RunContext, cols: dict[str, str], raw: dict[str, str]) -> dict[str, Any]:
    if isinstance(raw, BadRecord):
        raise RowError("", raw.reason, raw.expected)
    config = ctx.config
    settings: SurveySettings = config.section("surveys")
    get = {f: (raw.get(h) or "").strip() for f, h in cols.items()}
    for f, value in get.items():
        if len(value) > MAX_FIELD:
            raise RowError(f, f"value is {len(value)} characters long", f"≤ {MAX_FIELD}")
    kind = get.get("kind", "").lower() or None
    if kind is not None and kind not in SCALES:
        raise RowError("kind", f"unknown survey kind {kind!r}", "csat or nps")
    answered_at = None
    if get.get("time"):
        try:
            answered_at = timeutil.parse_instant(
                get["time"].replace("/", "-"), timeutil.shop_zone(config.shop.timezone)
            )
        except ValueError:
            raise RowError(
                "time", f"not a date-time: {get['time'][:40]!r}", "ISO 8601, e.g. 2024-04-20 10:30"
            ) from None
        if answered_at > ctx.now + timedelta(days=1):
            raise RowError("time", "answer time is in the future", "a past date-time")
    survey = None
    if get.get("token"):
        try:
            ref = read_survey_token_any_age(config, get["token"])
        except TokenError:
            raise RowError(
                "token",
                "token is not valid (tampered or for another shop)",
                "a token from a csops survey link",
            ) from None
        survey = ctx.conn.execute(
            "SELECT id, kind, expires_at FROM surveys WHERE id = ?", (ref.survey_id,)
        ).fetchone()
        if survey is None or survey["kind"] != ref.kind:
            raise RowError("token", "no survey for this token", "a token of a sent survey")
    elif get.get("order"):
        number = get["order"]
        orders = ctx.conn.execute(
            "SELECT id, customer_id FROM orders WHERE number = ? OR number = ? LIMIT 2",
            (number, f"#{number.lstrip('#')}"),
        ).fetchall()
        if not orders:
            raise RowError("order", f"unknown order {number[:40]!r}", "an imported order number")
        if len(orders) > 1:
            raise RowError(
                "order",
                f"order number {number[:40]!r} is ambiguous",
                "a token instead of the order number",
            )
        order = orders[0]
        surveys = ctx.conn.execute(
            "SELECT id, kind, expires_at FROM surveys WHERE order_id = ?"
            + (" AND kind = ?" if kind else ""),
            (order["id"], kind) if kind else (order["id"],),
        ).fetchall()
        if len(surveys) > 1:
            raise RowError("kind", "the order has a CSAT and an NPS survey", "csat or nps")
        if surveys:
            survey = surveys[0]
        elif kind is None:
            raise RowError("kind", "no survey was sent for this order", "a kind column: csat/nps")
        else:
            return {
                "survey_id": None,
                "kind": kind,
                "order_id": order["id"],
                "customer_id": order["customer_id"],
                "score": _score(kind, get.get("score")),
                "comment": clean_comment(get.get("comment"), settings.max_comment_chars),
                "answered_at": answered_at,
            }
    else:
        raise RowError("token", "neither token nor order given", "a token or an order number")
    if kind and survey["kind"] != kind:
        raise RowError("kind", f"the survey is {survey['kind']}, not {kind}", survey["kind"])
    when = answered_at or ctx.now
    if survey["expires_at"] and timeutil.iso(when) > survey["expires_at"]:
        raise RowError(
            "time", "answered after the survey link expired", f"before {survey['expires_at']}"
        )
    return {
        "survey_id": survey["id"],
        "kind": survey["kind"],
        "score": _score(survey["kind"], get.get("score")),
        "comment": clean_comment(get.get("comment"), settings.max_comment_chars),
        "answered_at": answered_at,
    }


def read_survey_token_any_age(config, token: str):  # type: ignore[no-untyped-def]
    """An authentic survey token of any age (imports check the answer time instead)."""
    try:
        return read_survey_token(config, token)
    except TokenError as exc:
        from csops.surveys.links import expired_ref

        ref = expired_ref(exc)
        if ref is None:
            raise
        return ref


def _score(kind: str, raw: str | None) -> int:
    try:
        return parse_score(kind, raw)
    except AnswerError as exc:
        raise RowError("score", exc.message, exc.expected) from None


def _create_survey(conn: sqlite3.Connection, row: dict[str, Any], now: datetime) -> int:
    """A survey run outside csops (no mail from us): a row to hold its answer."""
    with dbmod.write(conn):
        conn.execute(
            "INSERT OR IGNORE INTO surveys (kind, order_id, customer_id, updated_at) "
            "VALUES (?, ?, ?, ?)",
            (row["kind"], row["order_id"], row["customer_id"], timeutil.iso(now)),
        )
        found = conn.execute(
            "SELECT id FROM surveys WHERE kind = ? AND order_id = ?",
            (row["kind"], row["order_id"]),
        ).fetchone()
    return int(found["id"])


def _save_rejects(ctx: RunContext, name: str, rejects: list[Reject], result: Result) -> None:
    at = timeutil.iso(ctx.now)
    with dbmod.write(ctx.conn):
        ctx.conn.executemany(
            "INSERT INTO rejects (run_id, job, source, file, line, field, expected, message, "
            "raw, created_at) VALUES (?, 'surveys import', 'csv', ?, ?, ?, ?, ?, ?, ?)",
            [
                (ctx.run_id, r.file, r.line, r.field, r.expected, r.message, r.raw, at)
                for r in rejects
            ],
        )
    folder = ctx.config.resolve(ctx.config.paths.rejects_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(name).stem if name != "-" else "stdin"
        target = folder / f"surveys-{stem}-{ctx.run_id}.csv"
        tmp = target.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = SafeCsvWriter(fh, ["file", "line", "field", "expected", "message", "raw"])
            for r in rejects:
                writer.write({**r.as_dict(), "raw": r.raw})
        os.replace(tmp, target)
        result.messages.append(f"rejected rows written to {target}")
    except OSError as exc:  # the rejects table still has them
        result.messages.append(f"could not write the rejects file: {exc.strerror}")
