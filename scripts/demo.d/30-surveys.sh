# Surveys (sourced by scripts/demo.sh): rules fitted to the demo clock, mail into demo/outbox,
# answers through the survey server and a form tool's CSV, then the resulting CSAT and NPS.
cat >> "$CSOPS_CONFIG" <<'TOML'

# --- added by scripts/demo.d/30-surveys.sh: the April-2024 Shopify samples have shipping but
# --- no delivery dates, so the demo asks 5 days after shipping. Alerts land in demo/outbox.
[surveys]
alert_channel = "outbox"
alert_recipient = "care-team@demo-shop.example"

[[surveys.rules]]
name = "csat-after-shipping"
kind = "csat"
trigger = "shipped"
delay = "5d"
send_within = "14d"

[[surveys.rules]]
name = "nps-after-payment"
kind = "nps"
trigger = "paid"
delay = "10d"
send_within = "10d"
TOML

csops surveys send --dry-run --table
csops surveys send --table
# Re-running plans nothing twice (dedupe) and the 90-day throttle holds.
csops surveys send --table

# Answer two surveys the way a customer does: GET the mailed link (shows the form, records
# nothing), then POST the form. The link is read from the .eml in the outbox folder.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
csops --config "$CSOPS_CONFIG" surveys serve --port "$port" 2>"$DEMO_ROOT/survey-server.log" &
server_pid=$!
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
survey_link() {  # $1: order number → the survey page URL in that order's mail
  python3 - "$DEMO_ROOT/outbox" "$1" "$port" <<'PY'
import email, pathlib, re, sys
from email import policy
folder, number, port = sys.argv[1], sys.argv[2], sys.argv[3]
for path in sorted(pathlib.Path(folder).glob("*.eml")):
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    if number not in str(msg["Subject"]):
        continue
    found = re.search(r"https?://\S+/s/[\w.-]+", msg.get_body(("plain",)).get_content())
    if found:  # a survey mail (not another mail about the same order)
        print(re.sub(r"^https?://[^/]+", f"http://127.0.0.1:{port}", found.group(0)))
        break
PY
}
answer() {  # $1 order number, $2 score, $3 comment
  local link
  link=$(survey_link "$1")
  if [ -z "$link" ]; then
    echo "   (no survey mail for $1 in $DEMO_ROOT/outbox yet: held by the frequency cap?)" >&2
    return 0
  fi
  curl -fsS -o /dev/null -w "   GET  survey page for $1 → %{http_code} (nothing recorded)\n" \
    "$link?score=$2" >&2
  curl -fsS -o /dev/null -w "   POST answer $2 for $1 → %{http_code}\n" \
    --data-urlencode "score=$2" --data-urlencode "comment=$3" "$link" >&2
}
answer "#2016" 5 "很快，谢谢"
answer "#2017" 2 "包装破损"   # a detractor: an alert goes to care-team (demo/outbox)
sleep 1  # the server delivers the alert right after the answer
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true

# Answers gathered by a form tool: good rows land, two bad rows are rejected (exit 3).
csops surveys import "$SAMPLES/survey_answers.csv" --table || [ $? -eq 3 ]
# Importing the same file again changes nothing.
csops surveys import "$SAMPLES/survey_answers.csv" --table 2>/dev/null || [ $? -eq 3 ]

csops surveys summary --table
echo "   survey mail and detractor alerts: $DEMO_ROOT/outbox/*.eml;" \
  "answers: table surveys in $DEMO_ROOT/data/csops.db; server log: $DEMO_ROOT/survey-server.log" >&2
