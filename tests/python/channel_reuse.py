"""A channel number the broker closed after an error is reused by pika (it
takes the lowest free number); deliveries on the new channel must arrive."""

import common
import pika

port = common.port_from_argv()
connection = common.connect(port)
channel = connection.channel()
first_number = channel.channel_number
try:
    channel.queue_declare(queue="no-such-queue", passive=True)
    common.fail("passive declare of a missing queue succeeded")
except pika.exceptions.ChannelClosedByBroker as e:
    common.expect_eq(e.reply_code, 404, "reply code of the passive declare")

channel = connection.channel()
common.expect_eq(channel.channel_number, first_number, "pika reuses the closed channel's number")
channel.queue_declare(queue="reused")
channel.basic_publish(exchange="", routing_key="reused", body=b"after reuse")
received = common.consume_n(channel, "reused", 1, auto_ack=False, timeout=10)
method, _properties, body = received[0]
common.expect_eq(body, b"after reuse", "body delivered on the reused channel")
connection.close()
print("channel reuse: ok")
