"""aio-pika's RPC pattern (aio_pika.patterns.RPC): create, call, close.

    aio_pika_rpc.py SERVER_PORT [CLIENT_PORT]

Issue 15: `RPC.close()` cancels the consumer of its auto-delete reply queue
(which deletes the queue and, with its last binding, the auto-delete
headers exchange `rpc.dlx`) and then unbinds that queue from `rpc.dlx`.
RabbitMQ answers unbind-ok; Warren closed the channel with 404, so every
aio-pika RPC client failed on close. The server side registers a method
through SERVER_PORT, the client calls it through CLIENT_PORT (the same
node by default), both close cleanly, and a second client does it all
again on a new connection. Exits non-zero with a message on any failure.
"""

import asyncio
import sys

import aio_pika
from aio_pika.patterns import RPC

TIMEOUT_S = 30


def fail(message):
    print("FAIL: " + message, file=sys.stderr, flush=True)
    sys.exit(1)


async def multiply(*, x, y):
    return x * y


async def client_round(url, n):
    connection = await aio_pika.connect(url, timeout=TIMEOUT_S)
    async with connection:
        channel = await connection.channel()
        rpc = await RPC.create(channel)
        results = [await rpc.call("multiply", kwargs={"x": n, "y": i}, expiration=TIMEOUT_S) for i in range(5)]
        if results != [n * i for i in range(5)]:
            fail("round %d: got %r" % (n, results))
        await rpc.close()
        # The channel must still be open after close(): the unbind of the
        # already-deleted reply queue is unbind-ok, not a channel error.
        if channel.is_closed:
            fail("round %d: the channel was closed by RPC.close()" % n)
        await channel.close()
    print("round %d: 5 calls answered, RPC closed cleanly" % n)


async def main():
    if len(sys.argv) not in (2, 3):
        fail("usage: %s SERVER_PORT [CLIENT_PORT]" % sys.argv[0])
    server_port = int(sys.argv[1])
    client_port = int(sys.argv[2]) if len(sys.argv) == 3 else server_port
    server_url = "amqp://guest:guest@127.0.0.1:%d/" % server_port
    client_url = "amqp://guest:guest@127.0.0.1:%d/" % client_port

    server = await aio_pika.connect(server_url, timeout=TIMEOUT_S)
    async with server:
        server_channel = await server.channel()
        server_rpc = await RPC.create(server_channel)
        await server_rpc.register("multiply", multiply, auto_delete=True)
        for n in (3, 7):
            await asyncio.wait_for(client_round(client_url, n), TIMEOUT_S)
        await server_rpc.close()
        if server_channel.is_closed:
            fail("the server's channel was closed by RPC.close()")
    print("OK")


if __name__ == "__main__":
    asyncio.run(main())
