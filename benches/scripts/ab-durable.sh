#!/usr/bin/env bash
# A/B of compare.sh cases 3 and 4 (durable, confirms, manual ack, prefetch
# 100, 20 s cap) between two Warren builds, with RabbitMQ in the same run:
#
#   benches/scripts/ab-durable.sh WARREN_A WARREN_B [LABEL_A LABEL_B]
#
# Two runs; the builds alternate which goes first, each case on a fresh
# node; RabbitMQ (rabbitmq-node.sh, port 5991) after them. CLIENT=lapin
# (default) drives them with warren-perf, CLIENT=amqprs with amqprs-perf
# (a third of lapin's CPU per message: more of the two cores left to the
# broker). JSON lines in
# $WORK/results.jsonl (default WORK=/tmp/ab), a table at the end.
set -u
cd "$(dirname "$0")/../.."
bin_a=${1:?WARREN_A}; bin_b=${2:?WARREN_B}; label_a=${3:-base}; label_b=${4:-credit}
CLIENT=${CLIENT:-lapin}
case $CLIENT in
  lapin) client() { local port=$1; shift; $PWD/target/release/warren-perf --uri amqp://guest:guest@127.0.0.1:$port/%2f "$@"; } ;;
  amqprs) client() { local port=$1; shift; $PWD/target/release/amqprs-perf --port $port --manual-ack "$@"; } ;;
  *) echo "CLIENT is lapin or amqprs" >&2; exit 2 ;;
esac
rmq=$PWD/benches/scripts/rabbitmq-node.sh
WORK=${WORK:-/tmp/ab}
mkdir -p "$WORK"
out=$WORK/results.jsonl
: > $out
declare -A bins=([$label_a]=$bin_a [$label_b]=$bin_b)
$rmq start 5991 $WORK/rmq >/dev/null 2>&1
run_warren() { # BIN LABEL ARGS...
  local bin=$1 label=$2; shift 2
  local dir; dir=$(mktemp -d $WORK/w.XXXX)
  RUST_LOG=warn $bin --data-dir $dir/data --amqp-listen 127.0.0.1:5901 --cluster-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 > $dir/log 2>&1 &
  local pid=$!
  for i in $(seq 1 300); do grep -q "amqp listening" $dir/log && break; sleep 0.1; done
  client 5901 --label $label "$@" 2>/dev/null | tail -1 >> $out
  kill $pid; wait $pid 2>/dev/null; rm -rf $dir
}
c3=(--durable --persistent --confirm 256 --prefetch 100 --count 1000000 --duration 20 --drain-timeout 30)
c4=(--durable --persistent --confirm 256 --prefetch 100 --producers 4 --consumers 4 --count 500000 --duration 20 --drain-timeout 30)
for run in 1 2; do
  if [ $run = 1 ]; then order="$label_a $label_b"; else order="$label_b $label_a"; fi
  for b in $order; do run_warren "${bins[$b]}" $b/c3/r$run --queue q3 "${c3[@]}"; done
  client 5991 --label rabbitmq/c3/r$run --queue q3r$run "${c3[@]}" 2>/dev/null | tail -1 >> $out
  for b in $order; do run_warren "${bins[$b]}" $b/c4/r$run --queue q4 "${c4[@]}"; done
  client 5991 --label rabbitmq/c4/r$run --queue q4r$run "${c4[@]}" 2>/dev/null | tail -1 >> $out
done
$rmq stop 5991 $WORK/rmq >/dev/null 2>&1
jq -r '[.label, (.confirm_rate|floor), (.consume_rate|floor), (.consume_rate/.confirm_rate*100|floor), .lost, .duplicates, .ready_at_publish_end] | @tsv' $out
