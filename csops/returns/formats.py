"""Readers for return batches: our generic CSV and the Taobao/Tmall refund export (退款报表).

A reader turns a file into :class:`~csops.returns.policy.ReturnRequest` objects, one per line,
or a :class:`~csops.result.Reject` naming the line, the field and what was expected, or a
:class:`Skipped` line (a Taobao refund already closed on the platform). It streams: memory does
not grow with the file. Registered in :mod:`csops.registry` as ``return_formats``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO
from zoneinfo import ZoneInfo

from csops.csvio import BadRecord, iter_dict_rows, open_text
from csops.errors import InputError
from csops.result import Reject
from csops.returns.policy import ReturnRequest
from csops.returns.settings import RESOLUTIONS

MAX_QUANTITY = 100_000
MAX_FIELD = 2000


@dataclass(frozen=True)
class Skipped:
    """A line that is valid but needs no decision (e.g. the refund was closed on the platform)."""

    line_no: int
    return_ref: str
    why: str


LineResult = ReturnRequest | Reject | Skipped


@dataclass(frozen=True)
class ReturnFormat:
    """A batch layout: its name, the platform it comes from, and how to read it."""

    name: str
    platform: str | None
    description: str
    reader: object  # callable(text, file_name, tz) -> Iterator[LineResult]
    encoding: str | None = None  # None: detected (UTF-8 with/without BOM, or GB18030)

    def read(self, binary: IO[bytes], file_name: str, tz: ZoneInfo) -> Iterator[LineResult]:
        try:
            text, _enc = open_text(binary, self.encoding)
        except LookupError as exc:  # pragma: no cover - encodings are ours
            raise InputError(str(exc), file=file_name) from None
        try:
            yield from self.reader(text, file_name, tz)  # type: ignore[operator]
        except UnicodeDecodeError as exc:
            raise InputError(
                f"cannot decode the file ({exc.reason} at byte {exc.start} of a chunk)",
                file=file_name,
                expected="UTF-8 or GBK/GB18030 text",
            ) from None


class _LineError(Exception):
    def __init__(self, field: str, message: str, expected: str | None = None) -> None:
        super().__init__(message)
        self.field, self.message, self.expected = field, message, expected

    def reject(self, file_name: str, line_no: int, raw: str | None) -> Reject:
        return Reject(
            self.message, file=file_name, line=line_no, field=self.field,
            expected=self.expected, raw=raw,
        )  # fmt: skip


def _text(row: dict[str, str], name: str, *, required: bool = False, label: str = "") -> str:
    value = (row.get(name) or "").strip()
    if required and not value:
        raise _LineError(label or name, "is empty", "a value")
    if len(value) > MAX_FIELD:
        raise _LineError(label or name, f"is {len(value)} characters long", f"≤ {MAX_FIELD}")
    return value


def _quantity(value: str, field: str) -> int:
    if not re.fullmatch(r"\d{1,9}", value.strip()):
        raise _LineError(field, f"{value!r} is not a whole number", "a whole number ≥ 1")
    q = int(value)
    if not 1 <= q <= MAX_QUANTITY:
        raise _LineError(field, f"{q} is out of range", f"1 to {MAX_QUANTITY}")
    return q


_SLASH_TIME = re.compile(
    r"^(\d{4})[/-](\d{1,2})[/-](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$"
)


def parse_time(value: str, tz: ZoneInfo, field: str) -> datetime | None:
    """ISO 8601 (offset or naive = ``tz``), or ``2016/5/23 22:02`` as Excel re-saves it."""
    value = value.strip()
    if not value:
        return None
    from csops.timeutil import parse_instant

    try:
        return parse_instant(value, tz)
    except ValueError:
        pass
    m = _SLASH_TIME.match(value)
    if m:
        y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        try:
            return datetime(y, mo, d, h, mi, s, tzinfo=tz).astimezone(ZoneInfo("UTC"))
        except ValueError:
            pass
    raise _LineError(field, f"{value!r} is not a date and time", "ISO 8601 like 2024-03-05T10:00")


def _check_header(header: list[str], required: tuple[str, ...], file_name: str) -> None:
    if not header:
        raise InputError("the file is empty", file=file_name, expected="a header line")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            file=file_name,
            line=1,
            expected="columns " + ", ".join(required),
        )


# --- generic CSV ---------------------------------------------------------------------------

GENERIC_COLUMNS = (
    "return_id",
    "order_number",
    "sku",
    "quantity",
    "reason_code",
    "reason_text",
    "requested_at",
    "resolution",
    "condition",
    "item_name",
)
GENERIC_REQUIRED = ("return_id", "order_number", "sku", "quantity")
_RESOLUTION_ALIASES = {"store credit": "store_credit", "store-credit": "store_credit", "": "refund"}
_CODE = re.compile(r"^[a-z0-9_]{1,64}$")


def read_generic(text: IO[str], file_name: str, tz: ZoneInfo) -> Iterator[LineResult]:
    header, rows = iter_dict_rows(text)
    header = [h.lower() for h in header]
    _check_header(header, GENERIC_REQUIRED, file_name)
    for line_no, raw in rows:
        row = {k.strip().lower(): v for k, v in raw.items()}
        try:
            if isinstance(raw, BadRecord):
                raise _LineError("", raw.reason, raw.expected)
            ref = _text(row, "return_id", required=True)
            order_ref = _text(row, "order_number", required=True)
            sku = _text(row, "sku") or None  # blank: found by item_name or a one-item order
            quantity = _quantity(_text(row, "quantity", required=True), "quantity")
            reason = _text(row, "reason_code").lower().replace("-", "_").replace(" ", "_")
            if reason and not _CODE.match(reason):
                raise _LineError("reason_code", f"{reason!r} is not a code", "like changed_mind")
            resolution = _text(row, "resolution").lower()
            resolution = _RESOLUTION_ALIASES.get(resolution, resolution)
            if resolution not in RESOLUTIONS:
                raise _LineError(
                    "resolution", f"{resolution!r} is not a resolution", " / ".join(RESOLUTIONS)
                )
            requested = parse_time(_text(row, "requested_at"), tz, "requested_at")
            yield ReturnRequest(
                return_ref=ref,
                order_ref=order_ref,
                sku=sku,
                quantity=quantity,
                reason_code=reason or "other",
                reason_text=_text(row, "reason_text"),
                requested_at=requested,
                resolution=resolution,
                condition=_text(row, "condition").lower(),
                line_no=line_no,
                item_title=_text(row, "item_name"),
            )
        except _LineError as exc:
            yield exc.reject(file_name, line_no, _raw(raw))


def _raw(row: dict[str, str]) -> str:
    return ",".join(str(v) for v in row.values())[:500]


# --- Taobao / Tmall 退款报表 ------------------------------------------------------------------

CHINA = ZoneInfo("Asia/Shanghai")
TAOBAO_REQUIRED = ("订单编号", "退款编号")
# 退款状态 values after which nothing is left to decide.
TAOBAO_FINISHED = {"退款关闭": "closed by the buyer", "退款成功": "already refunded on Taobao"}
# 买家退款原因 (free text chosen from a platform list) → our reason codes; first match wins.
TAOBAO_REASONS: tuple[tuple[str, str], ...] = (
    ("七天无理由", "changed_mind"),
    ("不想要", "changed_mind"),
    ("拍错", "ordered_wrong_item"),
    ("多拍", "ordered_wrong_item"),
    ("尺码", "wrong_size"),
    ("大小", "wrong_size"),
    ("破损", "damaged"),
    ("损坏", "damaged"),
    ("质量", "defective"),
    ("描述不符", "not_as_described"),
    ("与描述", "not_as_described"),
    ("色差", "not_as_described"),
    ("发错", "wrong_item"),
    ("少件", "wrong_item"),
    ("漏发", "wrong_item"),
    ("未按约定时间发货", "arrived_late"),
    ("物流", "arrived_late"),
)


def taobao_reason(text: str) -> str:
    for needle, code in TAOBAO_REASONS:
        if needle in text:
            return code
    return "other"


def _unprotect(value: str) -> str:
    """``="4102261830551200001"`` (Excel-protected) or ``'13800000001`` → the bare text."""
    v = value.strip()
    if v.startswith('="') and v.endswith('"'):
        v = v[2:-1]
    return v.lstrip("'").strip()


def read_taobao(text: IO[str], file_name: str, tz: ZoneInfo) -> Iterator[LineResult]:
    header, rows = iter_dict_rows(text)
    _check_header(header, TAOBAO_REQUIRED, file_name)
    for line_no, raw in rows:
        row = {k.strip(): _unprotect(v) for k, v in raw.items()}
        try:
            if isinstance(raw, BadRecord):
                raise _LineError("", raw.reason, raw.expected)
            ref = _text(row, "退款编号", required=True)
            status = _text(row, "退款状态")
            if status in TAOBAO_FINISHED or status.startswith("卖家拒绝"):
                yield Skipped(line_no, ref, TAOBAO_FINISHED.get(status, "refused on Taobao"))
                continue
            order_ref = _text(row, "订单编号", required=True)
            if not order_ref.isdigit():
                raise _LineError("订单编号", f"{order_ref!r} is not an order id", "digits")
            sku = _text(row, "商品编码") or _text(row, "商家编码") or None
            reason_text = _text(row, "买家退款原因")
            note = _text(row, "买家退款说明")
            requested = parse_time(_text(row, "退款的申请时间"), CHINA, "退款的申请时间")
            goods = _text(row, "货物状态")
            yield ReturnRequest(
                return_ref=ref,
                order_ref=order_ref,
                sku=sku,
                quantity=None,
                reason_code=taobao_reason(reason_text),
                reason_text=" / ".join(t for t in (reason_text, note) if t),
                requested_at=requested,
                resolution="refund",
                condition=goods,
                line_no=line_no,
                item_title=_text(row, "宝贝标题"),
            )
        except _LineError as exc:
            yield exc.reject(file_name, line_no, _raw(raw))


GENERIC_CSV = ReturnFormat(
    name="csv",
    platform=None,
    description="csops generic return batch: " + ",".join(GENERIC_COLUMNS),
    reader=read_generic,
)
TAOBAO_REFUNDS = ReturnFormat(
    name="taobao-refunds",
    platform="taobao",
    description="Taobao/Tmall 退款报表 (GBK, Chinese headers)",
    reader=read_taobao,
)
