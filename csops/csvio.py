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
        return "gb18030"
    except UnicodeDecodeError:
        return "utf-8"


def open_text(binary: IO[bytes], encoding: str | None = None) -> tuple[IO[str], str]:
    """Wrap a binary stream as text, detecting the encoding from a peek; streams, never slurps."""
    buffered = binary if hasattr(binary, "peek") else io.BufferedReader(binary)  # type: ignore[arg-type]
    head = buffered.peek(65536)[:65536]  # type: ignore[attr-defined]
    enc = encoding or sniff_encoding(head)
    if enc.lower().replace("_", "-") in ("utf-8", "utf8") and head.startswith(codecs.BOM_UTF8):
        enc = "utf-8-sig"
    text = io.TextIOWrapper(buffered, encoding=enc, errors="strict", newline="")  # type: ignore[arg-type]
    return text, enc


def iter_dict_rows(
    text: IO[str], *, delimiter: str = ","
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header (stripped names) and an iterator of (physical line number, row by header name)."""
    reader = csv.reader(text, delimiter=delimiter, strict=False)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        return [], iter(())

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        start = reader.line_num + 1
        for values in reader:
            line = start
            start = reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            yield line, dict(zip(header, values, strict=False))

    return header, rows()
