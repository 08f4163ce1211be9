# Returns: decide two batches against the [returns] policy (sourced by scripts/demo.sh).
# The April-2024 batches name orders imported by step 10, so the 30-day window, quantities
# across lines, final states and the per-customer limit all have something to decide.
returns_out="$DEMO_ROOT/exports/returns-decisions-april2024.csv"
# Generic CSV: one bad line (quantity "two") is reported with its line number → exit 3.
csops returns process "$SAMPLES/returns_batch_april2024.csv" --out "$returns_out" --send \
  || [ $? -eq 3 ]
# The same file again decides nothing and says so (exit 0).
csops returns process "$SAMPLES/returns_batch_april2024.csv" --csv > /dev/null
# Taobao/Tmall 退款报表 (GBK, Chinese headers): no SKU or quantity, closed refunds skipped.
csops returns process "$SAMPLES/taobao_refunds_april2024.csv" --from taobao-refunds --send \
  --table
# A dry run of the 2026 sample batch as of its own date: decisions shown, nothing written.
CSOPS_NOW=2026-05-02T00:00:00Z csops returns process "$SAMPLES/returns_batch.csv" --dry-run \
  --table
csops outbox list --table | grep -i return_notice | head -5 || true
echo "   return decisions: $returns_out" >&2
echo "   refund exports:   $(ls "$DEMO_ROOT"/exports/refunds-batch*.csv | tr '\n' ' ')" >&2
n_notices=$(csops outbox list --json | grep -c '"return_notice"' || true)
echo "   return notices:   $n_notices in the outbox; .eml files in $DEMO_ROOT/outbox/" >&2
