"""File sources end to end: real exports in, normalized rows out, idempotent, rejects kept."""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import sqlite3
import subprocess

from import_helpers import (
    SHOPIFY_73,
    SHOPIFY_COLUMNS,
    gen_orders,
    shopify_rows,
    write_shopify,
)


def orders_of(ws, platform: str) -> dict[str, dict]:
    return {
        r["number"]: r
        for r in ws.query("SELECT * FROM orders WHERE platform = ? ORDER BY id", (platform,))
    }


def test_shopify_sample_lands_with_exact_money_statuses_and_utc_times(workspace, sample):
    p = workspace.run(
        "import",
        "orders",
        "--from",
        "shopify-csv",
        str(sample / "shopify_orders_export.csv"),
        "--json",
    )
    assert p.code == 0, p.stderr
    assert p.json()[0] == {
        "source": "shopify-csv",
        "file": str(sample / "shopify_orders_export.csv"),
        "inserted": 5,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
    }
    rows = orders_of(workspace, "shopify")
    assert {n: r["status"] for n, r in rows.items()} == {
        "#1001": "shipped",
        "#1002": "refunded",
        "#1003": "cancelled",
        "#1004": "partially_refunded",
        "#1005": "pending",
    }
    o = rows["#1004"]
    assert (
        o["subtotal_minor"],
        o["tax_minor"],
        o["discount_minor"],
        o["total_minor"],
        o["refunded_minor"],
    ) == (13800, 1008, 1200, 13608, 2400)  # subtotal before the discount, as every source
    for r in rows.values():  # total = subtotal + shipping + tax − discount, for every order
        assert r["total_minor"] == (
            r["subtotal_minor"] + r["shipping_minor"] + r["tax_minor"] - r["discount_minor"]
        )
    assert o["created_at"] == "2024-03-07T16:59:40Z".replace("2024", "2026")
    assert (
        rows["#1003"]["currency"] == "EUR"
        and rows["#1003"]["cancelled_at"] == "2026-03-06T10:00:00Z"
    )
    assert rows["#1002"]["email"] == "kenji.tanaka@example.net"
    assert rows["#1005"]["customer_id"] is None
    items = workspace.query(
        "SELECT line_no, sku, name, quantity, unit_price_minor, total_minor FROM order_items "
        "WHERE order_id = ? ORDER BY line_no",
        (o["id"],),
    )
    assert [(i["sku"], i["quantity"], i["total_minor"]) for i in items] == [
        ("WT-OAT", 1, 9000),
        ("LN-NAP-SAGE", 2, 4800),
        ("GIFT-WRAP", 1, 0),
    ]
    mug = workspace.query("SELECT name FROM order_items WHERE sku = 'CM-DAWN-12'")[0]["name"]
    assert mug == 'Ceramic Mug "Dawn", 12oz'


def test_the_same_file_twice_changes_nothing_the_second_time(workspace, sample):
    path = str(sample / "shopify_orders_april2024.csv")
    assert workspace.run("import", "orders", "--from", "shopify-csv", path).code == 0
    before = workspace.query("SELECT * FROM orders ORDER BY id")
    items_before = workspace.query("SELECT * FROM order_items ORDER BY id")
    p = workspace.run("import", "orders", "--from", "shopify-csv", path, "--json")
    assert p.code == 0
    assert p.json()[0]["unchanged"] == 40 and p.json()[0]["inserted"] == 0
    assert "inserted=0 updated=0 unchanged=40" in p.stderr
    assert workspace.query("SELECT * FROM orders ORDER BY id") == before
    assert workspace.query("SELECT * FROM order_items ORDER BY id") == items_before


def test_a_later_export_with_progressed_orders_updates_them_and_replaces_items(workspace, tmp_path):
    orders = gen_orders(30, seed=5)
    first = write_shopify(tmp_path / "a.csv", orders)
    assert workspace.run("import", "orders", "--from", "shopify-csv", str(first)).code == 0
    pending = next(o for o in orders if o.financial == "pending")
    pending.financial, pending.fulfillment = "paid", "fulfilled"
    pending.fulfilled = pending.created
    pending.items = pending.items[:1]
    refunded = next(o for o in orders if o.financial == "paid")
    refunded.financial, refunded.refunded_minor = "refunded", refunded.total_minor
    second = write_shopify(tmp_path / "b.csv", orders)
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(second), "--json")
    assert p.code == 0
    assert p.json()[0] | {} == p.json()[0]
    assert (p.json()[0]["updated"], p.json()[0]["unchanged"]) == (2, 28)
    rows = orders_of(workspace, "shopify")
    assert rows[pending.number]["status"] == "shipped"
    assert rows[refunded.number]["status"] == "refunded"
    n_items = workspace.query(
        "SELECT count(*) n FROM order_items WHERE order_id = ?", (rows[pending.number]["id"],)
    )[0]["n"]
    assert n_items == 1
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 30


def test_older_73_column_layout_imports_the_same_orders_as_the_current_one(workspace, tmp_path):
    orders = gen_orders(20, seed=9)
    old = write_shopify(tmp_path / "old.csv", orders, SHOPIFY_73)
    assert len(SHOPIFY_73) == 73
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(old), "--json")
    assert p.json()[0]["inserted"] == 20
    new = write_shopify(tmp_path / "new.csv", orders, SHOPIFY_COLUMNS)
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(new), "--json")
    assert p.json()[0]["unchanged"] == 20


def test_stdin_dash_reads_the_file_from_a_pipe(workspace, sample):
    data = (sample / "amazon_all_orders.tsv").read_bytes()
    p = workspace.run("import", "orders", "--from", "amazon-tsv", "-", "--json", input=data)
    assert p.code == 0, p.stderr
    assert p.json()[0]["file"] == "<stdin>" and p.json()[0]["inserted"] == 3
    rows = orders_of(workspace, "amazon")
    o = rows["113-5550001-0000001"]
    assert (o["subtotal_minor"], o["tax_minor"], o["discount_minor"], o["total_minor"]) == (
        8400,
        672,
        480,
        8592,
    )
    assert o["shipped_at"] == "2026-03-03T09:00:00Z"
    assert rows["113-5550001-0000002"]["status"] == "cancelled"


def _limited_files(limit: int):
    """For a child process: files it writes may not grow past ``limit`` bytes (ulimit -f)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_stdin_needs_room_for_its_copy_unless_it_is_a_file(workspace, tmp_path):
    """A pipe on stdin is copied to TMPDIR first (read like a file after that): no room for the
    copy is an input error naming TMPDIR, exit 2, no traceback. A file given on stdin
    (``- < export.csv``) is read in place, so it needs no room at all."""
    src = write_shopify(tmp_path / "export.csv", gen_orders(6000, seed=4))
    assert src.stat().st_size > 1_500_000
    args = ("import", "orders", "--from", "shopify-csv", "-", "--dry-run", "--json")
    limit = _limited_files(1_000_000)
    with src.open("rb") as fh:
        piped = subprocess.run(
            workspace.csops_cmd(*args),
            input=fh.read(),
            capture_output=True,
            env=workspace.env,
            preexec_fn=limit,
        )
    err = piped.stderr.decode()
    assert piped.returncode == 2, err
    assert "<stdin>: cannot copy the input to a temporary file in" in err
    assert "Traceback" not in err
    with src.open("rb") as fh:
        direct = subprocess.run(
            workspace.csops_cmd(*args),
            stdin=fh,
            capture_output=True,
            env=workspace.env,
            preexec_fn=limit,
        )
    assert direct.returncode == 0, direct.stderr.decode()
    assert json.loads(direct.stdout)[0]["inserted"] == 6000


def test_stdin_closed_is_a_usage_error(workspace):
    p = subprocess.run(
        [*workspace.csops_cmd("import", "orders", "--from", "shopify-csv", "-")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=workspace.env,
        preexec_fn=lambda: os.close(0),
    )
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert "standard input is closed" in err and "Traceback" not in err


def test_taobao_gbk_export_unwraps_protected_ids_and_maps_chinese_statuses(workspace, sample):
    p = workspace.run(
        "import",
        "orders",
        "--from",
        "taobao-csv",
        str(sample / "taobao_orders_export.csv"),
        "--json",
    )
    assert p.code == 0, p.stderr
    rows = orders_of(workspace, "taobao")
    assert set(rows) == {f"386122047123456789{k}" for k in range(5)}
    st = {n[-1]: r["status"] for n, r in rows.items()}
    assert st == {"0": "completed", "1": "shipped", "2": "cancelled", "3": "refunded", "4": "paid"}
    done = rows["3861220471234567890"]
    assert done["created_at"] == "2026-03-01T02:21:33Z"  # China time → UTC
    assert done["delivered_at"] == "2026-03-05T01:30:00Z"
    assert rows["3861220471234567893"]["refunded_minor"] == 25600
    cust = workspace.query("SELECT * FROM customers WHERE id = ?", (done["customer_id"],))[0]
    assert cust["phone"] == "13800000001" and cust["platform_buyer_id"] == "小鹿乱撞2026"
    titles = workspace.query(
        "SELECT name, quantity, total_minor FROM order_items WHERE order_id = ? ORDER BY line_no",
        (rows["3861220471234567893"]["id"],),
    )
    assert [(t["name"], t["quantity"]) for t in titles] == [
        ("羊毛盖毯 燕麦色", 1),
        ("亚麻餐巾套装 鼠尾草绿", 1),
    ]
    assert sum(t["total_minor"] for t in titles) == 25600
    one = workspace.query(
        "SELECT name FROM order_items WHERE order_id = ?", (rows["3861220471234567891"]["id"],)
    )
    assert [r["name"] for r in one] == ["陶瓷马克杯「晨光」，350ml"]


def test_a_file_in_another_format_fails_at_once_listing_expected_and_missing_headers(
    workspace, sample
):
    p = workspace.run(
        "import", "orders", "--from", "taobao-csv", str(sample / "shopify_orders_export.csv")
    )
    assert p.code == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "missing column(s) 订单编号" in p.stderr and "expected columns 订单编号" in p.stderr
    assert "shopify_orders_export.csv" in p.stderr
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 0


def test_bad_rows_go_to_the_rejects_file_and_table_while_good_rows_land(workspace, tmp_path):
    orders = gen_orders(12, seed=2)
    rows = list(shopify_rows(orders))
    rows[0]["Financial Status"] = "payé"
    rows[-1]["Lineitem quantity"] = "abc"
    rows[-1]["Billing Name"] = '=HYPERLINK("http://x")'
    bad_numbers = {rows[0]["Name"], rows[-1]["Name"]}
    path = tmp_path / "mixed.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, SHOPIFY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    rejects = tmp_path / "out" / "rejects.csv"
    p = workspace.run(
        "import", "orders", "--from", "shopify-csv", str(path), "--rejects", str(rejects), "--json"
    )
    assert p.code == 3, p.stderr
    out = p.json()[0]
    bad_rows = sum(1 for r in rows if r["Name"] in bad_numbers)
    assert out["inserted"] == 10 and out["rejected"] == bad_rows
    assert f"{path}:2: Financial Status: unknown status 'payé'" in p.stderr
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == bad_rows
    assert got[0]["_line"] == "2" and got[0]["_field"] == "Financial Status"
    assert "payé" in got[0]["_reason"]
    assert any(g["_field"] == "Lineitem quantity" and "abc" in g["_reason"] for g in got)
    assert all(not g["Billing Name"].startswith("=") for g in got)
    table = workspace.query("SELECT line, field, message FROM rejects ORDER BY line")
    assert len(table) == bad_rows and table[0]["line"] == 2
    numbers = {r["number"] for r in workspace.query("SELECT number FROM orders")}
    assert numbers.isdisjoint(bad_numbers) and len(numbers) == 10


def test_rejects_default_to_the_rejects_folder_named_after_the_run(workspace, tmp_path):
    orders = gen_orders(3, seed=4)
    rows = list(shopify_rows(orders))
    rows[0]["Currency"] = "XXXX"
    path = tmp_path / "bad.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, SHOPIFY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 3
    files = list((workspace.root / "rejects").glob("import-shopify-csv-*.csv"))
    assert len(files) == 1 and p.json()[0]["rejects_file"] == str(files[0])


def test_strict_imports_nothing_when_any_row_is_bad(workspace, tmp_path):
    orders = gen_orders(10, seed=6)
    rows = list(shopify_rows(orders))
    rows[-1]["Lineitem quantity"] = "-1"
    path = tmp_path / "strict.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, SHOPIFY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--strict")
    assert p.code == 2
    assert "nothing imported (--strict)" in p.stderr and "Lineitem quantity" in p.stderr
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 0
    good = write_shopify(tmp_path / "good.csv", orders[:-1])
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(good), "--strict")
    assert p.code == 0
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 9


def test_dry_run_reports_the_counts_and_writes_nothing_but_the_audit_row(workspace, sample):
    p = workspace.run(
        "import",
        "orders",
        "--from",
        "shopify-csv",
        str(sample / "shopify_orders_export.csv"),
        "--dry-run",
        "--json",
    )
    assert p.code == 0
    assert p.json()[0]["inserted"] == 5
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 0
    assert workspace.query("SELECT count(*) n FROM customers")[0]["n"] == 0
    runs = workspace.query("SELECT args FROM runs")
    assert len(runs) == 1 and "--dry-run" in runs[0]["args"]


def test_mapped_csv_reads_any_layout_through_a_named_mapping(workspace, tmp_path):
    workspace.set_config(
        """
[import.mappings.erp]
delimiter = ";"
date_format = "%d.%m.%Y %H:%M"
decimal_comma = true
currency = "EUR"
timezone = "Europe/Berlin"
status_map = { "bezahlt" = "paid", "versandt" = "shipped", "storniert" = "cancelled" }
[import.mappings.erp.columns]
order_id = "Auftrag"
created_at = "Datum"
status = "Status"
currency = "Währung"
email = "E-Mail"
sku = "Artikel"
quantity = "Menge"
unit_price = "Preis"
shipping = "Versand"
"""
    )
    text = (
        "Auftrag;Datum;Status;Währung;E-Mail;Artikel;Menge;Preis;Versand\n"
        "A-1;05.03.2024 14:30;bezahlt;EUR;Kunde@Example.DE;TASSE;2;1.234,50;4,90\n"
        "A-1;05.03.2024 14:30;bezahlt;EUR;Kunde@Example.DE;TELLER;1;10,00;\n"
        "A-2;06.03.2024 09:00;verloren;EUR;x@example.de;TASSE;1;3,00;0\n"
        "A-3;07.03.2024 09:00;versandt;;y@example.de;TASSE;1;3,00;0\n"
    )
    path = tmp_path / "erp.csv"
    path.write_text(text, encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "csv", "--mapping", "erp", str(path), "--json")
    assert p.code == 3, p.stderr
    assert p.json()[0]["inserted"] == 2 and p.json()[0]["rejected"] == 1, p.stderr
    assert "Status: unknown status 'verloren'" in p.stderr
    o = workspace.query("SELECT * FROM orders WHERE external_id = 'A-1'")[0]
    assert (
        o["platform"],
        o["currency"],
        o["subtotal_minor"],
        o["shipping_minor"],
        o["total_minor"],
        o["created_at"],
        o["email"],
    ) == ("csv", "EUR", 247900, 490, 248390, "2024-03-05T13:30:00Z", "kunde@example.de")
    assert workspace.query("SELECT currency FROM orders WHERE external_id = 'A-3'")[0] == {
        "currency": "EUR"
    }


def test_csv_without_a_mapping_name_says_which_mappings_exist(workspace, sample):
    p = workspace.run("import", "orders", "--from", "csv", str(sample / "conversations.csv"))
    assert p.code == 2
    assert "--mapping" in p.stderr


def test_an_unknown_source_is_a_usage_error_listing_the_sources(workspace, sample):
    p = workspace.run("import", "orders", "--from", "ebay-csv", str(sample / "README.md"))
    assert p.code == 2
    assert "shopify-csv" in p.stderr and "taobao-csv" in p.stderr


def test_a_missing_file_is_one_clear_error(workspace, tmp_path):
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(tmp_path / "nope.csv"))
    assert p.code == 2
    assert "nope.csv: file not found" in p.stderr and "Traceback" not in p.stderr


def test_no_progress_bar_or_summary_reaches_stdout_in_a_pipe(workspace, sample):
    p = workspace.run(
        "import",
        "orders",
        "--from",
        "shopify-csv",
        str(sample / "shopify_orders_export.csv"),
        "--nl",
    )
    assert p.code == 0
    assert len(p.lines()) == 1 and "importing" not in p.stderr


def test_orders_rows_reappearing_later_in_the_file_are_rejected_not_merged(workspace, tmp_path):
    orders = gen_orders(3, seed=8)
    rows = list(shopify_rows(orders))
    rows.append(dict(rows[0]))
    path = tmp_path / "split.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, SHOPIFY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 3
    assert "not consecutive" in p.stderr
    assert p.json()[0]["inserted"] == 3


def test_taobao_41_column_layout_derives_refunds_from_paid_amount(workspace, tmp_path, sample):
    text = (sample / "taobao_orders_export.csv").read_bytes().decode("gb18030")
    lines = text.split("\r\n")
    header = lines[0].split(",")
    keep = [
        i
        for i, h in enumerate(header)
        if h
        not in (
            "是否上传合同照片",
            "是否上传小票",
            "是否代付",
            "新零售交易类型",
            "新零售导购门店名称",
            "新零售导购门店id",
            "新零售发货门店名称",
            "新零售发货门店id",
            "退款金额",
            "预约门店",
            "确认收货时间",
            "打款商家金额",
            "含应开票给个人的个人红包",
        )
    ]
    out = []
    for line in lines:
        if line:
            cells = next(csv.reader([line]))
            out.append(",".join(cells[i] for i in keep))
    path = tmp_path / "tb41.csv"
    path.write_bytes(("\r\n".join(out) + "\r\n").encode("gbk"))
    assert len(keep) == 41
    p = workspace.run("import", "orders", "--from", "taobao-csv", str(path), "--json")
    assert p.code == 0, p.stderr
    rows = orders_of(workspace, "taobao")
    assert rows["3861220471234567893"]["status"] == "refunded"
    shutil.rmtree(tmp_path / "none", ignore_errors=True)


def test_a_progress_bar_shows_on_a_terminal_stderr_while_stdout_stays_data(workspace, sample):
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        workspace.csops_cmd(
            "import",
            "orders",
            "--from",
            "shopify-csv",
            str(sample / "shopify_orders_april2024.csv"),
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=slave,
        env=workspace.env,
        cwd=workspace.root,
    )
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.returncode == 0
    assert "importing" in b"".join(chunks).decode(errors="replace")
    assert out.decode().startswith("[") and "importing" not in out.decode()


def test_dry_run_with_bad_rows_writes_no_rejects_file_but_reports_them(workspace, tmp_path):
    orders = gen_orders(4, seed=12)
    rows = list(shopify_rows(orders))
    rows[0]["Total"] = "lots"
    path = tmp_path / "bad.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, SHOPIFY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--dry-run")
    assert p.code == 3 and "Total: not an amount" in p.stderr
    assert list((workspace.root / "rejects").glob("*")) == []
    assert workspace.query("SELECT count(*) n FROM rejects")[0]["n"] == 0


def test_every_import_command_has_help_with_an_example(workspace):
    for args in (("import",), ("import", "orders"), ("import", "conversations")):
        p = workspace.run(*args, "--help")
        assert p.code == 0 and "Usage: " in p.stdout
        if len(args) == 2:
            assert "Example" in p.stdout and "--from" in p.stdout


def test_orders_hashed_by_an_older_csops_are_recognized_as_unchanged(workspace, sample):
    """Content hashes were blake2b of the values' repr before they were marshal-based: an
    order whose raw cells no longer match (no raw hash stored) but whose values do is
    unchanged, not rewritten; one whose stored hash matches neither is updated."""
    import hashlib
    from zoneinfo import ZoneInfo

    import tomllib

    from csops.importers.base import ParseEnv, read_orders
    from csops.importers.shopify_csv import SOURCE
    from csops.importers.store import _fingerprinted

    path = sample / "shopify_orders_april2024.csv"
    assert workspace.run("import", "orders", "--from", "shopify-csv", str(path)).code == 0
    shop = tomllib.loads(workspace.config.read_text("utf-8"))["shop"]
    env = ParseEnv(tz=ZoneInfo(shop["timezone"]), currency=shop["currency"])
    with path.open("rb") as fh:
        _, items = read_orders(fh, SOURCE, env, file=str(path))
        legacy = {
            p.external_id: hashlib.blake2b(
                repr(_fingerprinted(p.parse_compact())).encode("utf-8", "surrogatepass"),
                digest_size=16,
            ).hexdigest()
            for p in items
        }
    assert len(legacy) == 40
    conn = sqlite3.connect(str(workspace.db_path))
    stored = [r[0] for r in conn.execute("SELECT content_hash FROM orders")]
    assert all(len(h) == 33 and h.startswith("m") for h in stored)
    with conn:
        conn.executemany(
            "UPDATE orders SET content_hash = ?, raw_hash = NULL WHERE external_id = ?",
            [(h, ext) for ext, h in legacy.items()],
        )
        conn.execute(
            "UPDATE orders SET content_hash = 'f' || substr(content_hash, 2) "
            "WHERE id = (SELECT MIN(id) FROM orders)"
        )
    conn.close()
    before = workspace.query("SELECT * FROM order_items ORDER BY id")
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 0, p.stderr
    assert (p.json()[0]["unchanged"], p.json()[0]["updated"]) == (39, 1)
    assert len(workspace.query("SELECT * FROM order_items ORDER BY id")) == len(before)


def test_currencies_are_iso_4217_codes_with_their_own_exponents(workspace, tmp_path):
    """``ABC`` is not a currency (rejected, not stored with a guessed exponent); ``RMB`` is what
    shops write for CNY; XPF has no minor unit and KWD three, as ISO 4217 says."""
    workspace.set_config(
        """
[import.mappings.m]
[import.mappings.m.columns]
order_id = "order"
created_at = "created"
currency = "cur"
total = "total"
"""
    )
    text = (
        "order,created,cur,total\n"
        "1,2024-03-05 10:00,ABC,10.00\n"
        "2,2024-03-05 10:00,rmb,10.50\n"
        "3,2024-03-05 10:00,XPF,1500\n"
        "4,2024-03-05 10:00,XPF,15.50\n"
        "5,2024-03-05 10:00,KWD,1.234\n"
    )
    path = tmp_path / "cur.csv"
    path.write_text(text, encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "csv", "--mapping", "m", str(path), "--json")
    assert p.code == 3, p.stderr
    assert "cur.csv:2: cur: unknown currency 'ABC'" in p.stderr
    assert "cur.csv:5: total: '15.50' has more decimals than XPF allows (0)" in p.stderr
    got = {
        r["external_id"]: (r["currency"], r["total_minor"])
        for r in workspace.query("SELECT external_id, currency, total_minor FROM orders")
    }
    assert got == {"2": ("CNY", 1050), "3": ("XPF", 1500), "5": ("KWD", 1234)}


def test_a_mapping_with_an_unknown_timezone_is_a_config_error(workspace, tmp_path):
    workspace.set_config(
        """
[import.mappings.m]
timezone = "Europe/Berln"
[import.mappings.m.columns]
order_id = "order"
created_at = "created"
"""
    )
    path = tmp_path / "o.csv"
    path.write_text("order,created\n1,2024-03-05 10:00\n", encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "csv", "--mapping", "m", str(path))
    assert p.code == 2, p.stderr
    assert "unknown timezone 'Europe/Berln'" in p.stderr and "Traceback" not in p.stderr
    assert "import.mappings" in p.stderr


def _taobao_workbook(sample, dest):
    """The Taobao sample as the seller center's newer .xlsx download: ids as text cells,
    creation times as date cells, amounts as numbers."""
    from datetime import datetime

    import openpyxl

    with (sample / "taobao_orders_export.csv").open(encoding="gb18030", newline="") as fh:
        rows = list(csv.reader(fh))
    book = openpyxl.Workbook()
    sheet = book.active
    for i, row in enumerate(rows):
        cells: list = []
        for name, value in zip(rows[0], row, strict=True):
            name = name.strip()
            value = value[2:-1] if value.startswith('="') else value
            if i and name == "订单创建时间" and "-" in value:
                cells.append(datetime.fromisoformat(value))
            elif i and name == "买家实际支付金额" and value:
                cells.append(float(value))
            else:
                cells.append(value)
        sheet.append(cells)
    book.save(dest)
    return dest


def test_a_taobao_xlsx_report_imports_the_same_orders_as_its_csv(workspace, sample, tmp_path):
    """FORMATS §4.1: the 订单报表 now downloads as .xlsx. Its first sheet is read like the CSV:
    the same orders, from a file or from stdin; a legacy .xls or a ZIP that is no workbook is
    refused at once (exit 2)."""
    book = _taobao_workbook(sample, tmp_path / "ExportOrderList.xlsx")
    fields = "external_id, status, total_minor, refunded_minor, created_at, delivered_at"
    query = f"SELECT {fields} FROM orders ORDER BY external_id"
    csv_db, xlsx_db, stdin_db = (str(tmp_path / f"{n}.db") for n in ("csv", "xlsx", "stdin"))
    src = str(sample / "taobao_orders_export.csv")
    assert workspace.run("--db", csv_db, "import", "orders", "--from", "taobao-csv", src).code == 0
    p = workspace.run("--db", xlsx_db, "import", "orders", "--from", "taobao-csv", str(book))
    assert p.code == 0, p.stderr
    p = workspace.run(
        *("--db", stdin_db, "import", "orders", "--from", "taobao-csv", "-"),
        input=book.read_bytes(),
    )
    assert p.code == 0, p.stderr
    want = [tuple(r) for r in sqlite3.connect(csv_db).execute(query)]
    assert len(want) == 5
    assert [tuple(r) for r in sqlite3.connect(xlsx_db).execute(query)] == want
    assert [tuple(r) for r in sqlite3.connect(stdin_db).execute(query)] == want
    again = workspace.run("--db", xlsx_db, "import", "orders", "--from", "taobao-csv", str(book))
    assert "unchanged=5" in again.stderr
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    for name, says in (("old.xls", "Excel 97-2003"), ("x.zip", "not an Excel workbook")):
        p = workspace.run("import", "orders", "--from", "taobao-csv", str(tmp_path / name))
        assert p.code == 2 and says in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_taobao_times_are_china_time_whatever_the_shops_timezone(workspace, sample):
    workspace.replace_config('timezone = "Asia/Shanghai"', 'timezone = "Europe/Berlin"')
    p = workspace.run(
        "import", "orders", "--from", "taobao-csv", str(sample / "taobao_orders_export.csv")
    )
    assert p.code == 0, p.stderr
    done = orders_of(workspace, "taobao")["3861220471234567890"]
    assert done["created_at"] == "2026-03-01T02:21:33Z"  # 10:21:33 in China


def test_a_workbook_with_xml_entity_expansion_is_refused_quickly(workspace, tmp_path):
    """A billion-laughs sheet (nested XML entities) is refused at once, never expanded."""
    import zipfile

    import openpyxl

    plain = tmp_path / "plain.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["订单编号"])
    book.save(plain)
    levels = ['<!ENTITY a "aaaaaaaaaa">'] + [
        f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcdefg", "bcdefgh", strict=True)
    ]
    doctype = f"<!DOCTYPE worksheet [{''.join(levels)}]>".encode()
    row = b'<row r="2"><c r="A2" t="inlineStr"><is><t>&h;</t></is></c></row>'
    bomb = tmp_path / "laughs.xlsx"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                head, _, rest = data.partition(b"?>")
                data = head + b"?>" + doctype + rest.replace(b"<sheetData>", b"<sheetData>" + row)
            zout.writestr(item, data)
    p = workspace.run("import", "orders", "--from", "taobao-csv", str(bomb), timeout=60)
    assert p.code == 2, p.stderr
    assert "cannot read the workbook" in p.stderr and "Traceback" not in p.stderr
    assert workspace.query("SELECT count(*) n FROM orders")[0]["n"] == 0


def test_header_names_in_another_case_are_read_as_the_known_columns(workspace, sample, tmp_path):
    """A re-saved export with ``Created At`` / ``Lineitem Price`` imports like the original."""
    text = (sample / "shopify_orders_export.csv").read_text(encoding="utf-8")
    head, _, rest = text.partition("\n")
    renamed = head.replace("Created at", "Created At").replace("Lineitem price", "LINEITEM PRICE")
    path = tmp_path / "recased.csv"
    path.write_text(renamed + "\n" + rest, encoding="utf-8")
    p = workspace.run("import", "orders", "--from", "shopify-csv", str(path), "--json")
    assert p.code == 0, p.stderr
    assert p.json()[0]["inserted"] == 5
    item = workspace.query("SELECT unit_price_minor FROM order_items WHERE sku = 'BW-CAN-TALL'")
    assert item[0]["unit_price_minor"] == 3600


def test_workbook_numbers_read_as_excel_shows_them(tmp_path):
    """A formula result like 84.00000000000001 is 84 on screen and must be 84 here too, or the
    amount is rejected for having more decimals than USD allows."""
    from csops.importers.xlsx import cell_text

    assert [cell_text(v) for v in (84.00000000000001, 0.1 + 0.2, 39.9, 12.0, 1234.5)] == [
        "84",
        "0.3",
        "39.9",
        "12",
        "1234.5",
    ]


def test_customers_are_matched_by_email_else_phone_else_buyer_id_within_and_across_runs(
    workspace, tmp_path
):
    """The issue's matching order: a normalized e-mail (case, spaces), else the phone's digits
    however they are written, else the platform's buyer id; a masked e-mail counts as none.
    Matches hold within one file and against customers stored by an earlier run."""
    workspace.set_config(
        """
[import.mappings.shop]
[import.mappings.shop.columns]
order_id = "order"
created_at = "created"
total = "total"
email = "email"
phone = "phone"
buyer_id = "buyer"
"""
    )
    first = (
        "order,created,total,email,phone,buyer\n"
        "1,2024-03-05 10:00,1.00,ana@example.com,+1 (503) 555-0101,\n"
        "2,2024-03-05 10:00,1.00,,503-555-0102,\n"
        "3,2024-03-05 10:00,1.00,,(503) 555 0102,\n"
        "4,2024-03-05 10:00,1.00,,,tb_lu\n"
        "5,2024-03-05 10:00,1.00,,,tb_lu\n"
        "6,2024-03-05 10:00,1.00, ANA@Example.COM ,,\n"
        "7,2024-03-05 10:00,1.00,xl***@163.com,5035550102,\n"
    )
    later = (
        "order,created,total,email,phone,buyer\n"
        "8,2024-03-06 10:00,1.00,,'503.555.0102,\n"
        "9,2024-03-06 10:00,1.00,,,tb_lu\n"
        "10,2024-03-06 10:00,1.00,Ana@example.com,,\n"
    )
    for name, text in (("first.csv", first), ("later.csv", later)):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        p = workspace.run("import", "orders", "--from", "csv", "--mapping", "shop", str(path))
        assert p.code == 0, p.stderr
    who = {
        r["external_id"]: r["customer_id"]
        for r in workspace.query("SELECT external_id, customer_id FROM orders")
    }
    by_email, by_phone, by_buyer = who["1"], who["2"], who["4"]
    assert len({by_email, by_phone, by_buyer}) == 3
    assert who["6"] == who["10"] == by_email
    assert who["3"] == who["7"] == who["8"] == by_phone
    assert who["5"] == who["9"] == by_buyer
    assert workspace.query("SELECT count(*) n FROM customers")[0]["n"] == 3
    ana = workspace.query("SELECT email, phone FROM customers WHERE id = ?", (by_email,))[0]
    assert ana == {"email": "ana@example.com", "phone": "+15035550101"}
