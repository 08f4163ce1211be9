"""Hostile files: the encoding matrix (AT-20), malformed rows and oversized fields (AT-21)."""

from __future__ import annotations

import codecs
import csv
import io

from import_helpers import SHOPIFY_COLUMNS, taobao_text

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
    """AT-20 at 100 orders: UTF-8, UTF-8 BOM, GB18030, GBK, UTF-16LE (Excel Unicode Text)."""
    text = taobao_text(100)
    plain = taobao_text(100, with_astral=False)
    files = {
        "utf8": text.encode("utf-8"),
        "bom": codecs.BOM_UTF8 + text.encode("utf-8"),
        "gb18030": text.encode("gb18030"),
        "gbk": plain.encode("gbk"),
        "utf16": codecs.BOM_UTF16_LE + text.replace(",", "\t").encode("utf-16-le"),
    }
    snaps = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data)
        db = str(tmp_path / f"{name}.db")
        p = import_into(workspace, db, path, "--json")
        assert p.code == 0, (name, p.stderr)
        assert p.json()[0]["inserted"] == 100, name
        snaps[name] = snapshot(workspace, db)
    assert snaps["utf8"] == snaps["bom"] == snaps["gb18030"] == snaps["utf16"]
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


def shopify_line(k: int, **over: str) -> dict[str, str]:
    r = dict.fromkeys(SHOPIFY_COLUMNS, "")
    r.update(
        {
            "Name": f"#{10000 + k}",
            "Email": f"b{k}@example.com",
            "Financial Status": "paid",
            "Fulfillment Status": "fulfilled",
            "Currency": "USD",
            "Subtotal": "10.00",
            "Shipping": "0.00",
            "Taxes": "0.00",
            "Total": "10.00",
            "Created at": "2024-03-01 10:00:00 -0500",
            "Lineitem quantity": "1",
            "Lineitem name": "Mug",
            "Lineitem price": "10.00",
            "Lineitem sku": "MUG",
            "Id": str(70000 + k),
        }
    )
    r.update(over)
    return r


def test_planted_defects_are_rejected_one_by_one_and_every_other_row_lands(workspace, tmp_path):
    """AT-21 (a) at 1,000 rows with 20 planted defects of ten kinds."""
    plants = {  # row index -> (override, field or None, reason fragment)
        50: ({"Created at": "2024-02-30 10:00:00 -0500"}, "Created at", "not a date"),
        90: ({"Lineitem quantity": "-2"}, "Lineitem quantity", "not a quantity"),
        130: ({"Lineitem quantity": "abc"}, "Lineitem quantity", "not a quantity"),
        170: ({"Total": "1.234,56"}, "Total", "not an amount"),
        210: ({"Currency": "ZZ1"}, "Currency", "unknown currency"),
        250: ({"Billing Name": "Ana\x00Bel"}, "Billing Name", "NUL byte"),
        290: ({"Notes": "x" * 5_000_000}, None, "longer than the limit"),
        330: ({"Financial Status": "kinda_paid"}, "Financial Status", "unknown status"),
        370: ({"Name": ""}, "Name", "empty"),
        410: ({"Lineitem price": "9e999"}, "Lineitem price", "not an amount"),
    }
    plants.update({k + 500: v for k, v in plants.items()})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SHOPIFY_COLUMNS)
    wrong_width = {700, 900}
    for k in range(1000):
        over, _, _ = plants.get(k, ({}, None, None))
        row = [shopify_line(k, **over)[c] for c in SHOPIFY_COLUMNS]
        if k in wrong_width:
            row = row[:-3]
        w.writerow(row)
    path = tmp_path / "defects.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
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
        timeout=120,
    )
    assert p.code == 3, p.stderr
    out = p.json()[0]
    assert out["rejected"] == 22 and out["inserted"] == 978
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 978
    csv.field_size_limit(10_000_000)
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        got = {int(r["_line"]): r for r in csv.DictReader(fh)}
    expected_lines = {k + 2 for k in list(plants) + list(wrong_width)}
    assert set(got) == expected_lines
    for k, (_, fld, reason) in plants.items():
        r = got[k + 2]
        assert r["_field"] == (fld or ""), (k, r["_field"])
        assert reason in r["_reason"], (k, r["_reason"])
    for k in wrong_width:
        assert "columns where the header has 79" in got[k + 2]["_reason"]
    assert "Traceback" not in p.stderr


def test_an_unbalanced_quote_costs_one_row_and_says_unterminated_quoted_field(workspace, tmp_path):
    """AT-21 (b) at 1,000 rows: a quote opens at line 502 and never closes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SHOPIFY_COLUMNS)
    lines = [buf.getvalue()]
    for k in range(1000):
        b = io.StringIO()
        csv.writer(b, lineterminator="\n").writerow([shopify_line(k)[c] for c in SHOPIFY_COLUMNS])
        line = b.getvalue()
        if k == 500:
            line = line.replace(",Mug,", ',"Mug,', 1)
        lines.append(line)
    path = tmp_path / "quote.csv"
    path.write_text("".join(lines), encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 999 and p.json()[0]["rejected"] == 1
    assert f"{path}:502: unterminated quoted field" in p.stderr
    numbers = {r["number"] for r in workspace.query("SELECT number FROM orders")}
    assert "#10500" not in numbers and "#10499" in numbers and "#10999" in numbers
