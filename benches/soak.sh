#!/usr/bin/env bash
# Soak: does `process` hold its memory steady over a long run at a steady rate?
#
#   benches/soak.sh [RATE] [DURATION] [EVERY]    default: 20000 events/s for 30m, a sample every 10s
#
# Disk: the log takes about 210 bytes an event (20000/s for 30 min ≈ 7.5 GB) and the
# lake about a third of that, both in a temporary directory removed at the end.
#
# `generate --to log:… --rate RATE --duration DURATION` feeds a log that `process`
# follows (no --until-end) into a local lake, checkpoints at the default interval.
# Every EVERY seconds it prints the process's resident memory (VmRSS), its CPU
# seconds, the events written so far and the lake's size; at the end, the highest RSS
# of each half of the run and their ratio (≈ 1 when nothing grows: the
# de-duplication horizon and the window state are bounded by event time, and event
# time advances with the wall clock here). Not a test: it takes DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-20000}"
duration="${2:-30m}"
every="${3:-10}"
# shellcheck source=benches/live.sh
. benches/live.sh

start=$(date +%s)
"$bin" generate --to "log:$work/log" --rate "$rate" --duration "$duration" \
  --start "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >/dev/null 2>"$work/gen.log" &
gen=$!
sleep 1
"$bin" process --from "log:$work/log" --lake "$work/lake" >/dev/null 2>"$work/proc.log" &
proc=$!
ticks=$(getconf CLK_TCK)

printf "%8s %10s %9s %12s %10s\n" "elapsed" "RSS MB" "CPU s" "log MB" "lake MB"
: >"$work/rss"
while kill -0 "$gen" 2>/dev/null; do
  sleep "$every"
  kill -0 "$proc" 2>/dev/null || { cat "$work/proc.log" >&2; exit 1; }
  rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$proc/status")
  cpu=$(awk -v t="$ticks" '{ printf "%.1f", ($14 + $15) / t }' "/proc/$proc/stat")
  now=$(($(date +%s) - start))
  echo "$now $rss_kb" >>"$work/rss"
  printf "%7ss %10.0f %9s %12.0f %10.0f\n" "$now" "$((rss_kb / 1024))" "$cpu" \
    "$(du -sm "$work/log" | cut -f1)" "$(du -sm "$work/lake" 2>/dev/null | cut -f1 || echo 0)"
done
wait "$gen" || { cat "$work/gen.log" >&2; exit 1; }
kill -TERM "$proc"
wait "$proc" || true
echo "process: $(tail -1 "$work/proc.log")"
awk 'NR == FNR { n++; next }
     { i++; if (i <= n / 2) { if ($2 > a) a = $2 } else { if ($2 > b) b = $2 } }
     END { printf "peak RSS: first half %.0f MB, second half %.0f MB (%.2f×)\n", a / 1024, b / 1024, b / a }' \
  "$work/rss" "$work/rss"
