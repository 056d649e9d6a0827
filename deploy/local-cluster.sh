#!/usr/bin/env bash
# A three-node Warren cluster on this machine, one command per node:
#   node N: AMQP 127.0.0.1:567(1+N), cluster gRPC 127.0.0.1:2567(1+N),
#   data in $WARREN_LOCAL_DIR/nodeN (default ./warren-local), log in nodeN.log.
# Node 1 bootstraps; nodes 2 and 3 join through node 1.
#
#   deploy/local-cluster.sh start     build, start the three nodes, wait until each serves AMQP
#   deploy/local-cluster.sh status    warren ctl cluster-status
#   deploy/local-cluster.sh stop      stop the nodes this script started (pid files)
#
# The equivalent commands by hand:
#   warren --node-id 1 --data-dir d1 --amqp-listen 127.0.0.1:5672 --cluster-listen 127.0.0.1:25672 --http-listen 127.0.0.1:15672
#   warren --node-id 2 --data-dir d2 --amqp-listen 127.0.0.1:5673 --cluster-listen 127.0.0.1:25673 --http-listen 127.0.0.1:15673 --join 127.0.0.1:25672
#   warren --node-id 3 --data-dir d3 --amqp-listen 127.0.0.1:5674 --cluster-listen 127.0.0.1:25674 --http-listen 127.0.0.1:15674 --join 127.0.0.1:25672
# Set WARREN_CLUSTER_SECRET (the same on every node) for anything but a laptop.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${WARREN_LOCAL_DIR:-./warren-local}
profile=${WARREN_PROFILE:-release}
bin=target/$profile/warren

start_node() {
  local n=$1; shift
  mkdir -p "$dir"
  "$bin" --node-id "$n" --data-dir "$dir/node$n" \
    --amqp-listen "127.0.0.1:$((5671 + n))" --cluster-listen "127.0.0.1:$((25671 + n))" \
    --http-listen "127.0.0.1:$((15671 + n))" "$@" > "$dir/node$n.log" 2>&1 &
  echo $! > "$dir/node$n.pid"
  for _ in $(seq 1 600); do
    grep -q "warren: amqp listening on" "$dir/node$n.log" && { echo "node $n: amqp://guest:guest@127.0.0.1:$((5671 + n))/%2f"; return; }
    kill -0 "$(cat "$dir/node$n.pid")" 2>/dev/null || { echo "node $n exited:"; tail -20 "$dir/node$n.log"; exit 1; }
    sleep 0.1
  done
  echo "node $n did not start in time"; exit 1
}

case ${1:-start} in
  start)
    if [ "$profile" = release ]; then cargo build --release -q -p warren-server; else cargo build -q -p warren-server; fi
    start_node 1
    start_node 2 --join 127.0.0.1:25672
    start_node 3 --join 127.0.0.1:25672
    ;;
  status)
    "$bin" ctl --server 127.0.0.1:25672 cluster-status
    ;;
  stop)
    for n in 1 2 3; do
      [ -f "$dir/node$n.pid" ] && { kill "$(cat "$dir/node$n.pid")" 2>/dev/null || true; rm -f "$dir/node$n.pid"; }
    done
    ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
