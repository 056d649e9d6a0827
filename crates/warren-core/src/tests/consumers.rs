use amq_protocol_types::{AMQPValue, FieldTable};

use crate::test_support::*;
use crate::{Command, CoreError, DeliveryTag, Effect, NodeId, Outcome};

fn consume_exclusive(queue: &str, tag: &str) -> Command {
    Command::Consume {
        vhost: root(),
        queue: queue.into(),
        consumer_tag: tag.into(),
        no_ack: false,
        exclusive: true,
        arguments: FieldTable::default(),
        lookahead: crate::Lookahead::V5,
    }
}

fn cancel(tag: &str) -> Command {
    Command::Cancel {
        consumer_tag: tag.into(),
    }
}

fn with_queue() -> (Harness, crate::ChannelId) {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    (h, c)
}

#[test]
fn consumers_get_messages_round_robin() {
    let (mut h, c) = with_queue();
    h.ok(c, consume("q", "a", true));
    h.ok(c, consume("q", "b", true));
    let tags: Vec<String> = (0..4)
        .flat_map(|i| deliveries(&h.run(Some(c), publish("", "q", &i.to_string()))))
        .map(|d| d.1)
        .collect();
    assert_eq!(tags, ["a", "b", "a", "b"]);
}

#[test]
fn per_consumer_prefetch_applies_to_consumers_created_after_qos() {
    let (mut h, c) = with_queue();
    h.ok(c, consume("q", "unlimited", false));
    h.ok(c, qos(1, false));
    h.ok(c, consume("q", "limited", false));
    let mut to = Vec::new();
    for i in 0..4 {
        to.extend(
            deliveries(&h.run(Some(c), publish("", "q", &i.to_string())))
                .into_iter()
                .map(|d| d.1),
        );
    }
    assert_eq!(to, ["unlimited", "limited", "unlimited", "unlimited"]);
    // Acking the limited consumer's delivery (tag 2) gives it credit again.
    h.ok(c, publish("", "q", "4"));
    h.ok(c, qos(0, false));
    let effects = h.run(Some(c), ack(2, false));
    assert!(
        deliveries(&effects).is_empty(),
        "nothing ready: the unlimited consumer took all"
    );
    let effects = h.run(Some(c), publish("", "q", "5"));
    assert_eq!(deliveries(&effects)[0].1, "limited");
}

#[test]
fn global_prefetch_limits_the_whole_channel() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q1"));
    h.ok(c, declare_queue("q2"));
    h.ok(c, qos(2, true));
    h.ok(c, consume("q1", "a", false));
    h.ok(c, consume("q2", "b", false));
    let mut delivered = 0;
    for i in 0..3 {
        delivered += deliveries(&h.run(Some(c), publish("", "q1", &i.to_string()))).len();
        delivered += deliveries(&h.run(Some(c), publish("", "q2", &i.to_string()))).len();
    }
    assert_eq!(delivered, 2);
    let effects = h.run(Some(c), ack(0, true));
    assert_eq!(
        deliveries(&effects).len(),
        2,
        "acking frees credit across the channel's consumers"
    );
}

#[test]
fn no_ack_consumers_ignore_prefetch() {
    let (mut h, c) = with_queue();
    h.ok(c, qos(1, true));
    h.ok(c, qos(1, false));
    h.ok(c, consume("q", "a", true));
    for i in 0..3 {
        assert_eq!(deliveries(&h.run(Some(c), publish("", "q", &i.to_string()))).len(), 1);
    }
    assert_eq!(h.summary("q").messages_unacked, 0);
}

#[test]
fn nack_requeue_redelivers_in_original_order_with_redelivered_flag() {
    let (mut h, c) = with_queue();
    for body in ["1", "2", "3"] {
        h.ok(c, publish("", "q", body));
    }
    h.ok(c, get("q", false)); // tag 1 = "1"
    h.ok(c, get("q", false)); // tag 2 = "2"
    h.ok(c, nack(2, true, true));
    let Ok(Outcome::GetOk {
        redelivered,
        message_count,
        message,
        delivery_tag,
    }) = h.call(c, get("q", false))
    else {
        panic!("expected get-ok");
    };
    assert_eq!(
        (
            redelivered,
            message_count,
            message.body.inline().map(|b| &b[..]),
            delivery_tag
        ),
        (true, 2, Some(&b"1"[..]), DeliveryTag(3))
    );
    h.ok(
        c,
        Command::Reject {
            delivery_tag: DeliveryTag(3),
            requeue: true,
        },
    );
    let effects = h.run(Some(c), consume("q", "c", false));
    let got: Vec<(bool, String)> = deliveries(&effects).into_iter().map(|d| (d.3, d.4)).collect();
    assert_eq!(
        got,
        [(true, "1".to_owned()), (true, "2".to_owned()), (false, "3".to_owned())]
    );
}

#[test]
fn ack_all_on_a_channel_without_deliveries_is_fine_whether_or_not_it_was_used() {
    // RabbitMQ `collect_acks(Q, 0, true)` acks everything, even nothing.
    let mut h = Harness::new();
    let fresh = chan(9, 1);
    h.ok(fresh, ack(0, true));
    h.ok(fresh, nack(0, true, true));
    h.ok(fresh, Command::CloseChannel);
    h.ok(fresh, nack(0, true, false));
    let (mut h, used) = with_queue();
    h.ok(used, qos(1, false));
    h.ok(used, ack(0, true));
    assert_eq!(
        h.call(chan(9, 2), ack(0, false)),
        Err(CoreError::PreconditionFailed("unknown delivery tag 0".into()))
    );
}

#[test]
fn unknown_delivery_tag_is_406_and_changes_nothing() {
    let (mut h, c) = with_queue();
    h.ok(c, publish("", "q", "1"));
    h.ok(c, get("q", false));
    assert_eq!(
        h.call(c, ack(5, false)),
        Err(CoreError::PreconditionFailed("unknown delivery tag 5".into()))
    );
    assert_eq!(
        h.call(c, ack(5, true)),
        Err(CoreError::PreconditionFailed("unknown delivery tag 5".into()))
    );
    assert_eq!(
        h.call(c, ack(0, false)),
        Err(CoreError::PreconditionFailed("unknown delivery tag 0".into()))
    );
    assert_eq!(h.summary("q").messages_unacked, 1);
    h.ok(c, ack(1, false));
    assert_eq!(
        h.call(c, ack(1, false)),
        Err(CoreError::PreconditionFailed("unknown delivery tag 1".into()))
    );
    assert_eq!(
        h.call(chan(7, 7), nack(1, false, true)),
        Err(CoreError::PreconditionFailed("unknown delivery tag 1".into()))
    );
}

#[test]
fn multiple_ack_covers_every_tag_up_to_n() {
    let (mut h, c) = with_queue();
    for body in ["1", "2", "3", "4"] {
        h.ok(c, publish("", "q", body));
        h.ok(c, get("q", false));
    }
    h.ok(c, ack(3, true));
    assert_eq!(h.summary("q").messages_unacked, 1);
    assert!(h.call(c, ack(2, false)).is_err());
    h.ok(c, ack(0, true));
    assert_eq!(h.summary("q").messages_unacked, 0);
}

#[test]
fn recover_requeues_every_unacked_delivery() {
    let (mut h, c) = with_queue();
    h.ok(c, publish("", "q", "1"));
    h.ok(c, publish("", "q", "2"));
    h.ok(c, get("q", false));
    h.ok(c, get("q", false));
    h.ok(c, Command::Recover { requeue: false });
    assert_eq!(h.summary("q").messages_ready, 2);
    assert_eq!(h.summary("q").messages_unacked, 0);
}

#[test]
fn closing_a_channel_requeues_to_other_consumers_as_redelivered() {
    let (mut h, c) = with_queue();
    let other = chan(2, 1);
    h.ok(c, consume("q", "first", false));
    h.ok(c, publish("", "q", "m"));
    h.ok(other, consume("q", "second", false));
    let effects = h.run(Some(c), Command::CloseChannel);
    assert_eq!(
        deliveries(&effects),
        vec![(other, "second".to_owned(), 1, true, "m".to_owned())]
    );
    assert_eq!(h.summary("q").consumers, 1);
    // The closed channel starts afresh: tags from 1, nothing unacked.
    assert!(h.call(c, ack(1, false)).is_err());
}

#[test]
fn cancelled_consumer_deliveries_stay_unacked_until_acked() {
    let (mut h, c) = with_queue();
    h.ok(c, consume("q", "c", false));
    h.ok(c, publish("", "q", "m"));
    assert_eq!(
        h.call(c, cancel("c")),
        Ok(Outcome::CancelOk {
            consumer_tag: "c".into()
        })
    );
    assert_eq!(
        h.call(c, cancel("c")),
        Ok(Outcome::CancelOk {
            consumer_tag: "c".into()
        }),
        "unknown tag is fine"
    );
    assert_eq!(h.summary("q").messages_unacked, 1);
    // The same tag can be reused; the old delivery does not count against it.
    h.ok(c, qos(1, false));
    h.ok(c, consume("q", "c", false));
    let effects = h.run(Some(c), publish("", "q", "m2"));
    assert_eq!(delivered_bodies(&effects), ["m2"]);
    h.ok(c, ack(1, false));
    h.ok(c, ack(2, false));
}

#[test]
fn exclusive_consumers_exclude_others() {
    let (mut h, c) = with_queue();
    let other = chan(2, 1);
    h.ok(c, consume("q", "a", false));
    let in_use = CoreError::AccessRefused("queue 'q' in vhost '/' in exclusive use".into());
    assert_eq!(h.call(other, consume_exclusive("q", "x")), Err(in_use.clone()));
    h.ok(c, cancel("a"));
    h.ok(other, consume_exclusive("q", "x"));
    assert_eq!(h.call(c, consume("q", "b", false)), Err(in_use));
}

#[test]
fn reusing_a_consumer_tag_on_a_channel_is_530() {
    let (mut h, c) = with_queue();
    h.ok(c, consume("q", "a", false));
    let err = h.call(c, consume("q", "a", false)).unwrap_err();
    assert_eq!(err, CoreError::NotAllowed("attempt to reuse consumer tag 'a'".into()));
    assert!(err.is_connection_error());
    h.ok(chan(1, 2), consume("q", "a", false));
}

#[test]
fn consume_on_a_missing_queue_is_404() {
    let mut h = Harness::new();
    assert_eq!(
        h.call(chan(1, 1), consume("nope", "a", false)),
        Err(CoreError::NotFound("no queue 'nope' in vhost '/'".into()))
    );
}

#[test]
fn get_reports_remaining_count_and_shares_delivery_tags_with_deliveries() {
    let (mut h, c) = with_queue();
    assert_eq!(h.call(c, get("q", false)), Ok(Outcome::GetEmpty));
    for body in ["1", "2", "3"] {
        h.ok(c, publish("", "q", body));
    }
    let Ok(Outcome::GetOk {
        delivery_tag,
        message_count,
        ..
    }) = h.call(c, get("q", true))
    else {
        panic!("expected get-ok");
    };
    assert_eq!((delivery_tag, message_count), (DeliveryTag(1), 2));
    assert_eq!(h.summary("q").messages_unacked, 0, "no-ack get settles at once");
    let effects = h.run(Some(c), consume("q", "c", false));
    let tags: Vec<u64> = deliveries(&effects).into_iter().map(|d| d.2).collect();
    assert_eq!(tags, [2, 3]);
}

#[test]
fn single_active_consumer_gets_everything_until_cancelled() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(
        c,
        declare_queue_with(
            "q",
            table(&[("x-single-active-consumer", amq_protocol_types::AMQPValue::Boolean(true))]),
        ),
    );
    h.ok(c, qos(1, false));
    h.ok(c, consume("q", "a", false));
    h.ok(c, consume("q", "b", false));
    let mut to = Vec::new();
    for i in 0..2 {
        to.extend(
            deliveries(&h.run(Some(c), publish("", "q", &i.to_string())))
                .into_iter()
                .map(|d| d.1),
        );
    }
    assert_eq!(to, ["a"], "b waits even with credit");
    let effects = h.run(Some(c), cancel("a"));
    assert_eq!(deliveries(&effects).into_iter().map(|d| d.1).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn node_down_cancels_consumers_and_requeues_their_messages() {
    let mut h = Harness::new();
    let local = chan(1, 1);
    let remote = crate::ChannelId {
        conn: crate::ConnectionId {
            node: NodeId(2),
            boot: 1,
            seq: 1,
        },
        channel: 1,
    };
    h.ok(local, declare_queue("q"));
    h.ok(
        remote,
        Command::DeclareQueue {
            vhost: root(),
            name: "excl".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            arguments: FieldTable::default(),
        },
    );
    h.ok(remote, consume("q", "r", false));
    h.ok(local, publish("", "q", "m"));
    assert_eq!(h.summary("q").messages_unacked, 1);
    h.run(None, Command::NodeDown { node: NodeId(2) });
    let summary = h.summary("q");
    assert_eq!(
        (summary.messages_ready, summary.messages_unacked, summary.consumers),
        (1, 0, 0)
    );
    assert!(!h.has_queue("excl"));
    let Ok(Outcome::GetOk { redelivered, .. }) = h.call(local, get("q", true)) else {
        panic!("expected get-ok");
    };
    assert!(redelivered);
}

#[test]
fn node_restart_closes_connections_of_earlier_boots_only() {
    let mut h = Harness::new();
    let old = chan(1, 1); // node 1, boot 1
    let new = crate::ChannelId {
        conn: crate::ConnectionId {
            node: NodeId(1),
            boot: 2,
            seq: 1,
        },
        channel: 1,
    };
    h.ok(old, declare_queue("q"));
    h.ok(
        new,
        Command::DeclareQueue {
            vhost: root(),
            name: "mine".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        },
    );
    h.ok(old, consume("q", "old", false));
    h.ok(new, consume("mine", "new", false));
    h.run(
        None,
        Command::NodeStarted {
            node: NodeId(1),
            boot: 2,
        },
    );
    assert!(!h.has_queue("q"), "non-durable queue of the earlier boot is lost");
    assert_eq!(h.summary("mine").consumers, 1);
}

#[test]
fn deleting_a_consumed_queue_notifies_the_consumer() {
    let (mut h, c) = with_queue();
    h.ok(c, consume("q", "c", false));
    let effects = h.run(
        None,
        Command::DeleteQueue {
            vhost: root(),
            queue: "q".into(),
            if_unused: false,
            if_empty: false,
        },
    );
    assert_eq!(
        effects,
        vec![Effect::CancelConsumer {
            channel: c,
            consumer_tag: "c".into()
        }]
    );
}

#[test]
fn channel_scoped_commands_without_origin_are_ignored() {
    let (mut h, _) = with_queue();
    let effects = h.run(None, consume("q", "c", false));
    assert!(effects.is_empty());
    assert_eq!(h.summary("q").consumers, 0);
}

#[test]
fn node_restart_loses_transient_exchanges_it_declared_and_keeps_durable_ones() {
    let mut h = Harness::new();
    let old = chan(1, 1); // node 1, boot 1
    let durable = Command::DeclareExchange {
        vhost: root(),
        name: "keep".into(),
        kind: crate::ExchangeKind::Direct,
        passive: false,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    };
    h.ok(old, durable);
    h.ok(old, declare_exchange("scratch", crate::ExchangeKind::Fanout));
    h.run(
        None,
        Command::NodeStarted {
            node: NodeId(1),
            boot: 2,
        },
    );
    let probe = |name: &str| Command::DeclareExchange {
        vhost: root(),
        name: name.into(),
        kind: crate::ExchangeKind::Direct,
        passive: true,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    };
    let later = chan(2, 1);
    assert_eq!(h.call(later, probe("keep")), Ok(Outcome::ExchangeDeclared));
    assert!(matches!(h.call(later, probe("scratch")), Err(CoreError::NotFound(_))));
}

#[test]
fn consumer_priority_must_be_an_integer_other_consume_arguments_are_accepted() {
    let consume_with = |tag: &str, arguments: FieldTable| Command::Consume {
        vhost: root(),
        queue: "q".into(),
        consumer_tag: tag.into(),
        no_ack: false,
        exclusive: false,
        arguments,
        lookahead: crate::Lookahead::V5,
    };
    let (mut h, c) = with_queue();
    assert_eq!(
        h.call(c, consume_with("a", table(&[("x-priority", text("high"))]))),
        Err(CoreError::PreconditionFailed(
            "invalid arg 'x-priority' for queue 'q' in vhost '/': {unacceptable_type,longstr}".into()
        ))
    );
    assert_eq!(
        h.call(c, consume_with("a", table(&[("x-priority", AMQPValue::Timestamp(1))]))),
        Err(CoreError::PreconditionFailed(
            "invalid arg 'x-priority' for queue 'q' in vhost '/': {unacceptable_type,timestamp}".into()
        ))
    );
    assert_eq!(h.summary("q").consumers, 0);
    // A missing queue is still 404 first.
    assert!(matches!(
        h.call(
            c,
            Command::Consume {
                vhost: root(),
                queue: "nope".into(),
                consumer_tag: "a".into(),
                no_ack: false,
                exclusive: false,
                arguments: table(&[("x-priority", text("high"))]),
                lookahead: crate::Lookahead::V5,
            }
        ),
        Err(CoreError::NotFound(_))
    ));
    h.ok(c, consume_with("a", table(&[("x-priority", int(5))])));
    h.ok(
        c,
        consume_with("b", table(&[("x-priority", AMQPValue::ShortShortInt(-1))])),
    );
    h.ok(
        c,
        consume_with(
            "c",
            table(&[
                ("x-cancel-on-ha-failover", AMQPValue::Boolean(true)),
                ("x-whatever", text("anything")),
            ]),
        ),
    );
    assert_eq!(h.summary("q").consumers, 3);
}

fn consume_with_priority(queue: &str, tag: &str, priority: AMQPValue) -> Command {
    Command::Consume {
        vhost: root(),
        queue: queue.into(),
        consumer_tag: tag.into(),
        no_ack: false,
        exclusive: false,
        arguments: table(&[("x-priority", priority)]),
        lookahead: crate::Lookahead::V5,
    }
}

/// RabbitMQ's consumer priorities: messages go to the highest-priority
/// consumers that can take one; lower ones get what those cannot take;
/// equal priorities share round-robin.
#[test]
fn higher_priority_consumers_are_served_first_and_equals_share() {
    let (mut h, c) = with_queue();
    let (low, high) = (chan(1, 2), chan(1, 3));
    h.ok(high, qos(2, false));
    h.ok(low, consume_with_priority("q", "low", AMQPValue::LongInt(-1)));
    h.ok(c, consume("q", "zero", false));
    h.ok(high, consume_with_priority("q", "high-a", AMQPValue::ShortShortInt(5)));
    h.ok(high, consume_with_priority("q", "high-b", AMQPValue::LongLongInt(5)));
    let tags: Vec<String> = (0..7)
        .flat_map(|i| deliveries(&h.run(Some(c), publish("", "q", &i.to_string()))))
        .map(|d| d.1)
        .collect();
    // high-a and high-b alternate until each holds its prefetch of 2, then
    // the priority-0 consumer takes the rest; "low" gets nothing.
    assert_eq!(tags, ["high-a", "high-b", "high-a", "high-b", "zero", "zero", "zero"]);
    // An ack frees one high-priority slot: the next message goes there.
    h.ok(high, ack(1, false));
    let next = deliveries(&h.run(Some(c), publish("", "q", "7")));
    assert_eq!(next[0].1, "high-a");
}

/// A snapshot written before consumers had a priority (codec version 3)
/// decodes with priority 0, and what follows the consumer still decodes.
#[test]
fn consumers_encoded_without_a_priority_decode_with_priority_zero() {
    #[derive(serde::Serialize)]
    struct OldConsumer {
        vhost: crate::VHost,
        queue: crate::QueueName,
        queue_uid: u64,
        serial: u64,
        no_ack: bool,
        exclusive: bool,
        prefetch: u16,
        unacked: u32,
    }
    let old = OldConsumer {
        vhost: root(),
        queue: "q".into(),
        queue_uid: 3,
        serial: 9,
        no_ack: false,
        exclusive: true,
        prefetch: 10,
        unacked: 2,
    };
    let bytes = bincode::serialize(&(old, 0xfeed_u64)).unwrap();
    let (consumer, after): (crate::consumer::Consumer, u64) =
        crate::with_record_version(3, || bincode::deserialize(&bytes)).unwrap();
    assert_eq!(
        (consumer.priority, consumer.prefetch, consumer.unacked, after),
        (0, 10, 2, 0xfeed)
    );
    // The current encoding carries it.
    let again: crate::consumer::Consumer = bincode::deserialize(
        &bincode::serialize(&crate::consumer::Consumer {
            priority: -4,
            ..consumer
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(again.priority, -4);
}

#[test]
fn dispatch_tries_exactly_the_consumers_dispatches_to_allows() {
    for sac in [false, true] {
        let mut h = Harness::new();
        let c = chan(1, 1);
        let args = table(&[("x-single-active-consumer", amq_protocol_types::AMQPValue::Boolean(sac))]);
        h.ok(c, declare_queue_with("q", args));
        for consumers in 0..4 {
            let queue = h
                .broker
                .vhosts
                .get(&root())
                .and_then(|v| v.queues.get(&crate::QueueName::from("q")));
            let queue = queue.expect("declared");
            let mut tried: Vec<usize> = queue.dispatch_order().collect();
            tried.sort_unstable();
            let allowed: Vec<usize> = (0..consumers + 1).filter(|&i| queue.dispatches_to(i)).collect();
            assert_eq!(tried, allowed, "single active: {sac}, consumers: {consumers}");
            assert_eq!(tried.len(), if sac { consumers.min(1) } else { consumers });
            h.ok(c, consume("q", &format!("c{consumers}"), true));
        }
    }
}
