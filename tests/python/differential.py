"""Differential harness (issue 12): the same AMQP operations, run with pika
against Warren and against RabbitMQ, must be observed the same way.

    differential.py WARREN_PORT RABBIT_PORT [--seed N] [--sequences N]
                    [--length N] [--scenarios-only]

Every operation is recorded as what a client sees: the reply (message and
consumer counts, get-ok with the whole message, confirms and returns), or
the close it caused (channel or connection, and the reply code). Delivered
messages are recorded at `collect` steps, per channel in delivery order.
Server-generated names and tags, and the run's name prefix, are replaced
by placeholders before the two transcripts are compared.

Each broker must serve this run alone: the `amq.*` exchanges are shared,
so another client's publish to `amq.fanout` reaches this run's queues.

Hand-written scenarios run first, then `--sequences` generated ones from
`--seed` (printed). A generated sequence whose transcripts differ is
shrunk (operations dropped while the difference stays) and printed with
both transcripts; the script then exits 1. A difference listed in
docs/divergences.md is taken out in `normalize` (with the table's row
named there) or left out of the generator; nothing else is excused.
"""

import argparse
import datetime
import random
import re
import sys
import time

import pika
import pika.exceptions

ANCHOR = "diff.anchor"
# How long `collect` waits for one more delivery before it takes the
# deliveries as complete.
QUIET_S = 0.3
COLLECT_S = QUIET_S

QUEUES = ["q0", "q1", "q2"]
EXCHANGES = ["", "amq.direct", "amq.fanout", "amq.topic", "x.topic", "x.fanout"]
KEYS = ["q0", "q1", "q2", "a.b", "a.*", "#", ""]
QUEUE_ARGS = [
    {},
    {"x-max-length": 2},
    {"x-max-length": 1, "x-overflow": "reject-publish"},
    {"x-message-ttl": 60000},
    {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q2"},
    {"x-max-priority": 3},
    {"x-max-length": -1},
    {"x-overflow": "sideways"},
    {"x-queue-type": "quorum"},
    {"x-queue-type": "quorum", "x-max-priority": 3},
    {"x-queue-type": "quorum", "x-overflow": "reject-publish-dlx"},
    {"x-queue-type": "quorum", "x-delivery-limit": 1},
    {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "drop-head"},
    {"x-queue-type": "classic", "x-delivery-limit": 1},
    {"x-queue-type": "quorum", "x-delivery-limit": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q2"},
    {"x-queue-type": "stream"},
    {"x-queue-type": "stream", "x-max-length": 5},
    {"x-queue-type": "stream", "x-max-age": "1h", "x-max-length-bytes": 1000000, "x-stream-max-segment-size-bytes": 1000},
    {"x-queue-type": "stream", "x-max-age": "0h"},
    {"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 3000000001},
]
# The stream variants (from 15 on) are not among the queues' random
# arguments: generated sequences keep one stream, s0, declared as a
# stream in their setup (with `--streams`), and operate on it apart.
FIRST_STREAM_ARGS = 15
STREAMS = ["s0"]
# `last` is left out of generated consumes: RabbitMQ starts it at the
# last chunk, which may hold several messages (docs/divergences.md).
STREAM_OFFSETS = ["first", "next", 0, 1, 3, "1h", "5x"]
PROPERTY_VARIANTS = [
    {},
    {"delivery_mode": 2, "content_type": "text/plain", "headers": {"h": "v", "n": 1}},
    {"priority": 2, "correlation_id": "c1", "message_id": "m1", "app_id": "diff"},
    {"expiration": "60000", "type": "t", "timestamp": 1700000000},
    {"expiration": "bad"},
]


# ---------------------------------------------------------------- running


class Session:
    """One broker: a connection with channel 0 (plain) and channel 1 (in
    confirm mode), reopened after a close, and what each channel received."""

    def __init__(self, port, prefix):
        self.port = port
        self.prefix = prefix
        self.connection = None
        self.channels = {}
        self.connect()

    def connect(self):
        params = pika.ConnectionParameters(
            host="127.0.0.1",
            port=self.port,
            credentials=pika.PlainCredentials("guest", "guest"),
            heartbeat=0,
            connection_attempts=3,
            retry_delay=1,
        )
        self.connection = pika.BlockingConnection(params)
        self.next_number = 1
        self.channels = {}
        self.tags = {0: [], 1: []}
        self.delivered = {0: [], 1: []}
        setup = self.connection.channel()
        setup.queue_declare(queue=self.name(ANCHOR))
        setup.close()
        for c in (0, 1):
            self.open(c)

    def open(self, c):
        # A fresh channel number each time: RabbitMQ can be slow to serve a
        # number reused right after it closed the channel (deliveries to
        # other channels were seen late then).
        self.next_number += 1
        ch = self.connection.channel(channel_number=self.next_number)
        if c == 1:
            ch.confirm_delivery()
        self.channels[c] = ch
        self.tags[c] = []
        # Deliveries not collected before a close: whether they arrived
        # before it is a matter of timing.
        self.delivered[c] = []

    def name(self, n):
        if n == "" or n.startswith("amq."):
            return n
        return self.prefix + n

    def close(self):
        try:
            if self.connection.is_open:
                self.connection.close()
        except Exception:
            pass

    def cleanup(self, queues, exchanges):
        """Deletes what the run may have made (best effort)."""
        try:
            if not self.connection.is_open:
                self.connect()
            ch = self.connection.channel()
            for q in queues + [ANCHOR]:
                ch.queue_delete(queue=self.name(q))
            for x in exchanges:
                if x and not x.startswith("amq."):
                    ch.exchange_delete(exchange=self.name(x))
            ch.close()
        except Exception:
            pass
        self.close()

    def barrier(self, c):
        """A synchronous round trip on channel c: a close the previous
        (asynchronous) method caused arrives before its reply."""
        self.channels[c].queue_declare(queue=self.name(ANCHOR), passive=True)

    def run(self, op):
        """Applies one operation; returns what was observed."""
        c = op.get("c", 0)
        try:
            if c not in self.channels or not self.channels[c].is_open:
                self.open(c)
            return apply(self, op)
        except pika.exceptions.ChannelClosedByBroker as e:
            self.open(c)
            return ["channel-closed", e.reply_code, e.reply_text]
        except pika.exceptions.ConnectionClosedByBroker as e:
            self.connect()
            return ["connection-closed", e.reply_code, e.reply_text]
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
            kind = "returned" if isinstance(e, pika.exceptions.UnroutableError) else "nacked"
            return [kind, [message_of(m.method, m.properties, m.body) for m in e.messages]]
        except pika.exceptions.DuplicateConsumerTag as e:
            # pika refuses a tag in use on the channel before sending.
            return ["client-refused", "duplicate consumer tag " + str(e)]
        except pika.exceptions.ChannelWrongStateError as e:
            self.open(c)
            return ["wrong-state", str(e)]


def queue_arguments(s, variant):
    arguments = dict(QUEUE_ARGS[variant])
    if "x-dead-letter-routing-key" in arguments:
        arguments["x-dead-letter-routing-key"] = s.name(arguments["x-dead-letter-routing-key"])
    return arguments


def message_of(method, properties, body):
    props = {}
    for key in (
        "content_type",
        "content_encoding",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
    ):
        value = getattr(properties, key, None)
        if value is not None:
            props[key] = value
    if properties is not None and properties.headers:
        props["headers"] = properties.headers
    record = {
        "body": body.decode("utf-8", "replace"),
        "props": props,
    }
    for key in ("exchange", "routing_key", "redelivered", "message_count", "reply_code", "reply_text"):
        if hasattr(method, key):
            record[key] = getattr(method, key)
    return record


def apply(s, op):
    kind = op["op"]
    c = op.get("c", 0)
    ch = s.channels[c]
    if kind == "declare_queue":
        ok = ch.queue_declare(
            queue=s.name(op["q"]) if op["q"] else "",
            passive=op.get("passive", False),
            durable=op.get("durable", False),
            exclusive=op.get("exclusive", False),
            auto_delete=op.get("auto_delete", False),
            arguments=queue_arguments(s, op.get("args", 0)),
        )
        return ["declare-ok", ok.method.message_count, ok.method.consumer_count]
    if kind == "delete_queue":
        ok = ch.queue_delete(queue=s.name(op["q"]), if_unused=op.get("if_unused", False), if_empty=op.get("if_empty", False))
        return ["delete-ok", ok.method.message_count]
    if kind == "purge":
        ok = ch.queue_purge(queue=s.name(op["q"]))
        return ["purge-ok", ok.method.message_count]
    if kind == "declare_exchange":
        ch.exchange_declare(
            exchange=s.name(op["x"]),
            exchange_type=op.get("type", "topic"),
            passive=op.get("passive", False),
            durable=op.get("durable", False),
            auto_delete=op.get("auto_delete", False),
            internal=op.get("internal", False),
        )
        return ["exchange-declare-ok"]
    if kind == "delete_exchange":
        ch.exchange_delete(exchange=s.name(op["x"]), if_unused=op.get("if_unused", False))
        return ["exchange-delete-ok"]
    if kind == "bind":
        ch.queue_bind(queue=s.name(op["q"]), exchange=s.name(op["x"]), routing_key=op["key"])
        return ["bind-ok"]
    if kind == "unbind":
        ch.queue_unbind(queue=s.name(op["q"]), exchange=s.name(op["x"]), routing_key=op["key"])
        return ["unbind-ok"]
    if kind == "publish":
        # Queue names are prefixed per run: a key names a queue only
        # through the default exchange.
        key = s.name(op["key"]) if op["x"] == "" and op["key"] in QUEUES + STREAMS else op["key"]
        props = pika.BasicProperties(**PROPERTY_VARIANTS[op.get("props", 0)])
        ch.basic_publish(
            exchange=s.name(op["x"]),
            routing_key=key,
            body=op["body"].encode(),
            properties=props,
            mandatory=op.get("mandatory", False),
        )
        if c == 1:
            return ["confirmed"]
        s.barrier(c)
        return ["published"]
    if kind == "get":
        method, properties, body = ch.basic_get(queue=s.name(op["q"]), auto_ack=op.get("no_ack", False))
        if method is None:
            return ["get-empty"]
        if not op.get("no_ack", False):
            s.tags[c].append(method.delivery_tag)
        return ["get-ok", message_of(method, properties, body)]
    if kind in ("ack", "nack", "reject"):
        if op.get("k", 0) in (0, 1, 2) and not s.tags[c]:
            # Nothing delivered to settle: an unknown tag is k = 9's case.
            return ["nothing-to-settle"]
        tag = pick_tag(s, c, op.get("k", 0))
        multiple = op.get("multiple", False)
        forget_tags(s, c, tag, multiple)
        if kind == "ack":
            ch.basic_ack(delivery_tag=tag, multiple=multiple)
        elif kind == "nack":
            ch.basic_nack(delivery_tag=tag, multiple=multiple, requeue=op.get("requeue", True))
        else:
            ch.basic_reject(delivery_tag=tag, requeue=op.get("requeue", True))
        s.barrier(c)
        return [kind + "-sent"]
    if kind == "recover":
        ch.basic_recover(requeue=True)
        s.tags[c] = []
        return ["recover-ok"]
    if kind == "qos":
        ch.basic_qos(prefetch_size=op.get("size", 0), prefetch_count=op.get("n", 0), global_qos=op.get("global", False))
        return ["qos-ok"]
    if kind == "consume":
        tag = ch.basic_consume(
            queue=s.name(op["q"]),
            on_message_callback=lambda _ch, m, p, b, c=c: s.delivered[c].append((m, p, b)),
            auto_ack=op.get("no_ack", False),
            exclusive=op.get("exclusive", False),
            consumer_tag=op.get("tag"),
            arguments=consume_arguments(op),
        )
        return ["consume-ok", tag]
    if kind == "cancel":
        ch.basic_cancel(consumer_tag=op["tag"])
        return ["cancel-ok"]
    if kind == "collect":
        # Until a quiet spell: a loaded machine (CI) may take longer than
        # one spell to deliver what a requeue gave back.
        # A call can return at once, on another event (a late `close-ok`):
        # only a whole spell without a delivery ends the wait.
        deadline = time.monotonic() + 20 * COLLECT_S
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            before = len(s.delivered[0]) + len(s.delivered[1])
            s.connection.process_data_events(time_limit=COLLECT_S)
            if len(s.delivered[0]) + len(s.delivered[1]) != before:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= COLLECT_S:
                break
        seen = {}
        for cc in (0, 1):
            records = []
            for m, p, b in s.delivered[cc]:
                records.append(message_of(m, p, b) | {"consumer_tag": m.consumer_tag})
                s.tags[cc].append(m.delivery_tag)
            s.delivered[cc] = []
            if records:
                # In delivery order per consumer; across consumers (of
                # different queues) RabbitMQ promises no order.
                seen[cc] = sorted(records, key=lambda r: r["consumer_tag"])
        return ["delivered", seen]
    if kind == "tx_select":
        ch.tx_select()
        return ["tx-select-ok"]
    if kind == "tx_commit":
        ch.tx_commit()
        return ["tx-commit-ok"]
    if kind == "tx_rollback":
        ch.tx_rollback()
        return ["tx-rollback-ok"]
    if kind == "close_channel":
        ch.close()
        s.open(c)
        return ["closed"]
    if kind == "update_secret":
        # RabbitMQ 3.10 with its internal users answers update-secret-ok
        # without checking the secret (only expiring backends use it).
        s.connection.update_secret(op["secret"], "rotated by the harness")
        return ["update-secret-ok"]
    raise ValueError("unknown op %r" % (op,))


def consume_arguments(op):
    """`x-priority` and a stream's `x-stream-offset` (an AMQP timestamp
    for {"ts": seconds})."""
    arguments = {}
    if "priority" in op:
        arguments["x-priority"] = op["priority"]
    if "offset" in op:
        offset = op["offset"]
        if isinstance(offset, dict):
            offset = datetime.datetime.fromtimestamp(offset["ts"], tz=datetime.timezone.utc)
        arguments["x-stream-offset"] = offset
    return arguments or None


def forget_tags(s, c, tag, multiple):
    """The tags a settlement takes (if the broker accepts it: a refusal
    closes the channel, and its tags go with it)."""
    if multiple:
        s.tags[c] = [t for t in s.tags[c] if tag != 0 and t > tag]
    else:
        s.tags[c] = [t for t in s.tags[c] if t != tag]


def pick_tag(s, c, k):
    """The k-th tag channel c has seen and not given back, or 999 (never
    delivered) for k out of range; k = -1 is tag 0."""
    if k == -1:
        return 0
    tags = s.tags[c]
    if k < len(tags):
        return tags[k]
    return 999


# ---------------------------------------------------------- normalizing

GENERATED = re.compile(r"amq\.(gen|ctag)-[A-Za-z0-9_\-]+")


def normalize(value, prefix):
    if isinstance(value, str):
        value = value.replace(prefix, "")
        return GENERATED.sub(lambda m: "amq." + m.group(1) + "-*", value)
    if isinstance(value, bytes):
        return normalize(value.decode("utf-8", "replace"), prefix)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "time":
                v = "<time>"
            if isinstance(k, str) and k.startswith("x-last-death-"):
                # docs/divergences.md, "x-last-death-* headers".
                continue
            out[normalize(k, prefix)] = normalize(v, prefix)
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(v, prefix) for v in value]
    return value


# docs/divergences.md, "`basic.recover` with stream deliveries unacked":
# RabbitMQ's channel crashes (541), Warren refuses with 540.
RECOVER_ON_A_STREAM = re.compile(r"NOT_IMPLEMENTED - basic\.recover not supported by stream queues .*")


def excuse(observed):
    """A documented divergence, rewritten to RabbitMQ's side."""
    if (
        isinstance(observed, list)
        and len(observed) == 3
        and observed[0] == "connection-closed"
        and isinstance(observed[2], str)
        and RECOVER_ON_A_STREAM.fullmatch(observed[2])
    ):
        return ["connection-closed", 541, "INTERNAL_ERROR"]
    return observed


def transcript(port, ops, run_id):
    prefix = "d%s." % run_id
    s = Session(port, prefix)
    out = []
    try:
        for op in ops:
            observed = excuse(normalize(s.run(op), prefix))
            if op.get("q") in STREAMS and observed[0] == "declare-ok":
                # docs/divergences.md: RabbitMQ refreshes a stream's
                # count every five seconds.
                observed = ["declare-ok", "<stream count>", observed[2]]
            out.append(observed)
        out.append(normalize(s.run({"op": "collect"}), prefix))
        for q in QUEUES:
            out.append(["final", q, normalize(s.run({"op": "declare_queue", "q": q, "passive": True}), prefix)])
    finally:
        s.cleanup(QUEUES + STREAMS, [x for x in EXCHANGES if x.startswith("x.")])
    return out


RUNS = [0]
SEEN = {}


def compare(warren, rabbit, ops):
    RUNS[0] += 1
    a = transcript(warren, ops, "w%d" % RUNS[0])
    b = transcript(rabbit, ops, "r%d" % RUNS[0])
    for observed in b:
        kind = observed[0] if observed[0] != "final" else "final " + str(observed[2][0])
        if kind in ("channel-closed", "connection-closed"):
            kind = "%s %s" % (kind, observed[1])
        if kind == "delivered" and observed[1]:
            kind = "delivered (some)"
        SEEN[kind] = SEEN.get(kind, 0) + 1
    return a, b


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def shrink(warren, rabbit, ops):
    """Drops operations one at a time while the transcripts still differ."""
    changed = True
    while changed:
        changed = False
        for i in range(len(ops)):
            candidate = ops[:i] + ops[i + 1 :]
            a, b = compare(warren, rabbit, candidate)
            if a != b:
                ops = candidate
                changed = True
                break
    return ops


# ----------------------------------------------------------- generating


def random_stream_op(rng):
    """One random operation on the stream s0."""
    c = rng.choice([0, 0, 1])
    ops = [
        (8, lambda: {"op": "publish", "c": c, "x": "", "key": "s0", "mandatory": rng.random() < 0.3, "props": rng.choice([0, 0, 1, 2, 3]), "body": "s%d" % rng.randrange(1000)}),
        (4, lambda: {"op": "consume", "c": c, "q": "s0", "tag": "s%d" % rng.randrange(3), "offset": rng.choice(STREAM_OFFSETS)}),
        (1, lambda: {"op": "get", "c": c, "q": "s0"}),
        (1, lambda: {"op": "purge", "c": c, "q": "s0"}),
        (1, lambda: {"op": "delete_queue", "c": c, "q": "s0", "if_unused": rng.random() < 0.5}),
        (2, lambda: {"op": "declare_queue", "c": c, "q": "s0", "args": 15, "durable": True}),
        (2, lambda: {"op": "bind", "c": c, "q": "s0", "x": rng.choice(EXCHANGES[1:]), "key": rng.choice(KEYS)}),
        (2, lambda: {"op": "cancel", "c": c, "tag": "s%d" % rng.randrange(3)}),
    ]
    return weighted(rng.random(), ops)


def random_op(rng, declared, streams=False):
    """One random operation; `declared` maps each queue to the argument
    variant the setup declared it with (most redeclares repeat it); with
    `streams`, a fifth of them on the stream s0."""
    if streams and rng.random() < 0.2:
        return random_stream_op(rng)
    c = rng.choice([0, 0, 1])
    q = rng.choice(QUEUES)
    r = rng.random()
    args = declared[q] if rng.random() < 0.8 else rng.randrange(FIRST_STREAM_ARGS)
    ops = [
        (6, lambda: {"op": "declare_queue", "c": c, "q": q, "args": args, "passive": rng.random() < 0.1, "durable": rng.random() < 0.1}),
        (1, lambda: {"op": "delete_queue", "c": c, "q": q, "if_unused": rng.random() < 0.3, "if_empty": rng.random() < 0.3}),
        (1, lambda: {"op": "purge", "c": c, "q": q}),
        (2, lambda: {"op": "declare_exchange", "c": c, "x": rng.choice(["x.topic", "x.fanout"]), "type": rng.choice(["topic", "fanout", "direct"]), "passive": rng.random() < 0.1}),
        (1, lambda: {"op": "delete_exchange", "c": c, "x": rng.choice(["x.topic", "x.fanout"]), "if_unused": rng.random() < 0.3}),
        (3, lambda: {"op": "bind", "c": c, "q": q, "x": rng.choice(EXCHANGES[1:]), "key": rng.choice(KEYS)}),
        (1, lambda: {"op": "unbind", "c": c, "q": q, "x": rng.choice(EXCHANGES[1:]), "key": rng.choice(KEYS)}),
        (8, lambda: {"op": "publish", "c": c, "x": "", "key": q, "mandatory": rng.random() < 0.3, "props": rng.choice([0, 0, 1, 2, 3, 4]), "body": "b%d" % rng.randrange(1000)}),
        (6, lambda: {"op": "publish", "c": c, "x": rng.choice(EXCHANGES), "key": rng.choice(KEYS), "mandatory": rng.random() < 0.3, "props": rng.choice([0, 0, 1, 2, 3]), "body": "b%d" % rng.randrange(1000)}),
        (7, lambda: {"op": "get", "c": c, "q": q, "no_ack": rng.random() < 0.3}),
        (5, lambda: {"op": "ack", "c": c, "k": rng.choice([-1, 0, 0, 0, 1, 2, 9]), "multiple": rng.random() < 0.3}),
        (2, lambda: {"op": "nack", "c": c, "k": rng.choice([-1, 0, 1, 9]), "multiple": rng.random() < 0.3, "requeue": rng.random() < 0.6}),
        (1, lambda: {"op": "reject", "c": c, "k": rng.choice([0, 1, 9]), "requeue": rng.random() < 0.6}),
        (1, lambda: {"op": "recover", "c": c}),
        (2, lambda: {"op": "qos", "c": c, "n": rng.choice([0, 1, 2, 5])}),
        (3, lambda: {"op": "consume", "c": c, "q": q, "tag": "t%d" % rng.randrange(3), "no_ack": rng.random() < 0.3}),
        (2, lambda: {"op": "consume", "c": c, "q": q, "tag": "p%d" % rng.randrange(3), "priority": rng.choice([-1, 0, 3, 10])}),
        (1, lambda: {"op": "tx_select", "c": 0}),
        (1, lambda: {"op": "tx_commit", "c": 0}),
        (1, lambda: {"op": "tx_rollback", "c": 0}),
        (1, lambda: {"op": "cancel", "c": c, "tag": "t%d" % rng.randrange(3)}),
        (3, lambda: {"op": "collect"}),
        (1, lambda: {"op": "close_channel", "c": c}),
    ]
    return weighted(r, ops)


def weighted(r, ops):
    """The operation of `ops` ((weight, make) pairs) that `r` in [0, 1)
    falls on, made."""
    pick = r * sum(w for w, _ in ops)
    for weight, make in ops:
        if pick < weight:
            return make()
        pick -= weight
    return ops[-1][1]()


def generated(seed, length, streams=False):
    """A setup that makes most operations reach something (the three
    queues, with random arguments, and two bindings; with `streams`, the
    stream s0 too, bound to amq.fanout), then random ones."""
    rng = random.Random(seed)
    declared = {q: rng.choice([0, 0, 1, 2, 3, 4, 5]) for q in QUEUES}
    setup = [{"op": "declare_queue", "q": q, "args": declared[q]} for q in QUEUES]
    setup += [
        {"op": "bind", "q": "q1", "x": "amq.fanout", "key": ""},
        {"op": "bind", "q": "q2", "x": "amq.topic", "key": "a.*"},
    ]
    if streams:
        setup += [
            {"op": "declare_queue", "q": "s0", "args": 15, "durable": True},
            {"op": "bind", "q": "s0", "x": "amq.fanout", "key": ""},
        ]
    n = rng.randint(3, length)
    return setup + [random_op(rng, declared, streams) for _ in range(n)]


# ------------------------------------------------------------ scenarios

SCENARIOS = {
    "publish-get-ack": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "publish", "x": "", "key": "q0", "body": "one", "props": 1},
        {"op": "publish", "x": "", "key": "q0", "body": "two", "props": 2},
        {"op": "get", "q": "q0"},
        {"op": "ack", "k": 0},
        {"op": "get", "q": "q0", "no_ack": True},
        {"op": "get", "q": "q0"},
    ],
    "unknown-tags-and-double-ack": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "ack", "k": 9},
        {"op": "publish", "x": "", "key": "q0", "body": "m"},
        {"op": "get", "q": "q0"},
        {"op": "ack", "k": 0},
        {"op": "ack", "k": 0},
        {"op": "ack", "k": -1, "multiple": True},
    ],
    "requeue-and-redelivered": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "publish", "x": "", "key": "q0", "body": "a"},
        {"op": "publish", "x": "", "key": "q0", "body": "b"},
        {"op": "get", "q": "q0"},
        {"op": "get", "q": "q0"},
        {"op": "nack", "k": 1, "multiple": True, "requeue": True},
        {"op": "get", "q": "q0", "no_ack": True},
        {"op": "get", "q": "q0", "no_ack": True},
    ],
    "mandatory-and-confirms": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "routed", "mandatory": True},
        {"op": "publish", "c": 1, "x": "", "key": "nowhere", "body": "back", "mandatory": True},
        {"op": "publish", "c": 1, "x": "amq.direct", "key": "nowhere", "body": "dropped"},
        {"op": "publish", "c": 1, "x": "x.missing", "key": "k", "body": "404"},
    ],
    "max-length-overflow": [
        {"op": "declare_queue", "q": "q0", "args": 1},
        {"op": "declare_queue", "q": "q1", "args": 2},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "1"},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "2"},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "3"},
        {"op": "publish", "c": 1, "x": "", "key": "q1", "body": "kept"},
        {"op": "publish", "c": 1, "x": "", "key": "q1", "body": "refused"},
        {"op": "get", "q": "q0", "no_ack": True},
    ],
    "dead-lettering": [
        {"op": "declare_queue", "q": "q2"},
        {"op": "declare_queue", "q": "q0", "args": 4},
        {"op": "publish", "x": "", "key": "q0", "body": "dead", "props": 1},
        {"op": "get", "q": "q0"},
        {"op": "reject", "k": 0, "requeue": False},
        {"op": "get", "q": "q2", "no_ack": True},
    ],
    "argument-errors": [
        {"op": "declare_queue", "q": "q0", "args": 6},
        {"op": "declare_queue", "q": "q0", "args": 7},
        {"op": "declare_queue", "q": "q1"},
        {"op": "declare_queue", "q": "q1", "args": 1},
        {"op": "declare_queue", "q": "q2", "passive": True},
        {"op": "publish", "x": "", "key": "q1", "body": "bad", "props": 4},
    ],
    "exchanges-and-bindings": [
        {"op": "declare_exchange", "x": "x.topic", "type": "topic"},
        {"op": "declare_exchange", "x": "x.topic", "type": "fanout"},
        {"op": "declare_queue", "q": "q0"},
        {"op": "declare_queue", "q": "q1"},
        {"op": "bind", "q": "q0", "x": "x.topic", "key": "a.*"},
        {"op": "bind", "q": "q1", "x": "x.topic", "key": "#"},
        {"op": "publish", "x": "x.topic", "key": "a.b", "body": "both"},
        {"op": "publish", "x": "x.topic", "key": "", "body": "q1 only"},
        {"op": "unbind", "q": "q1", "x": "x.topic", "key": "#"},
        {"op": "unbind", "q": "q1", "x": "x.topic", "key": "#"},
        {"op": "delete_exchange", "x": "x.topic", "if_unused": True},
        {"op": "get", "q": "q0", "no_ack": True},
        {"op": "get", "q": "q1", "no_ack": True},
        {"op": "declare_exchange", "x": "amq.direct", "type": "topic"},
    ],
    "consumers-prefetch-recover": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "qos", "n": 2},
        {"op": "publish", "x": "", "key": "q0", "body": "1"},
        {"op": "publish", "x": "", "key": "q0", "body": "2"},
        {"op": "publish", "x": "", "key": "q0", "body": "3"},
        {"op": "consume", "q": "q0", "tag": "t0"},
        {"op": "collect"},
        {"op": "ack", "k": 0},
        {"op": "collect"},
        {"op": "recover"},
        {"op": "collect"},
        {"op": "cancel", "tag": "t0"},
        {"op": "cancel", "tag": "t0"},
        {"op": "consume", "q": "q0", "tag": "t1", "exclusive": True},
        {"op": "consume", "c": 1, "q": "q0", "tag": "t2"},
    ],
    "update-secret": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "update_secret", "secret": "not the password"},
        {"op": "update_secret", "secret": ""},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "after"},
        {"op": "get", "q": "q0", "no_ack": True},
    ],
    "qos-prefetch-size": [
        {"op": "qos", "n": 10},
        {"op": "qos", "n": 10, "size": 1024},
        {"op": "declare_queue", "q": "q0"},
    ],
    "consumer-priorities": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "qos", "n": 2},
        {"op": "consume", "q": "q0", "tag": "high", "priority": 5},
        {"op": "consume", "c": 1, "q": "q0", "tag": "zero"},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "1"},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "2"},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "3"},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "4"},
        {"op": "collect"},
        {"op": "ack", "k": 0},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "5"},
        {"op": "collect"},
    ],
    "quorum-queue-arguments": [
        {"op": "declare_queue", "q": "q0", "args": 8, "durable": True},
        {"op": "declare_queue", "q": "q1", "args": 8},
        {"op": "declare_queue", "q": "q1", "args": 8, "durable": True, "exclusive": True},
        {"op": "declare_queue", "q": "q1", "args": 8, "durable": True, "auto_delete": True},
        {"op": "declare_queue", "q": "q1", "args": 9, "durable": True},
        {"op": "declare_queue", "q": "q1", "args": 10, "durable": True},
        {"op": "declare_queue", "q": "q1", "args": 12, "durable": True},
        {"op": "declare_queue", "q": "q0", "args": 0, "durable": True},
    ],
    "quorum-delivery-limit": [
        {"op": "declare_queue", "q": "q2", "durable": True},
        {"op": "declare_queue", "q": "q0", "args": 11, "durable": True},
        {"op": "publish", "c": 1, "x": "", "key": "q0", "body": "poison", "props": 1},
        {"op": "get", "q": "q0"},
        {"op": "nack", "k": 0, "requeue": True},
        {"op": "get", "q": "q0"},
        {"op": "nack", "k": 0, "requeue": True},
        {"op": "get", "q": "q0"},
        {"op": "nack", "k": 0, "requeue": True},
        {"op": "get", "q": "q0"},
        {"op": "declare_queue", "q": "q1", "args": 14, "durable": True},
        {"op": "publish", "c": 1, "x": "", "key": "q1", "body": "dies", "props": 2},
        {"op": "get", "q": "q1"},
        {"op": "reject", "k": 0, "requeue": True},
        # RabbitMQ dead-letters from a quorum queue asynchronously: a
        # consumer waits for it.
        {"op": "consume", "q": "q2", "tag": "dead", "no_ack": True},
        {"op": "collect"},
        {"op": "get", "q": "q1", "no_ack": True},
    ],
    "transactions": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "tx_select"},
        {"op": "publish", "x": "", "key": "q0", "body": "in tx"},
        {"op": "declare_queue", "c": 1, "q": "q0", "passive": True},
        {"op": "tx_commit"},
        {"op": "get", "q": "q0"},
        {"op": "ack", "k": 0},
        {"op": "tx_rollback"},
        {"op": "ack", "k": 0},
        {"op": "tx_commit"},
        {"op": "tx_select", "c": 1},
        {"op": "tx_commit", "c": 1},
    ],
    # Streams (ADR 0030). `transcript` hides the message count of a
    # stream's declare-ok: RabbitMQ refreshes it every five seconds.
    "stream-declare": [
        {"op": "declare_queue", "q": "s0", "args": 15},
        {"op": "declare_queue", "q": "s0", "args": 15, "durable": True, "exclusive": True},
        {"op": "declare_queue", "q": "s0", "args": 15, "durable": True, "auto_delete": True},
        {"op": "declare_queue", "q": "s0", "args": 16, "durable": True},
        {"op": "declare_queue", "q": "s0", "args": 18, "durable": True},
        {"op": "declare_queue", "q": "s0", "args": 19, "durable": True},
        {"op": "declare_queue", "q": "", "args": 15, "durable": True},
        {"op": "declare_queue", "q": "s0", "args": 17, "durable": True},
        {"op": "declare_queue", "q": "s0", "args": 17, "durable": True},
        {"op": "declare_queue", "q": "s0", "args": 15, "durable": True},
        {"op": "delete_queue", "q": "s0", "if_unused": True, "if_empty": True},
    ],
    "stream-refusals": [
        {"op": "declare_queue", "q": "s0", "args": 15, "durable": True},
        {"op": "publish", "c": 1, "x": "", "key": "s0", "body": "one"},
        {"op": "get", "q": "s0"},
        {"op": "purge", "q": "s0"},
        {"op": "consume", "q": "s0", "tag": "t0"},
        {"op": "qos", "n": 5},
        {"op": "consume", "q": "s0", "tag": "t0", "no_ack": True},
        {"op": "qos", "n": 5},
        {"op": "qos", "n": 5, "global": True},
        {"op": "consume", "q": "s0", "tag": "t0"},
        {"op": "qos", "n": 5},
        {"op": "consume", "q": "s0", "tag": "t0", "offset": "5x"},
        {"op": "consume", "q": "s0", "tag": "t0", "priority": 3},
        {"op": "qos", "n": 5},
        {"op": "consume", "q": "s0", "tag": "t0", "offset": "first"},
        {"op": "collect"},
        {"op": "nack", "k": 0, "requeue": True},
        {"op": "qos", "n": 5},
        {"op": "consume", "q": "s0", "tag": "t0", "offset": "first"},
        {"op": "collect"},
        {"op": "reject", "k": 0, "requeue": False},
    ],
    "stream-offsets": [
        {"op": "declare_queue", "q": "s0", "args": 15, "durable": True},
        {"op": "publish", "c": 1, "x": "", "key": "s0", "body": "m0", "props": 1},
        {"op": "publish", "c": 1, "x": "", "key": "s0", "body": "m1", "props": 2},
        {"op": "publish", "c": 1, "x": "", "key": "s0", "body": "m2", "props": 3},
        {"op": "publish", "c": 1, "x": "", "key": "s0", "body": "m3"},
        {"op": "qos", "n": 100},
        {"op": "consume", "q": "s0", "tag": "first", "offset": "first"},
        {"op": "consume", "q": "s0", "tag": "last", "offset": "last"},
        {"op": "consume", "q": "s0", "tag": "next", "offset": "next"},
        {"op": "consume", "q": "s0", "tag": "none"},
        {"op": "consume", "q": "s0", "tag": "two", "offset": 2},
        {"op": "consume", "q": "s0", "tag": "past", "offset": 99},
        {"op": "consume", "q": "s0", "tag": "hour", "offset": "1h"},
        {"op": "consume", "q": "s0", "tag": "epoch", "offset": {"ts": 0}},
        {"op": "consume", "q": "s0", "tag": "future", "offset": {"ts": 4102444800}},
        {"op": "collect"},
        {"op": "publish", "c": 1, "x": "", "key": "s0", "body": "m4"},
        {"op": "collect"},
        {"op": "ack", "k": -1, "multiple": True},
        {"op": "cancel", "tag": "first"},
        {"op": "close_channel"},
        # On the other channel: RabbitMQ starts a reader on a channel just
        # reopened seconds late.
        {"op": "qos", "c": 1, "n": 2},
        {"op": "consume", "c": 1, "q": "s0", "tag": "again", "offset": "first"},
        {"op": "collect"},
        {"op": "ack", "c": 1, "k": 0},
        {"op": "collect"},
        {"op": "ack", "c": 1, "k": 1, "multiple": True},
        {"op": "collect"},
    ],
    "stream-through-an-exchange": [
        {"op": "declare_queue", "q": "s0", "args": 15, "durable": True},
        {"op": "bind", "q": "s0", "x": "amq.topic", "key": "a.*"},
        {"op": "declare_queue", "q": "q0"},
        {"op": "bind", "q": "q0", "x": "amq.topic", "key": "#"},
        {"op": "publish", "c": 1, "x": "amq.topic", "key": "a.b", "body": "both", "mandatory": True},
        {"op": "publish", "c": 1, "x": "amq.topic", "key": "b", "body": "q0 only", "mandatory": True},
        {"op": "qos", "n": 10},
        {"op": "consume", "q": "s0", "tag": "s", "offset": "first"},
        {"op": "collect"},
        {"op": "get", "q": "q0", "no_ack": True},
        {"op": "delete_queue", "q": "s0"},
        {"op": "publish", "c": 1, "x": "amq.topic", "key": "a.c", "body": "after", "mandatory": True},
    ],
    "delete-and-purge": [
        {"op": "declare_queue", "q": "q0"},
        {"op": "publish", "x": "", "key": "q0", "body": "a"},
        {"op": "delete_queue", "q": "q0", "if_empty": True},
        {"op": "purge", "q": "q0"},
        {"op": "delete_queue", "q": "q0", "if_empty": True},
        {"op": "delete_queue", "q": "q0"},
        {"op": "purge", "q": "q0"},
    ],
}


def report(name, ops, a, b):
    i = first_difference(a, b)
    print("DIFFERENCE in %s at step %s" % (name, i))
    for n, op in enumerate(ops):
        print("  %2d %r" % (n, op))
    print("  warren:   %r" % (a[i] if i is not None and i < len(a) else None,))
    print("  rabbitmq: %r" % (b[i] if i is not None and i < len(b) else None,))
    print("  warren transcript:   %r" % (a,))
    print("  rabbitmq transcript: %r" % (b,))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("warren", type=int)
    parser.add_argument("rabbit", type=int)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--length", type=int, default=15)
    parser.add_argument("--scenarios-only", action="store_true")
    parser.add_argument("--only", default=None, help="run one hand-written scenario")
    parser.add_argument("--streams", action="store_true", help="generated sequences operate on a stream too")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print("differential: seed %d, %d sequences of up to %d operations" % (seed, args.sequences, args.length), flush=True)
    failures = 0
    flaky = 0
    for name, ops in SCENARIOS.items():
        if args.only and name != args.only:
            continue
        a, b = compare(args.warren, args.rabbit, ops)
        if a != b:
            failures += 1
            report("scenario " + name, ops, a, b)
        else:
            print("scenario %s: same" % name, flush=True)
    if not args.scenarios_only and not args.only:
        for i in range(args.sequences):
            ops = generated(seed + i, args.length, args.streams)
            a, b = compare(args.warren, args.rabbit, ops)
            if a == b:
                continue
            name = "sequence %d (seed %d)" % (i, seed + i)
            # Again, twice, with the client waiting five times longer for
            # deliveries (RabbitMQ was seen to deliver seconds late right
            # after a channel error).
            global COLLECT_S
            COLLECT_S = 5 * QUIET_S
            reruns = [compare(args.warren, args.rabbit, ops) for _ in range(2)]
            COLLECT_S = QUIET_S
            if all(x == y for x, y in reruns):
                # Twice the same afterwards: a matter of timing (when a
                # delivery or a close reached the client), not of the
                # brokers' rules. Shown, counted apart.
                flaky += 1
                report("NOT REPRODUCED " + name, ops, a, b)
                continue
            COLLECT_S = 5 * QUIET_S
            small = shrink(args.warren, args.rabbit, ops)
            a2, b2 = compare(args.warren, args.rabbit, small)
            COLLECT_S = QUIET_S
            if a2 == b2:
                # The shrunk sequence no longer differs: timing after all.
                flaky += 1
                report("NOT REPRODUCED " + name, ops, a, b)
                continue
            failures += 1
            report(name, small, a2, b2)
        print("generated: %d sequences, seed %d, %d differences not reproduced" % (args.sequences, seed, flaky))
    # What the runs observed (RabbitMQ's side), so that a generator that
    # stopped reaching a case shows.
    print("observed: " + ", ".join("%s %d" % (k, v) for k, v in sorted(SEEN.items())))
    if failures:
        print("differential: %d differences" % failures)
        sys.exit(1)
    print("differential: ok")


if __name__ == "__main__":
    main()
