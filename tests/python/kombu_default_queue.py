"""kombu's default binding: Queue(name, exchange=ex) binds with routing key "".

    kombu_default_queue.py DECLARE_PORT PUBLISH_PORT CONSUME_PORT

Issue 15: a binding key "" never matched, so a message published with
routing key "" (kombu's default when a Producer names no routing key) was
confirmed and dropped. For a direct and a topic exchange this declares
`Queue(name, exchange=ex)` (kombu's default routing key "") next to a queue
bound with "k" through the first node, publishes with confirms through the
second (routing keys "" and "k"), and consumes with manual acks through
the third: each queue gets exactly the messages of its key. Exits non-zero
with a message on any failure.
"""

import socket
import sys

from kombu import Consumer, Exchange, Producer, Queue
from kombu_common import TIMEOUT_S, connection, fail

COUNT = 20


def consume_all(conn, queue, expected):
    seen = []

    def on_message(body, message):
        seen.append(body)
        message.ack()

    with Consumer(conn.default_channel, queues=[queue], callbacks=[on_message], prefetch_count=10):
        while len(seen) < expected:
            try:
                conn.drain_events(timeout=TIMEOUT_S)
            except socket.timeout:
                fail("only %d of %d messages from %s" % (len(seen), expected, queue.name))
    return seen


def check_flow(kind, ports):
    declare_port, publish_port, consume_port = ports
    exchange = Exchange("kombu.default.%s" % kind, type=kind, durable=True)
    # kombu's default: routing_key="" (the binding key Warren dropped).
    default_queue = Queue("kombu.default.%s.q" % kind, exchange=exchange, durable=True)
    keyed_queue = Queue("kombu.default.%s.k" % kind, exchange=exchange, routing_key="k", durable=True)
    if default_queue.routing_key != "":
        fail("kombu's default routing key is %r, not ''" % default_queue.routing_key)

    with connection(declare_port) as conn:
        for queue in (default_queue, keyed_queue):
            bound = queue(conn.default_channel)
            bound.declare()
            bound.purge()

    with connection(publish_port) as conn:
        producer = Producer(conn.default_channel, exchange=exchange)
        for i in range(COUNT):
            # No routing_key: kombu publishes with "".
            producer.publish({"key": "", "n": i}, serializer="json", delivery_mode=2)
            producer.publish({"key": "k", "n": i}, serializer="json", delivery_mode=2, routing_key="k")
        print("%s: published %d with key '' and %d with key 'k' through port %d"
              % (kind, COUNT, COUNT, publish_port))

    with connection(consume_port) as conn:
        for queue, key in ((default_queue, ""), (keyed_queue, "k")):
            seen = consume_all(conn, queue, COUNT)
            if sorted(b["n"] for b in seen) != list(range(COUNT)) or any(b["key"] != key for b in seen):
                fail("%s: %s got %r" % (kind, queue.name, seen))
        print("%s: consumed each queue's own %d messages through port %d" % (kind, COUNT, consume_port))

    with connection(declare_port) as conn:
        for queue in (default_queue, keyed_queue):
            _, count, _ = queue(conn.default_channel).queue_declare(passive=True)
            if count != 0:
                fail("%s: %d messages left in %s" % (kind, count, queue.name))


def main():
    if len(sys.argv) != 4:
        fail("usage: %s DECLARE_PORT PUBLISH_PORT CONSUME_PORT" % sys.argv[0])
    ports = tuple(int(a) for a in sys.argv[1:])
    for kind in ("direct", "topic"):
        check_flow(kind, ports)
    print("OK")


if __name__ == "__main__":
    main()
