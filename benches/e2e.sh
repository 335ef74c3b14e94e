#!/usr/bin/env bash
# End-to-end benchmark: generate N events into a file, then time
# `rushhour process --until-end` on it and report events/s and peak memory.
#   benches/e2e.sh [ORDERS]   (default 36000 orders ≈ 2 million events)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"
orders="${1:-36000}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/rushhour"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" generate --to "file:$work/events.jsonl" --orders "$orders" --seed 1 2>"$work/gen.log"
events=$(wc -l <"$work/events.jsonl")
bytes=$(stat -c %s "$work/events.jsonl")
echo "input: $events events, $((bytes / 1000000)) MB ($(tail -1 "$work/gen.log"))"
/usr/bin/time -v "$bin" process --from "file:$work/events.jsonl" --lake "$work/lake" --until-end --quiet \
  >"$work/summary.json" 2>"$work/time.log"
secs=$(grep "Elapsed (wall clock)" "$work/time.log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
rss_kb=$(grep "Maximum resident set size" "$work/time.log" | awk '{print $NF}')
cpu=$(grep "Percent of CPU" "$work/time.log" | awk '{print $NF}')
echo "summary: $(cat "$work/summary.json")"
awk -v e="$events" -v s="$secs" -v r="$rss_kb" -v c="$cpu" \
  'BEGIN { printf "process --until-end: %.2f s, %.0f events/s, peak RSS %.0f MB, CPU %s\n", s, e / s, r / 1024, c }'
echo "lake: $(du -sh "$work/lake" | cut -f1)"
