# Follow-ups: plan what is due on the demo clock and deliver it to the outbox folder (.eml).
# Demo orders dated relative to the clock make sure something is due even with no import.
python scripts/demo.d/followups_seed.py
csops templates check
csops followups send --dry-run --table
csops followups send --table || [ $? -eq 3 ]
csops followups send --table || [ $? -eq 3 ]   # a re-run plans and sends nothing new
csops outbox list --table
n_eml=$(find "$DEMO_ROOT/outbox" -maxdepth 1 -name '*.eml' | wc -l)
echo "follow-ups: $n_eml .eml files in $DEMO_ROOT/outbox/ (open any with a mail client)" >&2
