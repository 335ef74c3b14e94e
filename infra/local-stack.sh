#!/usr/bin/env bash
# The local stack the tests run against: real servers on 127.0.0.1 only.
#
#   infra/local-stack.sh start [NAME…]   install what is missing, start (all when none named)
#   infra/local-stack.sh stop  [NAME…]   stop
#   infra/local-stack.sh status
#
# `start` is idempotent (a running service is left alone) and prints `export NAME=value`
# lines for the endpoints, so `eval "$(infra/local-stack.sh start)"` sets them.
# Everything lives under $RUSHHOUR_STACK_DIR (default ~/.cache/rushhour-stack): the
# installed tools (pinned versions, reinstalled only when the version differs), each
# service's data, its log and its pid file.
#
# Services:
#   kafka   tansu, a Kafka-compatible broker (crates.io `tansu`, SQLite storage engine),
#           on 127.0.0.1:${RUSHHOUR_KAFKA_PORT:-9092}. A cold install compiles it: about
#           10-17 minutes on two cores, once per machine.
set -euo pipefail
STACK_DIR="${RUSHHOUR_STACK_DIR:-$HOME/.cache/rushhour-stack}"
ALL_SERVICES=(kafka)

TANSU_VERSION=0.6.0
KAFKA_PORT="${RUSHHOUR_KAFKA_PORT:-9092}"

log() { echo "local-stack: $*" >&2; }

running() { # NAME → 0 if its pid file names a live process
  local pidfile="$STACK_DIR/$1.pid"
  [ -e "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_for_port() { # PORT NAME SECONDS
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$2 did not listen on 127.0.0.1:$1 within $3 s; its log:"
      tail -n 30 "$STACK_DIR/$2.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# --- kafka (tansu) -------------------------------------------------------------------
TANSU="$STACK_DIR/tools/bin/tansu"

install_kafka() {
  if [ -x "$TANSU" ] && [ "$(cat "$STACK_DIR/tools/tansu.version" 2>/dev/null)" = "$TANSU_VERSION" ]; then
    return
  fi
  log "installing tansu $TANSU_VERSION (a Kafka-compatible broker; compiles for 10-17 minutes the first time)"
  mkdir -p "$STACK_DIR/tools"
  # Its own target directory, so that the project's build cache is not disturbed.
  CARGO_TARGET_DIR="$STACK_DIR/tools/target" cargo install tansu --version "$TANSU_VERSION" \
    --locked --features dynostore,libsql --root "$STACK_DIR/tools" >&2
  rm -rf "$STACK_DIR/tools/target"
  echo "$TANSU_VERSION" >"$STACK_DIR/tools/tansu.version"
}

start_kafka() {
  install_kafka
  if ! running kafka; then
    # A fresh broker each time the stack starts: tests use topics of their own.
    rm -rf "$STACK_DIR/kafka"
    mkdir -p "$STACK_DIR/kafka"
    (
      cd "$STACK_DIR/kafka"
      exec "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "sqlite://tansu.db"
    ) >"$STACK_DIR/kafka.log" 2>&1 &
    echo $! >"$STACK_DIR/kafka.pid"
    wait_for_port "$KAFKA_PORT" kafka 30
    log "kafka (tansu $TANSU_VERSION) on 127.0.0.1:$KAFKA_PORT"
  fi
  install_python_tools
  echo "export RUSHHOUR_KAFKA=127.0.0.1:$KAFKA_PORT"
  # The broker binary itself, for tests that run (and restart) a private broker.
  echo "export RUSHHOUR_TANSU=$TANSU"
  echo "export RUSHHOUR_PYTHON=$PY/bin/python"
}

# --- python tools (not a server) ------------------------------------------------------
# An independent Kafka client for the tests (confluent-kafka, with its own librdkafka):
# it writes what rushhour's generator never would (non-UTF-8 bytes, wrong keys).
PY="$STACK_DIR/py"
CONFLUENT_KAFKA_VERSION=2.16.0

install_python_tools() {
  if [ -x "$PY/bin/python" ] && "$PY/bin/python" -c "import confluent_kafka" 2>/dev/null; then
    return
  fi
  log "installing confluent-kafka $CONFLUENT_KAFKA_VERSION into $PY"
  python3 -m venv "$PY" >&2
  "$PY/bin/pip" install --quiet "confluent-kafka==$CONFLUENT_KAFKA_VERSION" >&2
}

# --- the commands --------------------------------------------------------------------
stop_one() {
  local pidfile="$STACK_DIR/$1.pid"
  [ -e "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

names() { # the named services, or all
  if [ "$#" -eq 0 ]; then printf '%s\n' "${ALL_SERVICES[@]}"; return; fi
  for n in "$@"; do
    case " ${ALL_SERVICES[*]} " in
      *" $n "*) echo "$n" ;;
      *) log "unknown service $n (known: ${ALL_SERVICES[*]})"; exit 2 ;;
    esac
  done
}

cmd="${1:-}"
shift || true
mkdir -p "$STACK_DIR"
case "$cmd" in
  start) for s in $(names "$@"); do "start_$s"; done ;;
  stop) for s in $(names "$@"); do stop_one "$s"; done ;;
  status)
    for s in "${ALL_SERVICES[@]}"; do
      if running "$s"; then echo "$s: running"; else echo "$s: stopped"; fi
    done
    ;;
  *) echo "usage: $0 start|stop|status [NAME…]" >&2; exit 2 ;;
esac
