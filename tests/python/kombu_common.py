"""Shared helpers for the kombu scripts: a failure exit and a connection
with publisher confirms to 127.0.0.1 as guest/guest."""

import sys

from kombu import Connection

TIMEOUT_S = 30


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def connection(port):
    # confirm_publish: Producer.publish waits for the broker's basic.ack
    # (py-amqp raises if it is a nack).
    return Connection(
        "amqp://guest:guest@127.0.0.1:%d//" % port,
        transport_options={"confirm_publish": True},
        connect_timeout=TIMEOUT_S,
    )
