#!/usr/bin/env bash
# The node's CPU per message under compare.sh's transient cases (1-2):
# one node, amqprs-perf with one publisher and one no_ack consumer, after
# a 200k warm-up. The node's CPU is utime + stime from /proc/PID/stat
# across each run, divided by the messages; the client's is what
# amqprs-perf reports. One JSON line per run. For A/B runs of two builds,
# alternate them:
#
#   benches/scripts/cpu-per-message.sh [WARREN_BIN] [SIZE] [COUNT] [RUNS]
#   (defaults: target/release/warren, 16, 1000000, 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${CARGO_TARGET_DIR:-$PWD/target}/release
BIN=${1:-$B/warren}; SIZE=${2:-16}; COUNT=${3:-1000000}; RUNS=${4:-2}
W=$(mktemp -d /tmp/warren-cpu.XXXXXX)
"$BIN" --data-dir "$W/data" --amqp-listen 127.0.0.1:5742 --cluster-listen 127.0.0.1:27742 \
  --http-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 > "$W/warren.log" 2>&1 &
wpid=$!
trap 'kill $wpid 2>/dev/null; rm -rf "$W"' EXIT
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$wpid/stat"; }
hz=$(getconf CLK_TCK)
"$B/amqprs-perf" --port 5742 --queue warm --size "$SIZE" --count 200000 --drain-timeout 60 > /dev/null 2>&1
for run in $(seq 1 "$RUNS"); do
  t0=$(ticks)
  "$B/amqprs-perf" --port 5742 --queue "q$run" --size "$SIZE" --count "$COUNT" --drain-timeout 60 > "$W/out" 2>/dev/null
  t1=$(ticks)
  tail -1 "$W/out" | jq -c --arg bin "$BIN" --argjson run "$run" \
    --argjson node_us "$(echo "scale=2; ($t1 - $t0) * 1000000 / $hz / $COUNT" | bc)" \
    '{"bin": $bin, "run": $run, "size": .size, "consumed": .consumed, "consume_rate": (.consume_rate | floor), "node_us_per_msg": $node_us, "client_us_per_msg": .cpu_us_per_msg, "lost": .lost}'
done
