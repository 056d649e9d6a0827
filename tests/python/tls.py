"""AMQP over TLS with pika, as users write it (ADR 0023).

    tls.py PORT CA_FILE MODE [CERT KEY]

MODE:
  ok           trusts CA_FILE (and sends CERT/KEY if given): declares, publishes
               with confirms (one body of 1 MiB, many TLS records), gets them back.
  untrusted    trusts only the system's CAs: the handshake must fail.
  refused      trusts CA_FILE (and sends CERT/KEY if given), but the server must
               refuse the connection (a client certificate it wants and did not get,
               or one it does not trust).
Prints "tls: ok" or "tls: refused (...)" and exits 0 when the mode's outcome happened.
"""

import ssl
import sys

import pika
import pika.exceptions

import common

port = common.port_from_argv()
ca_file, mode = sys.argv[2], sys.argv[3]
client_cert = sys.argv[4:6]


def params(context):
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1,
        socket_timeout=10,
    )


def context(trust_ca):
    ctx = ssl.create_default_context(cafile=ca_file if trust_ca else None)
    if client_cert:
        ctx.load_cert_chain(client_cert[0], client_cert[1])
    return ctx


def exchange_messages(connection):
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue="over-tls")
    channel.queue_purge(queue="over-tls")
    bodies = [b"first", b"x" * (1024 * 1024), "\u00e9t\u00e9 \u2603".encode()]
    for body in bodies:
        channel.basic_publish(exchange="", routing_key="over-tls", body=body)
    for body in bodies:
        method, _, got = channel.basic_get(queue="over-tls", auto_ack=True)
        common.check(method is not None, "a message over TLS")
        common.expect_eq(len(got), len(body), "body length")
        common.expect_eq(got, body, "body")
    connection.close()


if mode == "ok":
    exchange_messages(pika.BlockingConnection(params(context(trust_ca=True))))
    print("tls: ok")
elif mode in ("untrusted", "refused"):
    try:
        connection = pika.BlockingConnection(params(context(trust_ca=(mode == "refused"))))
        # TLS 1.3: a client certificate is checked after the client's
        # handshake finished, so the refusal may come at the first read.
        connection.channel().queue_declare(queue="over-tls")
    except (pika.exceptions.AMQPError, ssl.SSLError, OSError) as e:
        print("tls: refused (%s: %s)" % (type(e).__name__, e))
        sys.exit(0)
    common.fail("the connection was accepted")
else:
    common.fail("unknown mode %r" % mode)
