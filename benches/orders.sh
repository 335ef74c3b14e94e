#!/usr/bin/env bash
# The order API under the load generator: `rushhour serve` on PostgreSQL (the local
# stack's) and on the embedded SQLite, each driven by `generate --via` with the same
# simulation from 1, 4 and 16 concurrent clients, in the same run, so that the figures
# can be compared as ratios.
#
#   benches/orders.sh [ORDERS] [PROFILE] [CLIENTS...]
#       (defaults: 2000 orders, release, clients 1 4 16)
#
# Prints, per database and client count: orders/s and requests/s sustained (requests in
# the simulation's order within each order: placement, pings, dispatch, delivery), and
# p50/p99 of POST /orders. Every run starts from a fresh database (the same opening
# stock). PROFILE is `release` or `dev` (the test build; slower, but already built).
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS="${1:-2000}"
PROFILE="${2:-release}"
shift $(( $# < 2 ? $# : 2 ))
if [ $# -gt 0 ]; then CLIENTS=("$@"); else CLIENTS=(1 4 16); fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet -p rushhour
  BIN="$CARGO_TARGET_DIR/release/rushhour"
else
  cargo build --quiet -p rushhour
  BIN="$CARGO_TARGET_DIR/debug/rushhour"
fi
eval "$(infra/local-stack.sh start postgres)"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

run() { # NAME DB_URL CLIENTS
  local name=$1 db=$2 clients=$3 port=18181
  "$BIN" serve --addr "127.0.0.1:$port" --db "$db" --to "file:$WORK/$name.jsonl" 2>"$WORK/$name.serve.log" &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  local summary
  summary=$("$BIN" generate --via "http://127.0.0.1:$port" --orders "$ORDERS" --seed 1 \
    --clients "$clients" 2>/dev/null)
  kill -TERM "$pid"; wait "$pid" || true
  python3 - "$name" "$summary" <<'PY'
import json, sys
name, s = sys.argv[1], json.loads(sys.argv[2])
print(f"| {name} | {s['clients']} | {s['accepted']} / {s['rejected']} | {s['orders_per_s']:.0f} "
      f"| {s['requests_per_s']:.0f} | {s['order_p50_ms']:.2f} | {s['order_p99_ms']:.2f} "
      f"| {s['delivered']} | {s['errors']} |")
PY
}

echo "| database | clients | orders accepted / refused | orders/s | requests/s | POST /orders p50 ms | p99 ms | delivered | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for clients in "${CLIENTS[@]}"; do
  PGDB="fresh_$(date +%s%N)"
  psql "$RUSHHOUR_POSTGRES" -qc "CREATE DATABASE $PGDB" >/dev/null
  run postgres "${RUSHHOUR_POSTGRES%/*}/$PGDB" "$clients"
  psql "$RUSHHOUR_POSTGRES" -qc "DROP DATABASE $PGDB" >/dev/null
  rm -f "$WORK"/services.db*
  run sqlite "sqlite:$WORK/services.db" "$clients"
done
