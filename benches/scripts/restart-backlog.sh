#!/usr/bin/env bash
# The restart of one node holding a deep backlog (issue 9's restart case at
# sizes where backlog.sh's full drain takes too long): COUNT persistent 1 KiB
# messages published with confirms to a durable queue with no consumer,
# kill -9, start again on the same data, and drain DRAIN messages. Prints:
# the fill (warren-perf's JSON, milestones every million), the fill's peak
# RSS, the data directory's size, the kernel's Dirty page cache at the kill,
# the time from the restart to the AMQP listener, the drain (warren-drain's
# JSON: first_delivery_ms counts from the consumer's start, right after the
# listener), what the restarted node wrote, and its peak RSS.
#
#   benches/scripts/restart-backlog.sh [COUNT] [DRAIN]   (10000000 200000)
#
# Warren only; needs the release binaries (warren, warren-perf,
# warren-drain). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUST_BACKTRACE=0
COUNT=${1:-10000000}; DRAIN=${2:-200000}
B=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/warren-restart.XXXXXX)
wpid=""
trap '[ -n "$wpid" ] && kill "$wpid" 2>/dev/null; rm -rf "$W"' EXIT

start() {
  "$B/warren" --data-dir "$W/data" --amqp-listen 127.0.0.1:5761 --cluster-listen 127.0.0.1:27761 \
    --prometheus-listen 127.0.0.1:0 >> "$W/log-$1" 2>&1 &
  wpid=$!
}
# peak PID FILE: the highest VmRSS (KiB) of PID, written to FILE until it exits
peak() {
  ( p=0; while kill -0 "$1" 2>/dev/null; do
      r=$(awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
      [ "${r:-0}" -gt "$p" ] && p=$r; { echo "$p" > "$2"; } 2>/dev/null || exit 0; sleep 0.5
    done ) &
}

start fill; sleep 1.5
peak "$wpid" "$W/fill-peak"
"$B/warren-perf" --uri amqp://guest:guest@127.0.0.1:5761/%2f --queue backlog --durable --persistent \
  --confirm 256 --consumers 0 --count "$COUNT" --size 1024 --milestone 1000000 2>/dev/null |
  jq -c '{confirmed, confirm_rate, confirm_milestones_ms}'
echo "fill peak RSS: $(( $(cat "$W/fill-peak") / 1024 )) MiB; data: $(du -sm "$W/data" | cut -f1) MiB"
sleep 1
echo "Dirty at the kill: $(awk '/^Dirty:/{print int($2/1024)}' /proc/meminfo) MiB"
kill -9 "$wpid"; wait "$wpid" 2>/dev/null || true
t0=$(date +%s%N)
start restart
peak "$wpid" "$W/restart-peak"
until grep -q 'amqp listening' "$W/log-restart"; do sleep 0.05; done
echo "listening $(( ($(date +%s%N) - t0) / 1000000 )) ms after the restart"
"$B/warren-drain" --uri amqp://guest:guest@127.0.0.1:5761/%2f --queue backlog --count "$DRAIN" \
  --prefetch 100 --idle-timeout 60
echo "restarted node wrote: $(awk '/^wchar/{print int($2/1048576)}' "/proc/$wpid/io") MiB by syscalls;" \
  "peak RSS $(( $(cat "$W/restart-peak") / 1024 )) MiB"
