#!/usr/bin/env python3
"""Failover test of a three-node Warren cluster in Docker (run by partition-test.sh).

Drives the compose project the wrapper started: a load with publisher
confirms (one publisher per node) and manual-ack consumers (one per node),
then four faults, each followed by checks:

  A. the leader is disconnected from the cluster network (its clients stay
     connected through the clients network): the majority elects a new
     leader and keeps confirming; the isolated node's publisher gets no
     confirm and a nack (541) or error within commit_timeout;
  B. it is reconnected: it rejoins by itself and catches up;
  C. a follower is killed (docker kill) and started again: it catches up;
  D. the leader is paused (docker pause) and unpaused.

At the end every confirmed message id must have been consumed (lost = 0),
and every node must report the same log and applied index and the same
queue counts. Timings are printed. Exit status 1 on a failed check.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

import pika

PROJECT = os.environ["PT_PROJECT"]
COMPOSE = os.environ["PT_COMPOSE"].split()
PORTS = [int(p) for p in os.environ["PT_PORTS"].split(",")]
USER, PASS = os.environ.get("WARREN_USER", "warren"), os.environ.get("WARREN_PASS", "warren")
RATE = float(os.environ.get("PT_RATE", "100"))  # messages/s per publisher
COMMIT_TIMEOUT_S = 10.0  # commit_timeout_ms default
NODE_DOWN_S = 3.0  # node_down_after_ms default
QUEUE = "failover"
T0 = time.monotonic()
failures = []


def now():
    return time.monotonic()


def log(msg):
    print(f"[{now() - T0:7.2f}s] {msg}", flush=True)


def check(ok, what):
    log(("ok:     " if ok else "FAILED: ") + what)
    if not ok:
        failures.append(what)


def sh(*args, timeout=30, check_rc=True):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check_rc and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def container(node):
    return sh(*COMPOSE, "ps", "-q", f"warren-{node}").strip()


CONTAINERS = {}
CLUSTER_NET = f"{PROJECT}_cluster"


def status(via):
    """`warren ctl cluster-status` run inside node `via`: {leader, term, nodes: {id: {...}}}."""
    try:
        text = sh("docker", "exec", CONTAINERS[via], "warren", "ctl", "cluster-status", timeout=15)
    except (RuntimeError, subprocess.TimeoutExpired):
        return None
    result = {"nodes": {}}
    m = re.search(r"leader: (\S+)\s+term: (\d+)", text)
    if not m:
        return None
    result["leader"] = int(m.group(1)) if m.group(1).isdigit() else None
    result["term"] = int(m.group(2))
    for line in text.splitlines():
        f = line.split()
        if len(f) == 8 and f[0].isdigit():
            result["nodes"][int(f[0])] = {
                "role": f[2], "state": f[3], "term": f[4], "log": int(f[5]) if f[5].isdigit() else None,
                "applied": int(f[6]) if f[6].isdigit() else None, "reachable": f[7] == "yes",
            }
    return result


def applied_of(node, via=None):
    st = status(via or node)
    if not st or node not in st["nodes"]:
        return None
    return st["nodes"][node]["applied"]


def wait_for(what, predicate, timeout, interval=0.1):
    deadline = now() + timeout
    while now() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.confirmed = set()
        self.nacked = 0
        self.consumed = {}
        self.deliveries = 0
        self.events = []  # (time, kind, node, detail)
        self.last_confirm = {}  # home node -> time
        self.confirms_by_node = {}  # node actually connected -> [times]

    def event(self, kind, node, detail=""):
        with self.lock:
            self.events.append((now(), kind, node, detail))


stats = Stats()
stop_publishing = threading.Event()
stop_consuming = threading.Event()


def connect(node, who):
    """Connects to `node` first, then the others, until one answers."""
    order = [node] + [n for n in (1, 2, 3) if n != node]
    while True:
        for n in order:
            if (who == "consumer" and stop_consuming.is_set()) or (who == "publisher" and stop_publishing.is_set()):
                return None, None
            try:
                params = pika.URLParameters(
                    f"amqp://{USER}:{PASS}@127.0.0.1:{PORTS[n - 1]}/%2f?heartbeat=5&socket_timeout=5"
                    "&blocked_connection_timeout=30&connection_attempts=1"
                )
                return pika.BlockingConnection(params), n
            except Exception:  # noqa: BLE001 - any failure: try the next node
                time.sleep(0.2)


def publisher(home):
    seq = 0
    while not stop_publishing.is_set():
        conn, node = connect(home, "publisher")
        if conn is None:
            return
        stats.event("publisher-connected", home, f"to node {node}")
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare(QUEUE, durable=True)
            while not stop_publishing.is_set():
                seq += 1
                msg_id = f"p{home}-{seq}"
                try:
                    ch.basic_publish("", QUEUE, msg_id.encode(),
                                     pika.BasicProperties(delivery_mode=2, message_id=msg_id))
                    t = now()
                    with stats.lock:
                        stats.confirmed.add(msg_id)
                        stats.last_confirm[home] = t
                        stats.confirms_by_node.setdefault(node, []).append(t)
                except pika.exceptions.NackError:
                    with stats.lock:
                        stats.nacked += 1
                    stats.event("nack", home, f"on node {node}")
                time.sleep(1.0 / RATE)
        except Exception as e:  # noqa: BLE001 - connection lost: reconnect
            stats.event("publisher-error", home, f"on node {node}: {type(e).__name__} {e}")
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def consumer(home):
    while not stop_consuming.is_set():
        conn, node = connect(home, "consumer")
        if conn is None:
            return
        stats.event("consumer-connected", home, f"to node {node}")
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            ch.queue_declare(QUEUE, durable=True)

            def on_message(channel, method, props, body):
                msg_id = body.decode()
                with stats.lock:
                    stats.deliveries += 1
                    stats.consumed[msg_id] = stats.consumed.get(msg_id, 0) + 1
                channel.basic_ack(method.delivery_tag)

            ch.basic_consume(QUEUE, on_message)
            while not stop_consuming.is_set():
                conn.process_data_events(time_limit=0.5)
        except Exception as e:  # noqa: BLE001 - connection lost: reconnect
            stats.event("consumer-error", home, f"on node {node}: {type(e).__name__} {e}")
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


PROBES = [0]


def probe_publish(node):
    """One confirmed publish on a new connection to `node`; True if confirmed."""
    PROBES[0] += 1
    msg_id = f"probe{node}-{PROBES[0]}"
    try:
        params = pika.URLParameters(f"amqp://{USER}:{PASS}@127.0.0.1:{PORTS[node - 1]}/%2f"
                                    "?heartbeat=5&socket_timeout=5&connection_attempts=1")
        conn = pika.BlockingConnection(params)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", QUEUE, msg_id.encode(), pika.BasicProperties(delivery_mode=2, message_id=msg_id))
            with stats.lock:
                stats.confirmed.add(msg_id)
            return True
        finally:
            conn.close()
    except Exception:  # noqa: BLE001 - not yet: the caller retries
        return False


def longest_confirm_gap(nodes, start, end):
    """The longest time without any confirm on connections to `nodes` within [start, end]."""
    with stats.lock:
        times = sorted(t for n in nodes for t in stats.confirms_by_node.get(n, []) if start <= t <= end)
    points = [start] + times + [end]
    return max(b - a for a, b in zip(points, points[1:]))


def majority_clients_closed(nodes, since):
    """320 closes of client connections to `nodes` after `since`."""
    with stats.lock:
        return [(round(t - T0, 2), n, d.split(":")[0]) for (t, k, n, d) in stats.events
                if t > since and k.endswith("-error") and "320" in d and any(d.startswith(f"on node {m}") for m in nodes)]


def confirms_on(node, since):
    with stats.lock:
        return sum(1 for t in stats.confirms_by_node.get(node, []) if t > since)


def events_since(kind, node, since):
    with stats.lock:
        return [(t, d) for (t, k, n, d) in stats.events if k == kind and n == node and t > since]


def leader_seen_by(node, not_node=None):
    st = status(node)
    if st and st["leader"] and st["leader"] != not_node:
        return st["leader"]
    return None


def caught_up(node, target_applied, via):
    applied = applied_of(node, via)
    return applied is not None and applied >= target_applied


def current_leader():
    for n in (1, 2, 3):
        leader = leader_seen_by(n)
        if leader:
            return leader
    return None


def main():
    timings = {}
    for n in (1, 2, 3):
        CONTAINERS[n] = container(n)
    ok = wait_for("3 voters", lambda: (s := status(1)) and len(s["nodes"]) == 3
                  and all(v["reachable"] for v in s["nodes"].values()), 60)
    check(bool(ok), "three reachable voters before the load")
    if not ok:
        return timings

    threads = [threading.Thread(target=f, args=(n,), daemon=True) for n in (1, 2, 3) for f in (publisher, consumer)]
    for t in threads:
        t.start()
    time.sleep(5)
    check(all(confirms_on(n, 0) > 0 for n in (1, 2, 3)), "every node confirms under load before the faults")

    # A. Isolate the leader from the cluster network.
    leader = current_leader()
    others = [n for n in (1, 2, 3) if n != leader]
    log(f"A. leader is node {leader}: disconnecting it from {CLUSTER_NET}")
    t_cut = now()
    sh("docker", "network", "disconnect", CLUSTER_NET, CONTAINERS[leader])
    new_leader = wait_for("new leader", lambda: leader_seen_by(others[0], not_node=leader), 30)
    t_elected = now()
    timings["election_after_isolation_s"] = round(t_elected - t_cut, 2)
    check(new_leader is not None, f"the majority elected a new leader (node {new_leader}) "
          f"{t_elected - t_cut:.2f}s after the isolation")
    majority_ok = wait_for("majority confirms", lambda: all(probe_publish(n) for n in others), 20)
    check(bool(majority_ok), f"nodes {others} confirm publishes after the election")
    majority_a = others
    time.sleep(max(0.0, t_cut + COMMIT_TIMEOUT_S + 4 - now()))
    late = [t for t in stats.confirms_by_node.get(leader, []) if t > t_cut + 1.0]
    check(not late, f"the isolated node {leader} confirmed nothing from 1s after the isolation "
          f"({len(late)} late confirms)")
    fails = events_since("nack", leader, t_cut) + events_since("publisher-error", leader, t_cut)
    first_fail = min((t for t, _ in fails), default=None)
    if first_fail is not None:
        timings["isolated_first_nack_s"] = round(first_fail - t_cut, 2)
    check(first_fail is not None and first_fail - t_cut <= COMMIT_TIMEOUT_S + 3,
          f"the isolated node's publisher got a nack/error within commit_timeout "
          f"({'none' if first_fail is None else f'{first_fail - t_cut:.2f}s'})")

    # B. Reconnect it.
    cur = current_leader_of(others)
    target = applied_of(cur, cur) or 0
    log(f"B. reconnecting node {leader} (leader now {cur}, applied {target})")
    t_join = now()
    sh("docker", "network", "connect", "--alias", f"warren-{leader}.cluster", CLUSTER_NET, CONTAINERS[leader])
    ok = wait_for("caught up", lambda: caught_up(leader, target, leader), 60)
    timings["catch_up_after_reconnect_s"] = round(now() - t_join, 2)
    check(bool(ok), f"node {leader} rejoined and caught up to index {target} "
          f"{now() - t_join:.2f}s after the reconnect")
    timings["confirm_gap_majority_isolation_s"] = round(longest_confirm_gap(majority_a, t_cut, t_join), 2)
    ok = wait_for("follower", lambda: (s := status(cur)) and s["nodes"].get(leader, {}).get("reachable")
                  and s["nodes"][leader]["state"] == "follower", 30)
    check(bool(ok), f"node {leader} is a reachable follower again without manual steps")
    ok = wait_for("amqp", lambda: probe_publish(leader), 60, interval=0.5)
    timings["first_confirm_after_reconnect_s"] = round(now() - t_join, 2)
    check(bool(ok), f"node {leader} confirms publishes again {now() - t_join:.2f}s after the reconnect")
    closed = [d for _, d in events_since("publisher-error", leader, t_join) + events_since("consumer-error", leader, t_join)]
    log(f"   clients of node {leader} after the reconnect: {closed[:2]}")
    time.sleep(3)
    stale = majority_clients_closed(majority_a, t_join)
    check(not stale, f"no client of the majority nodes {majority_a} was closed (320) when node {leader} came back: {stale}")

    # C. Kill a follower, start it again.
    cur = current_leader()
    follower = next(n for n in (1, 2, 3) if n != cur)
    log(f"C. docker kill node {follower} (leader {cur})")
    t_kill = now()
    sh("docker", "kill", CONTAINERS[follower])
    time.sleep(NODE_DOWN_S + 3)
    target = applied_of(cur, cur) or 0
    t_start = now()
    sh("docker", "start", CONTAINERS[follower])
    ok = wait_for("caught up", lambda: caught_up(follower, target, follower), 90, interval=0.2)
    timings["catch_up_after_restart_s"] = round(now() - t_start, 2)
    check(bool(ok), f"node {follower} restarted and caught up to index {target} {now() - t_start:.2f}s after docker start "
          f"(down {t_start - t_kill:.1f}s)")
    ok = wait_for("amqp", lambda: probe_publish(follower), 60, interval=0.5)
    timings["first_confirm_after_restart_s"] = round(now() - t_start, 2)
    check(bool(ok), f"node {follower} confirms publishes again {now() - t_start:.2f}s after docker start")

    # D. Pause the leader, unpause it.
    cur = current_leader()
    others = [n for n in (1, 2, 3) if n != cur]
    log(f"D. docker pause leader node {cur}")
    t_pause = now()
    sh("docker", "pause", CONTAINERS[cur])
    new_leader = wait_for("new leader", lambda: leader_seen_by(others[0], not_node=cur), 30)
    timings["election_after_pause_s"] = round(now() - t_pause, 2)
    check(new_leader is not None, f"a new leader (node {new_leader}) {now() - t_pause:.2f}s after the pause")
    t_el = now()
    ok = wait_for("majority confirms", lambda: all(probe_publish(n) for n in others), 20)
    check(bool(ok), f"nodes {others} confirm while node {cur} is paused")
    time.sleep(max(0.0, t_pause + 8 - now()))
    target = applied_of(new_leader, new_leader) or 0
    t_unpause = now()
    sh("docker", "unpause", CONTAINERS[cur])
    ok = wait_for("caught up", lambda: caught_up(cur, target, cur), 60)
    timings["catch_up_after_unpause_s"] = round(now() - t_unpause, 2)
    check(bool(ok), f"node {cur} caught up to index {target} {now() - t_unpause:.2f}s after the unpause")
    ok = wait_for("amqp", lambda: probe_publish(cur), 60, interval=0.5)
    timings["first_confirm_after_unpause_s"] = round(now() - t_unpause, 2)
    check(bool(ok), f"node {cur} confirms publishes again {now() - t_unpause:.2f}s after the unpause")
    timings["confirm_gap_majority_pause_s"] = round(longest_confirm_gap(others, t_pause, t_unpause), 2)
    time.sleep(3)
    stale = majority_clients_closed(others, t_unpause)
    check(not stale, f"no client of the majority nodes {others} was closed (320) when node {cur} was unpaused: {stale}")

    # The end: stop publishing, drain, compare.
    stop_publishing.set()
    time.sleep(2)
    with stats.lock:
        confirmed = set(stats.confirmed)
    drained = wait_for("drained", lambda: confirmed.issubset(stats.consumed.keys()), 90, interval=0.5)
    check(bool(drained), "consumers received every confirmed message within 90s")
    time.sleep(2)
    stop_consuming.set()
    with stats.lock:
        consumed = dict(stats.consumed)
        deliveries = stats.deliveries
        nacked = stats.nacked
    lost = confirmed - consumed.keys()
    duplicates = sum(c - 1 for c in consumed.values())
    unconfirmed_consumed = len(consumed.keys() - confirmed)
    counts = {"confirmed": len(confirmed), "nacked": nacked, "consumed_unique": len(consumed),
              "deliveries": deliveries, "duplicates": duplicates, "lost": len(lost),
              "consumed_but_not_confirmed": unconfirmed_consumed}
    log(f"counts: {json.dumps(counts)}")
    check(not lost, f"lost = {len(lost)} (first: {sorted(lost)[:5]})")

    def converged():
        statuses = [status(n) for n in (1, 2, 3)]
        if any(s is None for s in statuses):
            return None
        rows = [(s["nodes"][n]["log"], s["nodes"][n]["applied"]) for n, s in zip((1, 2, 3), statuses)]
        queues = [sh("docker", "exec", CONTAINERS[n], "warren", "ctl", "list-queues", timeout=15).splitlines()[1:]
                  for n in (1, 2, 3)]
        if len(set(rows)) == 1 and rows[0][0] == rows[0][1] and all(q == queues[0] for q in queues):
            return rows[0], queues[0]
        return None

    result = wait_for("converged", converged, 30, interval=1)
    check(bool(result), "all nodes report the same log index, applied index and queue counts"
          + (f" (index {result[0][1]}, queues {result[1]})" if result else ""))
    if not result:
        for n in (1, 2, 3):
            log(f"   node {n}: {status(n)}")
    return {**timings, **counts}


def current_leader_of(nodes):
    for n in nodes:
        leader = leader_seen_by(n)
        if leader:
            return leader
    return None


if __name__ == "__main__":
    results = main()
    with stats.lock:
        for t, kind, node, detail in stats.events:
            if kind != "publisher-connected" or t - T0 > 10:
                print(f"   event [{t - T0:7.2f}s] {kind} home={node} {detail}")
    print("RESULT " + json.dumps({**results, "failures": failures}), flush=True)
    sys.exit(1 if failures else 0)
