#!/usr/bin/env bash
# The README's test command: installs and starts whatever real servers the tests
# need (on 127.0.0.1 only), runs the whole test suite, and stops the servers.
#
# Today's suite runs on the embedded defaults (file: and log: sources, a local
# lake) and needs no server. Later suites (Kafka, Kinesis, S3, PostgreSQL) start
# theirs through infra/local-stack.sh, which this script calls.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rushhour-target}"

infra/local-stack.sh start
trap 'infra/local-stack.sh stop' EXIT

cargo test --workspace --all-targets "$@"
