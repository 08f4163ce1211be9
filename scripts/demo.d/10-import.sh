# Import orders in three platforms' real export formats (sourced by scripts/demo.sh).
# The 2026-dated samples show the edge cases; the April-2024 ones line up with the demo clock
# so follow-ups, surveys, returns and KPIs have shipped/delivered orders to work on.
for f in shopify_orders_export.csv shopify_orders_april2024.csv; do
  csops import orders --from shopify-csv "$SAMPLES/$f"
done
for f in taobao_orders_export.csv taobao_orders_april2024.csv; do
  csops import orders --from taobao-csv "$SAMPLES/$f"
done
for f in amazon_all_orders.tsv amazon_all_orders_april2024.tsv; do
  csops import orders --from amazon-tsv "$SAMPLES/$f"
done
# Idempotent: the same file again changes nothing (0 inserted, 0 updated).
csops import orders --from shopify-csv "$SAMPLES/shopify_orders_april2024.csv" --table
# A damaged copy: good rows land, bad rows go to the rejects folder, exit 3 (partial).
sed -e '3s/,paid,/,payé,/' -e '5s/2024-03-2/2024-13-2/' "$SAMPLES/shopify_orders_april2024.csv" \
  > "$DEMO_ROOT/damaged_shopify.csv"
csops import orders --from shopify-csv "$DEMO_ROOT/damaged_shopify.csv" --table || [ $? -eq 3 ]
# Helpdesk conversations, for the response-time KPIs.
csops import conversations --from csv "$SAMPLES/conversations.csv"
csops import conversations --from csv "$SAMPLES/conversations_april2024.csv"
csops import conversations --from zendesk-csv "$SAMPLES/zendesk_tickets_april2024.csv"
echo "   imported orders and conversations into $DEMO_ROOT/data/csops.db;" \
  "rejected rows in $DEMO_ROOT/rejects/" >&2
