"""Read and write CSV the safe way.

Every CSV csops writes for a spreadsheet (rejects, decisions, refund exports, ``--csv``) goes
through :func:`safe_cell`: a text cell starting with ``= + - @`` TAB, CR or ``|`` is prefixed with
``'`` so Excel or LibreOffice never evaluates it as a formula; numbers stay bare, including a
signed amount written as text (``-12.50``), which a spreadsheet reads as a number, not a formula.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def safe_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


class SafeCsvWriter:
    """A csv.DictWriter that neutralises formula-looking text in every cell."""

    def __init__(self, stream: IO[str], columns: list[str], *, header: bool = True) -> None:
        self.columns = columns
        self._writer = csv.writer(stream, lineterminator="\r\n")
        if header:
            self._writer.writerow([safe_cell(c) for c in columns])

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow([safe_cell(row.get(c)) for c in self.columns])

    def write_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)


def sniff_encoding(head: bytes) -> str:
    """Guess the encoding of a CSV from its first bytes: UTF-8 (with or without BOM) or GB18030.

    GB18030 is a superset of GBK and GB2312, so it reads every Taobao/Tmall generation.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still UTF-8.
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
    try:
        head.decode("gb18030")
    except UnicodeDecodeError:
        return "utf-8"
    # GB18030 also decodes most Western single-byte text ("Jürgen" -> "J黵gen"): take it only
    # when the double bytes look like Chinese; else read UTF-8 and let the error say which
    return "gb18030" if looks_chinese(head) else "utf-8"


_DOUBLE_BYTE = re.compile(rb"[\x81-\xfe][\x40-\xfe]")


def looks_chinese(data: bytes) -> bool:
    """Whether the non-ASCII bytes of ``data`` read as GB2312-range Chinese characters (both
    bytes >= 0xA1, as nearly every character of a Taobao export), not as the lone accented
    letters of a Windows-1252 text (a high byte followed by an ASCII letter)."""
    pairs = _DOUBLE_BYTE.findall(data)
    if not pairs:
        return False
    chinese = sum(1 for p in pairs if p[0] >= 0xA1 and p[1] >= 0xA1)
    return chinese * 2 >= len(pairs)


def encoding_hint(bad: bytes) -> str:
    """The encoding to suggest for bytes another encoding refused, and what such files are."""
    if looks_chinese(bad):
        return "gb18030"
    try:
        bad.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1252"


def open_text(binary: IO[bytes], encoding: str | None = None) -> tuple[IO[str], str]:
    """Wrap a binary stream as text, detecting the encoding from a peek; streams, never slurps."""
    buffered = binary if hasattr(binary, "peek") else io.BufferedReader(binary)  # type: ignore[arg-type]
    head = buffered.peek(65536)[:65536]  # type: ignore[attr-defined]
    enc = encoding or sniff_encoding(head)
    if enc.lower().replace("_", "-") in ("utf-8", "utf8") and head.startswith(codecs.BOM_UTF8):
        enc = "utf-8-sig"
    text = io.TextIOWrapper(buffered, encoding=enc, errors="strict", newline="")  # type: ignore[arg-type]
    return text, enc


class BadRecord(dict):
    """A record that could not be read as a row (unterminated quote, wrong column count).

    It is yielded in the row's place, empty, with the ``reason``, so the caller rejects it with
    its line number and goes on: one stray quote costs one row, never the rest of the file.
    """

    def __init__(self, reason: str, expected: str) -> None:
        super().__init__()
        self.reason = reason
        self.expected = expected


def opens_quote(text: str, delimiter: str = ",") -> bool:
    """Whether ``text`` ends inside a quoted field by the CSV rules: a quote opens a field only
    at the field's start, so the inch mark of ``12" pizza`` opens nothing."""
    try:
        for _ in csv.reader([text], delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _records(
    text: IO[str],
    limit: int,
    delimiter: str = ",",
    complete: Callable[[str], bool] = lambda _record: True,
) -> Iterator[tuple[int, str, bool]]:
    """(first physical line, record text, closed) — a record spans lines while a quoted field
    is open.

    A quote still open after ``limit`` characters or at the end of the file, or a record over
    several lines that is not ``complete`` (one row of the header's width), makes the record
    unterminated (closed=False); the lines after its first are then read again as records.
    """
    pending: deque[tuple[int, str]] = deque()
    number = 0

    def read() -> tuple[int, str] | None:
        nonlocal number
        if pending:
            return pending.popleft()
        line = text.readline()
        if not line:
            return None
        number += 1
        return number, line

    while (first := read()) is not None:
        start, line = first
        if not line.count('"') & 1 or not opens_quote(line, delimiter):
            yield start, line, True
            continue
        taken: list[tuple[int, str]] = []
        size, closed = len(line), False
        while size <= limit and (nxt := read()) is not None:
            taken.append(nxt)
            size += len(nxt[1])
            if nxt[1].count('"') & 1 and not opens_quote(
                line + "".join(t[1] for t in taken), delimiter
            ):
                closed = True
                break
        record = line + "".join(t[1] for t in taken) if closed and size <= limit else ""
        if record and complete(record):
            yield start, record, True
        else:
            pending.extendleft(reversed(taken))
            yield start, line, False


def iter_dict_rows(
    text: IO[str], *, delimiter: str = ",", limit: int = 1_000_000
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header (stripped names) and an iterator of (first physical line, row by header name).

    Streams record by record. A record that cannot be a row comes as a :class:`BadRecord`.
    """
    csv.field_size_limit(max(limit, csv.field_size_limit()))

    def parse(record: str) -> list[str]:
        return next(csv.reader([record], delimiter=delimiter, strict=True), [])

    def complete(record: str) -> bool:
        try:
            return not width or len(parse(record)) == width
        except csv.Error:
            return False

    width = 0
    records = _records(text, limit, delimiter, complete)

    header: list[str] = []
    for _line, record, _closed in records:
        try:
            header = [h.strip().lstrip("\ufeff") for h in parse(record)]
        except csv.Error:
            header = []
        break
    width = len(header)

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for line, record, closed in records:
            if not closed:
                yield line, BadRecord("unterminated quoted field", 'a closing "')
                continue
            try:
                values = parse(record)
            except csv.Error as exc:
                yield line, BadRecord(f"malformed CSV ({exc})", "well-formed CSV")
                continue
            if not any(v.strip() for v in values):
                continue
            if len(values) != width:
                yield (
                    line,
                    BadRecord(
                        f"{len(values)} columns where the header has {width}", f"{width} columns"
                    ),
                )
                continue
            yield line, dict(zip(header, values, strict=True))

    return header, rows()
