#!/usr/bin/env bash
# A backlog with no consumer, Warren and RabbitMQ side by side (issue 9's
# first target, at a size this machine can run quickly): COUNT persistent
# messages of SIZE bytes published with confirms (256 in flight) to a
# durable queue on one fresh node. Reports, per broker: the confirm rate,
# peak RSS while filling (sampled every 0.5 s) and the data directory's
# size once filled. (The drain of the backlog is not measured here: the
# load tool counts only the messages of its own run.)
#
#   benches/scripts/backlog.sh [COUNT] [SIZE]        (1000000 1024)
#
# Needs the release binaries (warren, warren-perf) and installs Debian's
# rabbitmq-server if missing. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-1000000}; SIZE=${2:-1024}
B=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/warren-backlog.XXXXXX)
rmq=benches/scripts/rabbitmq-node.sh
wpid=""
cleanup() { [ -n "$wpid" ] && kill "$wpid" 2>/dev/null; "$rmq" stop 5832 "$W/rmq" >/dev/null 2>&1 || true; }
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# run BROKER PID PORT DATADIR
run() {
  local broker=$1 pid=$2 port=$3 dir=$4 peak=0 sampler
  ( while kill -0 "$pid" 2>/dev/null; do echo "$(rss_kib "$pid")"; sleep 0.5; done ) > "$W/rss-$broker" &
  sampler=$!
  "$B/warren-perf" --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --queue backlog --durable --persistent \
    --confirm 256 --consumers 0 --count "$COUNT" --size "$SIZE" > "$W/fill-$broker.json" 2>/dev/null
  kill "$sampler" 2>/dev/null || true
  peak=$(sort -n "$W/rss-$broker" | tail -1)
  local disk; disk=$(du -sk "$dir" | cut -f1)
  jq -c --arg broker "$broker" --argjson peak "$peak" --argjson disk "$disk" --argjson count "$COUNT" --argjson size "$SIZE" \
    '{broker: $broker, count: $count, size: $size, confirmed, confirm_rate: (.confirm_rate|floor),
      peak_rss_mib: ($peak/1024|floor), disk_mib: ($disk/1024|floor)}' \
    <(head -1 "$W/fill-$broker.json")
}

# The memory alarm off: with bodies in memory it would block the publisher
# near a twentieth of RAM (a 1 M x 1 KiB backlog passes it on 24 GiB).
printf 'queued_bytes_high_watermark = 0\n' > "$W/warren.toml"
"$B/warren" --config "$W/warren.toml" --data-dir "$W/warren" --amqp-listen 127.0.0.1:5731 \
  --cluster-listen 127.0.0.1:27731 --prometheus-listen 127.0.0.1:0 > "$W/warren.log" 2>&1 &
wpid=$!
sleep 1.5
run warren "$wpid" 5731 "$W/warren"
kill "$wpid"; wait "$wpid" 2>/dev/null || true; wpid=""

"$rmq" start 5832 "$W/rmq" >/dev/null
rpid=$("$rmq" pid 5832 "$W/rmq")
run rabbitmq "$rpid" 5832 "$W/rmq/mnesia"
