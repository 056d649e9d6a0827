#!/usr/bin/env python3
"""Reads the JSON lines of benches/compare.sh and prints a markdown table:
each run's value per broker, and the ratio Warren / RabbitMQ per case.

    benches/scripts/ratio-table.py RESULTS.jsonl
"""
import json
import sys
from collections import defaultdict

# (case, metric label, better, how to read the value from a line)
ROWS = [
    ("1-transient-1KiB", "consume msg/s", "higher", lambda r: r.get("consume_rate")),
    ("2-transient-16B", "consume msg/s", "higher", lambda r: r.get("consume_rate")),
    ("3-durable-1p1c", "confirm msg/s", "higher", lambda r: r.get("confirm_rate")),
    ("3-durable-1p1c", "consume msg/s", "higher", lambda r: r.get("consume_rate")),
    ("4-durable-4p4c", "confirm msg/s", "higher", lambda r: r.get("confirm_rate")),
    ("4-durable-4p4c", "consume msg/s", "higher", lambda r: r.get("consume_rate")),
    ("5-repl-follower-1p1c", "consume msg/s", "higher", lambda r: r.get("consume_rate")),
    ("5-repl-follower-1p1c", "confirm msg/s", "higher", lambda r: r.get("confirm_rate")),
    ("5-repl-follower-1p1c", "backlog at publish end", "lower", lambda r: r.get("ready_at_publish_end")),
    ("6-repl-leader-4p4c", "consume msg/s", "higher", lambda r: r.get("consume_rate")),
    ("6-repl-leader-4p4c", "confirm msg/s", "higher", lambda r: r.get("confirm_rate")),
    ("7-repl-follower-rate", "p99 latency ms", "lower", lambda r: ms(r, "p99")),
    ("7-repl-follower-rate", "p50 latency ms", "lower", lambda r: ms(r, "p50")),
    ("8-rss-idle", "RSS MiB, 1 idle node", "lower", lambda r: mib(r.get("rss_kib"))),
    ("3-durable-1p1c", "8: peak RSS MiB under load", "lower", lambda r: mib(r.get("broker_rss_peak_kib"))),
    ("4-durable-4p4c", "8: peak RSS MiB under load", "lower", lambda r: mib(r.get("broker_rss_peak_kib"))),
    ("8-rss-idle-3nodes", "RSS MiB, 3 idle nodes", "lower", lambda r: mib(r.get("rss_kib"))),
    ("9-start-to-connect", "start → first connection ms", "lower", lambda r: r.get("ms")),
    ("10-restart-to-first-delivery", "restart → first delivery ms", "lower", lambda r: r.get("ms")),
]


def ms(r, p):
    v = (r.get("latency_us") or {}).get(p)
    return None if v is None else v / 1000


def mib(kib):
    return None if kib is None else kib / 1024


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def ratio(w, r):
    if w is None or r in (None, 0):
        return None
    return w / r


def main():
    lines = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
    by = defaultdict(dict)  # (case, broker) -> {run: line}
    for line in lines:
        by[(line.get("case"), line.get("broker"))][line.get("run")] = line
    runs = sorted({line.get("run") for line in lines if line.get("run") is not None})
    head = ["case", "metric", "better"]
    head += [f"Warren #{n}" for n in runs] + [f"RabbitMQ #{n}" for n in runs]
    head += ["W/R per run", "W/R of means", "others' CPU % (W; R)", "load1 (W; R)", "lost/dup"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for case, label, better, get in ROWS:
        w = by.get((case, "warren"), {})
        r = by.get((case, "rabbitmq"), {})
        if not w and not r:
            continue
        wv = [get(w[n]) if n in w else None for n in runs]
        rv = [get(r[n]) if n in r else None for n in runs]
        per_run = [ratio(a, b) for a, b in zip(wv, rv)]
        wm = [v for v in wv if v is not None]
        rm = [v for v in rv if v is not None]
        of_means = ratio(sum(wm) / len(wm), sum(rm) / len(rm)) if wm and rm else None
        others = "; ".join(
            ", ".join(fmt(d[n].get("others_cpu_pct")) for n in runs if n in d and "others_cpu_pct" in d[n]) or "–"
            for d in (w, r)
        )
        load = "; ".join(", ".join(fmt(d[n].get("load1")) for n in runs if n in d) or "–" for d in (w, r))
        bad = sum((d[n].get("lost") or 0) + (d[n].get("duplicates") or 0) for d in (w, r) for n in d)
        cells = [case, label, better] + [fmt(v) for v in wv] + [fmt(v) for v in rv]
        cells += [", ".join(fmt(x) for x in per_run), fmt(of_means), others, load, str(bad)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
