#!/usr/bin/env bash
# `make demo`: a fresh workspace under demo/, then every job end to end on the sample data.
# Each job adds a numbered step in scripts/demo.d/; they run in order and must all succeed.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEMO_ROOT="$PWD/demo"
export SAMPLES="$PWD/scripts/samples"
export CSOPS_CONFIG="$DEMO_ROOT/config/csops.toml"
export CSOPS_SIGNING_KEYS="${CSOPS_SIGNING_KEYS:-demo-only-link-signing-key}"
export CSOPS_TESTING=1
export CSOPS_NOW="${CSOPS_NOW:-2024-04-20T02:00:00Z}"
rm -rf "$DEMO_ROOT"
echo "== csops demo: workspace $DEMO_ROOT (clock fixed at $CSOPS_NOW)" >&2
csops init "$DEMO_ROOT"
csops doctor --table
for step in scripts/demo.d/*.sh; do
  echo "== $(basename "$step")" >&2
  # shellcheck source=/dev/null
  source "$step"
done
echo >&2
echo "== done. Look at:" >&2
echo "   database   $DEMO_ROOT/data/csops.db   (sqlite3 it, or: csops runs)" >&2
for d in outbox rejects reports exports; do
  n=$(find "$DEMO_ROOT/$d" -type f 2>/dev/null | wc -l)
  echo "   $d$(printf '%*s' $((10 - ${#d})) '')$DEMO_ROOT/$d/   ($n files)" >&2
done
