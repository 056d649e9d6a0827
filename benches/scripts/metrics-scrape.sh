#!/usr/bin/env bash
# Time of a Prometheus scrape and of the management API's queue list with
# many queues (issue 10's targets: /metrics and GET /api/queues each under
# 100 ms with 10,000 queues): one release node, QUEUES durable queues
# declared with pika (the test virtualenv's, target/pyvenv), then RUNS
# requests each of /metrics, /metrics/per-object, /api/queues and one page
# of it, timed with curl.
#
#   benches/scripts/metrics-scrape.sh [QUEUES] [RUNS]     (10000 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
QUEUES=${1:-10000}; RUNS=${2:-5}
B=${CARGO_TARGET_DIR:-$PWD/target}/release
PY=${PYTHON:-$PWD/target/pyvenv/bin/python}
W=$(mktemp -d /tmp/warren-scrape.XXXXXX)
"$B/warren" --data-dir "$W/data" --amqp-listen 127.0.0.1:5735 --cluster-listen 127.0.0.1:27735 \
  --prometheus-listen 127.0.0.1:15735 --http-listen 127.0.0.1:15736 > "$W/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$W"' EXIT
sleep 1.5
"$PY" - "$QUEUES" <<'PY'
import sys, pika
n = int(sys.argv[1])
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5735))
ch = conn.channel()
for i in range(n):
    ch.queue_declare(queue="scrape-%05d" % i, durable=True)
conn.close()
PY
for path in /metrics /metrics/per-object; do
  for _ in $(seq 1 "$RUNS"); do
    curl -s -o /dev/null -w "$path %{time_total}s %{size_download}B\n" "http://127.0.0.1:15735$path"
  done
done
for path in /api/queues "/api/queues/%2F?page=1&page_size=100"; do
  for _ in $(seq 1 "$RUNS"); do
    curl -s -u guest:guest -o /dev/null -w "$path %{http_code} %{time_total}s %{size_download}B\n" "http://127.0.0.1:15736$path"
  done
done
