"""The written definitions (docs/kpis.md), the registry and the shipped config agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from csops.config import load_config
from csops.kpi.metrics import METRICS, is_known_metric, median, nps_score, p90, ratio
from csops.kpi.settings import DEFAULT_THRESHOLDS, KpiSettings

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "kpis.md").read_text(encoding="utf-8")


def test_every_kpi_in_the_registry_is_defined_in_the_doc_and_nothing_else_is():
    documented = re.findall(r"^### `([^`]+)`$", DOC, flags=re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == {m.name for m in METRICS}


def test_the_doc_names_the_day_timestamp_of_every_kpi():
    sections = re.split(r"^### ", DOC, flags=re.M)[1:]
    for section in sections:
        name = section.split("`")[1]
        if name.startswith("nps.") or name == "frt.p90_minutes":
            continue  # defined by reference to the KPI above
        assert "Day:" in section, name


def test_nps_and_csat_cite_their_public_sources():
    assert "Reichheld" in DOC and "Bain" in DOC
    assert "ACSI" in DOC or "American Customer Satisfaction Index" in DOC


def test_the_shipped_config_carries_exactly_the_default_thresholds():
    config = load_config(REPO / "config" / "csops.toml")
    assert config.section("kpi").thresholds == DEFAULT_THRESHOLDS
    assert config.section("kpi") == KpiSettings()


def test_the_doc_table_of_shipped_thresholds_matches_the_defaults():
    rows = re.findall(r"^\| ([a-z_.0-9]+) \| (below|above) \| (.+?) \| (.+?) \| (.+?) \| (\d+) \|$",
                      DOC, flags=re.M)  # fmt: skip
    table = {r[0]: r[1:] for r in rows}
    assert set(table) == set(DEFAULT_THRESHOLDS)
    for name, (direction, notice, warning, critical, min_sample) in table.items():
        t = DEFAULT_THRESHOLDS[name]
        assert direction == t.direction
        got = [float(x.replace("−", "-")) for x in (notice, warning, critical)]
        assert got == [t.notice, t.warning, t.critical], name
        assert int(min_sample) == (t.min_sample if t.min_sample is not None else 5)


@pytest.mark.parametrize(
    "name, known",
    [
        ("csat.avg", True),
        ("csat.avg.7d", True),
        ("gmv.CNY", True),
        ("gmv.CNY.30d", True),
        ("gmv.cny", False),
        ("repurchase_rate", True),
        ("repurchase_rate.7d", False),
        ("csat", False),
        ("nps.promoters.7d", True),
    ],
)
def test_metric_names_are_recognised_with_currency_and_trailing_suffixes(name, known):
    assert is_known_metric(name) is known


def test_an_unknown_kpi_in_thresholds_is_refused():
    from csops.kpi.settings import Threshold

    with pytest.raises(ValueError, match="unknown KPI"):
        KpiSettings(thresholds={"csat.average": Threshold("below", warning=4)})


@pytest.mark.parametrize(
    "values, mid, q90",
    [
        ([], None, None),
        ([7], 7, 7),
        ([3, 1], 2, 3),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 5.5, 9),
        ([10, 1, 5], 5, 10),
        (list(range(1, 21)), 10.5, 18),
    ],
)
def test_median_and_nearest_rank_p90(values, mid, q90):
    assert median(values) == mid
    assert p90(values) == q90


@pytest.mark.parametrize(
    "p, m, d, expected",
    [(0, 0, 0, None), (1, 0, 0, 100.0), (0, 0, 3, -100.0), (3, 1, 2, 100 / 6), (2, 6, 2, 0.0)],
)
def test_nps_is_percent_promoters_minus_percent_detractors(p, m, d, expected):
    assert nps_score(p, m, d) == expected


def test_a_rate_with_no_denominator_has_no_value():
    assert ratio(0, 0).value is None
    assert ratio(1, 4).value == 25.0 and ratio(1, 4).sample_size == 4


def test_every_kpi_query_uses_an_index_on_its_day_timestamp(tmp_path):
    """The plan of each metric's SQL searches (not scans) its main table: cost ∝ the day."""
    from csops import db

    conn = db.connect(tmp_path / "plan.db")
    params = {"start": "a", "end": "b", "start90": "a", "kinds": "[]"}
    for m in METRICS:
        plan = " | ".join(r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + m.sql, params))
        assert "SEARCH" in plan, (m.name, plan)
        for table in ("orders", "surveys", "outbox", "conversations", "return_lines"):
            assert f"SCAN {table}" not in plan, (m.name, plan)
        # every search is a time range (or a lookup by order id), never e.g. "cancelled_at=?"
        for step in plan.split(" | "):
            if step.startswith("SEARCH"):
                assert ">? AND " in step or "order_id=?" in step, (m.name, step)
    conn.close()


def test_finding_late_data_searches_indexes_instead_of_scanning_history(tmp_path):
    from csops import db
    from csops.kpi.daily import _CHANGES, changed_sql

    conn = db.connect(tmp_path / "plan.db")
    for table, changed, columns, _reach in _CHANGES:
        for column in columns:
            sql = changed_sql(table, changed, column)
            plan = [r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, {"since": "x"})]
            assert not any(step.startswith("SCAN") for step in plan), (table, column, plan)
    conn.close()
