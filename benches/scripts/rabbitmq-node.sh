#!/usr/bin/env bash
# Starts (or stops) a throwaway RabbitMQ node from Debian's rabbitmq-server
# package, on its own port and data folder, for side-by-side measurements.
#   benches/scripts/rabbitmq-node.sh start PORT DIR
#   benches/scripts/rabbitmq-node.sh stop  PORT DIR
set -euo pipefail
cmd=${1:?start|stop}; port=${2:?port}; dir=${3:?dir}
if ! command -v rabbitmq-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
mkdir -p "$dir"
export HOME="$dir" RABBITMQ_NODE_PORT="$port" RABBITMQ_NODENAME="bench$port@localhost" \
  RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_DIST_PORT=$((port + 20000)) \
  RABBITMQ_FEATURE_FLAGS_FILE="$dir/feature_flags" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
  RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins" RABBITMQ_PID_FILE="$dir/pid" RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
echo "loopback_users = none" > "$dir/rabbitmq.conf"
echo "[]." > "$dir/enabled_plugins"
# Debian's /usr/sbin wrappers switch to the rabbitmq user; run the real
# scripts as the caller so the node uses only $dir.
bin=/usr/lib/rabbitmq/bin
case "$cmd" in
  start)
    (setsid "$bin/rabbitmq-server" > "$dir/server.out" 2>&1 &)
    for _ in $(seq 1 600); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "rabbitmq up on $port"; exit 0
      fi
      sleep 0.1
    done
    tail -20 "$dir/server.out"; exit 1 ;;
  stop) "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true ;;
esac
