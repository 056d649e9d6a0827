#!/usr/bin/env bash
# Starts (or stops) a throwaway RabbitMQ node from Debian's rabbitmq-server
# package, on its own port and data folder, for side-by-side measurements.
#   benches/scripts/rabbitmq-node.sh start PORT DIR
#   benches/scripts/rabbitmq-node.sh stop  PORT DIR
#   benches/scripts/rabbitmq-node.sh ctl   PORT DIR ARGS...   (rabbitmqctl -n the node ARGS)
#   benches/scripts/rabbitmq-node.sh queues PORT DIR ARGS...  (rabbitmq-queues -n the node ARGS)
#   benches/scripts/rabbitmq-node.sh pid   PORT DIR           (the node's beam.smp pid)
# The node is named benchPORT@localhost, its Erlang distribution port is
# PORT + 20000. Nodes that will form a cluster need one Erlang cookie: set
# RABBITMQ_BENCH_COOKIE to the same value for each (written to DIR/.erlang.cookie,
# DIR being the node's HOME). RABBITMQ_BENCH_MANAGEMENT=1 enables the
# management plugin on PORT + 10000.
set -euo pipefail
cmd=${1:?start|stop|ctl|queues|pid}; port=${2:?port}; dir=${3:?dir}; shift 3
if ! command -v rabbitmq-server >/dev/null || [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export HOME="$dir" RABBITMQ_NODE_PORT="$port" RABBITMQ_NODENAME="bench$port@localhost" \
  RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_DIST_PORT=$((port + 20000)) \
  RABBITMQ_FEATURE_FLAGS_FILE="$dir/feature_flags" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
  RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins" RABBITMQ_PID_FILE="$dir/pid" RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
# Debian's /usr/sbin wrappers switch to the rabbitmq user; run the real
# scripts as the caller so the node uses only $dir.
bin=/usr/lib/rabbitmq/bin
case "$cmd" in
  start)
    echo "loopback_users = none" > "$dir/rabbitmq.conf"
    echo "[]." > "$dir/enabled_plugins"
    # RABBITMQ_BENCH_MANAGEMENT=1: the management API on PORT + 10000 (warren
    # chaos reads a quorum queue's leader from it).
    if [ "${RABBITMQ_BENCH_MANAGEMENT:-0}" = 1 ]; then
      echo "management.tcp.port = $((port + 10000))" >> "$dir/rabbitmq.conf"
      echo "[rabbitmq_management]." > "$dir/enabled_plugins"
    fi
    if [ -n "${RABBITMQ_BENCH_COOKIE:-}" ]; then
      rm -f "$dir/.erlang.cookie"
      printf '%s' "$RABBITMQ_BENCH_COOKIE" > "$dir/.erlang.cookie"
      chmod 400 "$dir/.erlang.cookie"
    fi
    (setsid "$bin/rabbitmq-server" > "$dir/server.out" 2>&1 &)
    for _ in $(seq 1 1200); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "rabbitmq up on $port"; exit 0
      fi
      sleep 0.1
    done
    tail -20 "$dir/server.out"; exit 1 ;;
  stop) "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true ;;
  ctl) exec "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" "$@" ;;
  queues) exec "$bin/rabbitmq-queues" -q -n "$RABBITMQ_NODENAME" "$@" ;;
  pid) cat "$dir/pid" ;;
  *) echo "usage: $0 start|stop|ctl|queues|pid PORT DIR [ARGS]" >&2; exit 2 ;;
esac
