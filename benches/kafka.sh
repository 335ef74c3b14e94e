#!/usr/bin/env bash
# generate → Kafka → process, against the local stack's broker (tansu, SQLite engine),
# with the same events through a file measured in the same run as the peer:
#
#   benches/kafka.sh [ORDERS] [PARTITIONS] [PROFILE]
#
# ORDERS (default 6000 ≈ 300k events), PARTITIONS (default 4), PROFILE `dev` (default:
# the binary the tests build) or `release`. Prints events/s for each step and the
# ratios Kafka / file. Starts the broker if it is not running (infra/local-stack.sh)
# and leaves it running. The broker is the bottleneck here, not rushhour: tansu's
# SQLite engine takes about 60k messages/s on two cores (../shared/LOCAL_STACK.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"
orders="${1:-6000}"
partitions="${2:-4}"
profile="${3:-dev}"
if [ "$profile" = release ]; then
  cargo build --release --quiet
  bin="$CARGO_TARGET_DIR/release/rushhour"
else
  cargo build --quiet
  bin="$CARGO_TARGET_DIR/debug/rushhour"
fi
eval "$(infra/local-stack.sh start kafka)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
topic="bench-$$-$(date +%s)"

seconds() { # COMMAND… → wall seconds on stdout, the command's stdout in $work/out
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$work/out" 2>>"$work/log"
  t1=$(date +%s.%N)
  awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }'
}

gen_file=$(seconds "$bin" generate --to "file:$work/events.jsonl" --orders "$orders" --seed 1)
events=$(wc -l <"$work/events.jsonl")
gen_kafka=$(seconds "$bin" generate --to "kafka://$RUSHHOUR_KAFKA/$topic" --partitions "$partitions" \
  --orders "$orders" --seed 1)
proc_file=$(seconds "$bin" process --from "file:$work/events.jsonl" --lake "$work/lake-file" --until-end --quiet)
proc_kafka=$(seconds "$bin" process --from "kafka://$RUSHHOUR_KAFKA/$topic" --lake "$work/lake-kafka" \
  --until-end --quiet)
echo "kafka summary: $(tail -1 "$work/out")"
awk -v e="$events" -v gf="$gen_file" -v gk="$gen_kafka" -v pf="$proc_file" -v pk="$proc_kafka" \
  -v p="$partitions" -v prof="$profile" 'BEGIN {
    printf "%d events, %d partitions, %s build\n", e, p, prof
    printf "generate → file:   %6.2f s  %8.0f events/s\n", gf, e / gf
    printf "generate → kafka:  %6.2f s  %8.0f events/s  (%.2f× the file)\n", gk, e / gk, gf / gk
    printf "file → process:    %6.2f s  %8.0f events/s\n", pf, e / pf
    printf "kafka → process:   %6.2f s  %8.0f events/s  (%.2f× the file; includes joining the group)\n", pk, e / pk, pf / pk
  }'
