"""Late data is picked up by recomputing the affected days; days follow the shop's DST rules."""

from __future__ import annotations

import sqlite3

import pytest
from kpi_helpers import DAY, env_at, insert_fixture


def _value(ws, day: str, metric: str):
    rows = ws.query("SELECT * FROM kpi_daily WHERE day = ? AND metric = ?", (day, metric))
    return rows[0] if rows else None


@pytest.fixture
def shop(workspace):
    workspace.replace_config("recompute_days = 7", "recompute_days = 3")
    insert_fixture(workspace.db_path)
    return workspace


def test_a_refund_imported_weeks_later_recomputes_the_days_it_belongs_to(shop):
    first = shop.run("kpi", "daily", "--json", env=env_at("2024-05-10T02:00:00Z"))
    assert first.code == 0, first.stderr
    assert "first run" in first.stderr
    before = _value(shop, "2024-04-19", "refund.CNY")
    assert before["value"] == 0 and before["sample_size"] == 0
    assert _value(shop, DAY, "refund_rate")["numerator"] == 1
    untouched_at = _value(shop, "2024-04-12", "orders")["computed_at"]

    # The platform refunded o1 in full on 04-19; the import brings it in on 05-10.
    with sqlite3.connect(shop.db_path) as conn:
        conn.execute(
            "UPDATE orders SET refunded_minor = 10000, status = 'refunded',"
            " refunded_at = '2024-04-19T04:00:00Z', updated_at = '2024-05-10T05:00:00Z'"
            " WHERE external_id = 'o1'"
        )
    second = shop.run("kpi", "daily", "--json", env=env_at("2024-05-11T02:00:00Z"))
    assert second.code == 0, second.stderr
    assert "touched by data changed" in second.stderr

    after = _value(shop, "2024-04-19", "refund.CNY")
    assert (after["value"], after["sample_size"]) == (10000, 1)
    assert _value(shop, "2024-04-25", "refund.CNY.7d")["value"] == 10000  # trailing windows too
    rate = _value(shop, DAY, "refund_rate")
    assert (rate["numerator"], rate["denominator"], rate["value"]) == (2, 5, 40.0)
    # Days the late row cannot affect are left alone: cheap recomputation.
    assert _value(shop, "2024-04-12", "orders")["computed_at"] == untouched_at
    assert _value(shop, DAY, "refund_rate")["computed_at"] == "2024-05-11T02:00:00Z"


def test_a_late_survey_answer_moves_the_response_rate_of_the_day_it_was_sent(shop):
    shop.run("kpi", "daily", "--json", env=env_at("2024-05-10T02:00:00Z"))
    assert _value(shop, DAY, "survey_response_rate")["numerator"] == 3
    with sqlite3.connect(shop.db_path) as conn:
        conn.execute(
            "UPDATE surveys SET score = 9, responded_at = '2024-05-01T00:00:00Z',"
            " updated_at = '2024-05-10T09:00:00Z' WHERE kind = 'nps' AND score IS NULL"
        )
    shop.run("kpi", "daily", "--json", env=env_at("2024-05-11T02:00:00Z"))
    rate = _value(shop, DAY, "survey_response_rate")
    assert (rate["numerator"], rate["denominator"]) == (4, 5)
    assert _value(shop, "2024-05-01", "nps.promoters")["value"] == 1


def test_without_changes_only_the_recent_days_are_recomputed(shop):
    shop.run("kpi", "daily", "--json", env=env_at("2024-05-10T02:00:00Z"))
    proc = shop.run("kpi", "daily", "--json", env=env_at("2024-05-12T02:00:00Z"))
    assert proc.code == 0
    assert "the last 3 and 0 touched" in proc.stderr
    computed = shop.query(
        "SELECT DISTINCT day FROM kpi_daily WHERE computed_at = '2024-05-12T02:00:00Z' ORDER BY 1"
    )
    assert [r["day"] for r in computed] == ["2024-05-10", "2024-05-11", "2024-05-12"]


def _order(conn, key: str, created: str) -> None:
    conn.execute(
        "INSERT INTO orders (platform, external_id, number, status, currency, total_minor,"
        " created_at) VALUES ('test', ?, ?, 'paid', 'EUR', 1000, ?)",
        (key, key, created),
    )


@pytest.mark.parametrize(
    "day, inside, outside, hours",
    [
        # Spring forward: 2024-03-31 in Berlin is 23 hours, [03-30T23:00Z, 03-31T22:00Z).
        ("2024-03-31", ["2024-03-30T23:00:00Z", "2024-03-31T21:59:59Z"],
         ["2024-03-30T22:59:59Z", "2024-03-31T22:00:00Z", "2024-03-31T23:00:00Z"], 23),
        # Fall back: 2024-10-27 is 25 hours, [10-26T22:00Z, 10-27T23:00Z).
        ("2024-10-27", ["2024-10-26T22:00:00Z", "2024-10-27T22:30:00Z", "2024-10-27T22:59:59Z"],
         ["2024-10-26T21:59:59Z", "2024-10-27T23:00:00Z"], 25),
    ],
)  # fmt: skip
def test_a_dst_day_in_the_shop_timezone_is_23_or_25_hours_long(
    workspace, day, inside, outside, hours
):
    workspace.replace_config('timezone = "Asia/Shanghai"', 'timezone = "Europe/Berlin"')
    with sqlite3.connect(workspace.db_path) as conn:
        for n, ts in enumerate(inside + outside):
            _order(conn, f"x{n}", ts)
    proc = workspace.run(
        "kpi", "daily", "--date", day, "--json", env=env_at("2024-12-01T00:00:00Z")
    )
    assert proc.code == 0, proc.stderr
    assert _value(workspace, day, "orders")["value"] == len(inside)
    assert _value(workspace, day, "gmv.EUR")["value"] == 1000 * len(inside)
    from datetime import date
    from zoneinfo import ZoneInfo

    from csops.timeutil import day_bounds

    start, end = day_bounds(date.fromisoformat(day), ZoneInfo("Europe/Berlin"))
    assert (end - start).total_seconds() == hours * 3600
