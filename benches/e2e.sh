#!/usr/bin/env bash
# End-to-end benchmark: `rushhour process --until-end` into a local lake with every
# table and checkpoints at the default interval, from a file: and from a log: holding
# the same events, and — in the same run, on the same file — a DuckDB batch job doing
# comparable work (JSON → raw Parquet, plus a per-store, per-minute aggregate) as the
# peer. Runs alternate, so drift hits all three alike; compare the ratios, not the
# absolute figures (this machine drifts by ±20 %).
#
#   benches/e2e.sh [ORDERS] [RUNS]     default: 36000 orders (≈ 2 million events), 2 runs
#
# Prints for each run and command: wall seconds, events/s, MB/s of input, CPU seconds
# per million events, peak RSS; then the best of each and the ratio to DuckDB.
# DuckDB is pip-installed into its own venv under $HOME/.cache/rushhour-bench (python3
# with venv needed); set DUCKDB_VERSION to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"
orders="${1:-36000}"
runs="${2:-2}"
duckdb_version="${DUCKDB_VERSION:-1.4.2}"

venv="$HOME/.cache/rushhour-bench/venv"
if ! "$venv/bin/python" -c "import duckdb" 2>/dev/null; then
  echo "installing duckdb $duckdb_version into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet "duckdb==$duckdb_version" >&2
fi

cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/rushhour"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" generate --to "file:$work/events.jsonl" --orders "$orders" --seed 1 2>"$work/gen.log"
"$bin" generate --to "log:$work/events.log" --orders "$orders" --seed 1 2>>"$work/gen.log"
events=$(wc -l <"$work/events.jsonl")
bytes=$(stat -c %s "$work/events.jsonl")
echo "input: $events events, $((bytes / 1000000)) MB of JSON lines (generate --orders $orders --seed 1)"

cat >"$work/peer.py" <<'EOF'
import sys
import duckdb

src, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(
    f"CREATE TEMP TABLE ev AS SELECT * FROM read_json('{src}', "
    "format = 'newline_delimited', ignore_errors = true)"
)
con.execute(f"COPY ev TO '{out}/raw.parquet' (FORMAT parquet, COMPRESSION zstd)")
con.execute(
    "COPY (SELECT time_bucket(INTERVAL 1 MINUTE, CAST(event_time AS TIMESTAMP)) AS window_start,"
    " store_id,"
    " count(*) FILTER (WHERE event_type = 'order_placed') AS orders_placed,"
    " sum(total_cents) FILTER (WHERE event_type = 'order_placed') AS revenue_cents,"
    " count(*) FILTER (WHERE event_type = 'order_delivered') AS orders_delivered,"
    " count(*) FILTER (WHERE event_type = 'order_cancelled') AS orders_cancelled"
    " FROM ev WHERE store_id IS NOT NULL GROUP BY ALL)"
    f" TO '{out}/store_minute.parquet' (FORMAT parquet, COMPRESSION zstd)"
)
EOF

declare -A best
# measure LABEL COMMAND…: runs COMMAND under /usr/bin/time, prints its figures and
# keeps the best wall time per LABEL.
measure() {
  local label="$1"
  shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
    cat "$work/err" >&2
    exit 1
  }
  read -r wall user sys rss_kb <"$work/time"
  awk -v l="$label" -v e="$events" -v b="$bytes" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss_kb" \
    'BEGIN { printf "  %-22s %6.2f s %9.0f events/s %6.1f MB/s %6.2f CPU s per M events  peak RSS %5.0f MB\n",
             l, w, e / w, b / w / 1e6, (u + s) / e * 1e6, r / 1024 }'
  if [ -z "${best[$label]:-}" ] || awk -v a="$wall" -v b="${best[$label]}" 'BEGIN { exit !(a < b) }'; then
    best[$label]="$wall"
  fi
}

for run in $(seq "$runs"); do
  echo "run $run:"
  rm -rf "$work/lake-file" "$work/lake-log" "$work/peer"
  mkdir -p "$work/peer"
  measure "rushhour file:" "$bin" process --from "file:$work/events.jsonl" --lake "$work/lake-file" --until-end --quiet
  cp "$work/out" "$work/summary.json"
  measure "rushhour log:" "$bin" process --from "log:$work/events.log" --lake "$work/lake-log" --until-end --quiet
  measure "duckdb (peer)" "$venv/bin/python" "$work/peer.py" "$work/events.jsonl" "$work/peer"
done

echo "summary of the file: run: $(cat "$work/summary.json")"
echo "lake: $(du -sh "$work/lake-file" | cut -f1) (duckdb's two files: $(du -sh "$work/peer" | cut -f1))"
echo "best of $runs:"
for label in "rushhour file:" "rushhour log:" "duckdb (peer)"; do
  awk -v l="$label" -v e="$events" -v w="${best[$label]}" -v d="${best["duckdb (peer)"]}" \
    'BEGIN { printf "  %-22s %6.2f s %9.0f events/s  %.2f× DuckDB\n", l, w, e / w, d / w }'
done
