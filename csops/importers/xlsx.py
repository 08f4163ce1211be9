"""Excel workbooks given where a CSV is expected: the first sheet, read as the CSV it shows.

Taobao's seller center now hands out its order report (订单报表) as ``.xlsx`` (FORMATS.md §4.1),
and shops keep other exports in Excel too. Rather than a second reader per format, the first
worksheet is streamed (openpyxl's read-only mode parses the sheet's XML as it goes) into a
temporary UTF-8 CSV file, which the usual reader then reads: same header checks, same
grouping, same rejects, line numbers equal to the sheet's row numbers (unless a cell holds a
line break). Cells become the text Excel shows for them: numbers without a spurious ``.0``,
dates as ``YYYY-MM-DD HH:MM:SS``.
"""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from datetime import date, datetime, time
from typing import IO, Any

from csops.errors import InputError

ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 .xls (and other OLE files)
_SPOOL_BYTES = 8 << 20  # converted CSV kept in memory up to this, then on disk


def sniff(head: bytes, file: str) -> bool:
    """Whether ``head`` starts a workbook to convert; refuses a legacy ``.xls`` outright."""
    if head.startswith(OLE_MAGIC):
        raise InputError(
            "an Excel 97-2003 workbook (.xls), not a CSV: save it as CSV (UTF-8) or .xlsx",
            file=file,
            expected="a CSV or .xlsx file",
            code="xls_workbook",
        )
    return head.startswith(ZIP_MAGIC)


def cell_text(value: Any) -> str:
    """The text a cell shows: ``12`` not ``12.0``, 15 significant digits, times without
    microseconds, blanks empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):  # Excel shows 15 significant digits: 84.00000000000001 is 84
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        text = format(value, ".15g")
        return text if "e" not in text else repr(value)
    if isinstance(value, datetime):
        return value.replace(microsecond=0, tzinfo=None).isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.replace(microsecond=0).isoformat()
    return str(value)


def as_csv(binary: IO[bytes], file: str) -> IO[bytes]:
    """The first worksheet of the workbook in ``binary`` as a UTF-8 CSV stream (rewound)."""
    from openpyxl import load_workbook  # imported only for a workbook: it is not small

    try:
        book = load_workbook(binary, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError) as exc:
        raise InputError(
            f"a ZIP file that is not an Excel workbook ({type(exc).__name__})",
            file=file,
            expected="a CSV or .xlsx file",
            code="not_a_workbook",
        ) from None
    out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - returned
    try:
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text, lineterminator="\n")
        sheet = book.worksheets[0] if book.worksheets else None
        width = 0
        for row in sheet.iter_rows(values_only=True) if sheet is not None else ():
            cells = [cell_text(v) for v in row]
            if not width:  # the header: its last named column sets the width
                while cells and not cells[-1]:
                    cells.pop()
                width = len(cells)
            elif len(cells) < width:  # a sheet may store a row without its empty tail
                cells += [""] * (width - len(cells))
            elif len(cells) > width and not any(cells[width:]):
                del cells[width:]
            writer.writerow(cells)
        text.flush()
        text.detach()  # leave ``out`` open for the reader
    except Exception as exc:
        out.close()
        raise InputError(
            f"cannot read the workbook's first sheet ({type(exc).__name__}: {exc})"[:300],
            file=file,
            expected="a CSV or .xlsx file",
            code="not_a_workbook",
        ) from None
    except BaseException:  # Ctrl-C while converting: the spool goes too
        out.close()
        raise
    finally:
        book.close()
    out.seek(0)
    return out  # type: ignore[return-value]
