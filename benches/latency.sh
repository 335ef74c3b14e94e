#!/usr/bin/env bash
# Latency: how long after an event is appended is its window readable in the lake?
#
#   benches/latency.sh [RATE] [DURATION] [LATENESS,…] [CHECKPOINT_INTERVAL,…]
#   default:            200000  60s       10s,5m       1s,5s
#
# For every pair of --lateness and --checkpoint-interval: `generate --rate RATE
# --duration DURATION` appends to a fresh log: that `process` follows into a fresh
# local lake. Both trace their progress (RUST_LOG=rushhour::trace=debug):
#   - the generator, every flush (at most 100 ms apart): the newest event time now
#     readable in the log, and the wall clock;
#   - the processor, every epoch it publishes: the effective watermark, and the wall
#     clock. Every window ending at or before that watermark is in the lake then.
# For each window end E (a minute boundary of event time, the ends of every curated
# table's windows) the latency is the wall time from the flush that made the last
# event before E readable to the first publication with watermark ≥ E. The first 10 s
# of each run (start-up) are left out. Prints p50, p99 and max over those windows, the
# p50 of the first and the second half of them (a second half slower than the first:
# the processor falls behind), and the size of the last checkpoint's state and the mean
# time to write one (RUST_LOG=rushhour_processor::runtime=debug).
#
# The generator's city (default flags) makes about 120–170 events per second of event
# time, so at RATE events/s of wall clock event time runs S = RATE/density times faster
# than the wall clock (S is measured and printed): a lateness L costs L/S of wall
# time, also printed. Not a test: it takes DURATION per pair and about
# RATE × DURATION × 210 bytes of disk, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-200000}"
duration="${2:-60s}"
latenesses="${3:-10s,5m}"
intervals="${4:-1s,5s}"
# shellcheck source=benches/live.sh
. benches/live.sh

cat >"$work/latency.py" <<'EOF'
"""Joins the generator's flush trace with the processor's publish trace."""
import re
import sys
from datetime import datetime

MINUTE = 60_000
WARM_UP_S = 10.0


def trace(path, field):
    """(wall seconds, value) of every trace line carrying `field`."""
    pat = re.compile(r"^(\S+)\s.*\b" + field + r"=(-?\d+)")
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        m = pat.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if m:
            wall = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            out.append((wall, int(m.group(2))))
    return out


def pct(sorted_values, q):
    """Nearest-rank percentile."""
    i = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


flushed = trace(sys.argv[1], "event_time_ms")
published = trace(sys.argv[2], "watermark_ms")
lateness_ms = int(sys.argv[3])
if len(flushed) < 2 or not published:
    sys.exit("latency: the traces are empty (did both processes run?)")
t0 = flushed[0][0]
speed = (flushed[-1][1] - flushed[0][1]) / 1000.0 / (flushed[-1][0] - t0)
lat = []
fi = pi = 0
first_e = (flushed[0][1] // MINUTE + 1) * MINUTE
last_e = flushed[-1][1] // MINUTE * MINUTE
for e in range(first_e, last_e + 1, MINUTE):
    # The append: the first flush whose newest event time reaches E (events come in
    # event-time order, so every event before E was readable from then on).
    while fi < len(flushed) and flushed[fi][1] < e:
        fi += 1
    while pi < len(published) and published[pi][1] < e:
        pi += 1
    if fi == len(flushed) or pi == len(published):
        break
    if flushed[fi][0] - t0 < WARM_UP_S:
        continue
    lat.append(published[pi][0] - flushed[fi][0])
if not lat:
    sys.exit("latency: no window closed after the warm-up (run longer)")
half = len(lat) // 2
early, late = sorted(lat[:half]) or [0.0], sorted(lat[half:])
lat.sort()
# The checkpoints behind the publications: their size and time say where it goes.
ckpt = trace(sys.argv[2], "bytes")
ckpt_ms = [float(m) for m in re.findall(r"\bms=([0-9.]+)", re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[2]).read()))]
print(
    f"{len(lat):8d} {speed:9.0f}× {lateness_ms / 1000 / speed:11.4f} "
    f"{pct(lat, 0.5):8.3f} {pct(lat, 0.99):8.3f} {lat[-1]:8.3f} "
    f"{pct(early, 0.5):8.3f} {pct(late, 0.5):8.3f} "
    f"{ckpt[-1][1] / 1e6 if ckpt else 0:7.1f} {sum(ckpt_ms) / len(ckpt_ms) if ckpt_ms else 0:7.0f}"
)
EOF

to_ms() {
  case "$1" in
    *ms) echo "${1%ms}" ;;
    *s) echo $((${1%s} * 1000)) ;;
    *m) echo $((${1%m} * 60000)) ;;
    *h) echo $((${1%h} * 3600000)) ;;
    *) echo "latency.sh: durations like 500ms, 10s, 5m or 1h, not $1" >&2; exit 2 ;;
  esac
}

echo "rate $rate events/s for $duration into log:, process following into a local lake"
printf "%9s %9s | %8s %10s %11s %8s %8s %8s %8s %8s %7s %7s | %s\n" "lateness" "interval" \
  "windows" "S" "lateness/S" "p50 s" "p99 s" "max s" "p50 1st" "p50 2nd" "ckpt MB" "ckpt ms" \
  "generated"
IFS=, read -ra ls <<<"$latenesses"
IFS=, read -ra cs <<<"$intervals"
for lateness in "${ls[@]}"; do
  for interval in "${cs[@]}"; do
    rm -rf "$work/log" "$work/lake"
    RUST_LOG=rushhour::trace=debug "$bin" generate --to "log:$work/log" --rate "$rate" \
      --duration "$duration" >/dev/null 2>"$work/gen.log" &
    gen=$!
    until [ -e "$work/log/streamlog.json" ]; do sleep 0.05; done
    RUST_LOG=rushhour::trace=debug,rushhour_processor::runtime=debug "$bin" process --from "log:$work/log" --lake "$work/lake" \
      --lateness "$lateness" --checkpoint-interval "$interval" >/dev/null 2>"$work/proc.log" &
    proc=$!
    wait "$gen" || { cat "$work/gen.log" >&2; exit 1; }
    # Let the processor catch up with the end of the log (it keeps following).
    newest=$(grep -o 'event_time_ms=[0-9]*' "$work/gen.log" | tail -1 | cut -d= -f2)
    target=$((newest / 60000 * 60000))
    for _ in $(seq 600); do
      wm=$(grep -o 'watermark_ms=-\?[0-9]*' "$work/proc.log" | tail -1 | cut -d= -f2 || true)
      [ -n "$wm" ] && [ "$wm" -ge "$target" ] && break
      kill -0 "$proc" 2>/dev/null || { cat "$work/proc.log" >&2; exit 1; }
      sleep 0.1
    done
    kill -TERM "$proc"
    wait "$proc" || true
    generated=$(grep -o 'generated .*' "$work/gen.log" | tail -1 || true)
    printf "%9s %9s | " "$lateness" "$interval"
    python3 "$work/latency.py" "$work/gen.log" "$work/proc.log" "$(to_ms "$lateness")" \
      | tr -d '\n'
    echo " | ${generated:-?}"
  done
done
