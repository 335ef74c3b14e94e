#!/usr/bin/env bash
# The local stack the tests run against: real servers on 127.0.0.1 only.
#   infra/local-stack.sh start|stop|status
#
# Components are listed in SERVICES; each has an install step (idempotent: skipped
# when the right version is already there) and a start step that writes its pid
# under $STACK_DIR. The embedded pipeline needs none yet; Kafka (tansu), Kinesis
# (kinesis-local), S3 (moto) and PostgreSQL join this list with the issues that
# bring their connectors (see infra/README.md).
set -euo pipefail
STACK_DIR="${RUSHHOUR_STACK_DIR:-$HOME/.cache/rushhour-stack}"
SERVICES=()

start() {
  mkdir -p "$STACK_DIR"
  for s in "${SERVICES[@]}"; do "start_$s"; done
  echo "local stack: ${#SERVICES[@]} service(s) up${SERVICES[*]:+: ${SERVICES[*]}}"
}

stop() {
  for pidfile in "$STACK_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

status() {
  for pidfile in "$STACK_DIR"/*.pid; do
    [ -e "$pidfile" ] || { echo "no services running"; return; }
    name=$(basename "$pidfile" .pid)
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "$name: running"; else echo "$name: dead"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
