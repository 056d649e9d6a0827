//! Stream queues (ADR 0030): an append-only log each consumer reads from
//! its own offset; RabbitMQ 3.10's checks and texts.

use amq_protocol_types::{AMQPValue, FieldTable};

use crate::test_support::*;
use crate::{AfterReturn, Command, CoreError, DeliveryTag, Effect, Outcome, QueueName};

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut entries = vec![("x-queue-type", text("stream"))];
    entries.extend(extra.iter().cloned());
    table(&entries)
}

fn declare_stream(name: &str, extra: &[(&str, AMQPValue)]) -> Command {
    Command::DeclareQueue {
        vhost: root(),
        name: QueueName::from(name),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: stream_args(extra),
    }
}

fn consume_from(queue: &str, tag: &str, offset: Option<AMQPValue>) -> Command {
    let mut arguments = FieldTable::default();
    if let Some(offset) = offset {
        arguments.insert("x-stream-offset".into(), offset);
    }
    Command::Consume {
        vhost: root(),
        queue: QueueName::from(queue),
        consumer_tag: tag.into(),
        no_ack: false,
        exclusive: false,
        arguments,
        lookahead: crate::Lookahead::NONE,
    }
}

/// The deliveries among `effects` as (consumer tag, delivery tag, body,
/// `x-stream-offset`).
fn stream_deliveries(effects: &[Effect]) -> Vec<(String, u64, String, i64)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Deliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                message,
                ..
            } => {
                assert!(!redelivered, "a stream never redelivers");
                let offset = match message.properties.headers.as_ref()?.inner().get("x-stream-offset") {
                    Some(AMQPValue::LongLongInt(offset)) => *offset,
                    other => panic!("x-stream-offset is {other:?}"),
                };
                Some((
                    consumer_tag.as_str().to_owned(),
                    delivery_tag.0,
                    body_text(&message.body),
                    offset,
                ))
            }
            _ => None,
        })
        .collect()
}

fn offsets(effects: &[Effect]) -> Vec<i64> {
    stream_deliveries(effects).into_iter().map(|d| d.3).collect()
}

/// A stream `s` holding `count` messages `m0`, `m1`, …
fn stream_with(count: usize) -> (Harness, crate::ChannelId) {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_stream("s", &[]));
    for i in 0..count {
        h.ok(c, publish("", "s", &format!("m{i}")));
    }
    (h, c)
}

#[test]
fn a_stream_is_durable_not_exclusive_not_auto_delete() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let with = |durable: bool, exclusive: bool, auto_delete: bool| Command::DeclareQueue {
        vhost: root(),
        name: QueueName::from("s"),
        passive: false,
        durable,
        exclusive,
        auto_delete,
        arguments: stream_args(&[]),
    };
    for (command, property) in [
        (with(false, false, false), "non-durable"),
        (with(true, true, false), "exclusive-owner"),
        (with(true, false, true), "auto-delete"),
        (with(false, true, true), "auto-delete"),
    ] {
        assert_eq!(
            h.call(c, command),
            Err(CoreError::PreconditionFailed(format!(
                "invalid property '{property}' for queue 's' in vhost '/'"
            )))
        );
    }
    assert_eq!(
        h.call(
            c,
            declare_stream(
                "s",
                &[("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(3_000_000_001))]
            )
        ),
        Err(CoreError::PreconditionFailed(
            "Exceeded max value for x-stream-max-segment-size-bytes".into()
        ))
    );
    assert!(!h.has_queue("s"));
    h.ok(
        c,
        declare_stream(
            "s",
            &[("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(3_000_000_000))],
        ),
    );
}

#[test]
fn consume_needs_a_prefetch_and_manual_acks_and_no_global_qos() {
    let (mut h, c) = stream_with(1);
    let resource = "queue 's' in vhost '/'";
    assert_eq!(
        h.call(c, consume_from("s", "a", None)),
        Err(CoreError::PreconditionFailed(format!(
            "consumer prefetch count is not set for '{resource}'"
        )))
    );
    h.ok(c, qos(10, false));
    let mut no_ack = consume_from("s", "a", None);
    if let Command::Consume { no_ack, .. } = &mut no_ack {
        *no_ack = true;
    }
    assert_eq!(
        h.call(c, no_ack),
        Err(CoreError::NotImplemented(format!(
            "automatic acknowledgement not supported by stream queues {resource}"
        )))
    );
    h.ok(c, qos(5, true));
    assert_eq!(
        h.call(c, consume_from("s", "a", None)),
        Err(CoreError::NotImplemented(format!(
            "{resource} does not support global qos"
        )))
    );
    h.ok(c, qos(0, true));
    // An offset that is no offset is refused first, whatever else is wrong.
    h.ok(c, qos(0, false));
    assert_eq!(
        h.call(c, consume_from("s", "a", Some(text("5x")))),
        Err(CoreError::PreconditionFailed(format!(
            "invalid arg 'x-stream-offset' for {resource}: {{invalid_stream_offset_arg,{{longstr,<<\"5x\">>}}}}"
        )))
    );
    assert_eq!(
        h.call(c, consume_from("s", "a", Some(AMQPValue::Boolean(true)))),
        Err(CoreError::PreconditionFailed(format!(
            "invalid arg 'x-stream-offset' for {resource}: {{invalid_stream_offset_arg,{{bool,true}}}}"
        )))
    );
    let mut priority = consume_from("s", "a", None);
    if let Command::Consume { arguments, .. } = &mut priority {
        arguments.insert("x-priority".into(), int(3));
    }
    assert_eq!(
        h.call(c, priority),
        Err(CoreError::PreconditionFailed(format!(
            "invalid arg 'x-priority' for {resource} of queue type rabbit_stream_queue"
        )))
    );
}

#[test]
fn every_consumer_reads_every_message_from_its_offset_and_nothing_leaves() {
    let (mut h, c) = stream_with(3);
    let (a, b) = (chan(2, 1), chan(3, 1));
    h.ok(a, qos(10, false));
    h.ok(b, qos(10, false));
    let (_, effects) = h.call_with_effects(a, consume_from("s", "first", Some(text("first"))));
    assert_eq!(
        stream_deliveries(&effects),
        vec![
            ("first".into(), 1, "m0".into(), 0),
            ("first".into(), 2, "m1".into(), 1),
            ("first".into(), 3, "m2".into(), 2)
        ]
    );
    let (_, effects) = h.call_with_effects(b, consume_from("s", "next", Some(text("next"))));
    assert!(offsets(&effects).is_empty(), "next: only what comes later");
    let effects = h.run(Some(c), publish("", "s", "m3"));
    let mut got: Vec<_> = stream_deliveries(&effects).into_iter().map(|d| (d.0, d.3)).collect();
    got.sort();
    assert_eq!(got, vec![("first".to_owned(), 3), ("next".to_owned(), 3)]);
    h.ok(a, ack(0, true));
    h.ok(b, ack(1, false));
    let summary = h.summary("s");
    assert_eq!(
        (summary.messages_ready, summary.messages_unacked),
        (4, 0),
        "acks take nothing out"
    );
    let Outcome::QueueDeclared {
        message_count,
        consumer_count,
        ..
    } = h.ok(c, declare_stream("s", &[]))
    else {
        panic!("declare-ok expected");
    };
    assert_eq!(
        (message_count, consumer_count),
        (4, 0),
        "RabbitMQ counts no consumers of a stream"
    );
}

#[test]
fn last_an_offset_a_timestamp_and_an_interval_pick_the_start() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_stream("s", &[]));
    for i in 0..5 {
        h.now_ms = 1_000_000 + i * 10_000;
        h.ok(c, publish("", "s", &format!("m{i}")));
    }
    h.ok(c, qos(100, false));
    let start = |h: &mut Harness, tag: &str, offset: AMQPValue| {
        let (reply, effects) = h.call_with_effects(c, consume_from("s", tag, Some(offset)));
        reply.expect("consume-ok");
        offsets(&effects).first().copied()
    };
    assert_eq!(start(&mut h, "last", text("last")), Some(4));
    assert_eq!(start(&mut h, "two", AMQPValue::LongLongInt(2)), Some(2));
    assert_eq!(start(&mut h, "small", AMQPValue::ShortShortUInt(3)), Some(3));
    assert_eq!(start(&mut h, "negative", AMQPValue::LongInt(-4)), Some(0));
    // At or after 1 020 s: the message published then (seconds).
    assert_eq!(start(&mut h, "ts", AMQPValue::Timestamp(1_020)), Some(2));
    assert_eq!(start(&mut h, "later", AMQPValue::Timestamp(1_021)), Some(3));
    assert_eq!(start(&mut h, "future", AMQPValue::Timestamp(9_999)), None);
    // 25 s before 1 040 s: 1 015 s, so from the message of 1 020 s.
    assert_eq!(start(&mut h, "ago", text("25s")), Some(2));
    // An offset past the end waits for it.
    assert_eq!(start(&mut h, "ahead", AMQPValue::LongLongInt(6)), None);
    let effects = h.run(Some(c), publish("", "s", "m5"));
    assert!(
        !stream_deliveries(&effects).iter().any(|d| d.0 == "ahead"),
        "offset 5 is not 6"
    );
    let effects = h.run(Some(c), publish("", "s", "m6"));
    assert!(stream_deliveries(&effects)
        .iter()
        .any(|d| d.0 == "ahead" && d.3 == 6 && d.2 == "m6"));
}

#[test]
fn a_consumer_gets_no_more_than_its_prefetch_until_it_acks() {
    let (mut h, c) = stream_with(5);
    let reader = chan(2, 1);
    h.ok(reader, qos(2, false));
    let (_, effects) = h.call_with_effects(reader, consume_from("s", "r", Some(text("first"))));
    assert_eq!(offsets(&effects), vec![0, 1]);
    let effects = h.run(Some(reader), ack(1, false));
    assert_eq!(offsets(&effects), vec![2]);
    let effects = h.run(Some(reader), ack(3, true));
    assert_eq!(offsets(&effects), vec![3, 4]);
    let effects = h.run(Some(c), publish("", "s", "m5"));
    assert!(offsets(&effects).is_empty(), "still two unacked");
    let effects = h.run(Some(reader), ack(4, false));
    assert_eq!(offsets(&effects), vec![5]);
}

#[test]
fn what_a_stream_does_not_do_is_refused_with_540() {
    let (mut h, c) = stream_with(2);
    let resource = "queue 's' in vhost '/'";
    let not = |what: &str| {
        Err(CoreError::NotImplemented(format!(
            "{what} not supported by stream queues {resource}"
        )))
    };
    assert_eq!(h.call(c, get("s", false)), not("basic.get"));
    assert_eq!(
        h.call(
            c,
            Command::PurgeQueue {
                vhost: root(),
                queue: "s".into()
            }
        ),
        not("queue.purge")
    );
    h.ok(c, qos(10, false));
    h.ok(c, consume_from("s", "r", Some(text("first"))));
    for requeue in [true, false] {
        assert_eq!(h.call(c, nack(1, false, requeue)), not("basic.nack and basic.reject"));
        assert_eq!(
            h.call(
                c,
                Command::Reject {
                    delivery_tag: DeliveryTag(2),
                    requeue
                }
            ),
            not("basic.nack and basic.reject")
        );
    }
    assert_eq!(h.call(c, Command::Recover { requeue: true }), not("basic.recover"));
    assert_eq!(h.summary("s").messages_unacked, 2, "nothing was settled");
    assert_eq!(
        h.call(c, ack(9, false)),
        Err(CoreError::PreconditionFailed("unknown delivery tag 9".into()))
    );
}

#[test]
fn closing_or_cancelling_requeues_nothing_and_deleting_ignores_if_unused() {
    let (mut h, c) = stream_with(3);
    let reader = chan(2, 1);
    h.ok(reader, qos(10, false));
    h.ok(reader, consume_from("s", "r", Some(text("first"))));
    let effects = h.run(Some(reader), Command::CloseChannel);
    assert!(offsets(&effects).is_empty());
    let summary = h.summary("s");
    assert_eq!(
        (summary.messages_ready, summary.messages_unacked, summary.consumers),
        (3, 0, 0)
    );
    h.ok(c, qos(10, false));
    h.ok(c, consume_from("s", "again", Some(text("first"))));
    h.ok(
        c,
        Command::Cancel {
            consumer_tag: "again".into(),
        },
    );
    assert_eq!(h.summary("s").messages_ready, 3);
    h.ok(c, consume_from("s", "kept", Some(text("first"))));
    assert_eq!(
        h.ok(
            c,
            Command::DeleteQueue {
                vhost: root(),
                queue: "s".into(),
                if_unused: true,
                if_empty: true
            }
        ),
        Outcome::QueueDeleted { message_count: 0 }
    );
    assert!(!h.has_queue("s"));
}

#[test]
fn deliveries_sent_back_unsent_are_read_again_in_order() {
    let (mut h, _) = stream_with(4);
    let reader = chan(2, 1);
    h.ok(reader, qos(10, false));
    let (_, effects) = h.call_with_effects(reader, consume_from("s", "r", Some(text("first"))));
    assert_eq!(offsets(&effects), vec![0, 1, 2, 3]);
    let effects = h.run(
        Some(reader),
        Command::ReturnUnsent {
            tags: vec![DeliveryTag(3), DeliveryTag(4)],
            then: AfterReturn::Nothing,
        },
    );
    assert_eq!(offsets(&effects), vec![2, 3], "offsets 2 and 3 again, under new tags");
    assert_eq!(h.summary("s").messages_ready, 4);
}

/// Retention as RabbitMQ's: only when a segment starts, whole segments,
/// the newest kept.
#[test]
fn retention_drops_whole_old_segments_when_a_segment_starts() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let segment = ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(20));
    h.ok(
        c,
        declare_stream(
            "s",
            &[segment.clone(), ("x-max-length-bytes", AMQPValue::LongLongInt(45))],
        ),
    );
    // 10-byte bodies: two to a segment.
    for i in 0..6 {
        h.ok(c, publish("", "s", &format!("message-{i:02}")[..10]));
    }
    // When offset 4 started a third segment, [0, 1] [2, 3] [4] held 50
    // bytes: the first went. Now [2, 3] [4, 5]: 40 bytes.
    assert_eq!(h.summary("s").messages_ready, 4);
    h.ok(c, publish("", "s", "message-06"));
    // A new segment, 50 bytes: [2, 3] goes, [4, 5] [6] stay.
    assert_eq!(h.summary("s").messages_ready, 3);
    h.ok(c, qos(10, false));
    let (_, effects) = h.call_with_effects(c, consume_from("s", "r", Some(text("first"))));
    assert_eq!(offsets(&effects), vec![4, 5, 6]);
    let (_, effects) = h.call_with_effects(c, consume_from("s", "old", Some(AMQPValue::LongLongInt(1))));
    assert_eq!(
        offsets(&effects),
        vec![4, 5, 6],
        "an offset retention took starts at the first"
    );

    // By age: a segment whose last message is older goes when the next starts.
    let mut h = Harness::new();
    h.ok(c, declare_stream("t", &[segment, ("x-max-age", text("10s"))]));
    for i in 0..4 {
        h.now_ms = 1_000_000 + i * 1_000;
        h.ok(c, publish("", "t", "0123456789"));
    }
    h.now_ms += 60_000;
    assert_eq!(h.summary("t").messages_ready, 4, "age alone drops nothing");
    h.ok(c, publish("", "t", "0123456789"));
    assert_eq!(
        h.summary("t").messages_ready,
        1,
        "both old segments went, the new one stays"
    );
}

#[test]
fn a_paged_stream_is_read_from_any_offset_and_by_time() {
    use crate::ready::test_pager::MemPager;

    let pager = MemPager::new(4);
    crate::with_pager(pager.clone(), || {
        let mut h = Harness::new();
        let c = chan(1, 1);
        h.ok(c, declare_stream("s", &[]));
        for i in 0..30u64 {
            h.now_ms = 1_000_000 + i * 1_000;
            h.ok(c, publish("", "s", &format!("m{i}")));
        }
        let queue = &h.broker.vhosts()[&root()].queues[&"s".into()];
        assert!(queue.ready.pages().count() >= 4, "premise: paged");
        h.ok(c, qos(1000, false));
        let (_, effects) = h.call_with_effects(c, consume_from("s", "all", Some(text("first"))));
        let all: Vec<_> = stream_deliveries(&effects).into_iter().map(|d| (d.2, d.3)).collect();
        assert_eq!(all, (0..30).map(|i| (format!("m{i}"), i)).collect::<Vec<_>>());
        for from in [0i64, 3, 4, 13, 27, 29] {
            let tag = format!("from-{from}");
            let (_, effects) = h.call_with_effects(c, consume_from("s", &tag, Some(AMQPValue::LongLongInt(from))));
            assert_eq!(offsets(&effects), (from..30).collect::<Vec<_>>());
        }
        for (seconds, first) in [(1_000, 0), (1_013, 13), (1_017, 17), (1_029, 29)] {
            let tag = format!("at-{seconds}");
            let (_, effects) = h.call_with_effects(c, consume_from("s", &tag, Some(AMQPValue::Timestamp(seconds))));
            assert_eq!(offsets(&effects).first(), Some(&first), "{seconds}");
        }
        assert!(pager.failures.lock().unwrap().is_empty());
    });
}

fn stream_policy(name: &str, apply_to: &str, definition: &str) -> Command {
    Command::SetPolicy(crate::policy::Policy {
        vhost: root(),
        name: name.to_owned(),
        pattern: "^s$".to_owned(),
        apply_to: apply_to.to_owned(),
        priority: 0,
        definition: definition.to_owned(),
    })
}

/// A `max-length-bytes` policy bounds a stream as its argument does (when
/// a segment starts, by whole segments); a policy of keys a stream does
/// not take (`max-length`, `expires`) does not apply to it, and setting a
/// policy drops nothing at once.
#[test]
fn a_policy_bounds_a_stream_only_when_a_segment_starts() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let segment = ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(20));
    h.ok(c, declare_stream("s", &[segment]));
    for _ in 0..6 {
        h.ok(c, publish("", "s", "0123456789"));
    }
    h.ok(c, stream_policy("small", "streams", r#"{"max-length-bytes":25}"#));
    assert_eq!(
        h.summary("s").messages_ready,
        6,
        "nothing dropped when the policy is set"
    );
    h.ok(c, stream_policy("other", "classic_queues", r#"{"max-length-bytes":1}"#));
    h.ok(c, publish("", "s", "0123456789"));
    // Segments [4, 5] [6] are 30 bytes: over 25, the older goes too.
    assert_eq!(h.summary("s").messages_ready, 1);

    let mut h = Harness::new();
    h.ok(c, declare_stream("s", &[]));
    h.ok(c, publish("", "s", "kept"));
    h.ok(c, stream_policy("classic", "queues", r#"{"max-length":0,"expires":1}"#));
    h.now_ms += 60_000;
    h.run(None, Command::Tick);
    h.ok(c, publish("", "s", "kept too"));
    assert!(h.has_queue("s"), "expires does not apply to a stream");
    assert_eq!(h.summary("s").messages_ready, 2, "nor does max-length");
}
