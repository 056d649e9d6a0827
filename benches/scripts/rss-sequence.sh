#!/usr/bin/env bash
# Warren's RSS through compare.sh's phase-A sequence on one node, without
# RabbitMQ: a quick A/B of memory that a load leaves behind (allocator,
# caches). Cases 1-4 as compare.sh full runs them (amqprs-perf), RSS
# sampled every 0.2 s; prints one JSON line per case (peak and end RSS,
# rates) and the RSS 10 s after the last case.
#
#   benches/scripts/rss-sequence.sh [LABEL]     (release binaries in target/)
#   DURATION=30 COUNT=1000000 ...
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${CARGO_TARGET_DIR:-$PWD/target}/release
COUNT=${COUNT:-1000000}; DURATION=${DURATION:-30}; LABEL=${1:-warren}
W=$(mktemp -d /tmp/warren-rss.XXXXXX)
"$B/warren" --data-dir "$W/data" --amqp-listen 127.0.0.1:5741 --cluster-listen 127.0.0.1:27741 \
  --prometheus-listen 127.0.0.1:0 > "$W/warren.log" 2>&1 &
wpid=$!
trap 'kill $wpid 2>/dev/null; rm -rf "$W"' EXIT
sleep 2
rss() { awk '/^VmRSS/{print int($2/1024)}' "/proc/$wpid/status"; }
echo "{\"label\":\"$LABEL\",\"case\":\"idle\",\"rss_mib\":$(rss)}"
run() {
  local case=$1 peak=0 r; shift
  "$B/amqprs-perf" --port 5741 "$@" > "$W/out" 2>/dev/null &
  local tool=$!
  while kill -0 $tool 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.2; done
  wait $tool || true
  tail -1 "$W/out" | jq -c --arg lab "$LABEL" --arg case "$case" --argjson peak "$peak" --argjson last "$(rss)" \
    '{"label": $lab, "case": $case, "peak_mib": $peak, "end_mib": $last, "confirm": (.confirm_rate // 0 | floor), "consume": (.consume_rate // 0 | floor), "lost": .lost}'
}
run 1-transient-1KiB --queue c1 --size 1024 --count $((COUNT * 5)) --drain-timeout 60
run 2-transient-16B --queue c2 --size 16 --count $((COUNT * 5)) --drain-timeout 60
run 3-durable-1p1c --manual-ack --queue c3 --durable --persistent --confirm 256 --prefetch 100 \
  --count "$COUNT" --duration "$DURATION" --drain-timeout 60
run 4-durable-4p4c --manual-ack --queue c4 --durable --persistent --confirm 256 --prefetch 100 \
  --producers 4 --consumers 4 --count $((COUNT / 2)) --duration "$DURATION" --drain-timeout 60
sleep 10
echo "{\"label\":\"$LABEL\",\"case\":\"after-10s\",\"rss_mib\":$(rss)}"
