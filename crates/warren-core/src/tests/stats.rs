//! Message counts kept by apply (`crate::stats`).

use crate::test_support::{ack, chan, consume, declare_queue, get, nack, publish, qos, root, Harness};
use crate::{Command, QueueName};

fn stats(h: &Harness, name: &str) -> crate::stats::QueueStats {
    h.broker.vhosts()[&root()].queues[&QueueName::from(name)].stats
}

#[test]
fn publishes_deliveries_gets_redeliveries_and_acks_are_counted_per_queue() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    for body in ["a", "b", "c", "d"] {
        h.ok(c, publish("", "q", body));
    }
    h.ok(c, get("q", true));
    h.ok(c, get("q", false));
    h.ok(c, qos(1, false));
    h.ok(c, consume("q", "ctag", false));
    // get-ok is tag 2, the consumer's delivery tag 3.
    h.ok(c, nack(2, false, true));
    h.ok(c, ack(3, false));
    let counted = stats(&h, "q");
    assert_eq!(counted.publish, 4);
    assert_eq!((counted.get_no_ack, counted.get), (1, 1));
    assert!(counted.deliver >= 2, "{counted:?}");
    assert_eq!(counted.redeliver, 1, "the nacked get came back redelivered");
    assert_eq!(counted.ack, 1);
    assert_eq!(counted.deliver_get(), counted.deliver + 2);
}

#[test]
fn unroutable_publishes_are_counted_as_dropped_or_returned() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, publish("amq.direct", "nowhere", "x"));
    h.ok(
        c,
        Command::Publish {
            vhost: root(),
            mandatory: true,
            message: std::sync::Arc::new(crate::test_support::message("amq.direct", "nowhere", "y")),
        },
    );
    let counted = h.broker.stats();
    assert_eq!(
        (counted.publish, counted.drop_unroutable, counted.return_unroutable),
        (2, 1, 1)
    );
}

#[test]
fn counts_never_make_two_brokers_unequal() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    let before = h.broker.clone();
    h.ok(c, get("q", true));
    assert_eq!(
        h.broker, before,
        "an empty get changes nothing but its count would not either"
    );
    let mut counted = h.broker.clone();
    counted.stats.publish += 7;
    assert_eq!(counted, h.broker);
}

#[test]
fn exchanges_count_what_was_published_to_them_and_what_they_routed() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, crate::test_support::bind("q", "amq.direct", "k"));
    h.ok(c, publish("amq.direct", "k", "routed"));
    h.ok(c, publish("amq.direct", "nowhere", "dropped"));
    let exchange = &h.broker.vhosts()[&root()].exchanges[&crate::ExchangeName::from("amq.direct")];
    assert_eq!((exchange.stats.publish_in, exchange.stats.publish_out), (2, 1));
}
