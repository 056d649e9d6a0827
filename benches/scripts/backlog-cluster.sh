#!/usr/bin/env bash
# A backlog on three nodes, Warren and RabbitMQ side by side (issue 9's
# three-node target): COUNT persistent messages of SIZE bytes published with
# confirms (256 in flight) through the first node to a durable queue (a
# RabbitMQ quorum queue), no consumer. Reports, per broker: the confirm rate
# (and over the first and the last tenth, or million), the peak RSS of each
# node (sampled every 0.5 s) and each node's data directory once filled.
#
#   benches/scripts/backlog-cluster.sh [COUNT] [SIZE]        (3000000 1024)
#   WARREN_ONLY=1 benches/scripts/backlog-cluster.sh ...      (skip RabbitMQ)
#
# Needs the release binaries (warren, warren-perf) and Debian's
# rabbitmq-server (installed by rabbitmq-node.sh if missing). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-3000000}; SIZE=${2:-1024}
MILESTONE=${MILESTONE:-$(( COUNT < 10000000 ? COUNT / 10 : 1000000 ))}
B=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/warren-backlog-cluster.XXXXXX)
rmq=benches/scripts/rabbitmq-node.sh
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in 1 2 3; do "$rmq" stop $((5840 + n)) "$W/rmq-$n" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sample() { ( while kill -0 "$1" 2>/dev/null; do rss_kib "$1"; sleep 0.5; done ) > "$2" & echo $!; }
peak_mib() { echo $(( $(sort -n "$1" | tail -1) / 1024 )); }

# fill LABEL PORT QUEUE_TYPE PID1 PID2 PID3 DIR1 DIR2 DIR3
fill() {
  local label=$1 port=$2 qtype=$3; shift 3
  local p1=$1 p2=$2 p3=$3 d1=$4 d2=$5 d3=$6 s1 s2 s3
  s1=$(sample "$p1" "$W/rss-$label-1"); s2=$(sample "$p2" "$W/rss-$label-2"); s3=$(sample "$p3" "$W/rss-$label-3")
  "$B/warren-perf" --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --queue backlog --durable --persistent \
    ${qtype:+--queue-type "$qtype"} --confirm 256 --consumers 0 --count "$COUNT" --size "$SIZE" \
    --milestone "$MILESTONE" > "$W/fill-$label.json" 2>/dev/null
  sleep 1
  kill "$s1" "$s2" "$s3" 2>/dev/null || true
  jq -c -n --arg broker "$label" --argjson count "$COUNT" --argjson size "$SIZE" --argjson milestone "$MILESTONE" \
    --slurpfile fill "$W/fill-$label.json" \
    --argjson peak "[$(peak_mib "$W/rss-$label-1"),$(peak_mib "$W/rss-$label-2"),$(peak_mib "$W/rss-$label-3")]" \
    --argjson disk "[$(du -sk "$d1" | cut -f1),$(du -sk "$d2" | cut -f1),$(du -sk "$d3" | cut -f1)]" \
    '{broker: $broker, nodes: 3, count: $count, size: $size, confirmed: $fill[0].confirmed,
      fill_rate: ($fill[0].confirm_rate|floor),
      first_m_rate: ($fill[0].confirm_milestones_ms as $m | if ($m|length) > 0 then ($milestone * 1000 / $m[0] | floor) else null end),
      last_m_rate: ($fill[0].confirm_milestones_ms as $m | if ($m|length) > 1 then ($milestone * 1000 / ($m[-1] - $m[-2]) | floor) else null end),
      peak_rss_mib: $peak, disk_mib: [$disk[] / 1024 | floor]}'
}

start_warren() { # ID [--join ADDR]
  local id=$1; shift
  mkdir -p "$W/warren-$id"
  RUST_LOG=warn "$B/warren" --node-id "$id" --data-dir "$W/warren-$id/data" --amqp-listen "127.0.0.1:$((5740 + id))" \
    --cluster-listen "127.0.0.1:$((27740 + id))" --http-listen "127.0.0.1:$((17740 + id))" \
    --prometheus-listen 127.0.0.1:0 "$@" >> "$W/warren-$id/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 3000); do
    grep -q "amqp listening on" "$W/warren-$id/log" 2>/dev/null && return
    sleep 0.01
  done
  echo "warren $id did not start" >&2; tail -20 "$W/warren-$id/log" >&2; return 1
}

start_warren 1
start_warren 2 --join 127.0.0.1:27741
start_warren 3 --join 127.0.0.1:27741
sleep 2
fill warren 5741 "" "${pids[0]}" "${pids[1]}" "${pids[2]}" "$W/warren-1/data" "$W/warren-2/data" "$W/warren-3/data"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
pids=()

[ -n "${WARREN_ONLY:-}" ] && { rm -rf "$W"; exit 0; }
export RABBITMQ_BENCH_COOKIE=warren-backlog-cluster
for n in 1 2 3; do "$rmq" start $((5840 + n)) "$W/rmq-$n" >/dev/null & done
wait
for n in 2 3; do
  "$rmq" ctl $((5840 + n)) "$W/rmq-$n" stop_app >/dev/null
  "$rmq" ctl $((5840 + n)) "$W/rmq-$n" join_cluster "bench5841@localhost" >/dev/null
  "$rmq" ctl $((5840 + n)) "$W/rmq-$n" start_app >/dev/null
done
r1=$("$rmq" pid 5841 "$W/rmq-1"); r2=$("$rmq" pid 5842 "$W/rmq-2"); r3=$("$rmq" pid 5843 "$W/rmq-3")
fill rabbitmq-quorum 5841 quorum "$r1" "$r2" "$r3" "$W/rmq-1/mnesia" "$W/rmq-2/mnesia" "$W/rmq-3/mnesia"
rm -rf "$W"
