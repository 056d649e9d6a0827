"""Tutorial 5, "Topics": * matches one word, # zero or more."""

import common

port = common.port_from_argv()
connection = common.connect(port)
channel = connection.channel()
channel.exchange_declare(exchange="topic_logs", exchange_type="topic")

bindings = {
    "Q1": ["*.orange.*"],
    "Q2": ["*.*.rabbit", "lazy.#"],
    "kern": ["kern.*"],
    "critical": ["*.critical"],
    "all": ["#"],
}
queues = {}
for name, keys in bindings.items():
    queue_name = channel.queue_declare(queue="", exclusive=True).method.queue
    for key in keys:
        channel.queue_bind(exchange="topic_logs", queue=queue_name, routing_key=key)
    queues[name] = queue_name

cases = {
    "quick.orange.rabbit": {"Q1", "Q2", "all"},
    "lazy.orange.elephant": {"Q1", "Q2", "all"},
    "quick.orange.fox": {"Q1", "all"},
    "lazy.brown.fox": {"Q2", "all"},
    "lazy.pink.rabbit": {"Q2", "all"},  # matches two Q2 bindings, delivered once
    "quick.brown.fox": {"all"},
    "orange": {"all"},
    "quick.orange.male.rabbit": {"all"},
    "lazy.orange.male.rabbit": {"Q2", "all"},
    "lazy": {"Q2", "all"},
    "kern.critical": {"kern", "critical", "all"},
    "kern.info.x": {"all"},
}

channel.confirm_delivery()
for key in cases:
    channel.basic_publish(exchange="topic_logs", routing_key=key, body=key)

got = {name: common.drain(channel, queue) for name, queue in queues.items()}
for key, expected in cases.items():
    reached = {name for name, bodies in got.items() if key in bodies}
    common.expect_eq(sorted(reached), sorted(expected), "queues reached by %r" % key)
for name, bodies in got.items():
    common.expect_eq(len(bodies), len(set(bodies)), "no duplicates in %s" % name)
connection.close()
print("topics: ok")
