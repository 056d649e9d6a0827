"""Consumer credit at the consumer's node (ADR 0026), as a pika user sees it.

The core assigns a consumer of prefetch 10 up to 40 deliveries; the node
sends the client 10 and holds the rest. Checked here against the binary:

1. the client never holds more unacked deliveries than its prefetch, and
   each ack brings the next delivery, in tag order, until all 30 are in;
2. deliveries held when the channel closes go back not redelivered (only
   the ten the client had come back redelivered), in queue order;
3. a cancel gives the held deliveries to another consumer, not redelivered;
4. an ack of a tag held and never sent is RabbitMQ's 406 "unknown delivery
   tag N";
5. an ack with multiple of a get-ok's tag settles what the client had, not
   the held deliveries below it: they still reach the consumer afterwards;
6. prefetch 1 (below the lookahead) stays fair across two consumers.

Run as `consumer_credit.py PORT`.
"""

import pika
import pika.exceptions

import common

PREFETCH = 10
COUNT = 30


def fresh_queue(channel, name, count):
    channel.queue_declare(queue=name)
    channel.queue_purge(queue=name)
    for i in range(count):
        channel.basic_publish(exchange="", routing_key=name, body=str(i).encode())


def pull(connection, box, n, timeout=common.TIMEOUT_S):
    """Services the connection until `box` holds n items."""
    waited = 0.0
    while len(box) < n:
        connection.process_data_events(time_limit=0.05)
        waited += 0.05
        common.check(waited < timeout, "only %d of %d deliveries arrived" % (len(box), n))


def settle_quietly(connection, seconds=0.4):
    """Services the connection for a while, for deliveries that should not come."""
    for _ in range(int(seconds / 0.05)):
        connection.process_data_events(time_limit=0.05)


def prefetch_is_what_the_client_sees(port):
    connection = common.connect(port)
    channel = connection.channel()
    fresh_queue(channel, "credit-acks", COUNT)
    channel.basic_qos(prefetch_count=PREFETCH)
    box = []
    channel.basic_consume("credit-acks", lambda ch, m, p, b: box.append((m, b)), auto_ack=False)
    pull(connection, box, PREFETCH)
    settle_quietly(connection)
    common.expect_eq(len(box), PREFETCH, "deliveries before any ack (the prefetch)")
    acked = 0
    while acked < COUNT:
        method, _ = box[acked]
        channel.basic_ack(delivery_tag=method.delivery_tag)
        acked += 1
        pull(connection, box, min(COUNT, acked + PREFETCH))
        common.check(len(box) - acked <= PREFETCH, "more unacked than the prefetch: %d" % (len(box) - acked))
    tags = [m.delivery_tag for m, _ in box]
    common.expect_eq(tags, list(range(1, COUNT + 1)), "delivery tags, in order")
    common.expect_eq([b.decode() for _, b in box], [str(i) for i in range(COUNT)], "bodies, in queue order")
    common.check(not any(m.redelivered for m, _ in box), "nothing was redelivered")
    connection.close()


def drain_all(port, queue, expected):
    connection = common.connect(port)
    channel = connection.channel()
    got = common.consume_n(channel, queue, expected)
    connection.close()
    return [(b.decode(), m.redelivered) for m, _, b in got]


def held_go_back_unredelivered_on_close(port):
    connection = common.connect(port)
    channel = connection.channel()
    fresh_queue(channel, "credit-close", COUNT)
    channel.basic_qos(prefetch_count=PREFETCH)
    box = []
    channel.basic_consume("credit-close", lambda ch, m, p, b: box.append(m), auto_ack=False)
    pull(connection, box, PREFETCH)
    settle_quietly(connection)
    channel.close()
    connection.close()
    got = drain_all(port, "credit-close", COUNT)
    want = [(str(i), i < PREFETCH) for i in range(COUNT)]
    common.expect_eq(got, want, "(body, redelivered) after the close")


def cancel_hands_held_to_another_consumer(port):
    connection = common.connect(port)
    first = connection.channel()
    fresh_queue(first, "credit-cancel", 2 * PREFETCH)
    first.basic_qos(prefetch_count=PREFETCH)
    box = []
    tag = first.basic_consume("credit-cancel", lambda ch, m, p, b: box.append(m), auto_ack=False)
    pull(connection, box, PREFETCH)
    settle_quietly(connection)
    other = connection.channel()
    moved = []
    other.basic_consume("credit-cancel", lambda ch, m, p, b: moved.append((b.decode(), m.redelivered)), auto_ack=True)
    first.basic_cancel(tag)
    pull(connection, moved, PREFETCH)
    common.expect_eq(
        sorted(moved, key=lambda x: int(x[0])),
        [(str(i), False) for i in range(PREFETCH, 2 * PREFETCH)],
        "held deliveries moved by the cancel",
    )
    # The cancelled consumer's ten are still its to ack.
    first.basic_ack(delivery_tag=box[-1].delivery_tag, multiple=True)
    settle_quietly(connection, 0.2)
    ok = first.queue_declare(queue="credit-cancel", passive=True)
    common.expect_eq(ok.method.message_count, 0, "ready after the acks")
    connection.close()


def ack_of_a_held_tag_is_unknown(port):
    connection = common.connect(port)
    channel = connection.channel()
    fresh_queue(channel, "credit-unknown", COUNT)
    channel.basic_qos(prefetch_count=PREFETCH)
    box = []
    channel.basic_consume("credit-unknown", lambda ch, m, p, b: box.append(m), auto_ack=False)
    pull(connection, box, PREFETCH)
    settle_quietly(connection)
    held = PREFETCH + 5
    channel.basic_ack(delivery_tag=held)
    try:
        # A method with a reply after the ack: its answer is the channel's close.
        channel.basic_qos(prefetch_count=PREFETCH)
        common.fail("an ack of held tag %d was taken" % held)
    except pika.exceptions.ChannelClosedByBroker as closed:
        common.expect_eq(closed.reply_code, 406, "reply code")
        common.expect_eq(closed.reply_text, "PRECONDITION_FAILED - unknown delivery tag %d" % held, "reply text")
    connection.close()
    # Nothing was lost or acked: 10 redelivered, 20 not.
    got = drain_all(port, "credit-unknown", COUNT)
    common.expect_eq(got, [(str(i), i < PREFETCH) for i in range(COUNT)], "(body, redelivered) after the 406")


def multiple_ack_past_held_settles_only_what_was_sent(port):
    connection = common.connect(port)
    channel = connection.channel()
    fresh_queue(channel, "credit-multi", COUNT)
    channel.queue_declare(queue="credit-multi-get")
    channel.queue_purge(queue="credit-multi-get")
    channel.basic_publish(exchange="", routing_key="credit-multi-get", body=b"got")
    channel.basic_qos(prefetch_count=PREFETCH)
    box = []
    channel.basic_consume("credit-multi", lambda ch, m, p, b: box.append(m), auto_ack=False)
    pull(connection, box, PREFETCH)
    settle_quietly(connection)
    method, _, body = channel.basic_get("credit-multi-get", auto_ack=False)
    common.expect_eq(body, b"got", "get-ok body")
    common.check(method.delivery_tag > 2 * PREFETCH, "get-ok tag %d after the held ones" % method.delivery_tag)
    channel.basic_ack(delivery_tag=method.delivery_tag, multiple=True)
    # The ten sent and the get are settled; the ten held come next, then
    # the rest, none lost.
    while len(box) < COUNT:
        before = len(box)
        pull(connection, box, before + 1)
        channel.basic_ack(delivery_tag=box[-1].delivery_tag)
    bodies = []
    for m in box:
        common.check(not m.redelivered, "tag %d redelivered" % m.delivery_tag)
        bodies.append(m.delivery_tag)
    common.expect_eq(len(set(bodies)), COUNT, "distinct tags")
    settle_quietly(connection, 0.2)
    for queue in ("credit-multi", "credit-multi-get"):
        ok = channel.queue_declare(queue=queue, passive=True)
        common.expect_eq(ok.method.message_count, 0, "ready in %s" % queue)
    connection.close()


def prefetch_one_stays_fair(port):
    connection = common.connect(port)
    channel = connection.channel()
    fresh_queue(channel, "credit-fair", 4)
    slow = connection.channel()
    slow.basic_qos(prefetch_count=1)
    fast = connection.channel()
    fast.basic_qos(prefetch_count=1)
    slow_box, fast_box = [], []
    slow.basic_consume("credit-fair", lambda ch, m, p, b: slow_box.append(m), auto_ack=False)
    pull(connection, slow_box, 1)
    fast.basic_consume(
        "credit-fair",
        lambda ch, m, p, b: (fast_box.append(m), ch.basic_ack(delivery_tag=m.delivery_tag)),
        auto_ack=False,
    )
    pull(connection, fast_box, 3)
    settle_quietly(connection)
    common.expect_eq((len(slow_box), len(fast_box)), (1, 3), "(slow, fast) with prefetch 1: nothing waits on slow")
    connection.close()


def main():
    port = common.port_from_argv()
    prefetch_is_what_the_client_sees(port)
    held_go_back_unredelivered_on_close(port)
    cancel_hands_held_to_another_consumer(port)
    ack_of_a_held_tag_is_unknown(port)
    multiple_ack_past_held_settles_only_what_was_sent(port)
    prefetch_one_stays_fair(port)
    print("consumer credit: ok")


if __name__ == "__main__":
    main()
