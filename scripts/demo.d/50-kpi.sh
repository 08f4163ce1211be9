# Daily KPIs (sourced by scripts/demo.sh): compute the demo days, print them, write the report,
# judge yesterday against the thresholds. Definitions: docs/kpis.md.
kpi_db="$DEMO_ROOT/data/csops.db"
orders=$(python -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM orders").fetchone()[0])' "$kpi_db")
if [ "$orders" -eq 0 ]; then
  # A build without the import job: add synthetic history so the charts
  # have something to show. With the import step, the imported samples are used as they are.
  echo "   only $orders orders: adding synthetic KPI demo data (bench/kpi.py --seed)" >&2
  python bench/kpi.py --seed "$kpi_db" --small 3000 --per-day 30 --last-day 2024-04-19
fi
# First run: computes the last 90 days; prints yesterday (2024-04-19, shop time) with 7/30-day values.
csops kpi daily --table
# Run again: only the recent days (and days touched by late data) are recomputed.
csops kpi daily --json >/dev/null
kpi_report="$DEMO_ROOT/reports/kpi-2024-04-19.html"
csops kpi report --days 30 --out "$kpi_report" --json >/dev/null
echo "   KPI report (open in a browser, works offline): $kpi_report" >&2
# The sample shop is small: one day rarely has the sample size to be judged. The demo also
# watches the 7-day share of first responses within 5 minutes (a threshold on a .7d value).
cat >> "$CSOPS_CONFIG" <<'TOML'

# Added by the demo (scripts/demo.d/50-kpi.sh).
[kpi.thresholds."frt.within_5m_pct.7d"]
direction = "below"
warning = 60.0
critical = 40.0
min_sample = 10
TOML
# Thresholds → alerts in the outbox (kind alert), once per KPI, day and level; exit 4 = critical.
csops kpi check --table || [ $? -eq 4 ]
# A second check sends nothing new (the alerts are already queued/sent).
csops kpi check --json >/dev/null || [ $? -eq 4 ]
echo "   KPI alerts: $(python -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM outbox WHERE kind = '"'"'alert'"'"'").fetchone()[0])' "$kpi_db") in the outbox ($DEMO_ROOT/outbox/)" >&2
