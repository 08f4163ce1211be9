"""Every CSV we write is safe to open in a spreadsheet; reading detects the encoding."""

from __future__ import annotations

import csv
import io

import pytest

from csops.csvio import SafeCsvWriter, safe_cell, sniff_encoding


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+SUM(A1:A9)", "'+SUM(A1:A9)"),
        ("-2+3+cmd|x", "'-2+3+cmd|x"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\tTAB", "'\tTAB"),
        ("|pipe", "'|pipe"),
        ("-12.50", "-12.50"),  # a signed amount is a number, not a formula
        ("plain text", "plain text"),
        (42, 42),
        (None, ""),
    ],
)
def test_formula_looking_text_is_neutralised_and_numbers_stay_bare(value, written) -> None:
    assert safe_cell(value) == written


def test_writer_round_trips_through_a_csv_reader() -> None:
    out = io.StringIO()
    writer = SafeCsvWriter(out, ["name", "note"])
    writer.write({"name": '=HYPERLINK("http://x")', "note": 'quote " and, comma\nnewline'})
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows == [{"name": '\'=HYPERLINK("http://x")', "note": 'quote " and, comma\nnewline'}]


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("订单编号,金额\n".encode("gbk"), "gb18030"),
        (b"\xef\xbb\xbfName,Email\n", "utf-8-sig"),
        (b"Name,Email\n", "utf-8"),
        ("名前\n".encode()[:-2], "utf-8"),  # a character cut at the end of the sample
    ],
)
def test_encoding_is_sniffed_from_the_first_bytes(data: bytes, encoding: str) -> None:
    assert sniff_encoding(data) == encoding


def test_a_stray_quote_costs_one_row_not_the_rest_of_the_file() -> None:
    from csops.csvio import BadRecord, iter_dict_rows

    text = io.StringIO(
        "id,note,qty\n"
        '1,"multi\nline",6\n'
        '2,"broken quote,5\n'
        "3,fine,7\n"
        "4,too,many,cells\n"
        "\n"
        "5,last,8\n"
    )
    header, rows = iter_dict_rows(text)
    got = list(rows)
    assert header == ["id", "note", "qty"]
    assert [line for line, _ in got] == [2, 4, 5, 6, 8]
    assert got[0][1] == {"id": "1", "note": "multi\nline", "qty": "6"}
    assert isinstance(got[1][1], BadRecord) and "unterminated" in got[1][1].reason
    assert got[2][1]["note"] == "fine"
    assert isinstance(got[3][1], BadRecord) and "4 columns" in got[3][1].reason
    assert got[4][1]["id"] == "5"
