#!/usr/bin/env bash
# A backlog, Warren and RabbitMQ side by side (issue 9's targets, at a size
# this machine runs in minutes): COUNT persistent messages of SIZE bytes
# published with confirms (256 in flight) to a durable queue on one fresh
# node with no consumer; then the node is killed (-9) and started again on
# its data, and one consumer (manual ack of every message, prefetch 100)
# drains the backlog. Reports, per broker:
#   fill_rate        confirms/s while filling
#   first_m_rate, last_m_rate
#                    confirms/s over the first and the last MILESTONE
#                    confirms (default 1,000,000, or COUNT/10 if smaller)
#   fill_peak_mib    peak RSS while filling (sampled every 0.5 s)
#   disk_mib         the data directory once filled
#   first_ms         restart: from starting the consumer (it retries the
#                    connection while the node starts) to the first delivery
#   drain_rate       deliveries/s from the first to the last
#   drain_peak_mib   peak RSS from the restart to the end of the drain
# RabbitMQ 3.10.8 runs twice: a classic durable queue and a quorum queue.
#
#   benches/scripts/backlog.sh [COUNT] [SIZE]        (1000000 1024)
#   WARREN_ONLY=1 benches/scripts/backlog.sh ...      (skip RabbitMQ)
#   SYNC_BEFORE_RESTART=1 ...   after the kill, run `sync` (its time in
#                    sync_ms) before the restart, so the restart does not
#                    share the disk with the kernel writing back the fill
#
# dirty_mib is the kernel's Dirty page cache when the node is killed: what
# the disk still has to take while the node restarts.
#
# Needs the release binaries (warren, warren-perf, warren-drain) and
# installs Debian's rabbitmq-server if missing. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-1000000}; SIZE=${2:-1024}
MILESTONE=${MILESTONE:-$(( COUNT < 10000000 ? COUNT / 10 : 1000000 ))}
B=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/warren-backlog.XXXXXX)
rmq=benches/scripts/rabbitmq-node.sh
wpid=""
cleanup() { [ -n "$wpid" ] && kill "$wpid" 2>/dev/null; "$rmq" stop 5832 "$W/rmq" >/dev/null 2>&1 || true; }
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sample() { ( while kill -0 "$1" 2>/dev/null; do rss_kib "$1"; sleep 0.5; done ) > "$2" & echo $!; }
peak_mib() { echo $(( $(sort -n "$1" | tail -1) / 1024 )); }

# fill LABEL PID PORT [QUEUE_TYPE]
fill() {
  local label=$1 pid=$2 port=$3 qtype=${4:-} sampler
  sampler=$(sample "$pid" "$W/rss-fill-$label")
  "$B/warren-perf" --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --queue backlog --durable --persistent \
    ${qtype:+--queue-type "$qtype"} --confirm 256 --consumers 0 --count "$COUNT" --size "$SIZE" --milestone "$MILESTONE" \
    > "$W/fill-$label.json" 2>/dev/null
  kill "$sampler" 2>/dev/null || true
}

# drain LABEL PID PORT (the node was just started)
drain() {
  local label=$1 pid=$2 port=$3 sampler
  sampler=$(sample "$pid" "$W/rss-drain-$label")
  "$B/warren-drain" --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --queue backlog --count "$COUNT" \
    --prefetch 100 --idle-timeout 300 > "$W/drain-$label.json"
  kill "$sampler" 2>/dev/null || true
}

# report LABEL DATADIR_DISK_KIB
report() {
  local label=$1 disk=$2
  jq -c -n --arg broker "$label" --argjson count "$COUNT" --argjson size "$SIZE" --argjson milestone "$MILESTONE" \
    --argjson fillpeak "$(peak_mib "$W/rss-fill-$label")" --argjson drainpeak "$(peak_mib "$W/rss-drain-$label")" \
    --argjson disk "$disk" --argjson dirty "$dirty_mib" --argjson sync "$sync_ms" --slurpfile fill "$W/fill-$label.json" --slurpfile drain "$W/drain-$label.json" \
    '{broker: $broker, count: $count, size: $size, confirmed: $fill[0].confirmed,
      fill_rate: ($fill[0].confirm_rate|floor),
      first_m_rate: ($fill[0].confirm_milestones_ms as $m | if ($m|length) > 0 then ($milestone * 1000 / $m[0] | floor) else null end),
      last_m_rate: ($fill[0].confirm_milestones_ms as $m | if ($m|length) > 1 then ($milestone * 1000 / ($m[-1] - $m[-2]) | floor) else null end),
      fill_peak_mib: $fillpeak, disk_mib: ($disk/1024|floor),
      dirty_mib: $dirty, sync_ms: $sync, first_ms: $drain[0].first_delivery_ms, consumed: $drain[0].consumed,
      drain_rate: ($drain[0].consume_rate|floor), drain_peak_mib: $drainpeak}'
}

dirty_mib=0; sync_ms=null
# note_dirty before the kill; maybe_sync after it (SYNC_BEFORE_RESTART)
note_dirty() { dirty_mib=$(( $(awk '/^Dirty:/{print $2}' /proc/meminfo) / 1024 )); }
maybe_sync() {
  sync_ms=null
  if [ -n "${SYNC_BEFORE_RESTART:-}" ]; then
    local t0; t0=$(date +%s%N); sync; sync_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  fi
}

start_warren() {
  "$B/warren" --data-dir "$W/warren" --amqp-listen 127.0.0.1:5731 \
    --cluster-listen 127.0.0.1:27731 --prometheus-listen 127.0.0.1:0 >> "$W/warren.log" 2>&1 &
  wpid=$!
}

start_warren
sleep 1.5
fill warren "$wpid" 5731
sleep 1
disk=$(du -sk "$W/warren" | cut -f1)
note_dirty; kill -9 "$wpid"; wait "$wpid" 2>/dev/null || true
maybe_sync
start_warren
drain warren "$wpid" 5731
kill "$wpid"; wait "$wpid" 2>/dev/null || true; wpid=""
report warren "$disk"

[ -n "${WARREN_ONLY:-}" ] && { rm -rf "$W"; exit 0; }
for qtype in classic quorum; do
  rm -rf "$W/rmq"
  "$rmq" start 5832 "$W/rmq" >/dev/null
  rpid=$("$rmq" pid 5832 "$W/rmq")
  fill "rabbitmq-$qtype" "$rpid" 5832 "$qtype"
  sleep 1
  disk=$(du -sk "$W/rmq/mnesia" | cut -f1)
  note_dirty; kill -9 "$rpid"; sleep 1; rm -f "$W/rmq/pid"
  maybe_sync
  "$rmq" start 5832 "$W/rmq" >/dev/null &
  starter=$!
  # The consumer starts with the node and retries its connection until
  # the node listens; RSS is sampled once the node wrote its pid.
  "$B/warren-drain" --uri "amqp://guest:guest@127.0.0.1:5832/%2f" --queue backlog --count "$COUNT" \
    --prefetch 100 --idle-timeout 300 > "$W/drain-rabbitmq-$qtype.json" &
  drainer=$!
  for _ in $(seq 1 600); do [ -s "$W/rmq/pid" ] && break; sleep 0.1; done
  rpid=$("$rmq" pid 5832 "$W/rmq")
  sampler=$(sample "$rpid" "$W/rss-drain-rabbitmq-$qtype")
  wait "$drainer"
  kill "$sampler" 2>/dev/null || true
  wait "$starter" 2>/dev/null || true
  "$rmq" stop 5832 "$W/rmq" >/dev/null 2>&1 || true
  report "rabbitmq-$qtype" "$disk"
done
rm -rf "$W"
