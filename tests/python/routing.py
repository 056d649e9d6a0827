"""Tutorial 4, "Routing": a direct exchange keyed by severity."""

import common

port = common.port_from_argv()
connection = common.connect(port)
channel = connection.channel()
channel.exchange_declare(exchange="direct_logs", exchange_type="direct")

queues = {}
for name, severities in [("errors-only", ["error"]), ("everything", ["info", "warning", "error"])]:
    queue_name = channel.queue_declare(queue="", exclusive=True).method.queue
    for severity in severities:
        channel.queue_bind(exchange="direct_logs", queue=queue_name, routing_key=severity)
    queues[name] = queue_name

channel.confirm_delivery()
for severity, message in [("info", "i1"), ("error", "e1"), ("warning", "w1"), ("debug", "d1"), ("error", "e2")]:
    channel.basic_publish(exchange="direct_logs", routing_key=severity, body=message)

common.expect_eq(common.drain(channel, queues["errors-only"]), ["e1", "e2"], "errors-only queue")
common.expect_eq(common.drain(channel, queues["everything"]), ["i1", "e1", "w1", "e2"], "everything queue")

channel.queue_unbind(exchange="direct_logs", queue=queues["everything"], routing_key="info")
channel.basic_publish(exchange="direct_logs", routing_key="info", body="i2")
common.expect_eq(common.drain(channel, queues["everything"]), [], "after unbinding info")
connection.close()
print("routing: ok")
