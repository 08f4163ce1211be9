"""AT-23 for returns: formula-looking cells are neutralised in every CSV the job writes, while
JSON and the database keep the raw values; hostile names in notices stay inert text."""

from __future__ import annotations

import csv
import io
import json

from returns_helpers import GENERIC_HEADER, add_customer, add_order, open_db

HOSTILE = [
    '=HYPERLINK("http://x","y")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
    "=cmd|' /C calc'!A0",
    "|pipe",
]
DANGEROUS_START = ("=", "+", "-", "@", "\t", "\r", "|")
AMOUNT_COLUMNS = ("refund", "refund_amount")


def cells(path_or_text) -> tuple[list[str], list[dict[str, str]]]:
    text = path_or_text if isinstance(path_or_text, str) else path_or_text.read_text("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def assert_formula_safe(text_or_path) -> int:
    """Every cell that would start a formula starts with ' instead; returns cells checked."""
    header, rows = cells(text_or_path)
    assert not any(h.startswith(DANGEROUS_START) for h in header)
    checked = 0
    for row in rows:
        for col, value in row.items():
            assert not (value or "").startswith(DANGEROUS_START), (col, value)
            if col in AMOUNT_COLUMNS and value:
                assert value[0].isdigit(), (col, value)  # amounts stay bare numbers
            checked += 1
    return checked


def test_formula_looking_values_are_neutralised_in_every_csv_and_raw_elsewhere(workspace, tmp_path):
    workspace.env["CSOPS_NOW"] = "2024-05-01T10:00:00Z"
    conn = open_db(workspace.db_path)
    conn.execute("BEGIN IMMEDIATE")
    for n, value in enumerate(HOSTILE):
        cust = add_customer(conn, f"h{n}@example.org", name=value + " {{ 7*7 }}")
        add_order(
            conn,
            f"#H{n}",
            [(value, 2, 1250)],
            customer_id=cust,
            email=f"h{n}@example.org",
            discount=100,
        )
    add_order(conn, "@SUM(A1)", [("PLAIN", 1, 500)], email="o@example.org")
    conn.execute("COMMIT")
    conn.close()

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # CRLF: cells holding a CR get quoted
    w.writerow(GENERIC_HEADER.split(","))
    for n, value in enumerate(HOSTILE):
        ts = "2024-04-20T10:00:00Z"
        w.writerow([value + f"#{n}", f"#H{n}", value, 1, "changed_mind", value, ts, "refund", ""])
        w.writerow([f"X{n}", f"#H{n}", value, value, "changed_mind", value, ts, "refund", ""])
    w.writerow(["Q1", "@SUM(A1)", "PLAIN", 1, "damaged", "-12.50 off", "", "refund", "-used"])
    batch = tmp_path / "hostile.csv"
    batch.write_text(buf.getvalue(), encoding="utf-8")

    out = tmp_path / "decisions.csv"
    proc = workspace.run("returns", "process", str(batch), "--out", str(out))
    assert proc.code == 3, proc.stderr  # the X lines have formula-looking quantities
    written = [out, *(workspace.root / "exports").glob("*.csv")]
    written += list((workspace.root / "rejects").glob("*.csv"))
    assert len(written) == 3
    for path in written:
        assert assert_formula_safe(path) > 0, path

    # The neutralised cells still carry the whole value after the apostrophe.
    _, rows = cells(out)
    ids = {r["return_id"] for r in rows}
    assert "'=cmd|' /C calc'!A0#6" in ids and "'+1+1#1" in ids
    # Input cells are trimmed, so "\t=1" names SKU "=1", which is not on the order.
    trimmed = {"'=1#4", "'=1#5"}
    assert all(r["decision"] == "approved" for r in rows if r["return_id"] not in trimmed | {"Q1"})
    assert trimmed <= ids
    assert [r["code"] for r in rows if r["return_id"] == "Q1"] == ["reason_needs_review"]

    # Stdout CSV (default and --csv) of a re-run is formula-safe as well.
    again = workspace.run("returns", "process", str(batch), "--csv")
    assert again.code == 0 and assert_formula_safe(again.stdout) > 0

    # JSON and the database keep the raw values.
    as_json = workspace.run("returns", "process", str(batch), "--json")
    raw_ids = {r["return_id"] for r in json.loads(as_json.stdout)}
    expected = {v.strip() + f"#{n}" for n, v in enumerate(HOSTILE)}
    assert expected <= raw_ids
    stored = {r["return_ref"] for r in workspace.query("SELECT return_ref FROM return_lines")}
    assert expected <= stored
    texts = {r["reason_text"] for r in workspace.query("SELECT reason_text FROM return_lines")}
    assert "=cmd|' /C calc'!A0" in texts

    # Hostile names render as inert text in the notices: data is never compiled as a template.
    bodies = [r["body_text"] for r in workspace.query("SELECT body_text FROM outbox")]
    assert bodies and all("{{ 7*7 }}" in b for b in bodies if "Hello" in b)
    htmls = [r["body_html"] for r in workspace.query("SELECT body_html FROM outbox")]
    assert not any("49" in (h or "") for h in htmls)
