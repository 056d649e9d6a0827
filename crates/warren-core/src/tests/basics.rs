use crate::test_support::*;
use crate::{Broker, ConsumerTag, Effect, Outcome, QueueName};

#[test]
fn new_broker_has_root_vhost_and_no_users() {
    let broker = Broker::new();
    assert!(broker.has_vhost(&root()));
    assert!(!broker.has_users());
    assert!(broker.queue_summaries().is_empty());
    assert_eq!(broker.next_expiry_ms(), None);
    broker.check_invariants().unwrap();
}

#[test]
fn declare_publish_consume_ack_round_trip() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    assert_eq!(
        h.ok(c, declare_queue("q")),
        Outcome::QueueDeclared {
            queue: QueueName::from("q"),
            message_count: 0,
            consumer_count: 0,
            created: true,
        }
    );
    let published = h.ok(c, publish("", "q", "hello"));
    assert_eq!(
        published,
        Outcome::Published {
            routed: true,
            rejected: false,
            returned: None
        }
    );
    let effects = h.run(Some(c), consume("q", "ctag", false));
    assert!(
        matches!(&effects[0], Effect::Reply { outcome: Ok(Outcome::ConsumeOk { consumer_tag }), .. }
        if *consumer_tag == ConsumerTag::from("ctag"))
    );
    assert_eq!(
        deliveries(&effects),
        vec![(c, "ctag".to_owned(), 1, false, "hello".to_owned())]
    );
    assert_eq!(h.broker.queue_summaries()[0].messages_unacked, 1);
    h.ok(c, ack(1, false));
    let summary = &h.broker.queue_summaries()[0];
    assert_eq!(
        (summary.messages_ready, summary.messages_unacked, summary.consumers),
        (0, 0, 1)
    );
}

#[test]
fn reply_comes_before_deliveries_it_causes() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, consume("q", "ctag", true));
    let effects = h.run(Some(c), publish("", "q", "m"));
    assert!(matches!(effects[0], Effect::Reply { .. }));
    assert!(matches!(effects[1], Effect::Deliver { .. }));
}
