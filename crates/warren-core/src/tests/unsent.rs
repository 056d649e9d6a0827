//! The core's side of consumer credit at the consumer's node (ADR 0026):
//! a consumer is assigned up to `assigned_window(prefetch, lookahead)` deliveries,
//! and deliveries its node never sent come back as they were.

use amq_protocol_types::AMQPValue;

use crate::test_support::*;
use crate::{assigned_window, AfterReturn, Command, DeliveryTag, Effect, Outcome};

fn return_unsent(tags: &[u64], then: AfterReturn) -> Command {
    Command::ReturnUnsent {
        tags: tags.iter().copied().map(DeliveryTag).collect(),
        then,
    }
}

fn publish_n(h: &mut Harness, c: crate::ChannelId, queue: &str, n: usize) -> Vec<Effect> {
    (0..n)
        .flat_map(|i| h.run(Some(c), publish("", queue, &i.to_string())))
        .collect()
}

#[test]
fn the_window_is_the_prefetch_below_ten_and_a_multiple_of_it_from_ten() {
    use crate::Lookahead;
    for lookahead in [Lookahead::NONE, Lookahead::V5, Lookahead::CURRENT] {
        assert_eq!(assigned_window(0, lookahead), 0);
        assert_eq!(assigned_window(1, lookahead), 1);
        assert_eq!(assigned_window(9, lookahead), 9);
    }
    assert_eq!(assigned_window(10, Lookahead::NONE), 10);
    assert_eq!(assigned_window(10, Lookahead::V5), 20, "codec version 5: twice");
    assert_eq!(assigned_window(100, Lookahead::V5), 200);
    assert_eq!(assigned_window(10, Lookahead::CURRENT), 40, "this build: four times");
    assert_eq!(assigned_window(100, Lookahead::CURRENT), 400);
    assert_eq!(assigned_window(u16::MAX, Lookahead::CURRENT), 262_140);
    assert_eq!(assigned_window(u16::MAX, Lookahead(u8::MAX)), 16_776_960, "no overflow");
}

/// The harness consumes with [`crate::Lookahead::V5`] (twice the prefetch),
/// as these tests were written; the front end asks for `CURRENT`.
#[test]
fn a_consumer_asking_four_times_is_assigned_four_times() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, qos(10, false));
    h.ok(c, consume_with("q", "c", false, crate::Lookahead::CURRENT));
    assert_eq!(deliveries(&publish_n(&mut h, c, "q", 50)).len(), 40);
    assert_eq!(h.summary("q").messages_ready, 10);
}

#[test]
fn a_consumer_is_assigned_its_window_and_a_channel_its_exact_global_prefetch() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("small"));
    h.ok(c, declare_queue("large"));
    h.ok(c, qos(5, false));
    h.ok(c, consume("small", "s", false));
    h.ok(c, qos(10, false));
    h.ok(c, consume("large", "l", false));
    assert_eq!(
        deliveries(&publish_n(&mut h, c, "small", 8)).len(),
        5,
        "prefetch 5: exactly 5"
    );
    assert_eq!(
        deliveries(&publish_n(&mut h, c, "large", 30)).len(),
        20,
        "prefetch 10: 20 assigned"
    );
    assert_eq!(h.summary("large").messages_ready, 10);
    assert_eq!(h.summary("large").messages_unacked, 20);

    let d = chan(2, 1);
    h.ok(d, declare_queue("g"));
    h.ok(d, qos(12, true));
    h.ok(d, consume("g", "a", false));
    h.ok(d, consume("g", "b", false));
    assert_eq!(deliveries(&publish_n(&mut h, d, "g", 30)).len(), 12, "global 12: exact");
}

/// A `Consume` as builds before ADR 0026 wrote it (decoded from an older
/// log: no lookahead) keeps the old meaning, so that replaying such an
/// entry gives what the old build gave on every replica.
#[test]
fn a_consumer_from_an_older_entry_keeps_the_exact_prefetch_and_no_window() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("manual"));
    h.ok(c, declare_queue("auto"));
    h.ok(c, qos(10, false));
    h.ok(c, consume_with("manual", "m", false, crate::Lookahead::NONE));
    h.ok(c, consume_with("auto", "a", true, crate::Lookahead::NONE));
    assert_eq!(deliveries(&publish_n(&mut h, c, "manual", 30)).len(), 10);
    let window = crate::NO_ACK_WINDOW as usize;
    assert_eq!(
        deliveries(&publish_n(&mut h, c, "auto", window + 10)).len(),
        window + 10,
        "no window"
    );
}

#[test]
fn returned_deliveries_come_back_unchanged_at_their_place() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, qos(10, false));
    h.ok(c, consume("q", "a", false));
    let sent = deliveries(&publish_n(&mut h, c, "q", 25));
    assert_eq!(sent.len(), 20);
    // The node sent tags 1-10 and held 11-20; the channel closes.
    let effects = h.run(
        Some(c),
        return_unsent(&(11..=20).collect::<Vec<_>>(), AfterReturn::CloseChannel),
    );
    assert_eq!(reply_of(&effects, c), Ok(Outcome::Done));
    assert!(
        deliveries(&effects).is_empty(),
        "no dispatch to the closing channel in between"
    );
    let q = h.summary("q");
    assert_eq!((q.messages_ready, q.messages_unacked, q.consumers), (25, 0, 0));
    // Another consumer gets them all in order: the ten sent redelivered,
    // the ten held and the five never assigned not.
    let d = chan(2, 1);
    let got = deliveries(&h.run(Some(d), consume("q", "b", true)));
    let got: Vec<(String, bool)> = got.into_iter().map(|x| (x.4, x.3)).collect();
    let want: Vec<(String, bool)> = (0..25).map(|i| (i.to_string(), i < 10)).collect();
    assert_eq!(got, want);
}

#[test]
fn a_cancel_with_its_held_deliveries_sends_them_to_the_other_consumers() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, qos(10, false));
    h.ok(c, consume("q", "a", false));
    assert_eq!(deliveries(&publish_n(&mut h, c, "q", 20)).len(), 20);
    let d = chan(2, 1);
    h.ok(d, consume("q", "b", false));
    let effects = h.run(
        Some(c),
        return_unsent(
            &(11..=20).collect::<Vec<_>>(),
            AfterReturn::Cancel {
                consumer_tag: "a".into(),
            },
        ),
    );
    assert!(matches!(reply_of(&effects, c), Ok(Outcome::CancelOk { .. })));
    let moved = deliveries(&effects);
    assert_eq!(moved.len(), 10);
    assert!(moved.iter().all(|x| x.1 == "b" && !x.3), "{moved:?}");
    // The ten the client was sent stay unacked on its channel: it may ack them.
    h.ok(c, ack(10, true));
    assert_eq!(h.summary("q").messages_unacked, 10, "b's ten");
}

#[test]
fn recover_after_a_return_redelivers_only_what_was_sent() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, qos(10, false));
    h.ok(c, consume("q", "a", false));
    assert_eq!(deliveries(&publish_n(&mut h, c, "q", 20)).len(), 20);
    let effects = h.run(
        Some(c),
        return_unsent(&(11..=20).collect::<Vec<_>>(), AfterReturn::Recover),
    );
    let again = deliveries(&effects);
    assert_eq!(again.len(), 20, "the same consumer takes its window again");
    let flags: Vec<(String, bool)> = again.into_iter().map(|x| (x.4, x.3)).collect();
    let want: Vec<(String, bool)> = (0..20).map(|i| (i.to_string(), i < 10)).collect();
    assert_eq!(flags, want);
}

#[test]
fn a_quorum_queue_counts_no_return_for_a_delivery_never_sent() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let mut declare = declare_queue_with("qq", table(&[("x-queue-type", text("quorum"))]));
    if let Command::DeclareQueue { durable, .. } = &mut declare {
        *durable = true;
    }
    h.ok(c, declare);
    h.ok(c, publish("", "qq", "m"));
    h.ok(c, get("qq", false));
    h.ok(c, return_unsent(&[1], AfterReturn::Nothing));
    let Outcome::GetOk {
        redelivered, message, ..
    } = h.ok(c, get("qq", false))
    else {
        panic!("expected get-ok");
    };
    assert!(!redelivered);
    let count = message
        .properties
        .headers
        .as_ref()
        .and_then(|t| t.inner().get("x-delivery-count").cloned());
    assert_eq!(count, Some(AMQPValue::LongLongInt(0)));
}

#[test]
fn tags_not_unacked_and_channels_unknown_are_skipped() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, publish("", "q", "m"));
    h.ok(c, get("q", false));
    h.ok(c, ack(1, false));
    assert_eq!(h.ok(c, return_unsent(&[1, 7, 0], AfterReturn::Nothing)), Outcome::Done);
    assert_eq!(
        h.ok(chan(9, 9), return_unsent(&[1], AfterReturn::Nothing)),
        Outcome::Done
    );
    let q = h.summary("q");
    assert_eq!(
        (q.messages_ready, q.messages_unacked),
        (0, 0),
        "an acked message stays acked"
    );
}

#[test]
fn a_no_ack_consumer_is_assigned_its_window_until_its_node_reports_writes() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    // A channel prefetch does not limit a no_ack consumer: only its window.
    h.ok(c, qos(1, true));
    h.ok(c, consume("q", "fast", true));
    // Bodies of 1 KiB: the byte window (16 MiB) is reached first.
    let per_window = (crate::NO_ACK_WINDOW_BYTES / 1024) as usize;
    assert!(per_window < crate::NO_ACK_WINDOW as usize);
    let body = "x".repeat(1024);
    let mut delivered = 0;
    for _ in 0..per_window + 50 {
        delivered += deliveries(&h.run(Some(c), publish("", "q", &body))).len();
    }
    assert_eq!(delivered, per_window);
    assert_eq!(h.summary("q").messages_ready, 50, "the rest waits in the queue");
    let written = |count, bytes| Command::Written {
        consumer_tag: "fast".into(),
        count,
        bytes,
    };
    let effects = h.run(Some(c), written(30, 30 * 1024));
    assert_eq!(reply_of(&effects, c), Ok(Outcome::Done));
    assert_eq!(deliveries(&effects).len(), 30, "30 written: 30 more");
    let effects = h.run(Some(c), written(u32::MAX, u64::MAX));
    assert_eq!(
        deliveries(&effects).len(),
        20,
        "the queue's last 20 (the counts saturate)"
    );
    assert_eq!(h.summary("q").messages_ready, 0);
    // A report for a consumer that is gone, or a channel the core never
    // saw, changes nothing.
    let gone = Command::Written {
        consumer_tag: "nobody".into(),
        count: 5,
        bytes: 5,
    };
    assert_eq!(h.ok(c, gone.clone()), Outcome::Done);
    assert_eq!(h.ok(chan(7, 7), gone), Outcome::Done);
}

#[test]
fn a_no_ack_consumer_of_small_bodies_is_bounded_by_the_count_window() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, consume("q", "fast", true));
    let window = crate::NO_ACK_WINDOW as usize;
    assert_eq!(deliveries(&publish_n(&mut h, c, "q", window + 5)).len(), window);
    assert_eq!(h.summary("q").messages_ready, 5);
}
