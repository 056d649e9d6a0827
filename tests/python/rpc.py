"""Tutorial 6, "RPC": a server on rpc_queue, a client with reply_to on an
exclusive server-named callback queue and correlation_id."""

import threading
import time
import uuid

import pika

import common

port = common.port_from_argv()


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


server_ready = threading.Event()
server_errors = []


def rpc_server():
    try:
        connection = common.connect(port)
        channel = connection.channel()
        channel.queue_declare(queue="rpc_queue")

        def on_request(ch, method, props, body):
            n = int(body)
            if n < 0:
                ch.basic_ack(delivery_tag=method.delivery_tag)
                ch.stop_consuming()
                return
            ch.basic_publish(
                exchange="",
                routing_key=props.reply_to,
                properties=pika.BasicProperties(correlation_id=props.correlation_id),
                body=str(fib(n)),
            )
            ch.basic_ack(delivery_tag=method.delivery_tag)

        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(queue="rpc_queue", on_message_callback=on_request)
        server_ready.set()
        channel.start_consuming()
        connection.close()
    except Exception as e:  # reported by the main thread
        server_errors.append(repr(e))
        server_ready.set()


class FibonacciRpcClient:
    def __init__(self):
        self.connection = common.connect(port)
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        common.check(self.callback_queue.startswith("amq.gen-"), "callback queue name %r" % self.callback_queue)
        self.channel.basic_consume(queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True)
        self.response = None
        self.corr_id = None
        self.stray = []

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body
        else:
            self.stray.append(props.correlation_id)

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="",
            routing_key="rpc_queue",
            properties=pika.BasicProperties(reply_to=self.callback_queue, correlation_id=self.corr_id),
            body=str(n),
        )
        deadline = time.monotonic() + common.TIMEOUT_S
        while self.response is None and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=1)
        if self.response is None:
            common.fail("no RPC response for fib(%d)" % n)
        return int(self.response)


thread = threading.Thread(target=rpc_server, daemon=True)
thread.start()
server_ready.wait(common.TIMEOUT_S)
if server_errors:
    common.fail("rpc server: " + server_errors[0])

client = FibonacciRpcClient()
for n, expected in [(0, 0), (1, 1), (10, 55), (20, 6765)]:
    common.expect_eq(client.call(n), expected, "fib(%d)" % n)
common.expect_eq(client.stray, [], "responses with a foreign correlation_id")

# Stop the server.
client.channel.basic_publish(exchange="", routing_key="rpc_queue", body="-1")
thread.join(common.TIMEOUT_S)
common.check(not thread.is_alive(), "rpc server did not stop")
if server_errors:
    common.fail("rpc server: " + server_errors[0])
client.connection.close()
print("rpc: ok")
