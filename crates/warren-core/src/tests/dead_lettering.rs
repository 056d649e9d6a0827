use amq_protocol_types::{AMQPValue, FieldTable};

use crate::test_support::*;
use crate::{Command, ExchangeKind, Message, Outcome};

/// Queue `work` dead-letters to fanout exchange `dlx`, bound to queue `dead`.
fn with_dlx(extra: &[(&str, AMQPValue)]) -> Harness {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("dlx", ExchangeKind::Fanout));
    h.ok(c, declare_queue("dead"));
    h.ok(c, bind("dead", "dlx", ""));
    let mut args = vec![("x-dead-letter-exchange", text("dlx"))];
    args.extend(extra.iter().cloned());
    h.ok(c, declare_queue_with("work", table(&args)));
    h
}

fn take(h: &mut Harness, queue: &str) -> Vec<Message> {
    let c = chan(1, 1);
    let mut out = Vec::new();
    while let Ok(Outcome::GetOk { message, .. }) = h.call(c, get(queue, true)) {
        out.push((*message).clone());
    }
    out
}

fn header<'a>(message: &'a Message, key: &str) -> Option<&'a AMQPValue> {
    message.properties.headers.as_ref().and_then(|h| h.inner().get(key))
}

fn deaths(message: &Message) -> Vec<FieldTable> {
    match header(message, "x-death") {
        Some(AMQPValue::FieldArray(array)) => array
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::FieldTable(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn rejected_message_is_dead_lettered_with_x_death() {
    let mut h = with_dlx(&[]);
    let c = chan(1, 1);
    h.ok(c, publish("", "work", "m"));
    h.ok(c, get("work", false));
    h.ok(
        c,
        Command::Reject {
            delivery_tag: crate::DeliveryTag(1),
            requeue: false,
        },
    );
    let dead = take(&mut h, "dead");
    assert_eq!(dead.len(), 1);
    let message = &dead[0];
    assert_eq!(message.exchange.as_str(), "dlx");
    assert_eq!(message.routing_key, "work", "original routing key kept");
    let death = &deaths(message)[0];
    assert_eq!(death.inner().get("reason"), Some(&text("rejected")));
    assert_eq!(death.inner().get("queue"), Some(&text("work")));
    assert_eq!(death.inner().get("exchange"), Some(&text("")));
    assert_eq!(death.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
    assert_eq!(death.inner().get("time"), Some(&AMQPValue::Timestamp(h.now_ms / 1000)));
    assert_eq!(header(message, "x-first-death-reason"), Some(&text("rejected")));
    assert_eq!(h.summary("work").messages_unacked, 0);
}

#[test]
fn expired_message_is_dead_lettered_with_the_routing_key_override() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("dead"));
    let args = table(&[
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text("dead")),
        ("x-message-ttl", int(10)),
    ]);
    h.ok(c, declare_queue_with("work", args));
    h.ok(c, publish("", "work", "m"));
    h.now_ms += 10;
    h.run(None, Command::Tick);
    let dead = take(&mut h, "dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].routing_key, "dead");
    assert_eq!(deaths(&dead[0])[0].inner().get("reason"), Some(&text("expired")));
    assert_eq!(h.broker.next_expiry_ms(), None);
}

#[test]
fn overflowed_messages_are_dead_lettered_as_maxlen() {
    let mut h = with_dlx(&[("x-max-length", int(1))]);
    let c = chan(1, 1);
    h.ok(c, publish("", "work", "old"));
    h.ok(c, publish("", "work", "new"));
    let dead = take(&mut h, "dead");
    assert_eq!(
        dead.iter()
            .map(|m| m.body.inline().map(|b| &b[..]).unwrap_or_default())
            .collect::<Vec<_>>(),
        [&b"old"[..]]
    );
    assert_eq!(deaths(&dead[0])[0].inner().get("reason"), Some(&text("maxlen")));
}

#[test]
fn requeues_past_the_length_limit_drop_the_head_at_once() {
    // RabbitMQ `requeue_and_run` runs `maybe_drop_head`: a queue never
    // sits above x-max-length because deliveries came back to it.
    let mut h = with_dlx(&[("x-max-length", int(2))]);
    let (c, other) = (chan(1, 1), chan(2, 1));
    for body in ["1", "2"] {
        h.ok(c, publish("", "work", body));
    }
    h.ok(other, get("work", false));
    h.ok(other, get("work", false));
    for body in ["3", "4"] {
        h.ok(c, publish("", "work", body));
    }
    h.ok(other, Command::CloseChannel);
    assert_eq!(h.summary("work").messages_ready, 2);
    let dead = take(&mut h, "dead");
    assert_eq!(
        dead.iter()
            .map(|m| m.body.inline().map(|b| &b[..]).unwrap_or_default())
            .collect::<Vec<_>>(),
        [&b"1"[..], &b"2"[..]]
    );
    assert_eq!(deaths(&dead[0])[0].inner().get("reason"), Some(&text("maxlen")));
    // A nack with requeue trims the same way; the next publish drops one.
    h.ok(other, get("work", false));
    h.ok(c, publish("", "work", "5"));
    h.ok(other, nack(1, false, true));
    assert_eq!(h.summary("work").messages_ready, 2);
    h.ok(c, publish("", "work", "6"));
    assert_eq!(h.drain(c, "work"), ["5", "6"]);
    let dead = take(&mut h, "dead");
    assert_eq!(
        dead.iter()
            .map(|m| m.body.inline().map(|b| &b[..]).unwrap_or_default())
            .collect::<Vec<_>>(),
        [&b"3"[..], &b"4"[..]]
    );
}

#[test]
fn reject_publish_dlx_dead_letters_the_refused_message() {
    let mut h = with_dlx(&[("x-max-length", int(1)), ("x-overflow", text("reject-publish-dlx"))]);
    let c = chan(1, 1);
    h.ok(c, publish("", "work", "kept"));
    let outcome = h.ok(c, publish("", "work", "refused"));
    assert_eq!(
        outcome,
        Outcome::Published {
            routed: true,
            rejected: true,
            returned: None
        }
    );
    assert_eq!(
        take(&mut h, "dead")
            .iter()
            .map(|m| m.body.inline().map(|b| b.to_vec()).unwrap_or_default())
            .collect::<Vec<_>>(),
        [b"refused".to_vec()]
    );
    assert_eq!(h.drain(c, "work"), ["kept"]);
}

#[test]
fn repeated_deaths_in_the_same_queue_count_up() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    // work -> (reject) -> retry, whose TTL sends it back to work.
    h.ok(
        c,
        declare_queue_with(
            "work",
            table(&[
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text("retry")),
            ]),
        ),
    );
    h.ok(
        c,
        declare_queue_with(
            "retry",
            table(&[
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text("work")),
                ("x-message-ttl", int(5)),
            ]),
        ),
    );
    h.ok(c, publish("", "work", "m"));
    for round in 1..=2u64 {
        let Ok(Outcome::GetOk { delivery_tag, .. }) = h.call(c, get("work", false)) else {
            panic!("round {round}: nothing in work");
        };
        h.ok(
            c,
            Command::Reject {
                delivery_tag,
                requeue: false,
            },
        );
        h.now_ms += 5;
        h.run(None, Command::Tick);
    }
    let back = take(&mut h, "work");
    assert_eq!(back.len(), 1);
    let deaths = deaths(&back[0]);
    assert_eq!(deaths.len(), 2);
    for death in &deaths {
        assert_eq!(death.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
    }
}

#[test]
fn missing_dead_letter_exchange_drops_silently() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(
        c,
        declare_queue_with("work", table(&[("x-dead-letter-exchange", text("nowhere"))])),
    );
    h.ok(c, publish("", "work", "m"));
    h.ok(c, get("work", false));
    h.ok(c, nack(1, false, false));
    assert_eq!(h.summary("work").messages_ready, 0);
}

#[test]
fn automatic_dead_letter_cycles_are_broken() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    // Expiry sends the message back to the same queue: RabbitMQ drops it.
    let args = table(&[
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text("loop")),
        ("x-message-ttl", int(1)),
    ]);
    h.ok(c, declare_queue_with("loop", args));
    h.ok(c, publish("", "loop", "m"));
    h.now_ms += 1;
    h.run(None, Command::Tick);
    assert_eq!(h.summary("loop").messages_ready, 0);
}

/// A quorum queue counts returns in `x-delivery-count` (0 on the first
/// delivery) and dead-letters a message returned more often than
/// `x-delivery-limit`, reason `delivery_limit`, as RabbitMQ 3.10's do.
/// A classic queue adds no count.
#[test]
fn quorum_queues_count_returns_and_dead_letter_past_the_delivery_limit() {
    let mut h = with_dlx(&[]);
    let c = chan(1, 1);
    let mut declare = declare_queue_with(
        "qq",
        table(&[
            ("x-queue-type", text("quorum")),
            ("x-delivery-limit", int(1)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    );
    if let Command::DeclareQueue { durable, .. } = &mut declare {
        *durable = true;
    }
    h.ok(c, declare);
    h.ok(c, publish("", "qq", "poison"));
    let count = |outcome: &Outcome| match outcome {
        Outcome::GetOk { message, .. } => header(message, "x-delivery-count").cloned(),
        other => panic!("no message: {other:?}"),
    };
    let first = h.ok(c, get("qq", false));
    assert_eq!(count(&first), Some(AMQPValue::LongLongInt(0)));
    h.ok(c, nack(1, false, true));
    let second = h.ok(c, get("qq", false));
    assert_eq!(count(&second), Some(AMQPValue::LongLongInt(1)));
    assert!(matches!(second, Outcome::GetOk { redelivered: true, .. }));
    // The second return passes the limit of 1: dead-lettered, not requeued.
    h.ok(c, nack(2, false, true));
    assert_eq!(h.summary("qq").messages_ready, 0);
    let dead = take(&mut h, "dead");
    assert_eq!(dead.len(), 1);
    let death = &deaths(&dead[0])[0];
    assert_eq!(death.inner().get("reason"), Some(&text("delivery_limit")));
    assert_eq!(
        header(&dead[0], "x-delivery-count"),
        None,
        "the stored message has no count"
    );

    h.ok(c, publish("", "work", "classic"));
    let classic = h.ok(c, get("work", true));
    assert!(matches!(&classic, Outcome::GetOk { message, .. } if header(message, "x-delivery-count").is_none()));
}
