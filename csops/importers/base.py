"""What every file source shares: decode, split rows, check headers, clean cells, group orders.

A file source is a :class:`CsvFormat`: its delimiter and quoting, the headers it needs, how its
rows group into orders, and ``parse_group`` turning one order's rows into an :class:`Order`.
:func:`read_orders` streams a file through it and yields orders and rejects, never raising for
a bad row: a row that cannot be read or parsed becomes a :class:`GroupReject` with its line,
field and reason. Only a file that is not the format at all raises (:class:`InputError`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import chain, islice
from typing import IO, Any

from csops.csvio import SNIFF_BYTES, choose_encoding, encoding_hint, open_text
from csops.errors import InputError, UsageError
from csops.model import (
    CURRENCY_ALIASES,
    Customer,
    Order,
    OrderItem,
    currency_exponent,
    to_minor,
    valid_currency,
)

Row = dict[str, str]


# An order as the store writes it: (platform, external_id, values, customer, items), where
# values = (number, email, status, currency, subtotal, shipping, tax, discount, total, refunded,
# tags, created_at, paid_at, shipped_at, delivered_at, cancelled_at, refunded_at) in minor units
# and stored times, customer = (email, phone, name, platform_buyer_id) and items =
# [(line_no, sku, name, quantity, unit_price_minor, total_minor)]: plain tuples, cheap to build,
# to hash and to send between processes.
Compact = tuple[str, str, tuple[Any, ...], tuple[Any, ...], list[tuple[Any, ...]]]


_AMOUNT_NAMES = ("subtotal", "shipping", "tax", "discount", "total", "refunded")


def check_magnitudes(data: Compact) -> None:
    """Every amount of a parsed order below ``MAX_MINOR`` (10^13 in a two-decimal currency):
    each cell is bounded as it is read, but a line's price × quantity, or a sum over many
    lines, can still pass SQLite's 64-bit integers and fail the whole batch's write."""
    amounts, items = data[2][4:10], data[4]
    low, high = -MAX_MINOR, MAX_MINOR
    if not (min(amounts) > low and max(amounts) < high):
        name, amount = next(
            (n, a) for n, a in zip(_AMOUNT_NAMES, amounts, strict=True) if not low < a < high
        )
        raise FieldError(name, f"absurd {name}: {amount} minor units", "below 10^13")
    for item in items:  # a loop, not all(): this runs once per order of every import
        if not (low < item[5] < high and low < item[4] < high):
            raise FieldError(
                "line total",
                f"absurd line {item[0]}: {item[4]} × {item[3]}",
                "a line total below 10^13",
            )


def compact(order: Order) -> Compact:
    c = order.customer
    return (
        order.platform,
        order.external_id,
        (
            order.number,
            c.email,
            order.status,
            order.currency,
            order.subtotal_minor,
            order.shipping_minor,
            order.tax_minor,
            order.discount_minor,
            order.total_minor,
            order.refunded_minor,
            order.tags,
            order.created_at,
            order.paid_at,
            order.shipped_at,
            order.delivered_at,
            order.cancelled_at,
            getattr(order, "refunded_at", None),
        ),
        (c.email, c.phone, c.name, c.platform_buyer_id),
        [
            (i.line_no, i.sku, i.name, i.quantity, i.unit_price_minor, i.total_minor)
            for i in order.items
        ],
    )


def expand(data: Compact) -> Order:
    """The :class:`Order` of a compact order (``compact(expand(d)) == d`` when the values'
    email is the customer's, as every parser makes them)."""
    platform, external_id, v, c, items = data
    order = Order(
        platform=platform,
        external_id=external_id,
        number=v[0],
        status=v[2],
        currency=v[3],
        created_at=v[11],
        customer=Customer(email=c[0], phone=c[1], name=c[2], platform_buyer_id=c[3]),
        subtotal_minor=v[4],
        shipping_minor=v[5],
        tax_minor=v[6],
        discount_minor=v[7],
        total_minor=v[8],
        refunded_minor=v[9],
        paid_at=v[12],
        shipped_at=v[13],
        delivered_at=v[14],
        cancelled_at=v[15],
        tags=v[10],
        items=[OrderItem(*i) for i in items],
    )
    if v[16] is not None:
        order.refunded_at = v[16]  # type: ignore[attr-defined]
    return order


class FieldError(ValueError):
    """One cell is unusable: which field, what was wrong, what was expected."""

    def __init__(
        self, field: str, message: str, expected: str | None = None, line: int | None = None
    ):
        super().__init__(message)
        self.field = field
        self.message = message
        self.expected = expected
        self.line = line


@dataclass
class GroupReject:
    """Rows left out (all rows of one order, or one unreadable record) and why."""

    line: int
    message: str
    field: str | None = None
    expected: str | None = None
    rows: list[tuple[int, Any]] = dc_field(default_factory=list)  # (line, dict or raw list)


@dataclass
class ParseEnv:
    """What parsing needs besides the cells: the zone of naive times, fallback currency."""

    tz: tzinfo
    currency: str
    field_size_limit: int = 131072
    # parsed timestamps by cell text: exports repeat them (Paid at = Created at, item rows)
    times: dict[str, str] = dc_field(default_factory=dict, repr=False, compare=False)


@dataclass
class CsvFormat:
    """A file layout: how to split it into rows and how rows become orders."""

    name: str
    platform: str
    required: tuple[str, ...]
    parse_group: Callable[[list[tuple[int, Row]], ParseEnv], Order]
    group_key: Callable[[Row], str]
    delimiter: str = ","
    quoting: int = csv.QUOTE_MINIMAL
    aliases: dict[str, str] = dc_field(default_factory=dict)
    encoding: str | None = None
    external_id: Callable[[list[tuple[int, Row]]], str] | None = None  # default: group key
    # Optional, for speed: group_key(row) == key_cell(row[key_column]), and external_id(rows)
    # == unwrap(first row's id_column cell) or the key. Declared, rows are grouped and hashed
    # from their cells, and a row's dict is built only when the order is parsed or rejected.
    key_column: str | None = None
    key_cell: Callable[[str], str] | None = None
    id_column: str | None = None
    # Optional, for speed: given the header, a parse_group for rows as cell lists in header
    # order returning the order in compact form (same values, same errors), so neither a row
    # dict (built only if the order is rejected) nor an Order object is made.
    cell_parser: (
        Callable[[list[str]], Callable[[list[tuple[int, list[str]]], ParseEnv], Compact]] | None
    ) = None
    # Every column the format reads (besides ``required``): a header name that differs from
    # one of these only in case (``Created At``) is read as it.
    columns: tuple[str, ...] = ()
    # The zone the platform writes naive times in (Taobao: China time, FORMATS.md §4.1), used
    # unless [import] timezone says otherwise; None = the shop's timezone.
    timezone: str | None = None


# Bump when parsing changes what is stored, so unchanged files are parsed again once.
PARSER_VERSION = 2  # 2: Shopify's subtotal stored before discounts


@dataclass(slots=True)
class PendingOrder:
    """One order's raw rows, identified and hashed but not parsed yet.

    ``cells`` are (line, row) pairs; a row is a dict, or (with ``header``) the list of its cells
    in header order, turned into a dict only if the order is parsed: an unchanged order of a
    re-imported file never is.
    """

    platform: str
    external_id: str
    raw_hash: str
    cells: list[tuple[int, Any]]
    fmt: CsvFormat
    env: ParseEnv
    header: list[str] | None = None
    parser: Callable[[list[tuple[int, Any]], ParseEnv], Compact] | None = None  # for cell lists

    @property
    def rows(self) -> list[tuple[int, Row]]:
        header = self.header
        if header is None:
            return self.cells
        return [(line, dict(zip(header, values, strict=True))) for line, values in self.cells]

    def parse(self) -> Order:
        """The normalized order; raises FieldError (with its line) for a bad cell."""
        order = self.fmt.parse_group(self.rows, self.env)
        order.external_id = self.external_id
        return order

    def parse_compact(self) -> Compact:
        """:meth:`parse` in compact form; from the cells, without row dicts, where the format
        has a cell parser."""
        if self.parser is None or self.header is None:
            data = compact(self.parse())
        else:
            data = self.parser(self.cells, self.env)
            if data[1] != self.external_id:
                data = (data[0], self.external_id, *data[2:])
        check_magnitudes(data)
        return data

    def reject(self, exc: FieldError) -> GroupReject:
        first = self.cells[0][0]
        return GroupReject(exc.line or first, exc.message, exc.field, exc.expected, self.rows)


# ---------------------------------------------------------------- cell cleaning


_EXCEL_WRAPPED = re.compile(r'^="(.*)"$', re.S)


def unwrap(value: str | None) -> str:
    """Strip spaces and Excel's text protection ``="123"``; ``None`` becomes ``""``."""
    if not value:
        return ""
    text = value.strip()
    if text.startswith('="'):
        m = _EXCEL_WRAPPED.match(text)
        if m:
            text = m.group(1).strip()
    return text


def unquote_phone(value: str | None) -> str:
    """A phone or zip as typed, without the leading ``'`` spreadsheets use to keep it text."""
    text = unwrap(value)
    if text.startswith("'"):
        text = text[1:].strip()
    return text


def normalize_email(value: str | None) -> str | None:
    text = unwrap(value).lower()
    if not text or "@" not in text or "*" in text or " " in text:
        return None
    return text


_NOT_PHONE_ASCII = re.compile(r"[^0-9+]")


def normalize_phone(value: str | None) -> str | None:
    text = unquote_phone(value)
    if text.isascii():  # ASCII: isdigit() is exactly 0-9, so one regex pass does it
        digits = _NOT_PHONE_ASCII.sub("", text)
    else:
        digits = "".join(ch for ch in text if ch.isdigit() or ch == "+")
    if len(digits.lstrip("+")) < 5:
        return None
    return digits


_CACHE_MAX = 50_000  # entries per cache, so memory stays flat on any file

_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
)


# "-0500" -> (its timedelta,), or () when it is not a valid offset
_OFFSETS: dict[str, tuple[timedelta, ...]] = {}


def _offset(text: str) -> tuple[timedelta, ...]:
    try:
        off = datetime.fromisoformat(f"2000-01-01T00:00:00{text[:3]}:{text[3:]}").utcoffset()
    except ValueError:
        return ()
    return (off,) if off is not None else ()


def parse_time(value: str, env: ParseEnv, fld: str, fmt: str = "") -> str | None:
    """A timestamp cell → stored UTC ISO; blank → None; naive values are read in ``env.tz``."""
    if not value:
        return None
    cache = env.times
    key = f"{fmt}\x00{value}" if fmt else value
    hit = cache.get(key)
    if hit is not None:
        return hit
    text = value if value and len(value) == 25 and value[0] not in " =" else unwrap(value)
    if not text:
        return None
    dt: datetime | None = None
    if not fmt and len(text) == 25 and text[19] == " " and text[20] in "+-":
        # Shopify's "2024-03-05 14:02:11 -0500": the common case, by subtracting the offset
        off = _OFFSETS.get(text[20:])
        if off is None and len(_OFFSETS) < 1000:
            off = _OFFSETS[text[20:]] = _offset(text[20:])
        if off:
            try:
                local = datetime.fromisoformat(text[:19])
            except ValueError:
                local = None
            if local is not None and local.tzinfo is None and not local.microsecond:
                if not 1990 <= local.year <= 2100:
                    raise FieldError(
                        fld, f"date out of range: {text[:40]!r}", "a year between 1990 and 2100"
                    )
                out = (local - off[0]).isoformat() + "Z"
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[key] = out
                return out
        try:
            dt = datetime.fromisoformat(f"{text[:19]}{text[20:23]}:{text[23:]}")
        except ValueError:
            dt = None
    if dt is not None:
        pass
    elif fmt:
        try:
            dt = datetime.strptime(text, fmt)
        except ValueError:
            raise FieldError(fld, f"not a date/time: {text[:40]!r}", fmt) from None
    else:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            for f in _TIME_FORMATS:
                try:
                    dt = datetime.strptime(text, f)
                    break
                except ValueError:
                    continue
    if dt is None:
        raise FieldError(fld, f"not a date/time: {text[:40]!r}", "YYYY-MM-DD HH:MM:SS[ ±HHMM]")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=env.tz)
    if not 1990 <= dt.year <= 2100:
        raise FieldError(fld, f"date out of range: {text[:40]!r}", "a year between 1990 and 2100")
    u = dt.astimezone(timezone.utc)
    out = f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}Z"
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = out
    return out


_AMOUNT = re.compile(r"^[-+]?[¥$€£￥]?\s*(\d{1,3}(,\d{3})+|\d+)(\.\d+)?(元)?$")
_COMMA_AMOUNT = re.compile(r"^[-+]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$")
MAX_MINOR = 10**15
_PLAIN_AMOUNT = re.compile(r"^([-+]?)(\d{1,13})(?:\.(\d{1,12}))?$")
_EXPONENT: dict[str, int] = {}
# currency -> cell text -> minor units, for cells that parsed (amounts repeat: prices, 0.00)
_MONEY: dict[str, dict[str, int]] = {}


def parse_money(
    value: str, currency: str, fld: str, *, blank: int | None = 0, decimal_comma: bool = False
) -> int:
    """An amount cell → integer minor units of ``currency``; refuses ``1.234,56`` in a dot file."""
    if decimal_comma:
        cache = None
    else:
        cache = _MONEY.get(currency)
        if cache is None:
            cache = _MONEY[currency] = {}
        hit = cache.get(value)
        if hit is not None:
            return hit
        if len(cache) >= _CACHE_MAX:
            cache.clear()
    m = _PLAIN_AMOUNT.match(value) if value and not decimal_comma else None
    text = value if m else unwrap(value)
    if not text:
        if blank is None:
            raise FieldError(fld, "empty amount", "an amount like 12.50")
        return blank
    if m is None and not decimal_comma:
        m = _PLAIN_AMOUNT.match(text)
    if m:  # "1234.50", "-4.80", "0": exact integer arithmetic, fast
        sign, whole, frac = m.groups()
        exp = _EXPONENT.get(currency)
        if exp is None:
            exp = _EXPONENT[currency] = currency_exponent(currency)
        frac = frac or ""
        if len(frac) > exp:
            if frac[exp:].strip("0"):
                raise FieldError(
                    fld,
                    f"{text!r} has more decimals than {currency} allows ({exp})",
                    f"at most {exp} decimals for {currency}",
                )
            frac = frac[:exp]
        minor = int(whole) * 10**exp + (int(frac.ljust(exp, "0")) if exp else 0)
        if sign == "-":
            minor = -minor
        if cache is not None and value:
            cache[value] = minor
        return minor
    if decimal_comma:
        if not _COMMA_AMOUNT.match(text):
            raise FieldError(fld, f"not an amount: {text[:40]!r}", "an amount like 1.234,56")
        text = text.replace(".", "").replace(",", ".")
    elif not _AMOUNT.match(text):
        raise FieldError(fld, f"not an amount: {text[:40]!r}", "an amount like 1234.50")
    try:
        minor = to_minor(text.replace("元", ""), currency)
    except ValueError as exc:
        raise FieldError(
            fld, str(exc), f"at most {currency_exponent(currency)} decimals for {currency}"
        ) from None
    if abs(minor) >= MAX_MINOR:
        raise FieldError(fld, f"absurd amount: {text[:40]!r}", "an amount below 10^13")
    if cache is not None:
        cache[value] = minor
    return minor


def parse_quantity(value: str, fld: str, *, blank: int | None = None) -> int:
    text = unwrap(value)
    if not text and blank is not None:
        return blank
    if not text.isdigit() or not text.isascii():
        raise FieldError(fld, f"not a quantity: {text[:40]!r}", "a whole number ≥ 0")
    qty = int(text)
    if qty > 1_000_000:
        raise FieldError(fld, f"absurd quantity: {text[:40]!r}", "at most 1000000")
    return qty


_CURRENCIES: dict[str, str] = {}  # cell text -> code, for cells that were valid codes


def parse_currency(value: str, fld: str, default: str) -> str:
    hit = _CURRENCIES.get(value) if value else None
    if hit is not None:
        return hit
    given = unwrap(value).upper()
    text = CURRENCY_ALIASES.get(given, given) or default
    if not valid_currency(text):
        raise FieldError(fld, f"unknown currency {text[:10]!r}", "an ISO 4217 code like USD")
    if given and len(_CURRENCIES) < 1000:  # not a blank cell: the default is the caller's
        _CURRENCIES[value] = text
    return text


def require(row: Row, name: str) -> str:
    text = unwrap(row.get(name))
    if not text:
        raise FieldError(name, "empty", "a value")
    return text


def clean_text(value: str | None, limit: int = 500) -> str | None:
    """Free text (names, titles) as given, trimmed; None when blank."""
    text = unwrap(value)
    return text[:limit] if text else None


# ---------------------------------------------------------------- reading files


class EncodingMismatch(UsageError):
    """The bytes are not in the encoding we read them with (exit 2, nothing of the rest read)."""

    code = "bad_encoding"


_KINDS = {
    "gb18030": "a Chinese (GBK/GB18030)",
    "utf-8": "a UTF-8",
    "cp1252": "a Western (Windows-1252/Latin-1)",
}


def encoding_refusal(exc: UnicodeDecodeError, enc: str, file: str, line: int) -> EncodingMismatch:
    """The error for bytes ``enc`` refused: where, and which encoding they look like."""
    if _wide(enc):  # a UTF-16/32 file (told by its BOM) with bytes that break it: damaged
        advice = "the file is damaged there (re-export it)"
    else:
        hint = encoding_hint(bytes(exc.object[exc.start : exc.start + 16]))
        if hint == enc.lower() or (hint == "utf-8" and enc.lower().startswith("utf")):
            hint = "cp1252" if enc.lower().startswith("utf") else "utf-8"
        advice = f"pass --encoding {hint} if the file is {_KINDS[hint]} export"
    mismatch = EncodingMismatch(
        f"bytes not valid {enc} ({exc.reason}); {advice}",
        file=file,
        line=line,
        expected=f"text in {enc}",
    )
    return mismatch


def refuse_undecodable(binary: IO[bytes], encoding: str | None, file: str) -> None:
    """Read a seekable file once through its decoder before anything is written, so bytes it
    cannot decode refuse the file as a whole (exit 2, no rows), wherever they are."""
    head = binary.read(SNIFF_BYTES)
    binary.seek(0)
    enc = choose_encoding(head, encoding)  # as open_source will decide it
    try:
        decoder = codecs.getincrementaldecoder(enc)("strict")
    except LookupError:
        return  # open_source names the unknown encoding
    wide = _wide(enc)
    line = 1
    try:
        while block := binary.read(1 << 20):
            try:
                decoded = decoder.decode(block)
            except UnicodeDecodeError as exc:
                before = bytes(exc.object[: exc.start])
                at = line + (_wide_newlines(before, head, enc) if wide else before.count(b"\n"))
                raise encoding_refusal(exc, enc, file, at) from None
            # a UTF-16/32 newline is not one 0x0A byte (上 is U+4E0A): count decoded newlines
            line += decoded.count("\n") if wide else block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise encoding_refusal(exc, enc, file, line) from None
    finally:
        binary.seek(0)


def _wide(enc: str) -> bool:
    return enc.lower().replace("_", "-").startswith(("utf-16", "utf-32"))


def _wide_newlines(data: bytes, head: bytes, enc: str) -> int:
    """Newlines in the valid start of a UTF-16/32 block, in the byte order its BOM set (or its
    codec names, for a file without a BOM)."""
    if enc.lower().endswith(("-le", "-be")):
        return data.decode(enc, "replace").count("\n")
    boms = (
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    )
    codec = next((name for bom, name in boms if head.startswith(bom)), "utf-16-le")
    return data.decode(codec, "replace").count("\n")


def open_source(binary: IO[bytes], encoding: str | None) -> tuple[IO[str], str]:
    """Decode a stream, detecting UTF-8 (BOM or not), UTF-16 (BOM or not) or GB18030."""
    try:
        text, enc = open_text(binary, encoding)
    except LookupError:
        raise UsageError(
            f"unknown encoding {encoding!r}", expected="utf-8, utf-8-sig, gb18030, gbk, utf-16"
        ) from None
    return text, enc


def _canonical(header: list[str], fmt: CsvFormat) -> list[str]:
    """Header names as the format spells them: stripped, without a BOM, aliases resolved, and
    a known name in another case (``Created At``) read as the known one unless both appear."""
    out = []
    for h in header:
        name = h.replace("\ufeff", "").strip()
        out.append(fmt.aliases.get(name, name))
    known = {*fmt.required, *getattr(fmt, "columns", ()), *fmt.aliases.values()}
    folded = {k.casefold(): k for k in known}
    present = set(out)
    for i, name in enumerate(out):
        want = folded.get(name.casefold()) if name not in known else None
        if want is not None and want not in present:
            out[i] = want
            present.add(want)
    return out


def check_header(header: list[str], fmt: CsvFormat, file: str) -> None:
    missing = [h for h in fmt.required if h not in header]
    if missing:
        shown = ", ".join(h for h in header[:8] if h) or "nothing"
        if len(shown) > 160:
            shown = shown[:160] + " …"
        elif len(header) > 8:
            shown += " …"
        raise InputError(
            f"not a file in the {fmt.name} format: missing column(s) {', '.join(missing)}; "
            f"found {shown}",
            file=file,
            line=1,
            expected="columns " + ", ".join(fmt.required),
            code="missing_column",
        )


_KEPT_CHARS = 10_000  # of an unreadable record's text, kept for the rejects file
_RECOVERY_LINES = 200  # the most lines one record may span right after a stray quote
_BLOCK_CHARS = 16384  # lines are read a block at a time (in C); a decode error names its block


class _Lines:
    """The decoded text's physical lines for ``csv.reader``, read a block at a time (in C).

    The csv module decides where a record ends, by the CSV rules (a quote opens a field only
    at its start, so ``12" pizza`` opens nothing; a quoted field may span lines). The blocks
    of the record being read are kept by line number, so a record that turns out bad can be
    quoted in the rejects file and the lines after its first read again.
    """

    def __init__(self, text: IO[str]) -> None:
        self.text = text
        self.blocks: deque[tuple[int, list[str]]] = deque()  # (number of its first line, lines)
        self.read = 0  # physical lines read from the text so far
        self.keep_from = 1  # lines before this one are never needed again
        self.has_nul = False  # a NUL was seen: check the cells of every later row
        self._gen = self._blocks()

    def _blocks(self) -> Iterator[list[str]]:
        while block := self.text.readlines(_BLOCK_CHARS):
            if not self.has_nul and "\x00" in "".join(block):
                self.has_nul = True
            blocks = self.blocks
            while blocks and blocks[0][0] + len(blocks[0][1]) <= self.keep_from:
                blocks.popleft()
            blocks.append((self.read + 1, block))
            self.read += len(block)
            yield block

    def source(self, first: int = 0) -> Iterator[str]:
        """The lines from number ``first`` on (0: where the text stands, for a new file)."""
        rest = chain.from_iterable(self._gen)
        if not first:
            return rest
        again = [block[max(0, first - start) :] for start, block in self.blocks]
        return chain(chain.from_iterable(again), rest)

    def line(self, number: int) -> str:
        """Line ``number`` without its newline ("" if it is no longer kept)."""
        for start, block in self.blocks:
            if start <= number < start + len(block):
                return block[number - start].rstrip("\r\n")
        return ""


class _RunOn(Exception):
    """A record read after a stray quote ran on for more than _RECOVERY_LINES lines."""


class _Recovering:
    """The lines after a stray quote, for a reader whose records may span at most
    _RECOVERY_LINES lines until one record reads whole: a hostile file whose every line opens
    a quote would otherwise be read to its end once per line (quadratic)."""

    def __init__(self, src: Iterator[str]) -> None:
        self.src = src
        self.record_lines = 0  # lines handed out for the record being read

    def __iter__(self) -> _Recovering:
        return self

    def __next__(self) -> str:
        if self.record_lines >= _RECOVERY_LINES:
            raise _RunOn
        self.record_lines += 1
        return next(self.src)


_STRAY_QUOTE = (
    "quote opened here does not close into a row of the header's columns",
    'a quoted field closed by " on a later line',
)


def _quoted(text: str) -> str:
    """An unreadable record's text for the rejects file, cut to a sane length."""
    if len(text) > _KEPT_CHARS:
        return f"{text[:_KEPT_CHARS]}… [cut: {len(text)} characters in all]"
    return text


def iter_records(
    text: IO[str], fmt: Any, env: ParseEnv, file: str, enc: str, *, as_values: bool = False
) -> tuple[list[str], Iterator[tuple[int, Any] | GroupReject]]:
    """The header and, per record, ``(first line, row by header)`` or a reject for it.

    With ``as_values`` a good row comes as the list of its cells in header order (the caller
    makes sure the header has no duplicate names, so that list and the dict agree).

    A record spanning several lines that fails (a quote left open to the end of the file or
    past ``field_size_limit`` characters, or one that does not read as one row of the
    header's width) costs its first line only: that line is rejected and reading starts
    again on the next one, so one stray quote costs one row, never the rows after it.
    """
    limit = env.field_size_limit
    csv.field_size_limit(limit)
    lines = _Lines(text)
    delimiter = fmt.delimiter

    def decode_failure(exc: UnicodeDecodeError, line: int) -> EncodingMismatch:
        return encoding_refusal(exc, enc, file, line)

    source = lines.source()
    try:
        head = next(source, "")
    except UnicodeDecodeError as exc:
        raise decode_failure(exc, 1) from None
    if (
        delimiter == ","
        and "\t" in head
        and head.count("\t") + 1 >= len(fmt.required)
        and "," not in head.split("\t")[0]
    ):
        delimiter = "\t"  # Excel's "Unicode Text" save (UTF-16) is tab-separated
    try:
        raw_header = next(csv.reader([head], delimiter=delimiter, quoting=fmt.quoting), [])
    except csv.Error as exc:
        raise InputError(f"cannot read the header: {exc}", file=file, line=1) from None
    header = _canonical(raw_header, fmt)
    check_header(header, fmt, file)
    width = len(header)

    def reader_from(src: Iterator[str]) -> Any:
        return csv.reader(src, delimiter=delimiter, quoting=fmt.quoting, strict=True)

    def row_starts_at(first: int) -> bool:
        """Whether reading from line ``first`` gives a row of the header's width as its first
        record (read within _RECOVERY_LINES lines; its cells may span lines too). The lines
        read stay in ``lines``: the caller starts a new reader afterwards."""
        peek = reader_from(islice(lines.source(first), _RECOVERY_LINES))
        try:
            record = next(peek, None)
        except csv.Error:
            return False
        return record is not None and len(record) == width

    def wrong_width(start: int, values: list[str]) -> GroupReject:
        return GroupReject(
            start,
            f"{len(values)} columns where the header has {width}",
            expected=f"{width} columns",
            rows=[(start, values)],
        )

    def records() -> Iterator[tuple[int, Row] | GroupReject]:
        feed: _Recovering | None = None  # the lines after a stray quote, while it lasts
        reader = reader_from(source)
        base = 1  # physical lines before the current reader's first (the header)
        done = 0  # the current reader's line_num after its last record
        while True:
            error = None
            try:
                # rows come from this loop; an error leaves it and re-enters it below
                for values in reader:
                    start = base + done + 1  # the physical line this record starts on
                    span = reader.line_num - done
                    done = reader.line_num
                    lines.keep_from = start + span
                    if feed is not None:
                        feed.record_lines = 0
                    if len(values) != width:
                        if not values or not (values[0].strip() or any(v.strip() for v in values)):
                            continue
                        if span > 1:
                            lines.keep_from = start + 1  # its lines may be read again
                            if row_starts_at(start + 1):
                                # a stray quote on its first line swallowed the rows after it
                                yield GroupReject(
                                    start,
                                    _STRAY_QUOTE[0],
                                    expected=_STRAY_QUOTE[1],
                                    rows=[(start, [_quoted(lines.line(start))])],
                                )
                                feed = _Recovering(lines.source(start + 1))
                                reader, base, done = reader_from(feed), start, 0
                                break
                            # one row over several lines, of the wrong width: one reject
                            yield wrong_width(start, values)
                            lines.keep_from = start + span
                            feed, base, done = None, start + span - 1, 0
                            reader = reader_from(lines.source(start + span))  # after the peek
                            break
                        yield wrong_width(start, values)
                    elif not values[0].strip() and not any(v.strip() for v in values):
                        continue
                    elif lines.has_nul:
                        row: Any = values
                        if not as_values or any("\x00" in v for v in values):
                            row = dict(zip(header, values, strict=False))
                        bad = None
                        if type(row) is dict:
                            bad = next((k for k, v in row.items() if "\x00" in v), None)
                        if bad is not None:
                            yield GroupReject(
                                start,
                                "NUL byte in cell",
                                field=bad,
                                expected="text",
                                rows=[(start, row)],
                            )
                        else:
                            yield start, row
                    elif as_values:
                        yield start, values
                    else:
                        yield start, dict(zip(header, values, strict=False))
                    if feed is not None:  # a record read whole: back to the fast reader
                        feed = None
                        reader, base, done = (
                            reader_from(lines.source(start + span)),
                            start + span - 1,
                            0,
                        )
                        break
                else:
                    return
                continue  # a new reader
            except UnicodeDecodeError as exc:
                raise decode_failure(exc, lines.read + 1) from None
            except csv.Error as exc:
                error = str(exc)
            except _RunOn:
                error = "unexpected end of data"
            start = base + done + 1
            span = max(1, reader.line_num - done)
            done = reader.line_num
            lines.keep_from = start
            if span > 1:  # a quoted field ran on past the end or the limit: its first line
                unterminated = "unexpected end of data" in error or "field limit" in error
                within = f'a closing " within {limit} characters'
                reason, expected = (
                    ("unterminated quoted field", within) if unterminated else _STRAY_QUOTE
                )
                rows = [(start, [_quoted(lines.line(start))])]
                yield GroupReject(start, reason, expected=expected, rows=rows)
                feed = _Recovering(lines.source(start + 1))
                reader, base, done = reader_from(feed), start, 0
                continue
            if "field larger than field limit" in error:
                error = f"field longer than the limit of {limit} characters"
            rows = [(start, [_quoted(lines.line(start))])]
            yield GroupReject(start, error, expected="well-formed CSV", rows=rows)
            lines.keep_from = start + 1
            if feed is not None:
                feed.record_lines = 0

    return header, records()


class SeenKeys:
    """The order keys met so far in a file, in memory that does not grow with the file.

    Rows of an order must be consecutive, so every key met is remembered to reject one that
    comes back. A set of every key costs ~70 bytes an order (127 MB of peak RSS at 1,000,000
    one-row orders, measured); here the newest ``in_memory`` keys stay in a set and older ones
    go, in batches, to a private temporary SQLite file (deleted when closed) behind a Bloom
    filter of two bits per key. A key not in the set costs two bit tests, and a lookup in the
    file only when both bits are set (a repeat, or a false positive: ~0.1 % of keys at 1M
    spilled keys, ~7 % at 10M). Memory: the set, the filter's 8 MB, SQLite's 2 MB page cache.
    """

    def __init__(self, in_memory: int = 200_000, filter_bits: int = 1 << 26) -> None:
        self._recent: set[str] = set()
        self._in_memory = in_memory
        self._mask = filter_bits - 1  # a power of two
        self._bits = bytearray()
        self._spilled: sqlite3.Connection | None = None

    def __contains__(self, key: str) -> bool:
        if key in self._recent:
            return True
        if self._spilled is None:
            return False
        h, bits, mask = hash(key), self._bits, self._mask
        i, j = h & mask, (h >> 32) & mask
        if not (bits[i >> 3] >> (i & 7)) & 1 or not (bits[j >> 3] >> (j & 7)) & 1:
            return False
        row = self._spilled.execute("SELECT 1 FROM seen WHERE key = ?", (key,)).fetchone()
        return row is not None

    def add(self, key: str) -> None:
        self._recent.add(key)
        if len(self._recent) >= self._in_memory:
            self._spill()

    def _spill(self) -> None:
        if self._spilled is None:
            self._spilled = sqlite3.connect("", isolation_level=None)  # "" = private temp file
            # private, deleted on close: nothing to recover after a crash, so no journal
            self._spilled.execute("PRAGMA journal_mode = OFF")
            self._spilled.execute("PRAGMA synchronous = OFF")
            self._spilled.execute("CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID")
            self._bits = bytearray((self._mask + 1) // 8)
        bits, mask = self._bits, self._mask
        for key in self._recent:
            h = hash(key)
            i, j = h & mask, (h >> 32) & mask
            bits[i >> 3] |= 1 << (i & 7)
            bits[j >> 3] |= 1 << (j & 7)
        with self._spilled:  # in key order: B-tree appends, not 200,000 random inserts
            self._spilled.executemany(
                "INSERT OR IGNORE INTO seen (key) VALUES (?)", ((k,) for k in sorted(self._recent))
            )
        self._recent = set()

    def close(self) -> None:
        if self._spilled is not None:
            self._spilled.close()
            self._spilled = None


def read_orders(
    binary: IO[bytes],
    fmt: CsvFormat,
    env: ParseEnv,
    *,
    file: str,
    encoding: str | None = None,
) -> tuple[list[str], Iterator[PendingOrder | GroupReject]]:
    """Stream a file in ``fmt``: its header, then (unparsed) orders and rejects in file order.

    Rows of one order must be consecutive (all platforms write them so); an order whose rows
    reappear later in the file is rejected rather than silently overwritten, and an order one
    of whose rows could not be read is rejected whole (see :func:`_grouped`). Each order comes
    with a hash of its raw cells (and of everything that steers parsing), so the store can
    skip an unchanged order without parsing it at all.
    """
    text, enc = open_source(binary, encoding or fmt.encoding)
    header, recs = iter_records(text, fmt, env, file, enc, as_values=True)
    salt = repr((PARSER_VERSION, fmt.name, str(env.tz), env.currency, tuple(header))).encode(
        "utf-8", "surrogatepass"
    )
    key_cell = fmt.key_cell
    cells_ok = (
        key_cell is not None
        and fmt.key_column in header
        and len(set(header)) == len(header)
        and (fmt.external_id is None or fmt.id_column is not None)
    )
    if cells_ok:
        key_at = header.index(fmt.key_column)  # type: ignore[arg-type]
        id_at = header.index(fmt.id_column) if fmt.id_column in header else None
        return header, _orders_by_cells(recs, fmt, env, header, salt, key_at, id_at)

    def as_row(values: Any) -> Row:
        return values if type(values) is dict else dict(zip(header, values, strict=False))

    def key_of(values: Any) -> str:
        return fmt.group_key(as_row(values))

    def orders() -> Iterator[PendingOrder | GroupReject]:
        for item in _grouped(recs, key_of, _reject_cells(header, fmt.delimiter)):
            if type(item) is GroupReject:
                yield _rows_as_dicts(item, header)
                continue
            key, group, bad = item
            rows = [(line, as_row(v)) for line, v in group]
            if bad:
                yield _bad_group(key, rows, bad)
                continue
            cells = "".join(["\x1f".join(r.values()) + "\x1e" for _, r in rows])
            digest = hashlib.blake2b(
                salt + cells.encode("utf-8", "surrogatepass"), digest_size=16
            ).hexdigest()
            ext = fmt.external_id(rows) if fmt.external_id else key
            yield PendingOrder(fmt.platform, ext, digest, rows, fmt, env)

    return header, orders()


_NOT_CONSECUTIVE = "all rows of an order together"


def _bad_group(key: str, rows: list[tuple[int, Any]], bad: int) -> GroupReject:
    """The reject of an order that cannot be stored whole: ``bad`` is the line of a row of it
    that was rejected, or -1 when its rows reappear after another order's."""
    if bad < 0:
        return GroupReject(
            rows[0][0],
            f"rows of order {key!r} are not consecutive (seen earlier in the file; the earlier "
            "rows were imported as that order: fix the file and import it again)",
            field=None,
            expected=_NOT_CONSECUTIVE,
            rows=rows,
        )
    return GroupReject(
        rows[0][0],
        f"another row of order {key!r} was rejected (line {bad}): the order is left out whole",
        field=None,
        expected="every row of the order readable",
        rows=rows,
    )


def _rows_as_dicts(rej: GroupReject, header: list[str]) -> GroupReject:
    """A reject whose row was read whole carries it as a dict (header name -> cell)."""
    rows = rej.rows
    if len(rows) == 1 and type(rows[0][1]) is list and len(rows[0][1]) == len(header):
        rej.rows = [(rows[0][0], dict(zip(header, rows[0][1], strict=True)))]
    return rej


def _reject_cells(header: list[str], delimiter: str) -> Callable[[GroupReject], Any]:
    """A rejected record's cells as best they can be read (its text read leniently), to tell
    which order it belonged to; None when there is nothing to read."""
    width = len(header)

    def cells(rej: GroupReject) -> Any:
        if len(rej.rows) != 1:
            return None
        values = rej.rows[0][1]
        if type(values) is dict or (values and (len(values) != 1 or width == 1)):
            return values
        if not values or not values[0]:
            return None
        try:
            return next(csv.reader([values[0]], delimiter=delimiter, strict=False), None)
        except csv.Error:
            return None

    return cells


def _grouped(
    recs: Iterator[tuple[int, Any] | GroupReject],
    key_of: Callable[[Any], str],
    reject_cells: Callable[[GroupReject], Any],
) -> Iterator[tuple[str, list[tuple[int, Any]], int] | GroupReject]:
    """Consecutive good rows with the same order key, as ``(key, rows, bad)``; rejects pass
    through as they come.

    ``bad`` is 0 for an order that can be stored, the line of a rejected row of it, or -1 when
    its key was met before (rows not consecutive). A rejected row belongs to an order when its
    cells (read leniently) name that order's key, or when it sits between two rows of the
    order: storing the order without it would store it with an item missing.
    """
    seen = SeenKeys()
    group: list[tuple[int, Any]] = []
    key = ""
    bad = 0  # of the current group
    since = 0  # line of the first reject since the last good row
    named: dict[str, int] = {}  # key -> line, of rejects naming an order not met yet

    def finish() -> tuple[str, list[tuple[int, Any]], int]:
        if key in seen:
            return key, group, -1
        seen.add(key)
        return key, group, bad

    def key_of_reject(rej: GroupReject) -> str | None:
        values = reject_cells(rej)
        if values is None:
            return None
        try:
            return key_of(values)
        except (FieldError, IndexError, KeyError, TypeError):
            return None

    try:
        for rec in recs:
            if type(rec) is GroupReject:
                yield rec
                k = key_of_reject(rec)
                if k is not None and group and k == key:
                    bad = bad or rec.line
                elif k is not None and len(named) < 10_000:
                    named.setdefault(k, rec.line)
                since = since or rec.line
                continue
            line, values = rec  # type: ignore[misc]
            try:
                k = key_of(values)
            except FieldError as exc:
                rej = GroupReject(line, exc.message, exc.field, exc.expected, [(line, values)])
                yield rej
                since = since or line
                continue
            if group and k != key:
                yield finish()
                group = []
                bad = 0
            if since:  # rejects since the last good row: between two rows of this order?
                bad = (bad or since) if group else 0
                since = 0
            if not group and named:  # a reject earlier in the file named this order
                bad = bad or named.pop(k, 0)
            key = k
            group.append((line, values))
        if group:
            yield finish()
    finally:
        seen.close()


def _orders_by_cells(
    recs: Iterator[tuple[int, Any] | GroupReject],
    fmt: CsvFormat,
    env: ParseEnv,
    header: list[str],
    salt: bytes,
    key_at: int,
    id_at: int | None,
) -> Iterator[PendingOrder | GroupReject]:
    """:func:`read_orders` for a format that declares its key (and id) column: the same orders,
    hashes and rejects, from cell lists; row dicts are built only for a reject."""
    key_cell = fmt.key_cell
    assert key_cell is not None
    platform = fmt.platform
    parser = fmt.cell_parser(header) if fmt.cell_parser is not None else None
    salted = hashlib.blake2b(salt, digest_size=16)
    key_name = header[key_at]

    def key_of(values: Any) -> str:
        if type(values) is dict:
            return key_cell(values.get(key_name, ""))
        return key_cell(values[key_at])

    def as_dicts(rows: list[tuple[int, list[str]]]) -> list[tuple[int, Any]]:
        return [(line, dict(zip(header, v, strict=False))) for line, v in rows]

    for item in _grouped(recs, key_of, _reject_cells(header, fmt.delimiter)):
        if type(item) is GroupReject:
            yield _rows_as_dicts(item, header)
            continue
        key, group, bad = item  # type: ignore[misc]
        if bad:
            yield _bad_group(key, as_dicts(group), bad)
            continue
        if len(group) == 1:
            cells = "\x1f".join(group[0][1]) + "\x1e"
        else:
            cells = "".join(["\x1f".join(v) + "\x1e" for _, v in group])
        h = salted.copy()  # = blake2b(salt + cells)
        h.update(cells.encode("utf-8", "surrogatepass"))
        digest = h.hexdigest()
        ext = (unwrap(group[0][1][id_at]) or key) if id_at is not None else key
        yield PendingOrder(platform, ext, digest, group, fmt, env, header, parser)


def with_line(rows: list[tuple[int, Row]], fn: Callable[[int, Row], Any]) -> list[Any]:
    """Apply ``fn`` to each row, tagging a FieldError with the row's line."""
    out = []
    for line, row in rows:
        try:
            out.append(fn(line, row))
        except FieldError as exc:
            exc.line = exc.line or line
            raise
    return out
