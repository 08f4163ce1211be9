"""AT-30 across jobs: three years of data made by the real jobs, then `retention purge`.

The single-job test (test_retention_purge.py) seeds rows by SQL. Here every row comes from the
commands themselves, run at injected clocks spread over three years: `import orders`,
`followups send`, `surveys send`, `surveys import`, `returns process`, `kpi daily`. After the
purge, re-running every planner at every clock must queue nothing (the dedupe keys survived the
emptied bodies), and recomputing every KPI over the three years must give the same table to the
last digit (scores survived the cleared comments).
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.import_helpers import gen_orders, write_shopify
from tests.returns_helpers import write_batch
from tests.surveys_helpers import SIGNING_KEY

END = datetime(2024, 4, 20, 2, 0, tzinfo=timezone.utc)  # 10:00 shop time
CLUSTERS = 6  # one burst of orders every 200 days: 10 … 1,010 days before END
PER_CLUSTER = 15
SHOP_TZ = timezone(timedelta(hours=8))

SURVEYS = """
[surveys]
throttle_days = 90
token_expiry_days = 30

[[surveys.rules]]
name = "csat-after-shipping"
kind = "csat"
trigger = "shipped"
delay = "1d"
send_within = "14d"
"""


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cluster_start(c: int) -> datetime:
    return END - timedelta(days=10 + 200 * c)


def at(ws, when: datetime, *args: str):
    proc = ws.run(*args, env={"CSOPS_NOW": iso(when)})
    assert proc.code in (0, 3), (args, iso(when), proc.code, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    return proc


def kpi_table(ws) -> list[tuple]:
    rows = ws.query(
        "SELECT day, metric, value, numerator, denominator, sample_size FROM kpi_daily "
        "ORDER BY day, metric"
    )
    return [tuple(r.values()) for r in rows]


def build_history(ws, tmp: Path) -> list[datetime]:
    """Orders, follow-ups, surveys, answers and returns over three years; returns the clocks."""
    orders = gen_orders(CLUSTERS * PER_CLUSTER, seed=30)
    for i, o in enumerate(orders):
        c, j = divmod(i, PER_CLUSTER)
        o.created = cluster_start(c) + timedelta(minutes=20 * j)
        o.email = f"buyer{i}@example.com"  # one customer each: no survey throttle across orders
        if o.cancelled:
            o.cancelled = o.created + timedelta(hours=2)
        if o.fulfilled:
            o.fulfilled = o.created + timedelta(days=1)
    at(
        ws,
        END,
        "import",
        "orders",
        "--from",
        "shopify-csv",
        str(write_shopify(tmp / "o.csv", orders)),
    )

    clocks = []
    for c in reversed(range(CLUSTERS)):  # oldest first, as time went
        # 2 days 4 h after the burst (14:00 shop time, outside quiet hours): shipping notices
        # (expire 2 d) and cancellation apologies are due; surveys (1 d after shipping) too.
        clock = cluster_start(c) + timedelta(days=2, hours=4)
        clocks.append(clock)
        at(ws, clock, "followups", "send")
        at(ws, clock, "surveys", "send")
        lines = []
        for i, o in enumerate(orders[c * PER_CLUSTER : (c + 1) * PER_CLUSTER]):
            if o.fulfilled and i % 3 == 0:
                requested = iso(clock + timedelta(days=3))
                lines.append(
                    f"C{c}R{i},{o.number},{o.items[0].sku},1,changed_mind,,{requested},refund,"
                )
        write_batch(tmp / f"returns-{c}.csv", lines)
        at(ws, clock + timedelta(days=4), "returns", "process", str(tmp / f"returns-{c}.csv"))

    # Answers to every survey, a day after it was sent, with a comment to purge later.
    surveys = ws.query(
        "SELECT s.id, s.kind, s.sent_at, o.number FROM surveys s JOIN orders o ON o.id = "
        "s.order_id WHERE s.sent_at IS NOT NULL ORDER BY s.id"
    )
    answers = tmp / "answers.csv"
    with answers.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["order", "score", "comment", "time", "kind"])
        for n, s in enumerate(surveys):
            sent = datetime.fromisoformat(s["sent_at"].replace("Z", "+00:00"))
            when = (sent + timedelta(hours=20)).astimezone(SHOP_TZ).strftime("%Y-%m-%d %H:%M")
            w.writerow([s["number"], 1 + n % 5, f"COMMENT-{s['id']}", when, s["kind"]])
    imported = at(ws, END, "surveys", "import", str(answers))
    assert imported.code == 0, imported.stderr
    return clocks


def test_after_the_purge_nothing_is_planned_again_and_every_kpi_is_unchanged_to_the_digit(
    workspace, tmp_path
):
    ws = workspace
    ws.env["CSOPS_SIGNING_KEYS"] = SIGNING_KEY
    ws.replace_config('cap_period = "2d"', 'cap_period = "0d"')
    ws.set_config(SURVEYS)
    clocks = build_history(ws, tmp_path)

    first_day = (cluster_start(CLUSTERS - 1) - timedelta(days=1)).date().isoformat()
    last_day = (END - timedelta(days=1)).date().isoformat()
    at(ws, END, "kpi", "daily", "--from", first_day, "--to", last_day)
    kpis_before = kpi_table(ws)
    outbox_before = ws.query("SELECT id, dedupe_key, state, sent_at FROM outbox ORDER BY id")
    surveys_before = ws.query("SELECT id, score, responded_at FROM surveys ORDER BY id")
    emls_before = sorted(p.name for p in (ws.root / "outbox").rglob("*.eml"))

    # The history is real: follow-ups sent in every cluster, answers and returns in the oldest.
    old_cut = iso(END - timedelta(days=730))
    kinds = {r["kind"] for r in ws.query("SELECT DISTINCT kind FROM outbox")}
    assert {"followup", "survey", "return_notice"} <= kinds, kinds
    old_sent = ws.query(
        "SELECT COUNT(*) n FROM outbox WHERE state = 'sent' AND sent_at < ?", (old_cut,)
    )[0]["n"]
    old_comments = ws.query(
        "SELECT COUNT(*) n FROM surveys WHERE comment IS NOT NULL AND responded_at < ?",
        (old_cut,),
    )[0]["n"]
    assert old_sent > 10 and old_comments > 5, (old_sent, old_comments)
    metrics = {m for _d, m, v, *_ in kpis_before if v is not None}
    assert {"orders", "csat.avg", "return_rate", "followups.sent"} <= metrics, sorted(metrics)

    purge = at(ws, END, "retention", "purge", "--json")
    affected = {r["what"]: r["affected"] for r in purge.json()}
    assert affected["outbox bodies"] >= old_sent and affected["survey comments"] == old_comments
    assert (
        ws.query(
            "SELECT COUNT(*) n FROM surveys WHERE comment IS NOT NULL AND responded_at < ?",
            (old_cut,),
        )[0]["n"]
        == 0
    )

    # Re-planning every old rule at every old clock queues 0: the dedupe keys are kept.
    for clock in clocks:
        at(ws, clock, "followups", "send")
        at(ws, clock, "surveys", "send")
    after = ws.query("SELECT id, dedupe_key, state, sent_at FROM outbox ORDER BY id")
    assert [(r["id"], r["dedupe_key"]) for r in after] == [
        (r["id"], r["dedupe_key"]) for r in outbox_before
    ]
    assert [r for r in after if r["state"] == "sent"] == [
        r for r in outbox_before if r["state"] == "sent"
    ]
    assert sorted(p.name for p in (ws.root / "outbox").rglob("*.eml")) == emls_before
    assert ws.query("SELECT id, score, responded_at FROM surveys ORDER BY id") == surveys_before

    # Every KPI over the three years, recomputed from the purged data, is unchanged.
    at(ws, END, "kpi", "daily", "--from", first_day, "--to", last_day)
    kpis_after = kpi_table(ws)
    changed = [(b, a) for b, a in zip(kpis_before, kpis_after, strict=True) if a != b]
    assert not changed, changed[:5]
    assert len(kpis_after) == len(kpis_before) > 1000
