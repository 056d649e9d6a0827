#!/usr/bin/env bash
# The cluster figures of issue 3, measured on this machine (release build,
# three nodes on loopback):
#
#   1. kill -9 of the leader under steady load (persistent 1 KiB messages,
#      confirms, manual acks; producers and consumers on the two followers):
#      the longest time without any confirm (= from the kill to the first
#      confirm on a survivor, give or take one confirm interval), confirmed,
#      nacked, lost, duplicates. Then the killed node is restarted.
#   2. catch-up of a follower that missed MISSED messages: the follower is
#      killed, MISSED persistent 1 KiB messages are published with confirms
#      through the leader (no consumer), the follower is started again; time
#      from its start to "amqp listening" (a node serves clients once caught
#      up) and to its applied index reaching the leader's.
#
#   benches/scripts/cluster-failover.sh
#
# Environment: MISSED (100000), RATE per producer in part 1 (1000 msg/s,
# 2 producers), KILL_AFTER seconds of load before the kill (8), DURATION of
# the load (20), SKIP_BUILD=1, WORK (scratch folder). One JSON line per part
# on stdout; node logs in $WORK. Not part of CI (it is a measurement).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
MISSED=${MISSED:-100000}
RATE=${RATE:-1000}
KILL_AFTER=${KILL_AFTER:-8}
DURATION=${DURATION:-20}
bin=${CARGO_TARGET_DIR:-$root/target}/release
WORK=${WORK:-$(mktemp -d /tmp/warren-failover.XXXXXX)}
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p warren-server --bin warren
  cargo build --release -q -p warren-bench --bin warren-perf
fi
log() { echo "[$(date +%T.%3N)] $*" >&2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$1" "$(now)"; }

amqp_port() { echo $((5780 + $1)); }
cluster_port() { echo $((27780 + $1)); }
uri() { echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$1")/%2f"; }
declare -A pids
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# start_node ID [ARGS...]: starts node ID (keeps its data folder) and waits
# for "amqp listening"; sets $took to the seconds that took. (Not to be run
# in a subshell: $pids must see the new process, for the cleanup.)
start_node() {
  local id=$1; shift
  local dir=$WORK/node$id t0
  mkdir -p "$dir"
  if [ -f "$dir/log" ]; then mv "$dir/log" "$dir/log.$(date +%s%N)"; fi
  t0=$(now)
  RUST_LOG=warn "$bin/warren" --node-id "$id" --data-dir "$dir/data" \
    --amqp-listen "127.0.0.1:$(amqp_port "$id")" --cluster-listen "127.0.0.1:$(cluster_port "$id")" \
    --http-listen "127.0.0.1:$(($(cluster_port "$id") - 10000))" "$@" > "$dir/log" 2>&1 &
  pids[$id]=$!
  for _ in $(seq 1 30000); do
    if grep -q "amqp listening on" "$dir/log" 2>/dev/null; then took=$(since "$t0"); return; fi
    kill -0 "${pids[$id]}" 2>/dev/null || { tail -20 "$dir/log" >&2; return 1; }
    sleep 0.01
  done
  echo "node $id did not start" >&2; return 1
}

status() { "$bin/warren" ctl --server "127.0.0.1:$(cluster_port "$1")" cluster-status 2>/dev/null; }
leader() { status "$1" | awk '/^leader:/{print $2}'; }
# applied ID ASK: node ID's applied index as seen through node ASK
applied() { status "$2" | awk -v id="$1" '$1 == id && $NF == "yes" {print $7}'; }
log_index() { status "$2" | awk -v id="$1" '$1 == id && $NF == "yes" {print $6}'; }

log "work folder $WORK; $(uptime)"
start_node 1
start_node 2 --join "127.0.0.1:$(cluster_port 1)"
start_node 3 --join "127.0.0.1:$(cluster_port 1)"
for _ in $(seq 1 100); do [ "$(status 1 | grep -c ' voter ')" = 3 ] && break; sleep 0.1; done
status 1 >&2

# ---- 1. kill -9 of the leader under load ----------------------------------
L=$(leader 1)
followers=()
for id in 1 2 3; do [ "$id" != "$L" ] && followers+=("$id"); done
log "part 1: leader $L; clients on followers ${followers[*]}; kill -9 of $L after ${KILL_AFTER}s"
"$bin/warren-perf" --uri "$(uri "${followers[0]}"),$(uri "${followers[1]}")" --queue failover \
  --durable --persistent --confirm 64 --producers 2 --consumers 2 --prefetch 100 \
  --rate "$RATE" --count 100000000 --duration "$DURATION" --drain-timeout 60 \
  --label "kill-leader" > "$WORK/kill-leader.json" 2> "$WORK/kill-leader.txt" &
perf=$!
sleep "$KILL_AFTER"
kill -9 "${pids[$L]}"
killed_at=$(now)
log "killed node $L"
new=""
for _ in $(seq 1 100); do
  new=$(leader "${followers[0]}" || true)
  [ -n "$new" ] && [ "$new" != "$L" ] && [ "$new" != unknown ] && break
  sleep 0.05
done
log "new leader $new seen $(since "$killed_at") s after the kill (via ctl, polling)"
wait "$perf"
cat "$WORK/kill-leader.txt" >&2
start_node "$L"; restart_s=$took
log "node $L restarted: serving after ${restart_s}s"
jq -c --arg killed "$L" --arg new "$new" --argjson restart "$restart_s" \
  '{part: "kill-leader", killed: $killed, new_leader: $new, max_confirm_gap_ms, confirmed, nacked, unconfirmed,
    lost, duplicates, confirm_rate, consume_rate, latency_us, restart_to_serving_s: $restart}' "$WORK/kill-leader.json"

# ---- 2. catch-up of a follower that missed MISSED messages ----------------
L=$(leader 1)
for id in 1 2 3; do [ "$id" != "$L" ] && F=$id; done
log "part 2: killing follower $F, publishing $MISSED messages through leader $L"
kill -9 "${pids[$F]}"
"$bin/warren-perf" --uri "$(uri "$L")" --queue catchup --durable --persistent --confirm 256 \
  --producers 1 --consumers 0 --count "$MISSED" --label fill > "$WORK/fill.json" 2> "$WORK/fill.txt"
target=$(log_index "$L" "$L")
log "leader's log index $target; starting node $F"
t0=$(now)
start_node "$F"; serving_s=$took
until [ -n "$(applied "$F" "$L")" ] && [ "$(applied "$F" "$L")" -ge "$target" ]; do sleep 0.02; done
caught_s=$(since "$t0")
snapshot=$(grep -c -i "snapshot" "$WORK/node$F/log" || true)
log "node $F: serving after ${serving_s}s, applied ≥ $target after ${caught_s}s ($snapshot log lines mention a snapshot)"
ready=$(status "$F" >/dev/null; "$bin/warren" ctl --server "127.0.0.1:$(cluster_port "$F")" list-queues | awk '$2 == "catchup" {print $6}')
jq -c --arg f "$F" --argjson missed "$MISSED" --argjson serving "$serving_s" --argjson caught "$caught_s" \
  --argjson target "$target" --arg ready "$ready" \
  '{part: "catch-up", node: $f, missed: $missed, fill_confirm_rate: .confirm_rate, leader_log_index: $target,
    start_to_serving_s: $serving, start_to_applied_s: $caught, ready_on_restarted_replica: $ready}' "$WORK/fill.json"
log "done; $(uptime)"
