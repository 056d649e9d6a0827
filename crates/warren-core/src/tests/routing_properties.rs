//! Property test: a publish reaches exactly the queues a reference router
//! picks, for direct, fanout and topic exchanges, with keys and binding
//! keys that include the edges: the empty key, empty words, unicode, and
//! a key of a short string's full 255 bytes (128 words, past the topic
//! matcher's bit mask). Issue 15 was an empty binding key that never
//! matched.

use proptest::prelude::*;

use crate::test_support::*;
use crate::ExchangeKind;

const QUEUES: [&str; 4] = ["q0", "q1", "q2", "q3"];

/// 128 one-letter words: 255 bytes, the longest routing key.
fn longest_key() -> String {
    vec!["w"; 128].join(".")
}

/// A routing key as publishers send them.
fn routing_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop_oneof!["a", "b", "", "ü", "w"], 0..5).prop_map(|w| w.join(".")),
        1 => Just(String::new()),
        1 => Just(longest_key()),
    ]
}

/// A binding key: the words of a routing key plus `*` and `#`.
fn binding_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop_oneof!["a", "b", "", "ü", "w", "\\*", "#"], 0..5).prop_map(|w| w.join(".")),
        1 => Just(String::new()),
        1 => Just(longest_key()),
        1 => Just("w.#.w".to_owned()),
    ]
}

fn reference_matches(kind: ExchangeKind, binding_key: &str, routing_key: &str) -> bool {
    match kind {
        ExchangeKind::Direct => binding_key == routing_key,
        ExchangeKind::Fanout => true,
        ExchangeKind::Topic => reference_topic_match(&topic_words(binding_key), &topic_words(routing_key)),
        ExchangeKind::Headers => unreachable!("not generated"),
    }
}

proptest! {
    #[test]
    fn publishes_reach_exactly_the_queues_the_reference_router_picks(
        kind in prop_oneof![Just(ExchangeKind::Direct), Just(ExchangeKind::Fanout), Just(ExchangeKind::Topic)],
        bindings in prop::collection::vec((0..QUEUES.len(), binding_key()), 0..8),
        keys in prop::collection::vec(routing_key(), 1..5),
    ) {
        let mut h = Harness::new();
        let c = chan(1, 1);
        h.ok(c, declare_exchange("x", kind));
        for queue in QUEUES {
            h.ok(c, declare_queue(queue));
        }
        for (queue, key) in &bindings {
            h.ok(c, bind(QUEUES[*queue], "x", key));
        }
        for key in &keys {
            h.ok(c, publish("x", key, "m"));
            for (index, queue) in QUEUES.iter().enumerate() {
                let expected = bindings
                    .iter()
                    .any(|(q, binding)| *q == index && reference_matches(kind, binding, key));
                let got = h.drain(c, queue);
                prop_assert_eq!(
                    got.len(),
                    usize::from(expected),
                    "{:?} exchange, key {:?}, queue {}, bindings {:?}", kind, key, queue, bindings
                );
            }
        }
    }
}
