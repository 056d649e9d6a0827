#!/usr/bin/env bash
# Failover test across containers: a three-node cluster (compose.yaml) on
# private Docker networks under a load with publisher confirms and manual
# acks, through four faults: the leader disconnected from the cluster
# network and reconnected, a follower killed and started, the leader paused
# and unpaused. Checks lost = 0 (every confirmed id consumed), that the
# isolated node stops confirming within commit_timeout, that every node
# rejoins by itself, that all end at the same log/applied index and queue
# counts, and that no client of a healthy majority node is closed when the
# cut-off node comes back; prints duplicates and timings. The checks are in
# partition_test.py; results in docs/failover.md.
#
#   deploy/docker/partition-test.sh [RUNS]     default 1 run
#
# Needs docker and docker compose (v2 plugin or docker-compose v1), python3
# with venv (pika 1.3.2 is installed into target/pyvenv-deploy, from PyPI,
# on the first run). NOT part of CI: CI machines may have no docker.
# Environment: SKIP_BUILD=1 reuses the image warren:local; RELEASE=1 builds
# it from a release binary; PT_RATE publishes per second per publisher
# (default 100); PT_PORTS host ports (default 5772,5773,5774).
# Logs of every node are saved in target/partition-test/<time>-runN/.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-1}
target=${CARGO_TARGET_DIR:-target}
export PT_PROJECT=${PT_PROJECT:-wpartition}
export PT_PORTS=${PT_PORTS:-5772,5773,5774}
IFS=, read -r WARREN_AMQP_PORT_1 WARREN_AMQP_PORT_2 WARREN_AMQP_PORT_3 <<< "$PT_PORTS"
export WARREN_AMQP_PORT_1 WARREN_AMQP_PORT_2 WARREN_AMQP_PORT_3
export WARREN_RESTART=no WARREN_CLUSTER_SECRET=partition-test-secret WARREN_USER=warren WARREN_PASS=warren
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
compose+=(-f deploy/docker/compose.yaml -p "$PT_PROJECT")
export PT_COMPOSE="${compose[*]}"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ "${RELEASE:-0}" = 1 ]; then deploy/docker/build-local-image.sh --release; else deploy/docker/build-local-image.sh; fi
fi
venv=$target/pyvenv-deploy
if ! "$venv/bin/python" -c 'import pika' 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q pika==1.3.2
fi

status=0
for run in $(seq 1 "$runs"); do
  logs=$target/partition-test/$(date -u +%Y%m%dT%H%M%SZ)-run$run
  mkdir -p "$logs"
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  "${compose[@]}" up -d 2>&1 | grep -v -i 'deprecat' || true
  echo "== run $run/$runs: $(date -u +%FT%TZ), logs in $logs"
  rc=0
  "$venv/bin/python" -u deploy/docker/partition_test.py 2>&1 | tee "$logs/test.txt" || rc=$?
  for n in 1 2 3; do
    docker logs "$("${compose[@]}" ps -q "warren-$n")" > "$logs/warren-$n.log" 2>&1 || true
  done
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  [ "$rc" = 0 ] || { status=1; echo "== run $run FAILED (node logs in $logs)"; }
done
exit $status
