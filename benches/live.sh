# Sourced by the bench scripts that run `generate` and `process` side by side
# (latency.sh, soak.sh), from the repository root: builds the release binary into
# $bin, makes a work directory $work, and on exit stops the processes whose pids are
# in $gen and $proc and removes $work.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/rushhour"
work="$(mktemp -d)"
cleanup() {
  kill "${gen:-}" "${proc:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
