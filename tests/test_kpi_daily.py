"""`csops kpi daily` against a hand-computed fixture in a real workspace database."""

from __future__ import annotations

import math

import pytest
from kpi_helpers import DAY, EXPECTED, EXPECTED_TRAILING, NOW, env_at, insert_fixture


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture
def shop(workspace):
    insert_fixture(workspace.db_path)
    return workspace


def test_every_kpi_of_the_day_matches_the_hand_computed_value(shop):
    proc = shop.run("kpi", "daily", "--date", DAY, "--json", env=env_at(NOW))
    assert proc.code == 0, proc.stderr
    stored = {
        r["metric"]: (r["value"], r["numerator"], r["denominator"], r["sample_size"])
        for r in shop.query("SELECT * FROM kpi_daily WHERE day = ?", (DAY,))
    }
    wrong = {}
    for metric, expected in {**EXPECTED, **EXPECTED_TRAILING}.items():
        got = stored.get(metric)
        if got is None or not all(_close(g, e) for g, e in zip(got, expected, strict=True)):
            wrong[metric] = (got, expected)
    assert wrong == {}
    printed = {r["metric"]: r for r in proc.json()}
    assert set(printed) == {m for m in stored if not m.endswith((".7d", ".30d"))}
    assert _close(printed["csat.avg"]["value"], 4.0)
    assert printed["orders"]["value_7d"] == 7 and printed["orders"]["sample_30d"] == 8


def test_every_kpi_has_trailing_values_except_the_90_day_repurchase_rate(shop):
    shop.run("kpi", "daily", "--date", DAY, "--json", env=env_at(NOW))
    names = {r["metric"] for r in shop.query("SELECT metric FROM kpi_daily WHERE day = ?", (DAY,))}
    base = {n for n in names if not n.endswith((".7d", ".30d"))}
    assert set(EXPECTED) == base
    for name in base - {"repurchase_rate"}:
        assert {name + ".7d", name + ".30d"} <= names, name
    assert "repurchase_rate.7d" not in names


def test_the_terminal_table_shows_money_in_major_units_and_rates_as_percent(shop):
    proc = shop.run("kpi", "daily", "--date", DAY, "--table", env=env_at(NOW))
    assert proc.code == 0, proc.stderr
    lines = {line.split()[1]: line for line in proc.stdout.splitlines()[2:]}
    assert "CNY 500.50" in lines["gmv.CNY"]
    assert "40.0%" in lines["return_rate"]
    assert "7.5 min" in lines["frt.median_minutes"]


def test_a_range_stores_every_day_and_running_it_twice_changes_nothing(shop):
    args = ("kpi", "daily", "--from", "2024-04-10", "--to", DAY, "--json")
    first = shop.run(*args, env=env_at(NOW))
    assert first.code == 0, first.stderr
    rows1 = shop.query("SELECT day, metric, value, sample_size FROM kpi_daily ORDER BY 1, 2")
    second = shop.run(*args, env=env_at(NOW))
    assert second.code == 0
    rows2 = shop.query("SELECT day, metric, value, sample_size FROM kpi_daily ORDER BY 1, 2")
    assert rows1 == rows2
    assert {r["day"] for r in rows1} == {f"2024-04-{d:02d}" for d in range(10, 19)}
    # gmv.USD, aov.USD and refund.CNY have no rows in any window before the 18th
    assert len(first.json()) == 9 * len(EXPECTED) - 8 * 3


def test_dry_run_prints_the_kpis_but_stores_nothing(shop):
    proc = shop.run("kpi", "daily", "--date", DAY, "--dry-run", "--json", env=env_at(NOW))
    assert proc.code == 0, proc.stderr
    assert len(proc.json()) == len(EXPECTED)
    assert shop.query("SELECT COUNT(*) AS n FROM kpi_daily")[0]["n"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("--from", "2024-04-10"), "--from and --to go together"),
        (("--from", "2024-04-10", "--to", "2024-04-01"), "--to is before --from"),
        (("--date", "2024-13-01"), "is not a date"),
        (("--date", DAY, "--from", DAY, "--to", DAY), "not both"),
    ],
)
def test_bad_dates_are_a_usage_error_with_one_clear_line(shop, args, message):
    proc = shop.run("kpi", "daily", *args, env=env_at(NOW))
    assert proc.code == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rows_with_broken_timestamps_are_left_out_without_failing_the_run(shop):
    import sqlite3

    with sqlite3.connect(shop.db_path) as conn:
        conn.execute(
            "INSERT INTO conversations (source, external_id, kind, created_at, first_response_at,"
            " resolved_at, imported_at) VALUES ('csv', 'bad-1', 'complaint',"
            " '2024-04-18T05:00:00Z', 'soon', '=1+1', '2024-04-19T00:00:00Z')"
        )
        conn.execute(
            "INSERT INTO orders (platform, external_id, number, status, currency, created_at,"
            " imported_at, updated_at) VALUES ('test', 'bad-2', '#bad', 'paid', 'CNY',"
            " 'yesterday', '2024-04-19T00:00:00Z', '2024-04-19T00:00:00Z')"
        )
    first = shop.run("kpi", "daily", "--json", env=env_at(NOW))
    assert first.code == 0, first.stderr
    proc = shop.run("kpi", "daily", "--date", DAY, "--json", env=env_at(NOW))
    assert proc.code == 0, proc.stderr
    rows = {r["metric"]: r for r in proc.json()}
    assert rows["orders"]["value"] == EXPECTED["orders"][0]  # 'yesterday' is on no day
    # the conversation counts (it was opened on the day) but has no valid response time
    assert rows["frt.median_minutes"]["sample_size"] == EXPECTED["frt.median_minutes"][3]
    assert rows["complaint_rate"]["numerator"] == 3


def test_a_refund_without_a_refund_time_counts_on_the_day_the_order_was_placed(shop):
    import sqlite3

    with sqlite3.connect(shop.db_path) as conn:
        conn.execute(
            "INSERT INTO orders (platform, external_id, number, status, currency, total_minor,"
            " refunded_minor, created_at) VALUES ('test', 'nort', '#nort', 'partially_refunded',"
            " 'CNY', 9000, 1500, '2024-04-05T03:00:00Z')"
        )
    proc = shop.run("kpi", "daily", "--date", "2024-04-05", "--json", env=env_at(NOW))
    assert proc.code == 0, proc.stderr
    rows = {r["metric"]: r for r in proc.json()}
    assert (rows["refund.CNY"]["value"], rows["refund.CNY"]["sample_size"]) == (1500, 1)
    assert rows["refund_rate"]["value"] == 100.0
