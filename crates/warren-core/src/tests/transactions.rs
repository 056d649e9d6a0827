//! `tx.commit` (ADR 0020): a transaction's publishes, then its
//! settlements, in one command; nothing applied if a publish would fail.

use std::sync::Arc;

use crate::test_support::*;
use crate::tx::{Transaction, TxPublish, TxSettle, TxSettleKind};
use crate::{Command, CoreError, DeliveryTag, ExchangeKind, Outcome};

fn tx_publish(exchange: &str, routing_key: &str, body: &str, mandatory: bool) -> TxPublish {
    TxPublish {
        mandatory,
        message: Arc::new(message(exchange, routing_key, body)),
    }
}

fn settle(tags: &[u64], how: TxSettleKind) -> TxSettle {
    TxSettle {
        tags: tags.iter().copied().map(DeliveryTag).collect(),
        how,
    }
}

fn commit(publishes: Vec<TxPublish>, settles: Vec<TxSettle>) -> Command {
    Command::Commit(Transaction {
        vhost: root(),
        publishes,
        settles,
    })
}

#[test]
fn a_commit_publishes_in_order_then_settles() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("in"));
    h.ok(c, declare_queue("out"));
    h.ok(c, publish("", "in", "request"));
    let Outcome::GetOk { delivery_tag, .. } = h.ok(c, get("in", false)) else {
        panic!("no message to get");
    };
    let outcome = h.ok(
        c,
        commit(
            vec![tx_publish("", "out", "one", false), tx_publish("", "out", "two", false)],
            vec![settle(&[delivery_tag.0], TxSettleKind::Ack)],
        ),
    );
    assert_eq!(
        outcome,
        Outcome::Committed {
            returned: vec![],
            rejected: false
        }
    );
    assert_eq!(h.drain(c, "out"), vec!["one", "two"]);
    let request = h.summary("in");
    assert_eq!((request.messages_ready, request.messages_unacked), (0, 0));
}

#[test]
fn a_failing_publish_fails_the_commit_and_applies_nothing() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("out"));
    h.ok(c, declare_exchange("hidden", ExchangeKind::Direct));
    h.ok(c, publish("", "out", "held"));
    let Outcome::GetOk { delivery_tag, .. } = h.ok(c, get("out", false)) else {
        panic!("no message to get");
    };
    let cases = [
        (
            tx_publish("missing", "k", "x", false),
            CoreError::NotFound("no exchange 'missing' in vhost '/'".into()),
        ),
        (
            TxPublish {
                mandatory: false,
                message: Arc::new(crate::Message {
                    properties: Arc::new(crate::Properties {
                        expiration: Some("soon".into()),
                        ..Default::default()
                    }),
                    ..message("", "out", "x")
                }),
            },
            CoreError::PreconditionFailed("invalid expiration 'soon': no_integer".into()),
        ),
    ];
    for (bad, error) in cases {
        let result = h.call(
            c,
            commit(
                vec![tx_publish("", "out", "first", false), bad],
                vec![settle(&[delivery_tag.0], TxSettleKind::Ack)],
            ),
        );
        assert_eq!(result, Err(error));
        let out = h.summary("out");
        assert_eq!((out.messages_ready, out.messages_unacked), (0, 1), "nothing applied");
    }
}

#[test]
fn mandatory_unroutable_publishes_come_back_and_a_refused_one_is_reported() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(
        c,
        declare_queue_with(
            "full",
            table(&[("x-max-length", int(1)), ("x-overflow", text("reject-publish"))]),
        ),
    );
    let outcome = h.ok(
        c,
        commit(
            vec![
                tx_publish("", "full", "kept", false),
                tx_publish("", "nowhere", "back", true),
                tx_publish("", "full", "refused", false),
            ],
            vec![],
        ),
    );
    let Outcome::Committed { returned, rejected } = outcome else {
        panic!("not committed: {outcome:?}");
    };
    let returned: Vec<String> = returned.iter().map(|m| body_text(&m.body)).collect();
    assert_eq!(returned, vec!["back"]);
    assert!(rejected);
    assert_eq!(h.drain(c, "full"), vec!["kept"]);
}

#[test]
fn settlements_apply_in_order_and_skip_tags_no_longer_held() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    for body in ["a", "b", "c"] {
        h.ok(c, publish("", "q", body));
    }
    for _ in 0..3 {
        h.ok(c, get("q", false));
    }
    // Tag 1 requeued, tag 2 dead (no dead-letter exchange: dropped), tag 3
    // acked, tag 9 never existed.
    h.ok(
        c,
        commit(
            vec![],
            vec![
                settle(&[1], TxSettleKind::Requeue),
                settle(&[2], TxSettleKind::Reject),
                settle(&[3, 9], TxSettleKind::Ack),
            ],
        ),
    );
    let q = h.summary("q");
    assert_eq!((q.messages_ready, q.messages_unacked), (1, 0));
    let Outcome::GetOk {
        redelivered, message, ..
    } = h.ok(c, get("q", true))
    else {
        panic!("the requeued message is not there");
    };
    assert!(redelivered);
    assert_eq!(body_text(&message.body), "a");
}

/// Found by the differential harness: a consumer that can take each
/// message takes it as the commit publishes it, so a `reject-publish`
/// queue of length 1 refuses nothing, as RabbitMQ (and Warren outside a
/// transaction) behave.
#[test]
fn a_commit_delivers_each_publish_before_the_next_meets_the_length_limit() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(
        c,
        declare_queue_with(
            "one",
            table(&[("x-max-length", int(1)), ("x-overflow", text("reject-publish"))]),
        ),
    );
    h.ok(c, consume("one", "taker", false));
    let effects = h.run(
        Some(c),
        commit(
            vec![tx_publish("", "one", "a", false), tx_publish("", "one", "b", false)],
            vec![],
        ),
    );
    assert_eq!(delivered_bodies(&effects), vec!["a", "b"]);
    assert_eq!(
        reply_of(&effects, c),
        Ok(Outcome::Committed {
            returned: vec![],
            rejected: false
        })
    );
}
