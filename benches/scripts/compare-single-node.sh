#!/usr/bin/env bash
# One run, alternating: Warren (1 node, release build) and RabbitMQ (Debian's
# rabbitmq-server, 1 node), the same warren-perf cases against each, twice.
# Prints one JSON line per case and run. Issue 4 grows this into the full
# compare script (3-node cases, ratios).
#   benches/scripts/compare-single-node.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-50000}
cargo build --release -q -p warren-server -p warren-bench
work=$(mktemp -d)
wport=5701; rport=5801
perf=target/release/warren-perf
cleanup() { pkill -f "warren --amqp-listen 127.0.0.1:$wport" || true; benches/scripts/rabbitmq-node.sh stop $rport "$work/rmq" || true; }
trap cleanup EXIT
(RUST_LOG=warn target/release/warren --amqp-listen 127.0.0.1:$wport --data-dir "$work/warren" > "$work/warren.out" 2>&1 &)
benches/scripts/rabbitmq-node.sh start $rport "$work/rmq" >/dev/null
until grep -q "listening" "$work/warren.out"; do sleep 0.1; done
cases=(
  "durable-confirms-1p1c|--durable --persistent --confirm 256 --prefetch 100 --count $count"
  "transient-autoack-1p1c|--auto-ack --count $((count * 2))"
  "transient-autoack-16B|--auto-ack --size 20 --count $((count * 2))"
)
for run in 1 2; do
  for c in "${cases[@]}"; do
    name=${c%%|*}; flags=${c#*|}
    for broker in warren rabbitmq; do
      port=$wport; [ $broker = rabbitmq ] && port=$rport
      # shellcheck disable=SC2086
      line=$($perf --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --queue "q-$name-$run" $flags --label "$broker/$name/run$run" 2>/dev/null)
      cpu=$(ps -o rss= -C warren | head -1)
      echo "$line" | sed "s/}\$/,\"warren_rss_kib\":${cpu:-0}}/"
    done
  done
done
