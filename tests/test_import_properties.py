"""Properties of every file reader under Hypothesis (AT-22 P1–P4).

Counts: 300 examples per reader-level property (``CSOPS_FUZZ_EXAMPLES``; ``--nightly`` makes it
20,000, ACCEPTANCE.md's figures); the command-level ones run the whole CLI twice per example,
25 examples in CI and 1,000 nightly.

P1 arbitrary bytes and mangled rows never produce a traceback. P2 for well-formed files with
mangled values, imported + rejected = rows written. P3 importing the same bytes twice changes
nothing the second time. P4 generated orders written in Shopify's layout read back equal.
Reader-level properties run in-process on the real readers; the command-level ones run the real
CLI in-process (click's runner) against a real workspace database.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from import_helpers import SHOPIFY_COLUMNS, TAOBAO_COLUMNS

from csops.errors import CsopsError
from csops.importers import amazon_tsv, shopify_csv, taobao_csv
from csops.importers.base import FieldError, GroupReject, ParseEnv, PendingOrder, read_orders
from csops.importers.mapped_csv import build_format
from csops.importers.settings import MappingSettings
from csops.model import ORDER_STATUSES
from csops.result import Reject
from csops.returns import formats as return_formats
from csops.returns.policy import ReturnRequest

EXAMPLES = int(os.environ.get("CSOPS_FUZZ_EXAMPLES") or 300)
CLI_EXAMPLES = 75 if EXAMPLES <= 300 else 1000
# the suite's 300 s per test holds 300 examples; larger counts get time in proportion
pytestmark = pytest.mark.timeout(300 * max(1, EXAMPLES // 300))

MAPPED = build_format(
    "fuzz",
    MappingSettings(
        columns={
            "order_id": "id",
            "created_at": "when",
            "total": "total",
            "sku": "sku",
            "quantity": "qty",
            "unit_price": "price",
            "status": "status",
        },
        status_map={"ok": "paid", "gone": "cancelled"},
    ),
)
AMAZON_COLUMNS = [
    "amazon-order-id",
    "purchase-date",
    "order-status",
    "sku",
    "quantity",
    "currency",
    "item-price",
]
READERS = {
    "shopify-csv": (shopify_csv.SOURCE, SHOPIFY_COLUMNS),
    "taobao-csv": (taobao_csv.SOURCE, TAOBAO_COLUMNS),
    "amazon-tsv": (amazon_tsv.SOURCE, AMAZON_COLUMNS),
    "csv": (MAPPED, ["id", "when", "total", "sku", "qty", "price", "status"]),
}
ENV = ParseEnv(tz=ZoneInfo("Asia/Shanghai"), currency="CNY", field_size_limit=4096)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def consume(fmt, data: bytes, encoding: str | None = None) -> tuple[int, int]:
    """Read everything; return (rows of parsed orders, rows rejected). Only CsopsError escapes."""
    _, items = read_orders(io.BytesIO(data), fmt, ENV, file="fuzz", encoding=encoding)
    ok = rejected = 0
    for item in items:
        if isinstance(item, GroupReject):
            assert item.message and item.line >= 2
            rejected += len(item.rows)
            continue
        assert isinstance(item, PendingOrder)
        try:
            order = item.parse()
        except FieldError as exc:
            assert exc.message
            rejected += len(item.rows)
            continue
        assert order.status in ORDER_STATUSES
        assert isinstance(order.total_minor, int)
        ok += len(item.rows)
    return ok, rejected


# ---------------------------------------------------------------- P1: arbitrary bytes


@pytest.mark.parametrize("name", list(READERS))
@FUZZ
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_anything_but_a_user_error(name, data):
    fmt, columns = READERS[name]
    sep = "\t" if fmt.delimiter == "\t" else ","
    for blob in (data, (sep.join(columns) + "\n").encode() + data):
        try:
            consume(fmt, blob)
        except CsopsError as exc:
            assert exc.exit_code == 2 and str(exc)


# ---------------------------------------------------------------- P2: mangled values

mangled_cell = st.one_of(
    st.sampled_from(
        [
            "",
            "abc",
            "-1",
            "1.234,56",
            "9e99",
            "=1+1",
            '"',
            "\x00",
            "2024-13-40",
            "\r\n",
            "ZZZ",
            "'0812",
            '="123"',
            "交易成功",
            "paid",
            "12.345",
        ]
    ),
    st.text(max_size=20),
)


@pytest.mark.parametrize("name", list(READERS))
@FUZZ
@given(
    rows=st.lists(st.lists(mangled_cell, min_size=7, max_size=7), min_size=1, max_size=12),
)
def test_every_generated_row_is_imported_or_rejected_never_lost(name, rows):
    fmt, columns = READERS[name]
    used = columns[:7] if len(columns) >= 7 else columns
    if fmt.delimiter == "\t":
        # no quoting in Amazon reports: tabs and newlines inside a value cannot exist
        rows = [
            [c.replace("\t", " ").replace("\n", " ").replace("\r", " ") for c in r] for r in rows
        ]
        text = (
            "\t".join(columns) + "\n" + "".join("\t".join(r[: len(columns)]) + "\n" for r in rows)
        )
        physical = len(rows)
        data = text.encode("utf-8", "surrogatepass")
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")  # a lone CR in a value gets quoted
        w.writerow(columns)
        for r in rows:
            full = dict.fromkeys(columns, "")
            full.update(zip(used, r, strict=False))
            w.writerow([full[c] for c in columns])
        data = buf.getvalue().encode("utf-8", "surrogatepass")
        physical = len(rows)
    try:
        ok, rejected = consume(fmt, data)
    except CsopsError as exc:  # e.g. bytes that are not UTF-8 after mangling
        assert exc.exit_code == 2
        return
    assert ok + rejected == physical - blank_rows(data, fmt)


def blank_rows(data: bytes, fmt) -> int:
    """Records whose cells are all blank are skipped by design (Excel leaves such lines)."""
    text = data.decode("utf-8", "surrogatepass")
    if fmt.delimiter == "\t":
        recs = [line.split("\t") for line in text.split("\n")[1:] if line != ""]
    else:
        recs = list(csv.reader(io.StringIO(text, newline="")))[1:]
    return sum(1 for r in recs if not any(c.strip() for c in r))


# ---------------------------------------------------------------- P4: round trip

names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30
).filter(lambda s: s.strip() == s and s != "")


@st.composite
def gen_order(draw, k: int):
    currency = draw(st.sampled_from(["USD", "EUR", "JPY", "CNY"]))
    exp = 0 if currency == "JPY" else 2
    items = draw(
        st.lists(
            st.tuples(names, st.integers(0, 50), st.integers(0, 10**7)), min_size=1, max_size=4
        )
    )
    offset = draw(st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15))
    created = datetime(2024, 1, 1, tzinfo=timezone(timedelta(minutes=offset))) + timedelta(
        seconds=draw(st.integers(0, 10**7))
    )
    return {
        "number": f"#{1000 + k}",
        "currency": currency,
        "exp": exp,
        "created": created,
        "financial": draw(st.sampled_from(sorted(shopify_csv.FINANCIAL))),
        "email": draw(st.sampled_from(["", "A@Example.com", "x.y@example.org"])),
        "bill": draw(names),
        "items": items,
        "shipping": draw(st.integers(0, 10**5)),
    }


def amount(minor: int, exp: int) -> str:
    return str(Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))) if exp else str(minor)


@FUZZ
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(*[gen_order(k) for k in range(n)])))
def test_generated_orders_written_as_shopify_exports_read_back_equal(orders):
    buf = io.StringIO()
    w = csv.DictWriter(buf, SHOPIFY_COLUMNS, lineterminator="\r\n")
    w.writeheader()
    for o in orders:
        subtotal = sum(q * p for _, q, p in o["items"])
        for i, (name, qty, price) in enumerate(o["items"]):
            row = dict.fromkeys(SHOPIFY_COLUMNS, "")
            row.update(
                {
                    "Name": o["number"],
                    "Email": o["email"],
                    "Created at": o["created"].strftime("%Y-%m-%d %H:%M:%S %z"),
                    "Lineitem quantity": str(qty),
                    "Lineitem name": name,
                    "Lineitem price": amount(price, o["exp"]),
                    "Lineitem sku": f"S{i}",
                }
            )
            if i == 0:
                row.update(
                    {
                        "Financial Status": o["financial"],
                        "Fulfillment Status": "",
                        "Currency": o["currency"],
                        "Billing Name": o["bill"],
                        "Subtotal": amount(subtotal, o["exp"]),
                        "Shipping": amount(o["shipping"], o["exp"]),
                        "Total": amount(subtotal + o["shipping"], o["exp"]),
                    }
                )
            w.writerow(row)
    _, items = read_orders(io.BytesIO(buf.getvalue().encode()), shopify_csv.SOURCE, ENV, file="p4")
    got = [item.parse() for item in items]
    assert len(got) == len(orders)
    for o, g in zip(orders, got, strict=True):
        assert g.number == o["number"] and g.currency == o["currency"]
        assert g.created_at == o["created"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert g.total_minor == sum(q * p for _, q, p in o["items"]) + o["shipping"]
        assert g.shipping_minor == o["shipping"]
        assert [(i.name, i.quantity, i.unit_price_minor) for i in g.items] == o["items"]
        assert g.customer.name == o["bill"]
        assert g.customer.email == (o["email"].lower() or None)


# ---------------------------------------------------------------- P1 + P3 through the CLI


@pytest.fixture
def cli_env(workspace, monkeypatch):
    monkeypatch.setenv("CSOPS_TESTING", "1")
    return workspace


CLI_FUZZ = settings(
    max_examples=CLI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


MAPPING_TOML = """
[import.mappings.fuzz]
status_map = { ok = "paid", gone = "cancelled" }
[import.mappings.fuzz.columns]
order_id = "id"
created_at = "when"
total = "total"
sku = "sku"
quantity = "qty"
unit_price = "price"
status = "status"
"""


@pytest.mark.parametrize("name", ["shopify-csv", "taobao-csv", "amazon-tsv", "csv"])
@CLI_FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=600),
        st.lists(mangled_cell, max_size=40).map(lambda c: ",".join(c).encode()),
    )
)
def test_the_command_never_shows_a_traceback_and_a_second_import_changes_nothing(
    cli_env, tmp_path, name, body
):
    fmt, columns = READERS[name]
    sep = "\t" if fmt.delimiter == "\t" else ","
    data = (sep.join(columns) + "\n").encode() + body
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    args = ["import", "orders", "--from", name, str(path), "--json"]
    if name == "csv":  # the same mapping as MAPPED, through the config as users write it
        if "[import.mappings.fuzz]" not in cli_env.config.read_text("utf-8"):
            cli_env.set_config(MAPPING_TOML)
        args[4:4] = ["--mapping", "fuzz"]
    twice_without_a_traceback(cli_env, args, ("orders", "order_items", "customers"))


def twice_without_a_traceback(ws, args: list[str], tables: tuple[str, ...]) -> None:
    """Run the CLI twice on the same input: a documented exit code and one line, never a
    traceback (P1); the second run exits the same and changes nothing in ``tables`` (P3)."""
    from click.testing import CliRunner

    from csops.cli import cli

    def snapshot() -> list[list[tuple]]:
        conn = sqlite3.connect(ws.db_path)
        try:
            return [conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in tables]
        finally:
            conn.close()

    runner = CliRunner()
    full = ["--config", str(ws.config), *args]
    first = runner.invoke(cli, full)
    assert first.exit_code in (0, 2, 3), first.output
    assert first.exception is None or isinstance(first.exception, SystemExit), repr(first.exception)
    assert "Traceback" not in first.output
    before = snapshot()
    second = runner.invoke(cli, full)
    assert second.exit_code == first.exit_code
    assert snapshot() == before


# ---------------------------------------------------------------- the other readers: returns


TAOBAO_REFUND_COLUMNS = [
    *("退款编号", "订单编号", "退款状态", "商品编码"),
    *("买家退款原因", "退款的申请时间", "货物状态"),
]
RETURN_READERS = {
    "csv": (return_formats.GENERIC_CSV, list(return_formats.GENERIC_COLUMNS)),
    "taobao-refunds": (
        return_formats.TAOBAO_REFUNDS,
        TAOBAO_REFUND_COLUMNS,
    ),
}


def consume_returns(fmt, data: bytes) -> int:
    """Read a return batch; return how many lines came out. Only CsopsError escapes."""
    out = 0
    lines: set[int] = set()
    for item in fmt.read(io.BytesIO(data), "fuzz", ZoneInfo("Asia/Shanghai")):
        if isinstance(item, Reject):
            assert item.message and item.line and item.line >= 2
            line = item.line
        else:
            assert isinstance(item, ReturnRequest | return_formats.Skipped)
            line = item.line_no
        assert line not in lines  # one outcome per line
        lines.add(line)
        out += 1
    return out


@pytest.mark.parametrize("name", list(RETURN_READERS))
@FUZZ
@given(data=st.binary(max_size=3000))
def test_return_readers_never_raise_anything_but_a_user_error_on_arbitrary_bytes(name, data):
    fmt, columns = RETURN_READERS[name]
    for blob in (data, (",".join(columns) + "\n").encode() + data):
        try:
            consume_returns(fmt, blob)
        except CsopsError as exc:
            assert exc.exit_code == 2 and str(exc)


@pytest.mark.parametrize("name", list(RETURN_READERS))
@FUZZ
@given(
    rows=st.lists(st.lists(mangled_cell, min_size=7, max_size=7), min_size=1, max_size=12),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]),
)
def test_every_return_line_is_decided_on_or_rejected_never_lost(name, rows, encoding):
    fmt, columns = RETURN_READERS[name]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(r + [""] * (len(columns) - len(r)))
    text = buf.getvalue()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:  # a lone surrogate: not text any encoder can write
        return
    try:
        out = consume_returns(fmt, data)
    except CsopsError as exc:  # mangled bytes that are no text in any encoding we read
        assert exc.exit_code == 2
        return
    recs = list(csv.reader(io.StringIO(text, newline="")))[1:]
    assert out == sum(1 for r in recs if any(c.strip() for c in r))


# ---------------------------------------------------------------- ... and survey answers


@CLI_FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=600),
        st.lists(mangled_cell, max_size=30).map(lambda c: ",".join(c).encode()),
    ),
    header=st.sampled_from([b"token,score,comment\n", b"order,kind,score\n", b""]),
)
def test_survey_answers_import_never_shows_a_traceback_and_a_rerun_changes_nothing(
    cli_env, tmp_path, body, header
):
    path = tmp_path / "answers.bin"
    path.write_bytes(header + body)
    twice_without_a_traceback(cli_env, ["surveys", "import", str(path), "--json"], ("surveys",))


# ---------------------------------------------------------------- bounded memory for order keys


@FUZZ
@given(
    keys=st.lists(st.text(max_size=6), max_size=400),
    in_memory=st.integers(1, 50),
    filter_bits=st.sampled_from([8, 64, 1 << 12]),
)
def test_seen_keys_answers_exactly_like_a_set_however_much_it_spilled(keys, in_memory, filter_bits):
    """A tiny in-memory part and a tiny filter force spills and false positives, which the
    temporary file must resolve: the answers are a set's, always."""
    from csops.importers.base import SeenKeys

    seen, reference = SeenKeys(in_memory=in_memory, filter_bits=filter_bits), set()
    try:
        for key in keys:
            assert (key in seen) == (key in reference), key
            if key not in reference:
                seen.add(key)
                reference.add(key)
        assert all(k in seen for k in reference)
        assert "never-added-\x00" not in seen
    finally:
        seen.close()
