#!/usr/bin/env bash
# `warren chaos` against three local Warren nodes (release build) and then
# three local RabbitMQ 3.10.8 nodes (Debian's package; a quorum queue), with
# the same seeded schedule: kill -9 of the leader, the node started again
# after --hold-secs, the next fault once it is ready. Prints each run's
# summary and copies the JSON reports to docs/bench-results/. docs/failover.md
# has the results.
#
#   benches/scripts/chaos-compare.sh [FAULTS]       default 8 leader kills
#
# Environment: SEED (default 7), RATE (messages/s per publisher, one per
# node; default 300), SYSTEMS (default "warren rabbitmq"), KINDS (default kill),
# WARREN_TOML (a configuration file's text for the Warren nodes, e.g.
# 'raft_election_timeout_max_ms = 300'), LABEL (added to the JSON names).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
faults=${1:-8}
seed=${SEED:-7}
rate=${RATE:-300}
kinds=${KINDS:-kill}
systems=${SYSTEMS:-warren rabbitmq}
stamp=$(date -u +%Y-%m-%dT%H%M)
results=$root/docs/bench-results
cargo build --release -q -p warren-server --bin warren
warren=$root/target/release/warren
work=$(mktemp -d /tmp/chaos-compare.XXXXXX)
echo "work dir: $work"
common=(--platform local --kinds "$kinds" --faults "$faults" --seed "$seed" --leader-share 1
  --hold-secs 3 --interval-secs 4 --warmup-secs 5 --settle-secs 5 --rate "$rate")

run_warren() {
  local n nodes=() cmd
  for n in 1 2 3; do
    cmd="$warren --node-id $n --data-dir $work/w$n --amqp-listen 127.0.0.1:$((5900 + n)) --cluster-listen 127.0.0.1:$((25900 + n)) --http-listen 127.0.0.1:$((15900 + n))"
    if [ -n "${WARREN_TOML:-}" ]; then printf '%s\n' "$WARREN_TOML" > "$work/warren.toml"; cmd="$cmd --config $work/warren.toml"; fi
    [ "$n" = 1 ] || cmd="$cmd --join 127.0.0.1:25901"
    sh -c "exec $cmd" > "$work/w$n.pid.out" 2>&1 &
    echo $! > "$work/w$n.pid"
    until curl -fs -o /dev/null "http://127.0.0.1:$((15900 + n))/health/ready"; do sleep 0.2; done
    nodes+=(--node "name=warren-$n,id=$n,amqp=amqp://guest:guest@127.0.0.1:$((5900 + n))/%2f,http=http://guest:guest@127.0.0.1:$((15900 + n)),pid-file=$work/w$n.pid,start=$cmd")
  done
  "$warren" chaos "${nodes[@]}" "${common[@]}" --json "$work/warren.json" --html "$work/warren.html" || true
  for n in 1 2 3; do kill "$(cat "$work/w$n.pid")" 2>/dev/null || true; done
  cp "$work/warren.json" "$results/$stamp-chaos-warren${LABEL:+-$LABEL}.json"
}

run_rabbitmq() {
  local n port nodes=() node_script=$root/benches/scripts/rabbitmq-node.sh
  export RABBITMQ_BENCH_COOKIE=chaoscompare RABBITMQ_BENCH_MANAGEMENT=1
  for n in 1 2 3; do
    port=$((5910 + n))
    "$node_script" start "$port" "$work/r$n" > /dev/null
    if [ "$n" != 1 ]; then
      "$node_script" ctl "$port" "$work/r$n" stop_app
      "$node_script" ctl "$port" "$work/r$n" join_cluster bench5911@localhost
      "$node_script" ctl "$port" "$work/r$n" start_app
    fi
    until curl -fs -o /dev/null -u guest:guest "http://127.0.0.1:$((port + 10000))/api/overview"; do sleep 0.5; done
    nodes+=(--node "name=rabbit-$n,id=bench$port@localhost,amqp=amqp://guest:guest@127.0.0.1:$port/%2f,http=http://guest:guest@127.0.0.1:$((port + 10000)),pid-file=$work/r$n/pid,start=$node_script start $port $work/r$n")
  done
  "$warren" chaos "${nodes[@]}" "${common[@]}" --json "$work/rabbitmq.json" --html "$work/rabbitmq.html" || true
  for n in 1 2 3; do "$node_script" stop $((5910 + n)) "$work/r$n" || true; done
  cp "$work/rabbitmq.json" "$results/$stamp-chaos-rabbitmq${LABEL:+-$LABEL}.json"
}

for system in $systems; do
  echo "== $system: $(date -u +%FT%TZ)"
  "run_$system"
done
echo "reports: $work/*.html; JSON in $results/$stamp-chaos-*.json"
