#!/usr/bin/env bash
# `warren chaos` against the three-node Docker cluster of compose.yaml:
# what a StatefulSet's rolling update does (each node restarted in turn,
# the next only once /health/ready answers 200 again, as kubelet's probe
# would see it), a scale from 3 to 5 nodes and back, node 3's disk filling
# (compose.disk.yaml: its alarm blocks its publishers, then ENOSPC stops it
# with a non-zero exit; the others go on), then a seeded random
# schedule of kill -9, pause, cut from the cluster network, graceful
# restart and membership change (stopped, removed, started, added back),
# under confirmed load on every node. Every scenario must lose nothing (exit 1 otherwise). .ci/run runs
# it; results go to docs/failover.md.
#
#   deploy/docker/chaos.sh                  both scenarios, a random seed
#   SEED=42 FAULTS=10 deploy/docker/chaos.sh
#
# Environment: SEED, FAULTS (random schedule, default 6), RATE (messages/s
# per publisher, one publisher per node, default 300), SKIP_BUILD=1 (reuse
# the image warren:local), RELEASE=1 (image from a release build),
# SCENARIOS (default "rolling scale disk random"), CHAOS_PORT_BASE (default 5780: AMQP
# on BASE+N, HTTP on BASE+10000+N). Reports (text, JSON, HTML) and node logs
# go to target/chaos/<time>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
seed=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
faults=${FAULTS:-6}
rate=${RATE:-300}
scenarios=${SCENARIOS:-rolling scale disk random}
base=${CHAOS_PORT_BASE:-5780}
project=wchaos
out=$target/chaos/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"

export WARREN_RESTART=no WARREN_CLUSTER_SECRET=chaos-ci-secret WARREN_USER=warren WARREN_PASS=warren
for n in 1 2 3 4 5; do
  export "WARREN_AMQP_PORT_$n=$((base + n))" "WARREN_HTTP_PORT_$n=$((base + 10000 + n))"
done
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
compose+=(-f deploy/docker/compose.yaml -p "$project")

# --tolerate-reordering: a consumer's held deliveries go back without the
# redelivered flag (ADR 0026), so another consumer may see one after later
# messages of its publisher: reported, not failed (docs/divergences.md).
profile=debug
[ "${RELEASE:-0}" = 1 ] && profile=release
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ "$profile" = release ]; then deploy/docker/build-local-image.sh --release; else deploy/docker/build-local-image.sh; fi
fi
warren=$target/$profile/warren
[ -x "$warren" ] || { echo "no $warren: build it first (or unset SKIP_BUILD)"; exit 2; }

# Waits until nodes ${2:-1 2 3} answer /health/ready with 200 (at most $1 s).
wait_ready() {
  local limit=$1 n start=$SECONDS
  for n in ${2:-1 2 3}; do
    until curl -fs -o /dev/null "http://127.0.0.1:$((base + 10000 + n))/health/ready"; do
      if (( SECONDS - start > limit )); then echo "node $n not ready within ${limit}s"; return 1; fi
      sleep 0.5
    done
  done
}

save_logs() {
  local n id
  for n in 1 2 3 4 5; do
    id=$("${compose[@]}" ps -q "warren-$n" 2>/dev/null) || continue
    if [ -n "$id" ]; then docker logs "$id" > "$out/$1-warren-$n.log" 2>&1 || true; fi
  done
}

# The voters node 1 reports (GET /api/warren/members), as a sorted list.
voters() {
  curl -fs -u warren:warren "http://127.0.0.1:$((base + 10001))/api/warren/members" |
    python3 -c 'import json,sys; print(" ".join(str(m["node_id"]) for m in sorted(json.load(sys.stdin)["members"], key=lambda m: m["node_id"]) if m["role"] == "voter"))'
}

# Waits until node 1 reports the voters $2 (at most $1 s).
wait_voters() {
  local limit=$1 start=$SECONDS seen
  until seen=$(voters) && [ "$seen" = "$2" ]; do
    if (( SECONDS - start > limit )); then echo "voters: '${seen:-?}', wanted '$2' within ${limit}s"; return 1; fi
    sleep 0.5
  done
  echo "voters: $seen"
}

# A StatefulSet scaled 3 -> 5 -> 3 under the workload: nodes 4 and 5
# started (they join), then removed one at a time, highest ordinal first
# (`warren ctl remove-node`, then the container stopped), as the manifest's
# header says to shrink.
scale_3_5_3() {
  sleep 8
  echo "== scale: 3 -> 5"
  "${compose[@]}" --profile scale up -d warren-4 warren-5 2>&1 | grep -v -i 'deprecat' || true
  wait_ready 120 "4 5" && wait_voters 60 "1 2 3 4 5" || return 1
  sleep 8
  for n in 5 4; do
    echo "== scale: remove node $n"
    "${compose[@]}" exec -T warren-1 warren ctl --server warren-1.cluster:25672 remove-node "$n" || return 1
    "${compose[@]}" --profile scale stop -t 30 "warren-$n" 2>&1 | grep -v -i 'deprecat' || true
  done
  wait_voters 60 "1 2 3"
}

status=0
for scenario in $scenarios; do
  "${compose[@]}" --profile scale down -v >/dev/null 2>&1 || true
  up=("${compose[@]}")
  [ "$scenario" = disk ] && up+=(-f deploy/docker/compose.disk.yaml)
  "${up[@]}" up -d 2>&1 | grep -v -i 'deprecat' || true
  wait_ready 120 || { save_logs "$scenario"; "${compose[@]}" down -v >/dev/null 2>&1; exit 1; }
  nodes=()
  for n in 1 2 3; do
    nodes+=(--node "name=warren-$n,id=$n,container=$("${compose[@]}" ps -q "warren-$n"),amqp=amqp://warren:warren@127.0.0.1:$((base + n))/%2f,http=http://warren:warren@127.0.0.1:$((base + 10000 + n))")
  done
  scaler=
  warmup=5
  case $scenario in
    rolling) args=(--schedule rolling-restart --interval-secs 5) ;;
    disk)
      # Node 3's disk fills under 8 KiB messages: its disk alarm blocks its
      # publishers first, then ENOSPC stops it; the others go on.
      args=(--faults 0 --size 8192)
      warmup=40
      ;;
    scale)
      # The runner only loads and checks (--faults 0) while scale_3_5_3 runs.
      args=(--faults 0)
      warmup=75
      scale_3_5_3 > "$out/scale-steps.txt" 2>&1 &
      scaler=$!
      ;;
    random)
      args=(--schedule random --faults "$faults" --seed "$seed" --network cluster --hold-secs 4 --interval-secs 4
        --kinds kill,pause,partition,restart,member)
      ;;
    *) echo "unknown scenario $scenario"; exit 2 ;;
  esac
  echo "== chaos scenario $scenario: $(date -u +%FT%TZ), reports in $out"
  rc=0
  platform=docker
  [ "$scenario" = scale ] && platform=none
  "$warren" chaos --platform "$platform" "${nodes[@]}" "${args[@]}" --rate "$rate" \
    --warmup-secs "$warmup" --settle-secs 5 --tolerate-reordering --drain-secs 90 \
    --json "$out/$scenario.json" --html "$out/$scenario.html" 2>&1 | tee "$out/$scenario.txt" || rc=$?
  if [ "$scenario" = disk ]; then
    id3=$("${compose[@]}" ps -q warren-3)
    state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$id3")
    log3=$(docker logs "$id3" 2>&1)
    echo "== disk: node 3 is '$state' (status, exit code)"
    grep -q "disk alarm set" <<< "$log3" || { rc=1; echo "== disk: node 3 never set its disk alarm"; }
    case $state in
      "exited 0"|running*) rc=1; echo "== disk: node 3 did not exit non-zero on a full disk" ;;
    esac
    grep -q "fatal: the Raft node stopped" <<< "$log3" || { rc=1; echo "== disk: no clear fatal line in node 3's log"; }
  fi
  if [ -n "$scaler" ]; then
    wait "$scaler" || { rc=1; echo "== the scaling steps failed:"; }
    cat "$out/scale-steps.txt"
  fi
  save_logs "$scenario"
  "${compose[@]}" --profile scale down -v >/dev/null 2>&1 || true
  [ "$rc" = 0 ] || { status=1; echo "== chaos scenario $scenario FAILED (rc $rc; reports and node logs in $out)"; }
done
exit $status
