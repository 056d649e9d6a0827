#!/usr/bin/env bash
# Large messages through a follower of three release nodes on loopback
# (issue 9, item 5): publishes COUNT persistent messages of SIZE bytes with
# confirms (one in flight) and consumes them, then prints the leader and
# term before and after (the same term: no election).
#
#   benches/scripts/large-messages.sh [SIZE] [COUNT]     (16777216 5)
#
# Needs `cargo build --release -p warren-server --bin warren` and
# `cargo build --release -p warren-bench --bins`. Not part of CI.
set -u
cd "$(dirname "$0")/../.."
SIZE=${1:-16777216}; COUNT=${2:-5}
B=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/warren-large.XXXXXX)
trap 'pkill -f "data-dir $W/n"; sleep 1; rm -rf "$W"' EXIT
printf 'max_message_size = 134217728\n' > "$W/w.toml"
start() { # ID [JOIN]
  "$B/warren" --config "$W/w.toml" --node-id "$1" --data-dir "$W/n$1" --amqp-listen "127.0.0.1:574$1" \
    --cluster-listen "127.0.0.1:2774$1" --prometheus-listen 127.0.0.1:0 ${2:+--join "$2"} > "$W/log$1" 2>&1 &
}
start 1; sleep 1.5
start 2 127.0.0.1:27741; start 3 127.0.0.1:27741; sleep 3
echo "before: $("$B/warren" ctl --server 127.0.0.1:27741 cluster-status | head -1)"
"$B/warren-perf" --uri amqp://guest:guest@127.0.0.1:5742/%2f --queue big --durable --persistent --confirm 1 \
  --consumers 1 --prefetch 1 --size "$SIZE" --count "$COUNT" --drain-timeout 120 2>&1 |
  grep -E "confirmed \||consumed \||lost|longest"
echo "after:  $("$B/warren" ctl --server 127.0.0.1:27741 cluster-status | head -1)"
