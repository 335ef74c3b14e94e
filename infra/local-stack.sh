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
#   s3      moto_server (PyPI `moto[server]`, in memory, conditional writes) on
#           127.0.0.1:${RUSHHOUR_S3_PORT:-5000}. About 40 s to install.
#   kinesis kinesis-mock (npm `kinesis-local`, Node.js) on 127.0.0.1:${RUSHHOUR_KINESIS_PORT:-4568}
#           (plain HTTP; it would bind every interface, so a preload pins it to loopback).
#   postgres PostgreSQL (Debian's `postgresql` package, apt-installed when missing), a
#           private cluster made fresh at each start on 127.0.0.1:${RUSHHOUR_POSTGRES_PORT:-55432},
#           user and database `rushhour`, trust authentication (loopback only). As root it
#           runs as the package's `postgres` user (the server refuses root), with its data
#           under /tmp; otherwise as the caller, under the stack directory.
#
# The AWS services print the standard AWS settings too (test credentials, us-east-1 and
# the endpoint variables the SDKs and object_store read).
set -euo pipefail
STACK_DIR="${RUSHHOUR_STACK_DIR:-$HOME/.cache/rushhour-stack}"
ALL_SERVICES=(kafka s3 kinesis postgres)

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

# --- s3 (moto) --------------------------------------------------------------------------
MOTO_VERSION=5.2.5
S3_PORT="${RUSHHOUR_S3_PORT:-5000}"

aws_settings() {
  echo "export AWS_ACCESS_KEY_ID=test"
  echo "export AWS_SECRET_ACCESS_KEY=test"
  echo "export AWS_REGION=us-east-1"
  echo "export AWS_DEFAULT_REGION=us-east-1" # Python's boto3 reads this one
}

start_s3() {
  if ! [ -x "$PY/bin/moto_server" ] || [ "$(cat "$PY/moto.version" 2>/dev/null)" != "$MOTO_VERSION" ]; then
    log "installing moto[server] $MOTO_VERSION into $PY"
    [ -x "$PY/bin/python" ] || python3 -m venv "$PY" >&2
    "$PY/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" >&2
    echo "$MOTO_VERSION" >"$PY/moto.version"
  fi
  if ! running s3; then
    "$PY/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STACK_DIR/s3.log" 2>&1 &
    echo $! >"$STACK_DIR/s3.pid"
    wait_for_port "$S3_PORT" s3 30
    log "s3 (moto $MOTO_VERSION) on 127.0.0.1:$S3_PORT"
  fi
  aws_settings
  echo "export RUSHHOUR_S3=http://127.0.0.1:$S3_PORT"
  echo "export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT"
}

# --- kinesis (kinesis-local) ------------------------------------------------------------
KINESIS_LOCAL_VERSION=0.6.2
KINESIS_PORT="${RUSHHOUR_KINESIS_PORT:-4568}"
KINESIS_TLS_PORT="${RUSHHOUR_KINESIS_TLS_PORT:-4567}"
KINESIS_DIR="$STACK_DIR/tools/kinesis"

start_kinesis() {
  if ! [ -e "$KINESIS_DIR/node_modules/kinesis-local/main.js" ] \
    || [ "$(cat "$KINESIS_DIR/version" 2>/dev/null)" != "$KINESIS_LOCAL_VERSION" ]; then
    log "installing kinesis-local $KINESIS_LOCAL_VERSION into $KINESIS_DIR"
    rm -rf "$KINESIS_DIR"
    mkdir -p "$KINESIS_DIR"
    (cd "$KINESIS_DIR" && npm install --silent --no-audit --no-fund "kinesis-local@$KINESIS_LOCAL_VERSION" >&2)
    echo "$KINESIS_LOCAL_VERSION" >"$KINESIS_DIR/version"
  fi
  # kinesis-mock has no option for its address: every server it opens listens on
  # loopback through this preload.
  cat >"$KINESIS_DIR/loopback.js" <<'JS'
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number") {
    const port = args[0];
    const rest = args.slice(1).filter((a) => typeof a !== "string");
    return listen.call(this, port, "127.0.0.1", ...rest);
  }
  if (args[0] && typeof args[0] === "object") {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
JS
  if ! running kinesis; then
    (
      cd "$KINESIS_DIR"
      export KINESIS_MOCK_CERT_PATH="$KINESIS_DIR/node_modules/kinesis-local/server.json"
      export KINESIS_MOCK_PLAIN_PORT="$KINESIS_PORT" KINESIS_MOCK_TLS_PORT="$KINESIS_TLS_PORT"
      exec node -r "$KINESIS_DIR/loopback.js" node_modules/kinesis-local/main.js
    ) >"$STACK_DIR/kinesis.log" 2>&1 &
    echo $! >"$STACK_DIR/kinesis.pid"
    wait_for_port "$KINESIS_PORT" kinesis 60
    log "kinesis (kinesis-local $KINESIS_LOCAL_VERSION) on 127.0.0.1:$KINESIS_PORT"
  fi
  aws_settings
  echo "export RUSHHOUR_KINESIS=http://127.0.0.1:$KINESIS_PORT"
  echo "export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$KINESIS_PORT"
}

# --- postgres (Debian's package) ------------------------------------------------------
POSTGRES_PORT="${RUSHHOUR_POSTGRES_PORT:-55432}"

pg_bin() { # the newest installed server's bin directory, or nothing
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install_postgres() {
  [ -n "$(pg_bin)" ] && return
  log "installing PostgreSQL (Debian's postgresql package)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # The package would create and start a cluster of its own on 5432; the stack runs a
  # private one instead, so service starts are refused while it installs.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if ! [ -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    own_policy=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  [ -n "$own_policy" ] && $sudo rm -f "$policy"
  [ -n "$(pg_bin)" ] || { log "PostgreSQL did not install"; return 1; }
}

# As root the server runs as `postgres` (it refuses root) with its data where that user
# can reach it; otherwise as the caller.
pg_as() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_data() {
  if [ "$(id -u)" -eq 0 ]; then echo "/tmp/rushhour-stack-postgres"; else echo "$STACK_DIR/postgres"; fi
}

start_postgres() {
  install_postgres
  local bin data
  bin=$(pg_bin)
  data=$(pg_data)
  if ! running postgres; then
    # A fresh cluster each time the stack starts: tests make databases of their own.
    rm -rf "$data"
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$data"
    pg_as "$bin/initdb" -D "$data/db" -U rushhour --auth=trust -E UTF8 >"$STACK_DIR/postgres.log" 2>&1
    pg_as "$bin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $POSTGRES_PORT -k $data -c max_connections=200 -c fsync=off" start >>"$STACK_DIR/postgres.log" 2>&1 \
      || { log "PostgreSQL did not start; its log:"; tail -n 30 "$data/server.log" >&2; return 1; }
    head -n 1 "$data/db/postmaster.pid" >"$STACK_DIR/postgres.pid"
    pg_as "$bin/createdb" -h 127.0.0.1 -p "$POSTGRES_PORT" -U rushhour rushhour >>"$STACK_DIR/postgres.log" 2>&1
    log "postgres ($("$bin/postgres" --version | awk '{print $3}')) on 127.0.0.1:$POSTGRES_PORT"
  fi
  echo "export RUSHHOUR_POSTGRES=postgres://rushhour@127.0.0.1:$POSTGRES_PORT/rushhour"
}

stop_postgres() {
  local bin data
  bin=$(pg_bin) || true
  data=$(pg_data)
  if [ -n "$bin" ] && [ -e "$data/db/postmaster.pid" ]; then
    pg_as "$bin/pg_ctl" -D "$data/db" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# --- the commands --------------------------------------------------------------------
stop_one() {
  local pidfile="$STACK_DIR/$1.pid"
  [ -e "$pidfile" ] || return 0
  if [ "$1" = postgres ]; then stop_postgres; fi
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
