"""Hostile files: the encoding matrix (AT-20), malformed rows and oversized fields (AT-21)."""

from __future__ import annotations

import codecs
import csv
import io

from import_helpers import (
    SAMPLES,
    SHOPIFY_COLUMNS,
    shopify_line,
    taobao_text,
    write_planted_defects,
)

NORMALIZED = """
SELECT o.platform, o.external_id, o.number, o.status, o.currency, o.subtotal_minor,
       o.shipping_minor, o.total_minor, o.refunded_minor, o.created_at, o.paid_at,
       o.delivered_at, c.name, c.phone, c.platform_buyer_id,
       group_concat(i.name || '×' || i.quantity || '=' || i.total_minor, '|') AS items
FROM orders o LEFT JOIN customers c ON c.id = o.customer_id
LEFT JOIN order_items i ON i.order_id = o.id
GROUP BY o.id ORDER BY o.external_id
"""


def import_into(ws, db: str, path, *extra: str):
    return ws.run("--db", db, "import", "orders", "--from", "taobao-csv", str(path), *extra)


def snapshot(ws, db: str) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(NORMALIZED)]
    finally:
        conn.close()


def test_the_same_orders_in_five_encodings_import_to_identical_rows(workspace, tmp_path):
    """AT-20 at its full 1,000 orders: UTF-8, UTF-8 BOM, GB18030, GBK, UTF-16LE (Excel Unicode
    Text), and UTF-16 in both byte orders saved without a BOM."""
    text = taobao_text(1000)
    plain = taobao_text(1000, with_astral=False)
    files = {
        "utf8": text.encode("utf-8"),
        "bom": codecs.BOM_UTF8 + text.encode("utf-8"),
        "gb18030": text.encode("gb18030"),
        "gbk": plain.encode("gbk"),
        "utf16": codecs.BOM_UTF16_LE + text.replace(",", "\t").encode("utf-16-le"),
        # saved without a BOM (some tools do): told by its zero bytes, not refused as cp1252
        "utf16le-nobom": text.encode("utf-16-le"),
        "utf16be-nobom": text.encode("utf-16-be"),
    }
    snaps = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data)
        db = str(tmp_path / f"{name}.db")
        p = import_into(workspace, db, path, "--json")
        assert p.code == 0, (name, p.stderr)
        assert p.json()[0]["inserted"] == 1000, name
        snaps[name] = snapshot(workspace, db)
    assert snaps["utf8"] == snaps["bom"] == snaps["gb18030"] == snaps["utf16"]
    assert snaps["utf16le-nobom"] == snaps["utf16be-nobom"] == snaps["utf8"]
    swapped = [
        tuple(str(v).replace("𠮷", "吉") if isinstance(v, str) else v for v in row)
        for row in snaps["utf8"]
    ]
    assert snaps["gbk"] == swapped and snaps["gbk"] != snaps["utf8"]
    assert any("𠮷野家" in str(row) for row in snaps["utf8"])
    first = snaps["utf8"][0]
    assert first[1] == "3861220470000000000" and first[9] == "2024-04-01T02:00:00Z"
    assert first[13] == "13800000000"  # the leading apostrophe is gone
    for snap in snaps.values():
        assert "\ufffd" not in repr(snap) and "锟" not in repr(snap)  # no mojibake


def test_a_gbk_file_labelled_utf8_fails_at_once_suggesting_gb18030(workspace, tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes(taobao_text(50, with_astral=False).encode("gbk"))
    db = str(tmp_path / "mislabeled.db")
    p = import_into(workspace, db, path, "--encoding", "utf-8")
    assert p.code == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert f"{path}:1:" in p.stderr and "gb18030" in p.stderr
    assert snapshot(workspace, db) == []


def test_planted_defects_are_rejected_one_by_one_and_every_other_row_lands(workspace, tmp_path):
    """AT-21 (a) at its own counts: 10,000 rows, 99 planted defects of eleven kinds (one cell
    of 5 MB). ``bench/import_rejects.py`` checks memory stays flat at 100 times this."""
    path = tmp_path / "defects.csv"
    plants = write_planted_defects(path, rows=10_000, defects=99)
    assert len(plants) == 99
    rejects = tmp_path / "rejects.csv"
    p = workspace.run(
        "import",
        "orders",
        "--from",
        "shopify-csv",
        str(path),
        "--rejects",
        str(rejects),
        "--json",
        timeout=300,
    )
    assert p.code == 3, p.stderr
    out = p.json()[0]
    assert out["rejected"] == 99 and out["inserted"] == 9_901
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 9_901
    csv.field_size_limit(10_000_000)
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        got = {int(r["_line"]): r for r in csv.DictReader(fh)}
    assert set(got) == set(plants)
    for line, (fld, reason) in plants.items():
        r = got[line]
        assert r["_field"] == (fld or ""), (line, r["_field"])
        assert reason in r["_reason"], (line, r["_reason"])
    # every original is kept: a row of the wrong width whole in _raw (cells tab-separated), an
    # oversized one as its first 10,000 characters and its length
    lost = [r["_line"] for r in got.values() if not _original_kept(r)]
    assert not lost, lost
    cut = [r for r in got.values() if "longer than the limit" in r["_reason"]]
    assert len(cut) == 9 and all("[cut: " in r["_raw"] for r in cut)
    assert rejects.stat().st_size < 1_000_000
    assert "Traceback" not in p.stderr


def test_an_unbalanced_quote_costs_one_row_and_says_unterminated_quoted_field(workspace, tmp_path):
    """AT-21 (b) at its own counts: 10,000 rows, a quote opens at line 5,001, never closes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SHOPIFY_COLUMNS)
    lines = [buf.getvalue()]
    for k in range(10_000):
        b = io.StringIO()
        csv.writer(b, lineterminator="\n").writerow([shopify_line(k)[c] for c in SHOPIFY_COLUMNS])
        line = b.getvalue()
        if k == 4_999:  # file line 5,001
            line = line.replace(",Mug,", ',"Mug,', 1)
        lines.append(line)
    path = tmp_path / "quote.csv"
    path.write_text("".join(lines), encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 9_999 and p.json()[0]["rejected"] == 1
    assert f"{path}:5001: unterminated quoted field" in p.stderr
    numbers = {r["number"] for r in workspace.query("SELECT number FROM orders")}
    assert "#14999" not in numbers and "#14998" in numbers and "#15000" in numbers
    assert len(numbers) == 9_999


def _original_kept(row: dict[str, str]) -> bool:
    return bool(row["_raw"]) or any(v for k, v in row.items() if not k.startswith("_"))


def _csv_line(cells: dict[str, str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([cells[c] for c in SHOPIFY_COLUMNS])
    return buf.getvalue()


def _two_item_order(k: int, **second: str) -> list[str]:
    """Order ``#(10000 + k)`` as Shopify writes two items: order cells on the first row only."""
    first = shopify_line(k, Subtotal="20.00", Total="20.00")
    cont = dict.fromkeys(SHOPIFY_COLUMNS, "")
    cont.update(
        {
            "Name": first["Name"],
            "Email": first["Email"],
            "Created at": first["Created at"],
            "Lineitem quantity": "1",
            "Lineitem name": "Tea Towel",
            "Lineitem price": "10.00",
            "Lineitem sku": "TT",
        }
    )
    cont.update(second)
    return [_csv_line(first), _csv_line(cont)]


def test_inch_marks_in_unquoted_cells_cost_no_row(workspace, tmp_path):
    """A ``"`` inside an unquoted cell (``12" pizza``, common in titles) opens nothing: every
    row still lands, and a real stray quote costs its own row only, not the rows up to the
    next line with an odd number of quotes."""
    header = ",".join(SHOPIFY_COLUMNS) + "\n"
    rows = []
    for k in range(40):
        name = {5: '12" pizza stone', 9: 'pan 9" round', 20: 'ruler 30" long'}.get(k, "Mug")
        line = _csv_line(shopify_line(k, **{"Lineitem name": "@NAME@"}))
        rows.append(line.replace("@NAME@", name))
    # a quote opening a cell at line 31 that a later odd line "closes" into garbage
    rows[29] = rows[29].replace(",Mug,", ',"Mug,', 1)
    path = tmp_path / "inches.csv"
    path.write_text(header + "".join(rows), encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    p = workspace.run(
        "import", "orders", "--from", "shopify-csv", str(path), "--rejects", str(rejects), "--json"
    )
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 39 and p.json()[0]["rejected"] == 1
    names = {r["name"] for r in workspace.query("SELECT name FROM order_items")}
    assert {'12" pizza stone', 'pan 9" round', 'ruler 30" long'} <= names
    assert "#10029" not in {r["number"] for r in workspace.query("SELECT number FROM orders")}
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        (only,) = list(csv.DictReader(fh))
    assert only["_line"] == "31" and only["_raw"] == rows[29].rstrip("\n")


def test_a_bad_row_inside_an_order_rejects_the_whole_order(workspace, tmp_path):
    """A row that cannot be read (wrong width, NUL byte, oversized cell, unreadable CSV, empty
    order name) between rows of an order, or naming it, leaves the whole order out: never an
    order stored with an item missing. Rows add up: imported + rejected = rows."""
    big = "x" * 200_000
    orders = [
        _two_item_order(0),
        _two_item_order(1, **{"Lineitem sku": "TT,extra"}),  # quoted: fine
        _two_item_order(2),
        _two_item_order(3),
        _two_item_order(4, **{"Lineitem name": big}),
        _two_item_order(5, **{"Lineitem name": "Tea\x00Towel"}),
        _two_item_order(6),
        _two_item_order(7, Name=""),  # the middle row of three: between rows of #10007
        _two_item_order(8),
    ]
    orders[2][1] = orders[2][1].rstrip("\n") + ",surplus\n"  # the last row of #10002
    orders[3][0] = orders[3][0].replace(",Mug,", ',"Mug"x,', 1)  # the first row of #10003
    # a three-row order whose middle row is too short
    third = _two_item_order(6)[1].replace("Tea Towel", "Napkin")
    orders[6] = [orders[6][0], orders[6][1].rstrip("\n").rsplit(",", 3)[0] + "\n", third]
    orders[7].append(_two_item_order(7)[1].replace("Tea Towel", "Napkin"))
    lines = [line for order in orders for line in order]
    path = tmp_path / "orders.csv"
    path.write_text(",".join(SHOPIFY_COLUMNS) + "\n" + "".join(lines), encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    p = workspace.run(
        "import", "orders", "--from", "shopify-csv", str(path), "--rejects", str(rejects), "--json"
    )
    assert p.code == 3, p.stderr
    stored = {
        r["number"]: r["n"]
        for r in workspace.query(
            "SELECT o.number, count(i.id) n FROM orders o JOIN order_items i ON i.order_id = o.id"
            " GROUP BY o.id"
        )
    }
    assert stored == {"#10000": 2, "#10001": 2, "#10008": 2}, stored
    out = p.json()[0]
    assert out["inserted"] == 3 and out["inserted"] * 2 + out["rejected"] == len(lines)
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == len(lines) - 6
    assert all(_original_kept(r) for r in got)
    whole = [r for r in got if "left out whole" in r["_reason"]]
    assert {r["Name"] for r in whole} >= {"#10002", "#10003", "#10004", "#10005", "#10006"}


def test_a_western_single_byte_file_is_refused_not_read_as_chinese(workspace, tmp_path):
    """GB18030 decodes most Windows-1252 text ("Jürgen" -> "J黵gen"): such a file is refused
    naming its line and suggesting cp1252, and with ``--encoding cp1252`` it reads right."""
    workspace.set_config(
        """
[import.mappings.de]
delimiter = ";"
decimal_comma = true
date_format = "%d.%m.%Y %H:%M"
[import.mappings.de.columns]
order_id = "Auftrag"
created_at = "Datum"
total = "Summe"
name = "Kunde"
email = "Mail"
"""
    )
    rows = [f"A-{k};05.03.2024 14:02;1.234,56;Kunde {k};k{k}@example.de\n" for k in range(30)]
    rows[20] = "A-20;05.03.2024 14:02;9,90;Jürgen Müller, Straße;jm@example.de\n"
    path = tmp_path / "latin.csv"
    path.write_bytes(("Auftrag;Datum;Summe;Kunde;Mail\n" + "".join(rows)).encode("cp1252"))
    args = ("import", "orders", "--from", "csv", "--mapping", "de", str(path))
    p = workspace.run(*args)
    assert p.code == 2, p.stderr
    assert f"{path}:22: bytes not valid utf-8" in p.stderr and "--encoding cp1252" in p.stderr
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 0
    p = workspace.run(*args, "--encoding", "cp1252")
    assert p.code == 0, p.stderr
    names = {r["name"] for r in workspace.query("SELECT name FROM customers")}
    assert "Jürgen Müller, Straße" in names and len(names) == 30


def test_negative_order_amounts_and_discounts_above_the_line_are_rejected(workspace, tmp_path):
    """No Shopify or Taobao export writes a negative total: such a cell is a defect, not money
    to store (it would turn refunds and KPIs upside down)."""
    lines = [
        _csv_line(shopify_line(0)),
        _csv_line(shopify_line(1, Total="-10.00")),
        _csv_line(shopify_line(2, **{"Refunded Amount": "-1.00"})),
        _csv_line(shopify_line(3, **{"Lineitem discount": "12.00"})),
        _csv_line(shopify_line(4, **{"Lineitem discount": "-1.00"})),
    ]
    path = tmp_path / "neg.csv"
    path.write_text(",".join(SHOPIFY_COLUMNS) + "\n" + "".join(lines), encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 1 and p.json()[0]["rejected"] == 4
    assert "neg.csv:3: Total: negative amount" in p.stderr
    assert "neg.csv:4: Refunded Amount: negative amount" in p.stderr
    assert (
        "neg.csv:5: Lineitem discount:" in p.stderr and "neg.csv:6: Lineitem discount:" in p.stderr
    )
    text = taobao_text(3).splitlines(keepends=True)
    header = next(csv.reader([text[0]]))
    at = [h.strip() for h in header].index("总金额")
    row = next(csv.reader([text[2]]))
    row[at] = "-" + row[at]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    bad = tmp_path / "tb.csv"
    bad.write_text(text[0] + text[1] + buf.getvalue() + "".join(text[3:]), encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "taobao-csv", str(bad), "--json")
    assert p.code == 3 and p.json()[0]["rejected"] == 1, p.stderr
    assert "tb.csv:3: 总金额: negative amount" in p.stderr


def test_a_line_total_past_sqlites_integers_is_rejected_not_a_crash(workspace, tmp_path):
    """Each cell is bounded (price < 10^13, quantity ≤ 1,000,000), but their product is not:
    9999999999999.99 × 1,000,000 does not fit SQLite's 64-bit integer. The order is rejected
    naming the line; before, the batch's write failed with an internal error (exit 1)."""
    lines = [
        _csv_line(shopify_line(0)),
        _csv_line(
            shopify_line(
                1, **{"Lineitem price": "9999999999999.99", "Lineitem quantity": "1000000"}
            )
        ),
    ]
    path = tmp_path / "huge.csv"
    path.write_text(",".join(SHOPIFY_COLUMNS) + "\n" + "".join(lines), encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 1 and p.json()[0]["rejected"] == 1
    assert "huge.csv:3: line total: absurd line 1" in p.stderr


def test_a_mapped_csv_with_negative_amounts_is_rejected_naming_the_column(workspace, tmp_path):
    """A mapped shop CSV is held to the same rule: a negative total, subtotal, tax or line
    total is a defect in the file, never stored. A refund (like a discount) is an amount
    whatever its sign: some systems write it below zero."""
    workspace.set_config(
        """
[import.mappings.m]
[import.mappings.m.columns]
order_id = "order"
created_at = "created"
total = "Order Total"
tax = "VAT"
refunded = "Refunded"
quantity = "qty"
unit_price = "price"
line_total = "Line"
"""
    )
    text = (
        "order,created,Order Total,VAT,Refunded,qty,price,Line\n"
        "1,2024-03-05 10:00,10.00,0.00,0.00,1,10.00,10.00\n"
        "2,2024-03-05 10:00,-10.00,0.00,0.00,1,10.00,10.00\n"
        "3,2024-03-05 10:00,10.00,-1.00,0.00,1,10.00,10.00\n"
        "4,2024-03-05 10:00,10.00,0.00,-2.00,1,10.00,10.00\n"
        "5,2024-03-05 10:00,10.00,0.00,0.00,1,10.00,-10.00\n"
    )
    path = tmp_path / "neg.csv"
    path.write_text(text, encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "csv", "--mapping", "m", str(path), "--json")
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 2 and p.json()[0]["rejected"] == 3
    assert "neg.csv:3: Order Total: negative amount" in p.stderr
    assert "neg.csv:4: VAT: negative amount" in p.stderr
    assert "neg.csv:6: Line: negative line total" in p.stderr
    got = workspace.query("SELECT external_id, total_minor, refunded_minor FROM orders")
    assert [tuple(r.values()) for r in got] == [("1", 1000, 0), ("4", 1000, 200)]
    workspace.set_config(  # no total column: it is computed, so a discount may not exceed it
        """
[import.mappings.parts]
[import.mappings.parts.columns]
order_id = "order"
created_at = "created"
subtotal = "Goods"
discount = "Off"
"""
    )
    parts = tmp_path / "parts.csv"
    parts.write_text(
        "order,created,Goods,Off\nP1,2024-03-05 10:00,10.00,2.00\n"
        "P2,2024-03-05 10:00,10.00,12.00\n",
        encoding="utf-8",
    )
    args = ("import", "orders", "--from", "csv", "--mapping", "parts", str(parts), "--json")
    p = workspace.run(*args)
    assert p.code == 3, p.stderr
    assert "parts.csv:3: Off: discount larger than subtotal + shipping + tax" in p.stderr
    got = workspace.query("SELECT external_id, total_minor FROM orders WHERE external_id LIKE 'P%'")
    assert [(r["external_id"], r["total_minor"]) for r in got] == [("P1", 800)]


def test_amazon_charges_below_zero_are_rejected_promotions_are_not(workspace, tmp_path):
    """Amazon writes promotions negative (``-4.80``) and nothing else: a negative tax or
    shipping cell rejects its order, naming the column."""
    lines = (SAMPLES / "amazon_all_orders.tsv").read_text("utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")
    row = lines[1].rstrip("\n").split("\t")
    row[header.index("shipping-price")] = "-1.00"
    path = tmp_path / "az.tsv"
    path.write_text("".join([lines[0], "\t".join(row) + "\n", *lines[2:]]), encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "amazon-tsv", str(path), "--json")
    assert p.code == 3, p.stderr
    assert "az.tsv:2: shipping-price: negative amount" in p.stderr
    assert p.json()[0]["inserted"] == 2  # the other orders; the promotion's -4.80 was fine
    assert not workspace.query("SELECT 1 FROM orders WHERE external_id = '113-5550001-0000001'")


def _import_lines(workspace, tmp_path, name: str, lines: list[str]):
    path = tmp_path / name
    path.write_text(",".join(SHOPIFY_COLUMNS) + "\n" + "".join(lines), encoding="utf-8")
    rejects = tmp_path / f"{name}.rejects.csv"
    p = workspace.run(
        *("import", "orders", "--from", "shopify-csv", str(path), "--rejects", str(rejects)),
        "--json",
    )
    got = []
    if rejects.exists():
        with rejects.open(encoding="utf-8-sig", newline="") as fh:
            got = list(csv.DictReader(fh))
    return p, got


def test_quotes_are_read_by_the_csv_rules_wherever_they_fall(workspace, tmp_path):
    """The csv module, not a count of quotes, says where a record ends: a stray quote on a line
    with an even number of quotes costs that line; a quoted note over two lines whose closing
    line holds an inch mark is one row; a note over three lines in a row of the wrong width is
    one reject, not one per line. Rows always add up."""

    def line(k: int, name: str = "Mug", **over: str) -> str:  # the name cell written raw
        return _csv_line(shopify_line(k, **{"Lineitem name": "@N@"}, **over)).replace("@N@", name)

    stray = line(1, '12" Pizza Stone').replace(",MUG,", ',"MUG,', 1)
    note = line(11, '9" pan', Notes="leave at\ndoor")
    short = _csv_line(shopify_line(21, Notes="ring\ntwice\nplease")).rstrip("\n")
    short = short.rsplit(",", 1)[0] + "\n"  # one column short
    lines = [line(0), stray, *(line(k) for k in range(2, 8)), note, short, line(30)]
    p, got = _import_lines(workspace, tmp_path, "quotes.csv", lines)
    assert p.code == 3, p.stderr
    stored = {r["number"] for r in workspace.query("SELECT number FROM orders")}
    assert stored == {f"#{10000 + k}" for k in (0, *range(2, 8), 11, 30)}, stored
    assert p.json()[0]["rejected"] == 2 and len(got) == 2
    assert got[0]["_line"] == "3" and '12" Pizza Stone' in got[0]["_raw"]
    assert got[1]["_reason"].startswith("78 columns where the header has 79")
    notes = workspace.query("SELECT name FROM order_items WHERE name = '9\" pan'")
    assert len(notes) == 1


def test_a_file_whose_every_line_opens_a_quote_is_read_once_per_line_not_to_its_end(
    workspace, tmp_path
):
    """A hostile file (each line ``x",y"y,"z``) is rejected line by line: each retry after a
    stray quote may run on for a bounded number of lines, so the run ends (before: it read the
    rest of the file again for every line)."""
    lines = [_csv_line(shopify_line(0))] + ['x",y"y,"z\n'] * 5000 + [_csv_line(shopify_line(1))]
    p, _ = _import_lines(workspace, tmp_path, "hostile.csv", lines)
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 2 and p.json()[0]["rejected"] == 5000


def test_a_rejected_row_naming_a_later_order_rejects_that_order(workspace, tmp_path):
    """Rows of #10009 sit apart: its first row (unreadable) before #10008. Storing #10009 from
    its other row would store it with an item missing."""
    bad = _csv_line(shopify_line(9)).rstrip("\n") + ",surplus\n"
    lines = [_csv_line(shopify_line(7)), bad, _csv_line(shopify_line(8))]
    lines.append(_two_item_order(9)[1])
    p, _ = _import_lines(workspace, tmp_path, "later.csv", lines)
    assert p.code == 3, p.stderr
    stored = {r["number"] for r in workspace.query("SELECT number FROM orders")}
    assert stored == {"#10007", "#10008"}
    assert p.json()[0]["inserted"] + p.json()[0]["rejected"] == len(lines)


def test_gbk_files_are_detected_wherever_the_64_kib_sample_ends(workspace, tmp_path):
    """The encoding is guessed from the first 64 KiB; a double-byte character cut by that edge
    must not make a GBK file look undecodable (it did for about half of all file layouts)."""
    lines = taobao_text(400, with_astral=False).splitlines(keepends=True)

    def layout(pad: int) -> bytes:  # CRLF on the first `pad` lines shifts later bytes by `pad`
        crlf = (ln.replace("\n", "\r\n") if i < pad else ln for i, ln in enumerate(lines))
        return "".join(crlf).encode("gbk")

    def cuts(data: bytes) -> bool:
        try:
            data[:65_536].decode("gb18030")
        except UnicodeDecodeError:
            return True
        return False

    pad = next(p for p in range(200) if cuts(layout(p)))
    path = tmp_path / "gbk.csv"
    path.write_bytes(layout(pad))
    p = import_into(workspace, str(tmp_path / "gbk.db"), path, "--json")
    assert p.code == 0 and p.json()[0]["inserted"] == 400, (pad, p.stderr)


def test_western_and_chinese_bytes_are_told_apart(workspace, tmp_path):
    """GB18030 decodes both; accented letters side by side (``Größe``, ``Conceição``) are not
    Chinese, and a GBK file whose only Chinese is an extension character (喆) is."""
    from csops.csvio import looks_chinese

    for western in ("Conceição Größer", "Jürgen Müller Straße", "“Naïve” café — déjà vu"):
        assert not looks_chinese(western.encode("cp1252")), western
    for chinese in ("喆", "陶瓷马克杯「晨光」，350ml", "小鹿乱撞2026"):
        assert looks_chinese(chinese.encode("gbk")), chinese
    assert looks_chinese((tmp_path.parent / "x").as_posix().encode() + "交易成功".encode("gbk"))


def test_a_damaged_utf16_file_is_refused_naming_its_line(workspace, tmp_path):
    """In UTF-16 a newline is two bytes and 上 (U+4E0A) holds a 0x0A byte: lines are counted on
    the decoded text. A broken surrogate is damage, not another encoding to suggest."""
    lines = taobao_text(10).replace(",", "\t").splitlines(keepends=True)
    data = codecs.BOM_UTF16_LE + "".join(lines[:4]).encode("utf-16-le")
    data += "上上".encode("utf-16-le") + b"\x00\xd8" + "".join(lines[4:]).encode("utf-16-le")
    path = tmp_path / "u16.csv"
    path.write_bytes(data)
    p = import_into(workspace, str(tmp_path / "u16.db"), path)
    assert p.code == 2, p.stderr
    assert f"{path}:5: bytes not valid utf-16" in p.stderr and "damaged" in p.stderr
    assert "--encoding" not in p.stderr


def test_a_good_row_after_a_stray_quote_keeps_a_note_that_starts_with_a_line_break(
    workspace, tmp_path
):
    """Whether the lines after a failed record are rows is judged by reading on from the next
    line (its cells may span lines), not by that line alone: #10003's note starts with a line
    break, and #10003 must land."""

    def line(k: int, **over: str) -> str:
        return _csv_line(shopify_line(k, **over))

    stray = line(2).replace(",Mug,", ',"Mug,', 1)
    lines = [line(1), stray, line(3, Notes="\nstarts with a line break"), line(4)]
    p, got = _import_lines(workspace, tmp_path, "note.csv", lines)
    assert p.code == 3, p.stderr
    stored = {r["number"] for r in workspace.query("SELECT number FROM orders")}
    assert stored == {"#10001", "#10003", "#10004"}, p.stderr
    assert [r["_line"] for r in got] == ["3"]
