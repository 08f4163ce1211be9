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
from collections.abc import Iterable, Iterator
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
    """Guess the encoding of a CSV from its first bytes: UTF-8 (with or without BOM), UTF-16
    (with a BOM, or without one when its zero bytes give it away) or GB18030.

    GB18030 is a superset of GBK and GB2312, so it reads every Taobao/Tmall generation.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    wide = _bomless_utf16(head)
    if wide:
        return wide
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still UTF-8.
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
    try:  # not final: the sample may end inside a double-byte character
        codecs.getincrementaldecoder("gb18030")().decode(head, final=False)
    except UnicodeDecodeError:
        return "utf-8"
    # GB18030 also decodes most Western single-byte text ("Jürgen" -> "J黵gen"): take it only
    # when the double bytes look like Chinese; else read UTF-8 and let the error say which
    return "gb18030" if looks_chinese(head) else "utf-8"


def _bomless_utf16(head: bytes) -> str | None:
    """``utf-16-le``/``-be`` for UTF-16 saved without its BOM: every ASCII character (commas,
    digits, line ends, Latin letters) has a zero byte on the same side of each pair, which no
    UTF-8, GBK or Windows-1252 text has (a NUL there is a damaged cell, not half the bytes)."""
    sample = head[:4096]
    if len(sample) < 16:
        return None
    even, odd = sample[0::2], sample[1::2]
    zeros_even, zeros_odd = even.count(0), odd.count(0)
    if zeros_odd >= len(odd) // 4 and zeros_even <= len(even) // 50:
        return "utf-16-le"
    if zeros_even >= len(even) // 4 and zeros_odd <= len(odd) // 50:
        return "utf-16-be"
    return None


_DOUBLE_BYTE = re.compile(rb"[\x81-\xfe][\x40-\xfe]")


def looks_chinese(data: bytes) -> bool:
    """Whether the non-ASCII bytes of ``data`` read as Chinese GBK rather than as the accented
    letters of a Windows-1252 text, both of which GB18030 decodes.

    A byte pair counts for Chinese when it is a common hanzi or full-width symbol of GB2312
    (lead 0xB0-0xD7 or 0xA1-0xA9, trail >= 0xA1) or a GBK extension character with a high
    trail byte (lead <= 0xA0); it counts for Western text when its second byte is an ASCII
    letter or digit (an accented letter inside a word: ``Jü|rgen``). Pairs of two accented
    letters (``öß``) count for neither.
    """
    chinese = western = 0
    for lead, trail in _DOUBLE_BYTE.findall(data):
        hanzi = trail >= 0xA1 and (0xB0 <= lead <= 0xD7 or 0xA1 <= lead <= 0xA9)
        if hanzi or (lead <= 0xA0 and trail >= 0x80):  # GB2312 common, or a GBK extension
            chinese += 1
        elif trail < 0x80 and chr(trail).isalnum():
            western += 1
    return chinese > western


def encoding_hint(bad: bytes) -> str:
    """The encoding to suggest for bytes another encoding refused, and what such files are."""
    if looks_chinese(bad):
        return "gb18030"
    try:
        bad.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1252"


SNIFF_BYTES = 65536  # the start of a file the encoding is told from


def choose_encoding(head: bytes, encoding: str | None) -> str:
    """The codec to read a file starting with ``head`` with: ``encoding`` if given, else the
    sniffed one; UTF-8 with a BOM as ``utf-8-sig`` so the BOM never reaches a header name."""
    enc = encoding or sniff_encoding(head)
    if enc.lower().replace("_", "-") in ("utf-8", "utf8") and head.startswith(codecs.BOM_UTF8):
        enc = "utf-8-sig"
    return enc


def open_text(binary: IO[bytes], encoding: str | None = None) -> tuple[IO[str], str]:
    """Wrap a binary stream as text, detecting the encoding from a peek; streams, never slurps."""
    buffered = binary if hasattr(binary, "peek") else io.BufferedReader(binary)  # type: ignore[arg-type]
    head = buffered.peek(SNIFF_BYTES)[:SNIFF_BYTES]  # type: ignore[attr-defined]
    enc = choose_encoding(head, encoding)
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


_MAX_RECORD_LINES = 1000  # the most physical lines one record may span


class _RunOn(Exception):
    """A record ran on past _MAX_RECORD_LINES lines (a quote that never closes)."""


class _LineFeed:
    """Physical lines for ``csv.reader``, numbered, remembering those of the record being read
    so that a record that turns out bad can be given back from its second line on."""

    def __init__(self, text: IO[str]) -> None:
        self.text = text
        self.pending: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []  # (number, line) of the current record
        self.number = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if len(self.taken) >= _MAX_RECORD_LINES:
            raise _RunOn
        item = self.read_item()
        if item is None:
            raise StopIteration
        self.taken.append(item)
        return item[1]

    def read_item(self) -> tuple[int, str] | None:
        """The next (number, line): one given back first, else a new one; None at the end."""
        if self.pending:
            return self.pending.popleft()
        line = self.text.readline()
        if not line:
            return None
        self.number += 1
        return self.number, line

    def give_back(self, items: list[tuple[int, str]]) -> None:
        self.pending.extendleft(reversed(items))


def iter_dict_rows(
    text: IO[str], *, delimiter: str = ",", limit: int = 1_000_000
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header (stripped names) and an iterator of (first physical line, row by header name).

    Streams record by record; the csv module decides where a record ends (a quote opens a
    field only at its start, so ``12" too small`` opens nothing). A record that cannot be a
    row comes as a :class:`BadRecord`. One spanning several lines that fails (a quote left open
    to the end, past ``limit`` characters or _MAX_RECORD_LINES lines, or a row that is not the
    header's width while its next line is one) costs its first line only: the lines after it
    are read again, so one stray quote costs one row, not the rows after it.
    """
    csv.field_size_limit(max(limit, csv.field_size_limit()))
    feed = _LineFeed(text)

    def new_reader() -> Any:
        return csv.reader(feed, delimiter=delimiter, strict=True)

    def row_starts_with(items: list[tuple[int, str]]) -> bool:
        """Whether the lines ``items`` (and those after them) start with a row of the header's
        width; lines read ahead for that are given back."""
        ahead: list[tuple[int, str]] = []

        def text_lines() -> Iterator[str]:
            for _, line in items:
                yield line
            while len(items) + len(ahead) < _MAX_RECORD_LINES:
                item = feed.read_item()
                if item is None:
                    return
                ahead.append(item)
                yield item[1]

        try:
            record = next(csv.reader(text_lines(), delimiter=delimiter, strict=True), None)
        except csv.Error:
            record = None
        feed.give_back(ahead)
        return record is not None and len(record) == width

    reader = new_reader()
    header: list[str] = []
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
    except (csv.Error, _RunOn):
        header = []
    width = len(header)

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        nonlocal reader
        while True:
            feed.taken = []
            try:
                values = next(reader)
            except StopIteration:
                return
            except (csv.Error, _RunOn) as exc:
                taken = feed.taken
                start = taken[0][0] if taken else feed.number
                reader = new_reader()  # a fresh state for the next record
                if len(taken) > 1:  # a quote ran on: its first line, then read the rest again
                    feed.give_back(taken[1:])
                    yield start, BadRecord("unterminated quoted field", 'a closing "')
                else:
                    yield start, BadRecord(f"malformed CSV ({exc})", "well-formed CSV")
                continue
            taken = feed.taken
            start = taken[0][0] if taken else feed.number
            if not any(v.strip() for v in values):
                continue
            if len(values) != width:
                if len(taken) > 1 and row_starts_with(taken[1:]):
                    feed.give_back(taken[1:])  # a stray quote swallowed the rows after it
                    reason = "quote opened here does not close into a row of the header's columns"
                    yield start, BadRecord(reason, 'a quoted field closed by " on a later line')
                    continue
                yield (
                    start,
                    BadRecord(
                        f"{len(values)} columns where the header has {width}", f"{width} columns"
                    ),
                )
                continue
            yield start, dict(zip(header, values, strict=True))

    return header, rows()
