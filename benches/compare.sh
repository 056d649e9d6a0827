#!/usr/bin/env bash
# Warren vs RabbitMQ, the same cases against each, in one run.
#
#   benches/compare.sh [quick|full]
#
# Starts RabbitMQ (Debian's rabbitmq-server, installed if missing; every node
# on its own ports and data folder) and Warren (release build), 1 node and
# 3 nodes, and runs the cases of issue 4 against each broker, alternating
# which goes first, RUNS times. Every case appends one JSON line per broker
# and run to $RESULTS (the load tool's line plus: broker, case, run, load
# average, the CPU the broker and every other process used meanwhile,
# broker RSS). At the end it prints a markdown table: each run's value and
# the ratio Warren / RabbitMQ per case.
#
# Phases: A = 1 node (cases 1-4, 8), B = 3 nodes (5-7), C = start and
# restart of a fresh node (9, 10).
#
# Environment (defaults: quick / full):
#   COUNT          messages per case before the duration cap (20000 / 1000000)
#   DURATION       seconds a case may publish (5 / 30)
#   RESTART_COUNT  1 KiB messages queued before the restart of case 10 (20000 / 300000)
#   RATE           fixed publish rate of case 7, msg/s (5000)
#   RUNS           runs of every case (2)
#   TRANSIENT_CLIENT  amqprs (default: amqprs-perf, the cheaper client) or lapin, for cases 1-2
#   DURABLE_CLIENT    amqprs (default) or lapin (warren-perf), for cases 3-4
#   REPL_CLIENT       amqprs (default) or lapin (warren-perf), for cases 5-6
#                     (case 7, a fixed rate, is warren-perf's: amqprs-perf has no --rate)
#   CASES          which phases to run (default "A B C")
#   CARGO_TARGET_DIR  where the release binaries are built (default target/)
#   SKIP_BUILD=1   use the binaries already built
#   WORK           scratch folder (default a new /tmp/warren-compare.*)
#   RESULTS        JSON lines file (default $WORK/results.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-${MODE:-quick}}
case $mode in
  quick) COUNT=${COUNT:-20000}; DURATION=${DURATION:-5}; RESTART_COUNT=${RESTART_COUNT:-20000}; DRAIN=${DRAIN:-15} ;;
  full) COUNT=${COUNT:-1000000}; DURATION=${DURATION:-30}; RESTART_COUNT=${RESTART_COUNT:-300000}; DRAIN=${DRAIN:-60} ;;
  *) echo "usage: $0 [quick|full]" >&2; exit 2 ;;
esac
RATE=${RATE:-5000}
RUNS=${RUNS:-2}
TRANSIENT_CLIENT=${TRANSIENT_CLIENT:-amqprs}
DURABLE_CLIENT=${DURABLE_CLIENT:-amqprs}
REPL_CLIENT=${REPL_CLIENT:-amqprs}
CASES=${CASES:-A B C}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=$target_dir/release
WORK=${WORK:-$(mktemp -d /tmp/warren-compare.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=${RESULTS:-$WORK/results.jsonl}
rmq=$root/benches/scripts/rabbitmq-node.sh
export RABBITMQ_BENCH_COOKIE=${RABBITMQ_BENCH_COOKIE:-WARRENBENCHCOOKIE}

for tool in jq python3; do
  command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool >/dev/null; }
done
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries in $target_dir ..." >&2
  cargo build --release -q -p warren-server --bin warren
  cargo build --release -q -p warren-bench --bins
fi
: > "$RESULTS"
log() { echo "[$(date +%T)] $*" >&2; }
log "mode $mode: COUNT=$COUNT DURATION=$DURATION RESTART_COUNT=$RESTART_COUNT RATE=$RATE RUNS=$RUNS; results in $RESULTS"
log "before: $(uptime)"

# ---- processes ------------------------------------------------------------
started_warren=()     # pids of every Warren node this script started
started_rmq=()        # "port dir" of every RabbitMQ node this script started
cleanup() {
  for pid in "${started_warren[@]}"; do kill "$pid" 2>/dev/null || true; done
  for node in "${started_rmq[@]}"; do
    # shellcheck disable=SC2086
    "$rmq" stop $node || true
  done
}
trap cleanup EXIT

# start_warren ID NAME AMQP_PORT CLUSTER_PORT [--join ADDR]; sets $pid
start_warren() {
  local id=$1 name=$2 amqp=$3 cluster=$4; shift 4
  local dir=$WORK/warren-$name
  mkdir -p "$dir"
  if [ -f "$dir/log" ]; then mv "$dir/log" "$dir/log.$(date +%s%N)"; fi
  RUST_LOG=warn "$bin/warren" --node-id "$id" --data-dir "$dir/data" --amqp-listen "127.0.0.1:$amqp" \
    --cluster-listen "127.0.0.1:$cluster" --http-listen "127.0.0.1:$((cluster - 10000))" "$@" \
    >> "$dir/log" 2>&1 &
  pid=$!
  started_warren+=("$pid")
  for _ in $(seq 1 3000); do
    grep -q "amqp listening on" "$dir/log" 2>/dev/null && return
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/log" >&2; return 1; }
    sleep 0.01
  done
  echo "warren $name did not start" >&2; return 1
}

stop_pid() { # SIGTERM, then SIGKILL after 30 s
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

start_rmq() { # PORT; sets $pid (beam.smp)
  local port=$1
  "$rmq" start "$port" "$WORK/rmq-$port" >/dev/null
  started_rmq+=("$port $WORK/rmq-$port")
  pid=$("$rmq" pid "$port" "$WORK/rmq-$port")
}

stop_rmq() { # PORT PID
  "$rmq" stop "$1" "$WORK/rmq-$1" || true
  for _ in $(seq 1 300); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$2" 2>/dev/null || true
}

uri() { echo "amqp://guest:guest@127.0.0.1:$1/%2f"; }

# ---- measuring ------------------------------------------------------------
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
pid_ticks() { # sum of utime+stime of the given pids
  local t=0 pid v
  for pid in "$@"; do
    v=$(awk '{sub(/^.*\) /,""); print $12+$13}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo $t
}
rss_kib() { # sum of VmRSS of the given pids
  local t=0 pid v
  for pid in "$@"; do
    v=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    t=$((t + ${v:-0}))
  done
  echo $t
}

# measure BROKER CASE RUN "PIDS" TOOL ARGS... : runs the load tool and
# appends its JSON line, with the noise figures, to $RESULTS.
measure() {
  local broker=$1 case=$2 run=$3 pids=$4; shift 4
  local load t0 b0 p0 t1 b1 p1 line peak=0 r
  load=$(cut -d' ' -f1 /proc/loadavg)
  # shellcheck disable=SC2086
  t0=$(date +%s.%N); b0=$(busy_ticks); p0=$(pid_ticks $pids)
  "$@" --label "$broker/$case/run$run" > "$WORK/tool.out" 2> "$WORK/tool.err" &
  local tool=$!
  while kill -0 $tool 2>/dev/null; do
    # shellcheck disable=SC2086
    r=$(rss_kib $pids); [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.2
  done
  wait $tool || { log "load tool failed ($broker $case run $run):"; cat "$WORK/tool.err" >&2; }
  # shellcheck disable=SC2086
  t1=$(date +%s.%N); b1=$(busy_ticks); p1=$(pid_ticks $pids)
  line=$(tail -1 "$WORK/tool.out")
  [ -n "$line" ] || line='{}'
  echo "$line" | jq -c --arg broker "$broker" --arg case "$case" --argjson run "$run" --argjson load "$load" \
    --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')" --argjson busy "$((b1 - b0))" --argjson brk "$((p1 - p0))" \
    --argjson peak "$peak" '. + {broker: $broker, case: $case, run: $run, load1: $load, wall_s: $wall,
      broker_cpu_s: ($brk / 100),
      broker_cpu_us_per_msg: (if (.consumed // 0) > 0 then $brk * 10000 / ([.published, .consumed] | max) else null end),
      others_cpu_pct: ((($busy - $brk) / 100 - ((.cpu_us // 0) / 1e6)) / $wall * 100 | if . < 0 then 0 else . end),
      broker_rss_peak_kib: $peak}' >> "$RESULTS"
  tail -1 "$RESULTS" | jq -r '"  \(.broker) \(.case) run \(.run): publish \(.publish_rate // 0 | floor)/s confirm \(.confirm_rate // 0 | floor)/s consume \(.consume_rate // 0 | floor)/s p99 \((.latency_us.p99 // 0) / 1000) ms lost \(.lost) backlog \(.ready_at_publish_end) others \(.others_cpu_pct | floor)% load \(.load1)"' >&2
}

record() { # BROKER CASE RUN JSON-OBJECT: appends a non-load line (memory, times)
  echo "$4" | jq -c --arg broker "$1" --arg case "$2" --argjson run "$3" \
    --argjson load "$(cut -d' ' -f1 /proc/loadavg)" '. + {broker: $broker, case: $case, run: $run, load1: $load}' >> "$RESULTS"
  tail -1 "$RESULTS" | jq -c . >&2
}

order() { # brokers in the order of run N: alternate who goes first
  if [ $(($1 % 2)) -eq 1 ]; then echo "warren rabbitmq"; else echo "rabbitmq warren"; fi
}

# ---- phase A: one node ----------------------------------------------------
W1=5701; R1=5801
phase_a() {
  log "phase A: one node each"
  local wpid rpid pid
  start_warren 1 single $W1 27701; wpid=$pid
  start_rmq $R1; rpid=$pid
  sleep 2
  record warren 8-rss-idle 1 "{\"rss_kib\": $(rss_kib "$wpid")}"
  record rabbitmq 8-rss-idle 1 "{\"rss_kib\": $(rss_kib "$rpid")}"
  local transient=("$bin/warren-perf" --auto-ack)
  local tr_uri=uri
  if [ "$TRANSIENT_CLIENT" = amqprs ]; then transient=("$bin/amqprs-perf"); fi
  for run in $(seq 1 "$RUNS"); do
    for broker in $(order "$run"); do
      local port=$W1 pids=$wpid
      [ "$broker" = rabbitmq ] && { port=$R1; pids=$rpid; }
      local target
      if [ "$TRANSIENT_CLIENT" = amqprs ]; then target=(--port "$port"); else target=(--uri "$($tr_uri "$port")"); fi
      measure "$broker" 1-transient-1KiB "$run" "$pids" "${transient[@]}" "${target[@]}" --queue "c1-r$run" \
        --size 1024 --count $((COUNT * 5)) --drain-timeout "$DRAIN"
      measure "$broker" 2-transient-16B "$run" "$pids" "${transient[@]}" "${target[@]}" --queue "c2-r$run" \
        --size 16 --count $((COUNT * 5)) --drain-timeout "$DRAIN"
      local durable=("$bin/amqprs-perf" --port "$port" --manual-ack)
      if [ "$DURABLE_CLIENT" = lapin ]; then durable=("$bin/warren-perf" --uri "$(uri "$port")"); fi
      measure "$broker" 3-durable-1p1c "$run" "$pids" "${durable[@]}" --queue "c3-r$run" \
        --durable --persistent --confirm 256 --prefetch 100 --count "$COUNT" --duration "$DURATION" --drain-timeout "$DRAIN"
      measure "$broker" 4-durable-4p4c "$run" "$pids" "${durable[@]}" --queue "c4-r$run" \
        --durable --persistent --confirm 256 --prefetch 100 --producers 4 --consumers 4 \
        --count $((COUNT / 2)) --duration "$DURATION" --drain-timeout "$DRAIN"
      record "$broker" 8-rss-after-load "$run" "{\"rss_kib\": $(rss_kib $pids)}"
    done
  done
  stop_pid "$wpid"; stop_rmq $R1 "$rpid"
}

# ---- phase B: three nodes -------------------------------------------------
WB=5710; RB=5810   # node i (1..3) on WB+i / RB+i
warren_leader_port() {
  local id
  id=$("$bin/warren" ctl --server 127.0.0.1:27711 cluster-status | awk '/^leader:/{print $2}')
  echo $((WB + id))
}
rmq_leader_port() { # QUEUE
  local node
  node=$("$rmq" ctl $((RB + 1)) "$WORK/rmq-$((RB + 1))" list_queues name leader --formatter json |
    jq -r --arg q "$1" '.[] | select(.name == $q) | .leader')
  node=${node#bench}; echo "${node%@*}"
}
follower_of() { # LEADER_PORT BASE: another node's port
  local l=$1 base=$2
  if [ "$l" -eq $((base + 1)) ]; then echo $((base + 2)); else echo $((base + 1)); fi
}
phase_b() {
  log "phase B: three nodes each"
  local w1 w2 w3 r1 r2 r3 wpids rpids pid j1 j2 j3
  start_warren 1 n1 $((WB + 1)) 27711; w1=$pid
  start_warren 2 n2 $((WB + 2)) 27712 --join 127.0.0.1:27711; w2=$pid
  start_warren 3 n3 $((WB + 3)) 27713 --join 127.0.0.1:27711; w3=$pid
  wpids="$w1 $w2 $w3"
  # the three RabbitMQ nodes boot in parallel (subshells: read their pids after)
  start_rmq $((RB + 1)) & j1=$!
  start_rmq $((RB + 2)) & j2=$!
  start_rmq $((RB + 3)) & j3=$!
  wait $j1 $j2 $j3
  r1=$("$rmq" pid $((RB + 1)) "$WORK/rmq-$((RB + 1))"); r2=$("$rmq" pid $((RB + 2)) "$WORK/rmq-$((RB + 2))")
  r3=$("$rmq" pid $((RB + 3)) "$WORK/rmq-$((RB + 3))")
  for n in 1 2 3; do started_rmq+=("$((RB + n)) $WORK/rmq-$((RB + n))"); done
  rpids="$r1 $r2 $r3"
  for n in 2 3; do
    local p=$((RB + n)) d=$WORK/rmq-$((RB + n))
    "$rmq" ctl $p "$d" stop_app && "$rmq" ctl $p "$d" join_cluster "bench$((RB + 1))@localhost" && "$rmq" ctl $p "$d" start_app
  done
  log "rabbitmq cluster: $("$rmq" ctl $((RB + 1)) "$WORK/rmq-$((RB + 1))" cluster_status --formatter json | jq -c .running_nodes)"
  log "warren cluster: $("$bin/warren" ctl --server 127.0.0.1:27711 cluster-status | head -1)"
  sleep 2
  record warren 8-rss-idle-3nodes 1 "{\"rss_kib\": $(rss_kib $wpids)}"
  record rabbitmq 8-rss-idle-3nodes 1 "{\"rss_kib\": $(rss_kib $rpids)}"
  local repl=(--durable --persistent --confirm 256 --prefetch 100 --drain-timeout "$DRAIN")
  for run in $(seq 1 "$RUNS"); do
    for broker in $(order "$run"); do
      for c in "5-repl-follower-1p1c" "6-repl-leader-4p4c" "7-repl-follower-rate"; do
        local q="c${c%%-*}-r$run" leader follower port pids qt=()
        if [ "$broker" = warren ]; then
          pids=$wpids; leader=$(warren_leader_port); follower=$(follower_of "$leader" $WB)
        else
          pids=$rpids; qt=(--queue-type quorum)
          # declared through node 1, the quorum queue's leader is there (client-local)
          "$bin/warren-perf" --uri "$(uri $((RB + 1)))" --queue "$q" "${qt[@]}" --durable \
            --producers 0 --consumers 0 --count 0 >/dev/null 2>&1
          leader=$(rmq_leader_port "$q"); follower=$(follower_of "$leader" $RB)
        fi
        case $c in
          5-*) port=$follower; extra=(--count "$COUNT" --duration "$DURATION") ;;
          6-*) port=$leader; extra=(--producers 4 --consumers 4 --count $((COUNT / 2)) --duration "$DURATION") ;;
          7-*) port=$follower; extra=(--rate "$RATE" --count $((RATE * DURATION)) --duration $((DURATION + 5))) ;;
        esac
        local tool=("$bin/warren-perf" --uri "$(uri "$port")")
        if [ "$REPL_CLIENT" = amqprs ] && [ "${c%%-*}" != 7 ]; then tool=("$bin/amqprs-perf" --port "$port" --manual-ack); fi
        log "$broker $c: leader on $leader, clients on $port (${tool[0]##*/})"
        measure "$broker" "$c" "$run" "$pids" "${tool[@]}" --queue "$q" \
          "${qt[@]}" "${repl[@]}" "${extra[@]}"
        jq -c --argjson leader "$leader" --argjson port "$port" '. + {leader_port: $leader, client_port: $port}' \
          <(tail -1 "$RESULTS") > "$WORK/last" && sed -i '$ d' "$RESULTS" && cat "$WORK/last" >> "$RESULTS"
      done
    done
  done
  log "warren cluster at the end: $("$bin/warren" ctl --server 127.0.0.1:27711 cluster-status | head -1)"
  for p in $wpids; do stop_pid "$p"; done
  stop_rmq $((RB + 1)) "$r1"; stop_rmq $((RB + 2)) "$r2"; stop_rmq $((RB + 3)) "$r3"
}

# ---- phase C: start, and restart with a backlog ---------------------------
WC=5721; RC=5821
phase_c() {
  log "phase C: start and restart (RESTART_COUNT=$RESTART_COUNT)"
  for run in $(seq 1 "$RUNS"); do
    for broker in $(order "$run"); do
      local port=$WC t0 probe pid
      [ "$broker" = rabbitmq ] && port=$RC
      rm -rf "$WORK/warren-start" "$WORK/rmq-$RC"
      # 9: process start to the first accepted AMQP connection, empty data
      "$bin/warren-perf" --uri "$(uri $port)" --probe connect --probe-timeout 120 > "$WORK/probe.out" 2>/dev/null &
      probe=$!
      t0=$(date +%s%3N)
      if [ "$broker" = warren ]; then start_warren 1 start $WC 27721; else start_rmq $RC; fi
      wait $probe
      record "$broker" 9-start-to-connect "$run" \
        "$(jq -c --argjson t0 "$t0" '{ms: (.connected_unix_ms - $t0)}' "$WORK/probe.out")"
      # 10: fill, stop cleanly, start, time to the first delivery
      "$bin/warren-perf" --uri "$(uri $port)" --queue restartq --durable --persistent --confirm 256 \
        --consumers 0 --count "$RESTART_COUNT" > "$WORK/fill.out" 2>/dev/null
      if [ "$broker" = warren ]; then stop_pid "$pid"; else stop_rmq $RC "$pid"; fi
      "$bin/warren-perf" --uri "$(uri $port)" --queue restartq --probe first-delivery --probe-timeout 300 \
        > "$WORK/probe.out" 2>/dev/null &
      probe=$!
      t0=$(date +%s%3N)
      if [ "$broker" = warren ]; then start_warren 1 start $WC 27721; else start_rmq $RC; fi
      wait $probe || true
      record "$broker" 10-restart-to-first-delivery "$run" "$(jq -c --argjson t0 "$t0" \
        --argjson fill "$(jq -c '{confirmed, confirm_rate}' "$WORK/fill.out")" \
        '{ms: (.first_delivery_unix_ms - $t0), connect_ms: (.connected_unix_ms - $t0),
          queued: .queued_at_first_delivery, fill: $fill}' "$WORK/probe.out")"
      if [ "$broker" = warren ]; then stop_pid "$pid"; else stop_rmq $RC "$pid"; fi
    done
  done
}

for phase in $CASES; do
  case $phase in A) phase_a ;; B) phase_b ;; C) phase_c ;; esac
done
log "after: $(uptime)"
python3 "$root/benches/scripts/ratio-table.py" "$RESULTS"
echo "results: $RESULTS" >&2
