"""The EXTERNAL mechanism with pika, as users write it (ADR 0031): the user
is named by the client's certificate, no password is sent.

    external.py PORT CA_FILE MODE CERT KEY

MODE:
  ok           logs in with EXTERNAL presenting CERT/KEY, declares a queue,
               publishes with confirms and gets the message back.
  refused      the server must refuse the login (403 ACCESS_REFUSED).
  unoffered    the server must not offer EXTERNAL (pika refuses to start it).
CERT may be "-" to send no certificate.
Prints "external: ok", "external: refused (...)" or "external: unoffered (...)".
"""

import ssl
import sys

import pika
import pika.exceptions

import common

port = common.port_from_argv()
ca_file, mode, cert, key = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

ctx = ssl.create_default_context(cafile=ca_file)
if cert != "-":
    ctx.load_cert_chain(cert, key)
params = pika.ConnectionParameters(
    host="127.0.0.1",
    port=port,
    credentials=pika.credentials.ExternalCredentials(),
    ssl_options=pika.SSLOptions(ctx, "localhost"),
    connection_attempts=1,
    socket_timeout=10,
)

if mode == "ok":
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue="external")
    channel.basic_publish(exchange="", routing_key="external", body=b"as the certificate's user")
    method, _, body = channel.basic_get(queue="external", auto_ack=True)
    common.check(method is not None, "a message")
    common.expect_eq(body, b"as the certificate's user", "body")
    connection.close()
    print("external: ok")
elif mode == "refused":
    try:
        pika.BlockingConnection(params)
    except pika.exceptions.AuthenticationError as e:
        common.fail("EXTERNAL was not offered: %r" % (e,))
    except pika.exceptions.AMQPConnectionError as e:
        print("external: refused (%s: %s)" % (type(e).__name__, e))
        sys.exit(0)
    common.fail("the connection was accepted")
elif mode == "unoffered":
    try:
        pika.BlockingConnection(params)
    except pika.exceptions.AuthenticationError as e:
        print("external: unoffered (%s: %s)" % (type(e).__name__, e))
        sys.exit(0)
    except pika.exceptions.AMQPConnectionError as e:
        common.fail("expected pika to find EXTERNAL not offered, got %s: %s" % (type(e).__name__, e))
    common.fail("the connection was accepted")
else:
    common.fail("unknown mode %r" % mode)
