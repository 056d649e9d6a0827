"""Shared helpers for the pika tutorial scripts.

Every script takes the broker's AMQP port as its first argument, talks to
127.0.0.1 as guest/guest, and exits non-zero with a message on failure.
"""

import sys
import time

import pika

TIMEOUT_S = 30


def port_from_argv():
    if len(sys.argv) < 2:
        fail("usage: %s PORT [...]" % sys.argv[0])
    return int(sys.argv[1])


def params(port):
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        heartbeat=30,
        blocked_connection_timeout=TIMEOUT_S,
        connection_attempts=3,
        retry_delay=1,
    )


def connect(port):
    return pika.BlockingConnection(params(port))


def fail(message):
    print("FAIL: " + message, file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def expect_eq(actual, expected, what):
    if actual != expected:
        fail("%s: expected %r, got %r" % (what, expected, actual))


def consume_n(channel, queue, n, auto_ack=True, timeout=TIMEOUT_S):
    """Consumes n messages from queue (the tutorial's basic_consume +
    start_consuming), failing if they do not arrive within timeout."""
    received = []
    state = {"timed_out": False}

    def on_message(ch, method, properties, body):
        received.append((method, properties, body))
        if not auto_ack:
            ch.basic_ack(delivery_tag=method.delivery_tag)
        if len(received) >= n:
            ch.stop_consuming()

    def on_timeout():
        state["timed_out"] = True
        channel.stop_consuming()

    tag = channel.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=auto_ack)
    timer = channel.connection.call_later(timeout, on_timeout)
    channel.start_consuming()
    channel.connection.remove_timeout(timer)
    if channel.is_open and tag in channel.consumer_tags:
        channel.basic_cancel(tag)
    if state["timed_out"]:
        fail("only %d of %d messages from %r within %ss: %r" % (len(received), n, queue, timeout, [b for _, _, b in received]))
    return received


def drain(channel, queue):
    """All messages currently in queue, via basic_get."""
    bodies = []
    while True:
        method, _props, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body.decode())


def wait_until(predicate, what, timeout=TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    fail("timed out waiting for " + what)
