#!/usr/bin/env bash
# The order API under the load generator: `rushhour serve` on PostgreSQL (the local
# stack's) and on the embedded SQLite, each driven by `generate --via` with the same
# simulation, in the same run, so the two can be compared as a ratio.
#
#   benches/orders.sh [ORDERS] [PROFILE]     (defaults: 2000 orders, release)
#
# Prints, per database: orders/s and requests/s sustained (one client, requests in the
# simulation's order: orders, pings, dispatch), and p50/p99 of POST /orders. PROFILE is
# `release` or `dev` (the test build; slower, but already built by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS="${1:-2000}"
PROFILE="${2:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet
  BIN="$CARGO_TARGET_DIR/release/rushhour"
else
  cargo build --quiet
  BIN="$CARGO_TARGET_DIR/debug/rushhour"
fi
eval "$(infra/local-stack.sh start postgres)"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

run() { # NAME DB_URL
  local name=$1 db=$2 port=18181
  "$BIN" serve --addr "127.0.0.1:$port" --db "$db" --to "file:$WORK/$name.jsonl" 2>"$WORK/$name.serve.log" &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  local summary
  summary=$("$BIN" generate --via "http://127.0.0.1:$port" --orders "$ORDERS" --seed 1 2>/dev/null)
  kill -TERM "$pid"; wait "$pid" || true
  python3 - "$name" "$summary" <<'PY'
import json, sys
name, s = sys.argv[1], json.loads(sys.argv[2])
print(f"| {name} | {s['accepted']} / {s['rejected']} | {s['orders_per_s']:.0f} | {s['requests_per_s']:.0f} "
      f"| {s['order_p50_ms']:.2f} | {s['order_p99_ms']:.2f} | {s['delivered']} | {s['errors']} |")
PY
}

PGDB="fresh_$(date +%s)"
psql "$RUSHHOUR_POSTGRES" -qc "CREATE DATABASE $PGDB" >/dev/null
echo "| database | orders accepted / refused | orders/s | requests/s | POST /orders p50 ms | p99 ms | delivered | errors |"
echo "|---|---|---|---|---|---|---|---|"
run postgres "${RUSHHOUR_POSTGRES%/*}/$PGDB"
run sqlite "sqlite:$WORK/services.db"
psql "$RUSHHOUR_POSTGRES" -qc "DROP DATABASE $PGDB" >/dev/null
