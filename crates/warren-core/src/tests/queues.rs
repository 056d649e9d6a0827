use amq_protocol_types::{AMQPValue, FieldTable};

use crate::test_support::*;
use crate::{Command, CoreError, Effect, Outcome, QueueName};

fn declare(name: &str, durable: bool, exclusive: bool, auto_delete: bool, arguments: FieldTable) -> Command {
    Command::DeclareQueue {
        vhost: root(),
        name: name.into(),
        passive: false,
        durable,
        exclusive,
        auto_delete,
        arguments,
    }
}

fn passive(name: &str) -> Command {
    Command::DeclareQueue {
        vhost: root(),
        name: name.into(),
        passive: true,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::default(),
    }
}

fn delete(name: &str, if_unused: bool, if_empty: bool) -> Command {
    Command::DeleteQueue {
        vhost: root(),
        queue: name.into(),
        if_unused,
        if_empty,
    }
}

fn purge(name: &str) -> Command {
    Command::PurgeQueue {
        vhost: root(),
        queue: name.into(),
    }
}

#[test]
fn passive_declare_reports_counts_or_404() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    assert_eq!(
        h.call(c, passive("q")),
        Err(CoreError::NotFound("no queue 'q' in vhost '/'".into()))
    );
    h.ok(c, declare_queue("q"));
    h.ok(c, publish("", "q", "1"));
    h.ok(c, publish("", "q", "2"));
    h.ok(chan(2, 1), consume("q", "c", false));
    assert_eq!(
        h.call(c, passive("q")),
        Ok(Outcome::QueueDeclared {
            queue: QueueName::from("q"),
            message_count: 0,
            consumer_count: 1,
            created: false,
        })
    );
    h.ok(
        chan(2, 1),
        Command::Cancel {
            consumer_tag: "c".into(),
        },
    );
    assert_eq!(h.summary("q").messages_unacked, 2, "cancel leaves deliveries unacked");
}

#[test]
fn redeclare_with_other_durability_is_406() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare("q", false, false, false, FieldTable::default()));
    assert_eq!(
        h.call(c, declare("q", true, false, false, FieldTable::default())),
        Err(CoreError::PreconditionFailed(
            "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'".into()
        ))
    );
    assert!(matches!(
        h.call(c, declare("q", false, false, true, FieldTable::default())),
        Err(CoreError::PreconditionFailed(_))
    ));
}

#[test]
fn redeclare_with_other_arguments_is_406() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-message-ttl", int(1000))])));
    let err = h
        .call(c, declare_queue_with("q", table(&[("x-message-ttl", int(2000))])))
        .unwrap_err();
    assert_eq!(
        err,
        CoreError::PreconditionFailed(
            "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but current is '1000'".into()
        )
    );
    assert!(
        h.call(c, declare_queue("q")).is_err(),
        "dropping the argument is a change too"
    );
    let same = table(&[
        ("x-message-ttl", AMQPValue::LongLongInt(1000)),
        ("note", text("ignored")),
    ]);
    assert!(h.call(c, declare_queue_with("q", same)).is_ok());
}

#[test]
fn invalid_queue_argument_is_406() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let err = h
        .call(c, declare_queue_with("q", table(&[("x-max-length", int(-1))])))
        .unwrap_err();
    assert_eq!(
        err,
        CoreError::PreconditionFailed(
            "invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}".into()
        )
    );
    assert!(!h.has_queue("q"));
}

#[test]
fn amq_prefixed_queue_names_are_reserved_except_generated_ones() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    assert_eq!(
        h.call(c, declare_queue("amq.x")),
        Err(CoreError::AccessRefused(
            "queue name 'amq.x' contains reserved prefix 'amq.*'".into()
        ))
    );
    assert!(h.call(c, declare_queue("amq.gen-abc")).is_ok());
    assert!(h.call(c, declare_queue("amq.gen-abc")).is_ok());
}

#[test]
fn exclusive_queue_is_locked_to_its_connection_and_dies_with_it() {
    let mut h = Harness::new();
    let owner = chan(1, 1);
    let other = chan(2, 1);
    h.ok(owner, declare("q", false, true, false, FieldTable::default()));
    let locked = CoreError::ResourceLocked("cannot obtain exclusive access to locked queue 'q' in vhost '/'".into());
    assert_eq!(
        h.call(other, declare("q", false, true, false, FieldTable::default())),
        Err(locked.clone())
    );
    assert_eq!(h.call(other, passive("q")), Err(locked.clone()));
    assert_eq!(h.call(other, consume("q", "c", false)), Err(locked.clone()));
    assert_eq!(h.call(other, bind("q", "amq.direct", "k")), Err(locked.clone()));
    assert_eq!(h.call(other, get("q", false)), Err(locked.clone()));
    assert_eq!(h.call(other, purge("q")), Err(locked.clone()));
    assert_eq!(h.call(other, delete("q", false, false)), Err(locked));
    // Another channel of the owner's connection may use it.
    h.ok(chan(1, 2), consume("q", "c", false));
    assert!(h.broker.queue_summaries()[0].exclusive);
    h.run(None, Command::CloseConnection { conn: conn(1) });
    assert!(!h.has_queue("q"));
}

#[test]
fn auto_delete_queue_goes_when_its_last_consumer_is_cancelled() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare("q", false, false, true, FieldTable::default()));
    h.ok(c, publish("", "q", "m"));
    assert!(h.has_queue("q"), "no consumer yet: it stays");
    h.ok(c, consume("q", "a", false));
    h.ok(c, consume("q", "b", false));
    h.ok(
        c,
        Command::Cancel {
            consumer_tag: "a".into(),
        },
    );
    assert!(h.has_queue("q"));
    h.ok(
        c,
        Command::Cancel {
            consumer_tag: "b".into(),
        },
    );
    assert!(!h.has_queue("q"));
    // The delivery of the deleted queue can still be acked.
    h.ok(c, ack(1, false));
}

#[test]
fn purge_drops_ready_messages_only() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    for body in ["1", "2", "3"] {
        h.ok(c, publish("", "q", body));
    }
    h.ok(c, get("q", false));
    assert_eq!(h.call(c, purge("q")), Ok(Outcome::QueuePurged { message_count: 2 }));
    assert_eq!(h.summary("q").messages_unacked, 1);
    h.ok(c, nack(1, false, true));
    assert_eq!(h.drain(c, "q"), ["1"]);
}

#[test]
fn delete_honours_if_unused_and_if_empty_and_cancels_consumers() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let consumer_channel = chan(2, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, bind("q", "amq.fanout", ""));
    h.ok(c, publish("", "q", "m"));
    assert_eq!(
        h.call(c, delete("q", false, true)),
        Err(CoreError::PreconditionFailed("queue 'q' in vhost '/' not empty".into()))
    );
    h.ok(consumer_channel, qos(1, false));
    h.ok(consumer_channel, consume("q", "c", false));
    h.ok(c, publish("", "q", "m2"));
    assert_eq!(
        h.call(c, delete("q", true, false)),
        Err(CoreError::PreconditionFailed("queue 'q' in vhost '/' in use".into()))
    );
    let (reply, effects) = h.call_with_effects(c, delete("q", false, false));
    assert_eq!(reply, Ok(Outcome::QueueDeleted { message_count: 1 }));
    assert!(effects.contains(&Effect::CancelConsumer {
        channel: consumer_channel,
        consumer_tag: "c".into()
    }));
    assert!(!h.has_queue("q"));
    assert_eq!(
        h.call(c, delete("q", false, false)),
        Ok(Outcome::QueueDeleted { message_count: 0 })
    );
    // The unacked delivery of the deleted queue is dropped but still ackable.
    h.ok(consumer_channel, ack(1, false));
    // Its bindings went with it.
    assert_eq!(
        h.ok(c, publish("amq.fanout", "", "m")),
        Outcome::Published {
            routed: false,
            rejected: false,
            returned: None
        }
    );
}

#[test]
fn max_length_drop_head_drops_the_oldest() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-max-length", int(2))])));
    for body in ["1", "2", "3"] {
        assert_eq!(
            h.ok(c, publish("", "q", body)),
            Outcome::Published {
                routed: true,
                rejected: false,
                returned: None
            }
        );
    }
    assert_eq!(h.drain(c, "q"), ["2", "3"]);
}

#[test]
fn max_length_reject_publish_refuses_the_newest() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(
        c,
        declare_queue_with(
            "q",
            table(&[("x-max-length", int(2)), ("x-overflow", text("reject-publish"))]),
        ),
    );
    h.ok(c, declare_queue("other"));
    h.ok(c, bind("q", "amq.fanout", ""));
    h.ok(c, bind("other", "amq.fanout", ""));
    h.ok(c, publish("amq.fanout", "", "1"));
    h.ok(c, publish("amq.fanout", "", "2"));
    assert_eq!(
        h.ok(c, publish("amq.fanout", "", "3")),
        Outcome::Published {
            routed: true,
            rejected: true,
            returned: None
        }
    );
    assert_eq!(h.drain(c, "q"), ["1", "2"]);
    assert_eq!(h.drain(c, "other"), ["1", "2", "3"], "other queues still get it");
}

#[test]
fn max_length_bytes_counts_bodies() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-max-length-bytes", int(5))])));
    h.ok(c, publish("", "q", "abc"));
    h.ok(c, publish("", "q", "de"));
    h.ok(c, publish("", "q", "f"));
    assert_eq!(h.drain(c, "q"), ["de", "f"]);
}

#[test]
fn queue_ttl_expires_messages_on_tick() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-message-ttl", int(100))])));
    h.ok(c, publish("", "q", "old"));
    h.now_ms += 50;
    h.ok(c, publish("", "q", "new"));
    assert_eq!(h.broker.next_expiry_ms(), Some(h.now_ms + 50));
    h.now_ms += 50;
    h.run(None, Command::Tick);
    assert_eq!(h.summary("q").messages_ready, 1);
    assert_eq!(h.broker.next_expiry_ms(), Some(h.now_ms + 50));
    h.now_ms += 100;
    h.run(None, Command::Tick);
    assert_eq!(h.summary("q").messages_ready, 0);
    assert_eq!(h.broker.next_expiry_ms(), None);
}

#[test]
fn message_expiration_and_queue_ttl_take_the_smaller() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-message-ttl", int(1000))])));
    let mut short = message("", "q", "short");
    std::sync::Arc::make_mut(&mut short.properties).expiration = Some("10".into());
    h.ok(c, publish_message(short));
    let mut long = message("", "q", "long");
    std::sync::Arc::make_mut(&mut long.properties).expiration = Some("5000".into());
    h.ok(c, publish_message(long));
    assert_eq!(h.broker.next_expiry_ms(), Some(h.now_ms + 10));
    h.now_ms += 20;
    // Expired messages at the head are skipped by get.
    assert_eq!(h.drain(c, "q"), ["long"]);
    let mut bad = message("", "q", "bad");
    std::sync::Arc::make_mut(&mut bad.properties).expiration = Some("soon".into());
    assert!(matches!(
        h.call(c, publish_message(bad)),
        Err(CoreError::PreconditionFailed(_))
    ));
}

#[test]
fn ttl_zero_message_is_delivered_only_if_a_consumer_takes_it_now() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-message-ttl", int(0))])));
    h.ok(c, publish("", "q", "lost"));
    assert_eq!(h.summary("q").messages_ready, 0);
    h.ok(c, consume("q", "c", false));
    let effects = h.run(Some(c), publish("", "q", "kept"));
    assert_eq!(delivered_bodies(&effects), ["kept"]);
}

#[test]
fn unused_queue_expires_after_x_expires() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-expires", int(1000))])));
    assert_eq!(h.broker.next_expiry_ms(), Some(h.now_ms + 1000));
    h.now_ms += 600;
    h.ok(c, get("q", true));
    assert_eq!(h.broker.next_expiry_ms(), Some(h.now_ms + 1000), "a get counts as use");
    h.ok(c, consume("q", "c", true));
    assert_eq!(h.broker.next_expiry_ms(), None, "in use by a consumer");
    h.ok(
        c,
        Command::Cancel {
            consumer_tag: "c".into(),
        },
    );
    h.now_ms += 999;
    h.run(None, Command::Tick);
    assert!(h.has_queue("q"));
    h.now_ms += 1;
    h.run(None, Command::Tick);
    assert!(!h.has_queue("q"));
}

#[test]
fn home_node_restart_deletes_non_durable_queues_only() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare("transient", false, false, false, FieldTable::default()));
    h.ok(c, declare("durable", true, false, false, FieldTable::default()));
    h.run(None, Command::NodeDown { node: crate::NodeId(1) });
    assert!(h.has_queue("transient"), "NodeDown keeps non-durable queues");
    h.run(
        None,
        Command::NodeStarted {
            node: crate::NodeId(1),
            boot: 1,
        },
    );
    assert!(h.has_queue("transient"), "same boot: nothing lost");
    h.run(
        None,
        Command::NodeStarted {
            node: crate::NodeId(1),
            boot: 2,
        },
    );
    assert!(!h.has_queue("transient"));
    assert!(h.has_queue("durable"));
}

#[test]
fn priority_queue_delivers_higher_priorities_first() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-max-priority", int(5))])));
    for (body, priority) in [("low", None), ("high", Some(9)), ("mid", Some(3)), ("high2", Some(5))] {
        let mut m = message("", "q", body);
        std::sync::Arc::make_mut(&mut m.properties).priority = priority;
        h.ok(c, publish_message(m));
    }
    h.ok(c, get("q", false)); // "high" (capped at 5), tag 1
    h.ok(c, nack(1, false, true));
    assert_eq!(h.drain(c, "q"), ["high", "high2", "mid", "low"]);
}

#[test]
fn priorities_are_ignored_without_x_max_priority() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    for (body, priority) in [("first", None), ("second", Some(9))] {
        let mut m = message("", "q", body);
        std::sync::Arc::make_mut(&mut m.properties).priority = priority;
        h.ok(c, publish_message(m));
    }
    assert_eq!(h.drain(c, "q"), ["first", "second"]);
}

#[test]
fn zero_max_length_still_feeds_an_idle_consumer() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("q", table(&[("x-max-length", int(0))])));
    h.ok(c, publish("", "q", "dropped"));
    assert_eq!(h.summary("q").messages_ready, 0);
    h.ok(c, consume("q", "c", true));
    assert_eq!(
        delivered_bodies(&h.run(Some(c), publish("", "q", "delivered"))),
        ["delivered"]
    );
}

#[test]
fn quorum_queues_are_durable_not_exclusive_not_auto_delete() {
    let quorum = || table(&[("x-queue-type", text("quorum"))]);
    let mut h = Harness::new();
    let c = chan(1, 1);
    let invalid = |property: &str| {
        Err(CoreError::PreconditionFailed(format!(
            "invalid property '{property}' for queue 'q' in vhost '/'"
        )))
    };
    assert_eq!(
        h.call(c, declare("q", false, false, false, quorum())),
        invalid("non-durable")
    );
    assert_eq!(
        h.call(c, declare("q", true, true, false, quorum())),
        invalid("exclusive-owner")
    );
    assert_eq!(
        h.call(c, declare("q", true, false, true, quorum())),
        invalid("auto-delete")
    );
    // RabbitMQ's order: auto-delete, then exclusive, then durability.
    assert_eq!(
        h.call(c, declare("q", false, true, true, quorum())),
        invalid("auto-delete")
    );
    assert_eq!(
        h.call(c, declare("q", false, true, false, quorum())),
        invalid("exclusive-owner")
    );
    assert!(!h.has_queue("q"));
    h.ok(c, declare("q", true, false, false, quorum()));
    // Classic queues keep every combination.
    h.ok(
        c,
        declare("c", false, true, true, table(&[("x-queue-type", text("classic"))])),
    );
}

#[test]
fn the_ready_backlog_counts_ready_messages_and_their_bytes_in_every_queue() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    assert_eq!(h.broker.ready_backlog(), (0, 0));
    h.ok(c, declare_queue("a"));
    h.ok(c, declare_queue("b"));
    h.ok(c, publish("", "a", "12345"));
    h.ok(c, publish("", "a", "123"));
    h.ok(c, publish("", "b", "1"));
    assert_eq!(h.broker.ready_backlog(), (3, 9));
    // A delivery to a consumer takes a message out of the ready backlog
    // (the unacked ones are bounded by prefetch and not counted).
    h.ok(chan(2, 1), consume("a", "c", false));
    assert_eq!(h.broker.ready_backlog(), (1, 1));
    h.ok(c, purge("b"));
    assert_eq!(h.broker.ready_backlog(), (0, 0));
}

#[test]
fn the_held_backlog_counts_unacked_deliveries_too() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let consumer = chan(2, 1);
    h.ok(c, declare_queue("a"));
    h.ok(c, publish("", "a", "12345"));
    h.ok(c, publish("", "a", "123"));
    assert_eq!(h.broker.held_backlog(), (2, 8));
    h.ok(consumer, consume("a", "c", false));
    assert_eq!(h.broker.ready_backlog(), (0, 0));
    assert_eq!(h.broker.held_backlog(), (2, 8), "delivered, not acked: still held");
    h.ok(consumer, ack(2, true));
    assert_eq!(h.broker.held_backlog(), (0, 0));
    h.ok(c, declare_queue("b"));
    h.ok(consumer, consume("b", "auto", true));
    h.ok(c, publish("", "b", "1"));
    assert_eq!(h.broker.held_backlog(), (0, 0), "no-ack deliveries are not held");
}

/// A paged queue (ADR 0019) whose next page cannot be read: a publish that
/// must drop the head for `x-max-length` ends (the pager is told, and the
/// node stops) instead of looping on a head that never comes.
#[test]
fn a_page_that_cannot_be_read_ends_a_drop_head_publish() {
    use crate::ready::test_pager::MemPager;
    use std::sync::atomic::Ordering;

    let pager = MemPager::new(2);
    let mut h = Harness::new();
    let c = chan(1, 1);
    crate::with_pager(pager.clone(), || {
        h.ok(c, declare_queue_with("q", table(&[("x-max-length", int(5))])));
        for body in ["1", "2", "3", "4", "5"] {
            h.ok(c, publish("", "q", body));
        }
        // The head (1, 2) taken, the rest is a page (3, 4) and a tail (5).
        for _ in 0..2 {
            h.ok(c, get("q", true));
        }
        h.ok(c, publish("", "q", "6"));
        let queue = &h.broker.vhosts()[&root()].queues[&"q".into()];
        assert_eq!(
            (queue.ready.len(), queue.ready.pages().count()),
            (4, 2),
            "premise: all paged"
        );
        pager.fail_reads.store(true, Ordering::SeqCst);
        // 7 fits; at 8 the head must go, and cannot be read. (Applied
        // bare: the harness's invariant check reads every page.)
        let batch = crate::Batch {
            now_ms: h.now_ms,
            requests: ["7", "8"]
                .into_iter()
                .map(|body| crate::Request {
                    origin: Some(c),
                    command: publish("", "q", body),
                })
                .collect(),
        };
        h.broker.apply(&batch, &mut Vec::new());
    });
    assert!(!pager.failures.lock().unwrap().is_empty(), "the failure was reported");
}

/// RabbitMQ 3.10.8's `check_arguments_key`: an argument another queue type
/// takes is refused for this one, naming the type; unknown ones pass.
#[test]
fn arguments_of_another_queue_type_are_refused_naming_the_type() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let quorum = || ("x-queue-type", text("quorum"));
    let refused = [
        (
            table(&[quorum(), ("x-max-priority", int(3))]),
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        (
            table(&[quorum(), ("x-queue-mode", text("lazy"))]),
            "invalid arg 'x-queue-mode' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        (
            table(&[("x-delivery-limit", int(1))]),
            "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
        (
            table(&[("x-queue-type", text("weird"))]),
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'weird'\"",
        ),
    ];
    for (arguments, text) in refused {
        assert_eq!(
            h.call(c, declare_queue_with("q", arguments)),
            Err(crate::CoreError::PreconditionFailed(text.into()))
        );
    }
    for arguments in [
        table(&[
            quorum(),
            ("x-delivery-limit", int(1)),
            ("x-quorum-initial-group-size", int(3)),
        ]),
        table(&[("x-max-priority", int(3)), ("x-custom", text("kept"))]),
    ] {
        let name = format!("ok{}", arguments.inner().len());
        // Durable: a quorum queue must be.
        let mut declare = declare_queue_with(&name, arguments);
        if let crate::Command::DeclareQueue { durable, .. } = &mut declare {
            *durable = true;
        }
        h.ok(c, declare);
    }
    // Consumer arguments too: a stream offset is not a classic queue's.
    let consume = crate::Command::Consume {
        vhost: root(),
        queue: "ok2".into(),
        consumer_tag: "t".into(),
        no_ack: false,
        exclusive: false,
        arguments: table(&[("x-stream-offset", text("first"))]),
        lookahead: crate::Lookahead::V5,
    };
    assert_eq!(
        h.call(c, consume),
        Err(crate::CoreError::PreconditionFailed(
            "invalid arg 'x-stream-offset' for queue 'ok2' in vhost '/' of queue type rabbit_classic_queue".into()
        ))
    );
}
