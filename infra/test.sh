#!/usr/bin/env bash
# The README's test command: installs and starts whatever real servers the tests
# need (on 127.0.0.1 only), runs the whole test suite, and stops the servers.
#
# The servers come from infra/local-stack.sh (installed the first time: the Kafka
# broker compiles for 10-17 minutes on two cores), which prints their endpoints as
# `export NAME=value` lines; the tests read them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"

trap 'infra/local-stack.sh stop' EXIT
# The servers the tests use: the Kafka broker, S3 (moto), Kinesis (kinesis-local) and
# PostgreSQL (the order service's database).
eval "$(infra/local-stack.sh start kafka s3 kinesis postgres)"

cargo test --workspace --all-targets "$@"
