"""Tutorial 1, "Hello World!": publish through the default exchange, consume."""

import common

port = common.port_from_argv()

# send.py
connection = common.connect(port)
channel = connection.channel()
channel.queue_declare(queue="hello")
channel.basic_publish(exchange="", routing_key="hello", body="Hello World!")
connection.close()

# receive.py
connection = common.connect(port)
channel = connection.channel()
channel.queue_declare(queue="hello")
received = common.consume_n(channel, "hello", 1, auto_ack=True)
method, properties, body = received[0]
common.expect_eq(body, b"Hello World!", "body")
common.expect_eq(method.routing_key, "hello", "routing key")
common.expect_eq(method.exchange, "", "exchange")
common.expect_eq(method.redelivered, False, "redelivered")
ok = channel.queue_declare(queue="hello", passive=True)
common.expect_eq(ok.method.message_count, 0, "messages left after auto-ack consume")
connection.close()
print("hello world: ok")
