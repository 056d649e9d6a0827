"""kombu (the AMQP layer of Celery and oslo.messaging) against three nodes.

    kombu_cluster.py DECLARE_PORT PUBLISH_PORT CONSUME_PORT

Declares a durable direct exchange and queue through the first node,
publishes persistent messages with publisher confirms through the second,
and consumes them with manual acks through the third: a rejected-with-
requeue message comes back with redelivered set, every message arrives
once acked, and the queue is empty at the end (checked through the first
node). Exits non-zero with a message on any failure.
"""

import socket
import sys

from kombu import Consumer, Exchange, Producer, Queue
from kombu_common import TIMEOUT_S, connection, fail

COUNT = 50


def main():
    if len(sys.argv) != 4:
        fail("usage: %s DECLARE_PORT PUBLISH_PORT CONSUME_PORT" % sys.argv[0])
    declare_port, publish_port, consume_port = (int(a) for a in sys.argv[1:])
    exchange = Exchange("kombu.cluster", type="direct", durable=True)
    queue = Queue("kombu.cluster.q", exchange=exchange, routing_key="task", durable=True)

    with connection(declare_port) as conn:
        bound = queue(conn.default_channel)
        bound.declare()
        bound.purge()
        print("declared %s through port %d" % (queue.name, declare_port))

    with connection(publish_port) as conn:
        producer = Producer(conn.default_channel, exchange=exchange, routing_key="task")
        for i in range(COUNT):
            producer.publish({"n": i}, serializer="json", delivery_mode=2)
        print("published %d with confirms through port %d" % (COUNT, publish_port))

    seen = {}
    requeued = []
    with connection(consume_port) as conn:

        def on_message(body, message):
            n = body["n"]
            if n == 0 and not requeued:
                requeued.append(message.delivery_info.get("redelivered"))
                message.requeue()
                return
            if n == 0 and not message.delivery_info.get("redelivered"):
                fail("message 0 came back without redelivered")
            seen[n] = seen.get(n, 0) + 1
            message.ack()

        with Consumer(conn.default_channel, queues=[queue], callbacks=[on_message], prefetch_count=10):
            while len(seen) < COUNT:
                try:
                    conn.drain_events(timeout=TIMEOUT_S)
                except socket.timeout:
                    fail("only %d of %d messages consumed through port %d" % (len(seen), COUNT, consume_port))
    if requeued != [False]:
        fail("the first delivery of message 0 should not be redelivered: %r" % requeued)
    duplicates = sum(c - 1 for c in seen.values())
    if sorted(seen) != list(range(COUNT)) or duplicates:
        fail("consumed %r" % seen)
    print("consumed %d with manual acks through port %d (one requeued and redelivered)" % (COUNT, consume_port))

    with connection(declare_port) as conn:
        _, count, consumers = queue(conn.default_channel).queue_declare(passive=True)
        if count != 0:
            fail("%d messages left in the queue" % count)
        print("queue empty at the end, %d consumers" % consumers)
    print("OK")


if __name__ == "__main__":
    main()
