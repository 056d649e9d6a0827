#!/usr/bin/env bash
# AMQP throughput with and without observers (issue 10's target: with the
# web UI open and Prometheus scraping every second, throughput stays within
# 5 % of the throughput without them). One release node; the same
# warren-perf case run RUNS times each way, alternating, in one run:
#   plain     no HTTP client at all;
#   observed  a Prometheus scrape of /metrics every second, and what the
#             UI's queue list does every 5 s (GET /api/overview and
#             /api/queues), plus /api/vhosts, all with curl.
#
#   benches/scripts/observed-throughput.sh [COUNT] [RUNS]    (200000 3)
#
# WARREN_BIN_DIR=dir runs the warren and warren-perf binaries in dir (an
# A/B of two builds: run it once per build, alternating).
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-200000}; RUNS=${2:-3}
B=${WARREN_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/release}
W=$(mktemp -d /tmp/warren-observed.XXXXXX)
RUST_LOG=warn "$B/warren" --data-dir "$W/data" --amqp-listen 127.0.0.1:5745 --cluster-listen 127.0.0.1:27745 \
  --prometheus-listen 127.0.0.1:15745 --http-listen 127.0.0.1:15746 > "$W/log" 2>&1 &
pid=$!
observer=
trap 'kill $pid $observer 2>/dev/null; rm -rf "$W"' EXIT
until grep -q "http listening" "$W/log"; do sleep 0.1; done

observe() {
  local i=0
  while true; do
    curl -s -o /dev/null "http://127.0.0.1:15745/metrics"
    if [ $((i % 5)) -eq 0 ]; then
      for path in /api/overview /api/queues /api/vhosts; do
        curl -s -u guest:guest -o /dev/null "http://127.0.0.1:15746$path"
      done
    fi
    i=$((i + 1))
    sleep 1
  done
}

for run in $(seq 1 "$RUNS"); do
  for mode in plain observed; do
    if [ "$mode" = observed ]; then observe & observer=$!; fi
    "$B/warren-perf" --uri "amqp://guest:guest@127.0.0.1:5745/%2f" --queue "q-$mode-$run" \
      --durable --persistent --confirm 256 --prefetch 100 --count "$COUNT" --label "$mode/run$run" 2>/dev/null
    if [ -n "$observer" ]; then kill "$observer" 2>/dev/null; wait "$observer" 2>/dev/null || true; observer=; fi
  done
done
