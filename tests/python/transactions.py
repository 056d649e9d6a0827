"""Transactions as pika users write them (ADR 0020): publishes and acks of
a `tx_select` channel take effect at `tx_commit`, vanish at `tx_rollback`;
tx and confirm mode exclude each other with 406."""

import pika
import pika.exceptions

import common

port = common.port_from_argv()

connection = common.connect(port)
channel = connection.channel()
channel.queue_declare(queue="tx-orders")
channel.queue_purge(queue="tx-orders")
observer = connection.channel()


def ready():
    return observer.queue_declare(queue="tx-orders", passive=True).method.message_count


channel.tx_select()
for i in range(3):
    channel.basic_publish(exchange="", routing_key="tx-orders", body="order %d" % i)
common.expect_eq(ready(), 0, "messages visible before tx.commit")
channel.tx_commit()
common.expect_eq(ready(), 3, "messages after tx.commit")

channel.basic_publish(exchange="", routing_key="tx-orders", body="never")
channel.tx_rollback()
channel.tx_commit()
common.expect_eq(ready(), 3, "messages after a rolled-back publish")

# Acks in a transaction: the message stays unacked until the commit.
method, _, body = channel.basic_get(queue="tx-orders", auto_ack=False)
common.expect_eq(body, b"order 0", "first message")
channel.basic_ack(delivery_tag=method.delivery_tag)
channel.tx_rollback()
channel.basic_ack(delivery_tag=method.delivery_tag)
channel.tx_commit()
common.expect_eq(ready(), 2, "messages after an acked get")

# A mandatory unroutable publish comes back at commit.
returned = []
channel.add_on_return_callback(lambda ch, m, p, b: returned.append(b))
channel.basic_publish(exchange="", routing_key="tx-nowhere", body="lost", mandatory=True)
channel.tx_commit()
connection.process_data_events(time_limit=1)
common.expect_eq(returned, [b"lost"], "returned at commit")

# confirm.select on a transactional channel: 406.
try:
    channel.confirm_delivery()
    common.fail("confirm.select on a tx channel was accepted")
except pika.exceptions.ChannelClosedByBroker as e:
    common.expect_eq(e.reply_code, 406, "confirm.select on a tx channel")

# tx.commit on a channel that never selected: 406.
plain = connection.channel()
try:
    plain.tx_commit()
    common.fail("tx.commit without tx.select was accepted")
except pika.exceptions.ChannelClosedByBroker as e:
    common.expect_eq(e.reply_code, 406, "tx.commit without tx.select")
    common.expect_eq(e.reply_text, "PRECONDITION_FAILED - channel is not transactional", "reply text")

connection.close()
print("transactions: ok")
