"""Tutorial 3, "Publish/Subscribe": a fanout exchange to two subscribers,
each on an exclusive server-named queue."""

import common

port = common.port_from_argv()

subscribers = []
for _ in range(2):
    connection = common.connect(port)
    channel = connection.channel()
    channel.exchange_declare(exchange="logs", exchange_type="fanout")
    result = channel.queue_declare(queue="", exclusive=True)
    queue_name = result.method.queue
    common.check(queue_name.startswith("amq.gen-"), "server-named queue, got %r" % queue_name)
    channel.queue_bind(exchange="logs", queue=queue_name)
    subscribers.append((connection, channel, queue_name))

common.check(subscribers[0][2] != subscribers[1][2], "two distinct generated names")

# emit_log.py
connection = common.connect(port)
channel = connection.channel()
channel.exchange_declare(exchange="logs", exchange_type="fanout")
messages = ["info: Hello World!", "warning: disk", "error: boom"]
for message in messages:
    channel.basic_publish(exchange="logs", routing_key="", body=message)
connection.close()

for connection, channel, queue_name in subscribers:
    received = common.consume_n(channel, queue_name, len(messages))
    common.expect_eq([b.decode() for _, _, b in received], messages, "fanout copy on " + queue_name)
    connection.close()

# The exclusive queues went away with their connections.
connection = common.connect(port)
for _, _, queue_name in subscribers:
    channel = connection.channel()
    try:
        channel.queue_declare(queue=queue_name, passive=True)
        common.fail("exclusive queue %s survived its connection" % queue_name)
    except Exception as e:  # pika.exceptions.ChannelClosedByBroker
        code = getattr(e, "reply_code", None)
        common.expect_eq(code, 404, "passive declare of a deleted exclusive queue")
connection.close()
print("pubsub: ok")
