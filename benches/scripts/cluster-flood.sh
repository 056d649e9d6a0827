#!/usr/bin/env bash
# Issue 13's flood target, measured with the client apart from the
# attacker: one release node and one AMQP publisher (1 KiB persistent,
# confirms, one in flight) pinned together to CPU 0, and 30 s later for
# 20 s an unauthenticated flood of the cluster port (SENDERS connections
# sending AppendEntries calls of PAYLOAD_MIB without the secret, plus 1,000
# idle connections) from a second process pinned to CPU 1. The publisher's
# instance prints its confirm rate before (quiet) and during (flood) the
# attack; the attacker's prints the node's RSS and CPU during it. Run
# CONTROL=1 for the same timeline without the attack.
#
#   benches/scripts/cluster-flood.sh [PAYLOAD_MIB] [SENDERS]   (64 32)
#
# Needs the release binaries (warren, cluster-flood) and taskset. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUST_BACKTRACE=0
PAYLOAD=${1:-64}; SENDERS=${2:-32}
B=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/warren-flood.XXXXXX)
wpid=""
trap '[ -n "$wpid" ] && kill "$wpid" 2>/dev/null; rm -rf "$W"' EXIT
taskset -c 0 "$B/warren" --data-dir "$W/data" --amqp-listen 127.0.0.1:5810 \
  --cluster-listen 127.0.0.1:25810 --cluster-secret "flood-test-secret" \
  --http-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 > "$W/log" 2>&1 &
wpid=$!
for _ in $(seq 100); do grep -q "amqp listening" "$W/log" && break; sleep 0.1; done
common=(--pid "$wpid" --cluster 127.0.0.1:25810 --amqp amqp://guest:guest@127.0.0.1:5810/%2f)
taskset -c 0 "$B/cluster-flood" "${common[@]}" --quiet-secs 30 --flood-secs 20 \
  --senders 0 --idle-connections 0 > "$W/publisher" &
ppid=$!
sleep 30
if [ "${CONTROL:-0}" = 1 ]; then
  echo "control: no attack"
else
  taskset -c 1 "$B/cluster-flood" "${common[@]}" --no-publisher --quiet-secs 0 --flood-secs 20 \
    --senders "$SENDERS" --payload-mib "$PAYLOAD" --idle-connections 1000 | sed 's/^/attacker: /'
fi
wait "$ppid"
sed 's/^/publisher: /' "$W/publisher"
