# 60 — run unattended: the [schedule] timetable, the same timetable for cron, retention.
echo "-- csops schedule list (next run of each job, shop time and UTC)" >&2
csops schedule list --table
echo "-- csops schedule crontab (ready for: csops schedule crontab | crontab -)" >&2
csops schedule crontab
echo "-- csops retention purge --dry-run (what [retention] would remove today)" >&2
csops retention purge --dry-run --table
echo "   systemd unit: $DEMO_ROOT/config/csops.service · cron example: $DEMO_ROOT/config/crontab.example" >&2
echo "   run it: csops schedule run (Ctrl-C stops it cleanly) · health: csops schedule status" >&2
