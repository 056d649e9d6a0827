//! `Broker::apply_spilling`: the bodies of routed messages go to the node's
//! body store, and nothing else changes.

use bytes::Bytes;

use crate::test_support::*;
use crate::{Batch, Body, Broker, Message, Request, StoredBody};

/// A store that records each body it is given; the message with its
/// handle.
fn recorded(store: &mut Vec<Bytes>, message: &Message) -> Option<Message> {
    let bytes = message.body.inline().expect("in memory").clone();
    store.push(bytes.clone());
    Some(Message {
        body: Body::Stored(StoredBody {
            segment: 0,
            offset: u32::try_from(store.len() - 1).expect("few"),
            len: u32::try_from(bytes.len()).expect("small"),
        }),
        ..message.clone()
    })
}

#[test]
fn routed_bodies_are_spilled_and_everything_else_is_alike() {
    let origin = chan(1, 1);
    let commands = vec![
        declare_queue("q"),
        declare_queue("other"),
        declare_exchange("fan", crate::ExchangeKind::Fanout),
        bind("q", "fan", ""),
        bind("other", "fan", ""),
        publish("", "q", "to q"),
        publish("", "nowhere", "unroutable"),
        publish("", "q", ""),
        publish("fan", "", "to both ✓"),
        get("q", false),
        nack(1, false, true),
        get("q", true),
    ];
    let mut plain = Broker::new();
    let mut spilled = Broker::new();
    let mut store: Vec<Bytes> = Vec::new();
    for (i, command) in commands.into_iter().enumerate() {
        let batch = Batch {
            now_ms: 1_000 + i as u64,
            requests: vec![Request {
                origin: Some(origin),
                command,
            }],
        };
        let (mut plain_effects, mut spilled_effects) = (Vec::new(), Vec::new());
        plain.apply(&batch, &mut plain_effects);
        let mut spill = |message: &Message| recorded(&mut store, message);
        spilled.apply_spilling(&batch, &mut spilled_effects, Some(&mut spill));
        assert_eq!(
            plain_effects.len(),
            spilled_effects.len(),
            "same effects for command {i}"
        );
    }
    assert_eq!(
        store,
        [&b"to q"[..], b"", "to both ✓".as_bytes()],
        "each routed body once (a fanout to two queues too); not the unroutable one"
    );
    assert_eq!(plain.queue_summaries(), spilled.queue_summaries());
    assert!(spilled.held_bodies().count() >= 3);
    assert!(
        spilled.held_bodies().all(|body| matches!(body, Body::Stored(_))),
        "no held body is in memory"
    );
    let (messages, bytes) = plain.held_backlog();
    assert!(bytes > 0);
    assert_eq!(
        spilled.held_backlog_with(true),
        (messages, 0),
        "and none is counted as memory"
    );
}

#[test]
fn a_store_that_fails_leaves_the_body_in_memory() {
    let origin = chan(1, 1);
    let mut broker = Broker::new();
    for command in [declare_queue("q"), publish("", "q", "kept")] {
        let batch = Batch {
            now_ms: 1,
            requests: vec![Request {
                origin: Some(origin),
                command,
            }],
        };
        broker.apply_spilling(&batch, &mut Vec::new(), Some(&mut |_: &Message| None));
    }
    let bodies: Vec<&Body> = broker.held_bodies().collect();
    assert_eq!(bodies, [&Body::Inline(Bytes::from_static(b"kept"))]);
}

/// Applies `commands` one request each with a store that records what it
/// is given; returns the bodies stored and every delivery's body as sent.
fn spilled_bodies(commands: Vec<crate::Command>) -> (Vec<Bytes>, Vec<Body>) {
    let origin = chan(1, 1);
    let mut broker = Broker::new();
    let mut store: Vec<Bytes> = Vec::new();
    let mut delivered = Vec::new();
    for (i, command) in commands.into_iter().enumerate() {
        let batch = Batch {
            now_ms: 1_000 + i as u64,
            requests: vec![Request {
                origin: Some(origin),
                command,
            }],
        };
        let mut spill = |message: &Message| recorded(&mut store, message);
        let mut effects = Vec::new();
        broker.apply_spilling(&batch, &mut effects, Some(&mut spill));
        delivered.extend(effects.into_iter().filter_map(|effect| match effect {
            crate::Effect::Deliver { message, .. } => Some(message.body.clone()),
            _ => None,
        }));
    }
    (store, delivered)
}

#[test]
fn a_body_taken_at_once_by_a_no_ack_consumer_is_not_stored() {
    let (stored, delivered) = spilled_bodies(vec![
        declare_queue("q"),
        consume("q", "c", true),
        publish("", "q", "straight through"),
    ]);
    assert_eq!(stored, Vec::<Bytes>::new());
    assert_eq!(delivered, [Body::Inline(Bytes::from_static(b"straight through"))]);
}

#[test]
fn a_body_someone_keeps_is_stored() {
    // A consumer that acks holds it until the ack.
    let (stored, _) = spilled_bodies(vec![
        declare_queue("q"),
        consume("q", "c", false),
        publish("", "q", "unacked"),
    ]);
    assert_eq!(stored, [Bytes::from_static(b"unacked")]);
    // A no_ack consumer and one that acks on the same queue.
    let (stored, _) = spilled_bodies(vec![
        declare_queue("q"),
        consume("q", "a", true),
        consume("q", "b", false),
        publish("", "q", "either"),
    ]);
    assert_eq!(stored, [Bytes::from_static(b"either")]);
    // A fanout to a queue with a no_ack consumer and one without consumers.
    let (stored, _) = spilled_bodies(vec![
        declare_queue("q"),
        declare_queue("idle"),
        declare_exchange("fan", crate::ExchangeKind::Fanout),
        bind("q", "fan", ""),
        bind("idle", "fan", ""),
        consume("q", "c", true),
        publish("fan", "", "to both"),
    ]);
    assert_eq!(stored, [Bytes::from_static(b"to both")]);
    // No consumer at all.
    let (stored, _) = spilled_bodies(vec![declare_queue("q"), publish("", "q", "queued")]);
    assert_eq!(stored, [Bytes::from_static(b"queued")]);
}

#[test]
fn a_single_active_consumer_queue_counts_only_its_active_consumer() {
    // "a" takes a body as large as its whole no_ack window, and has no
    // room left; "b" has, but a single-active-consumer queue does not
    // deliver to it, so the second message waits, and is stored.
    let big = "x".repeat(usize::try_from(crate::NO_ACK_WINDOW_BYTES).expect("fits"));
    let sac = table(&[("x-single-active-consumer", amq_protocol_types::AMQPValue::Boolean(true))]);
    let (stored, delivered) = spilled_bodies(vec![
        declare_queue_with("q", sac),
        consume("q", "a", true),
        consume("q", "b", true),
        publish("", "q", &big),
        publish("", "q", "waits for a"),
    ]);
    assert_eq!(stored, [Bytes::from_static(b"waits for a")]);
    assert_eq!(delivered.len(), 1);
    // Without single-active-consumer, "b" takes it at once.
    let (stored, delivered) = spilled_bodies(vec![
        declare_queue("q"),
        consume("q", "a", true),
        consume("q", "b", true),
        publish("", "q", &big),
        publish("", "q", "to b"),
    ]);
    assert_eq!(stored, Vec::<Bytes>::new());
    assert_eq!(delivered.len(), 2);
}
