//! Dead-lettering (RabbitMQ `rabbit_dead_letter`): a rejected, expired or
//! overflowed message is republished to its queue's
//! `x-dead-letter-exchange`, with an `x-death` history in its headers.

use std::sync::Arc;

use amq_protocol_types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, Ctx};
use crate::ids::{ExchangeName, QueueName, VHost};
use crate::message::Message;
use crate::publish::message_ttl_ms;
use crate::queue::{Queue, QueuedMessage};
use crate::queue_args::string;

/// Why a message died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeathReason {
    /// `basic.reject` / `basic.nack` with `requeue=false`.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// A length limit pushed it out (or refused it, `reject-publish-dlx`).
    MaxLen,
    /// Returned to a quorum queue more often than its `x-delivery-limit`.
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message on its way to a dead-letter exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub vhost: VHost,
    /// The queue it died in.
    pub queue: QueueName,
    pub exchange: ExchangeName,
    /// `x-dead-letter-routing-key`, or `None` to keep the original key.
    pub routing_key: Option<String>,
    pub reason: DeathReason,
    pub message: Arc<Message>,
}

/// The dead letters for `entries` that died in `queue`; none if the queue
/// has no dead-letter exchange (the messages are simply dropped).
pub(crate) fn dead_letters(
    vhost: &VHost,
    queue: &Queue,
    entries: Vec<QueuedMessage>,
    reason: DeathReason,
) -> Vec<DeadLetter> {
    let Some(exchange) = &queue.args.dead_letter_exchange else {
        return Vec::new();
    };
    entries
        .into_iter()
        .map(|entry| DeadLetter {
            vhost: vhost.clone(),
            queue: queue.name.clone(),
            exchange: exchange.clone(),
            routing_key: queue.args.dead_letter_routing_key.clone(),
            reason,
            message: entry.message,
        })
        .collect()
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn key(name: &str) -> ShortString {
    ShortString::from(name)
}

/// The `(queue, reason)` of an `x-death` entry.
fn death_key(entry: &AMQPValue) -> Option<(String, String)> {
    let AMQPValue::FieldTable(table) = entry else {
        return None;
    };
    let queue = table.inner().get("queue").and_then(string)?;
    let reason = table.inner().get("reason").and_then(string)?;
    Some((queue, reason))
}

/// `headers` with this death recorded: the `x-death` entry for the same
/// queue and reason has its count bumped and moves to the front, or a new
/// entry (count 1) is put first; `x-first-death-*` are set once and
/// `x-last-death-*` every time (RabbitMQ 3.13).
fn record_death(
    headers: Option<&FieldTable>,
    original: &Message,
    queue: &QueueName,
    reason: DeathReason,
    now_ms: u64,
) -> FieldTable {
    let mut headers = headers.cloned().unwrap_or_default();
    let previous: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(array)) => array.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let wanted = (queue.as_str().to_owned(), reason.as_str().to_owned());
    let (same, others): (Vec<AMQPValue>, Vec<AMQPValue>) = previous
        .into_iter()
        .partition(|entry| death_key(entry).as_ref() == Some(&wanted));
    let entry = match same.into_iter().next() {
        Some(AMQPValue::FieldTable(mut table)) => {
            let count = table
                .inner()
                .get("count")
                .and_then(crate::queue_args::integer)
                .unwrap_or(0);
            table.insert(
                key("count"),
                AMQPValue::LongLongInt(i64::try_from(count + 1).unwrap_or(i64::MAX)),
            );
            table
        }
        _ => new_death_entry(original, queue, reason, now_ms),
    };
    let mut deaths = vec![AMQPValue::FieldTable(entry)];
    deaths.extend(others);
    headers.insert(key("x-death"), AMQPValue::FieldArray(FieldArray::from(deaths)));
    for (name, value) in [
        ("reason", reason.as_str()),
        ("queue", queue.as_str()),
        ("exchange", original.exchange.as_str()),
    ] {
        let first = format!("x-first-death-{name}");
        if !headers.contains_key(&first) {
            headers.insert(key(&first), long_string(value));
        }
        headers.insert(key(&format!("x-last-death-{name}")), long_string(value));
    }
    headers
}

fn new_death_entry(original: &Message, queue: &QueueName, reason: DeathReason, now_ms: u64) -> FieldTable {
    let mut entry = FieldTable::default();
    entry.insert(key("count"), AMQPValue::LongLongInt(1));
    entry.insert(key("reason"), long_string(reason.as_str()));
    entry.insert(key("queue"), long_string(queue.as_str()));
    entry.insert(key("time"), AMQPValue::Timestamp(now_ms / 1000));
    entry.insert(key("exchange"), long_string(original.exchange.as_str()));
    let routing_keys = FieldArray::from(vec![long_string(&original.routing_key)]);
    entry.insert(key("routing-keys"), AMQPValue::FieldArray(routing_keys));
    if let Some(expiration) = &original.properties.expiration {
        entry.insert(key("original-expiration"), long_string(expiration));
    }
    entry
}

/// The message republished for `dead`: through the dead-letter exchange,
/// with the dead-letter routing key if set, the death recorded, and the
/// `expiration` removed (kept in `x-death` as `original-expiration`) so it
/// does not expire again.
fn dead_lettered_message(dead: &DeadLetter, now_ms: u64) -> Message {
    let original = &dead.message;
    let mut properties = (*original.properties).clone();
    properties.headers = Some(record_death(
        original.properties.headers.as_ref(),
        original,
        &dead.queue,
        dead.reason,
        now_ms,
    ));
    properties.expiration = None;
    Message {
        exchange: dead.exchange.clone(),
        routing_key: dead.routing_key.clone().unwrap_or_else(|| original.routing_key.clone()),
        properties: Arc::new(properties),
        body: original.body.clone(),
    }
}

/// Whether dead-lettering into `target` closes a cycle with no rejection
/// in it (RabbitMQ `is_cycle`): such a message would loop forever, so it
/// is dropped for that queue. `deaths` is the `x-death` list, newest first.
fn is_cycle(target: &QueueName, deaths: &[(String, String)]) -> bool {
    let Some(index) = deaths.iter().position(|(queue, _)| queue == target.as_str()) else {
        return false;
    };
    deaths[..=index]
        .iter()
        .all(|(_, reason)| reason != DeathReason::Rejected.as_str())
}

fn deaths_of(message: &Message) -> Vec<(String, String)> {
    match message
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    {
        Some(AMQPValue::FieldArray(array)) => array.as_slice().iter().filter_map(death_key).collect(),
        _ => Vec::new(),
    }
}

impl Broker {
    /// Routes `dead` through its dead-letter exchange and enqueues it. A
    /// missing exchange or no route drops it silently, as RabbitMQ does.
    pub(crate) fn republish_dead_letter(&mut self, ctx: &mut Ctx<'_>, dead: DeadLetter) {
        let Some(vh) = self.vhosts.get(&dead.vhost) else {
            return;
        };
        if !dead.exchange.is_default() && !vh.exchanges.contains_key(&dead.exchange) {
            return;
        }
        let message = dead_lettered_message(&dead, ctx.now_ms);
        let deaths = deaths_of(&message);
        let targets: Vec<QueueName> = vh
            .route(&message.exchange, &message)
            .into_iter()
            .filter(|target| dead.reason == DeathReason::Rejected || !is_cycle(target, &deaths))
            .collect();
        let ttl_ms = message_ttl_ms(message.properties.expiration.as_deref()).unwrap_or(None);
        let message = Arc::new(message);
        for target in targets {
            self.enqueue(ctx, &dead.vhost, &target, Arc::clone(&message), ttl_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;
    use bytes::Bytes;

    fn message() -> Message {
        Message {
            exchange: ExchangeName::from("ex"),
            routing_key: "rk".into(),
            properties: Arc::new(Properties {
                expiration: Some("500".into()),
                ..Properties::default()
            }),
            body: Bytes::from_static(b"x").into(),
        }
    }

    fn dead(message: Message, reason: DeathReason) -> DeadLetter {
        DeadLetter {
            vhost: VHost::from("/"),
            queue: QueueName::from("q"),
            exchange: ExchangeName::from("dlx"),
            routing_key: None,
            reason,
            message: Arc::new(message),
        }
    }

    fn x_death(message: &Message) -> Vec<FieldTable> {
        match message.properties.headers.as_ref().unwrap().inner().get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    other => panic!("not a table: {other:?}"),
                })
                .collect(),
            other => panic!("no x-death: {other:?}"),
        }
    }

    #[test]
    fn first_death_adds_an_entry_and_first_death_headers() {
        let out = dead_lettered_message(&dead(message(), DeathReason::Expired), 12_345);
        assert_eq!(out.exchange.as_str(), "dlx");
        assert_eq!(out.routing_key, "rk");
        assert_eq!(out.properties.expiration, None);
        let deaths = x_death(&out);
        assert_eq!(deaths.len(), 1);
        let entry = deaths[0].inner();
        assert_eq!(entry.get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(entry.get("reason"), Some(&long_string("expired")));
        assert_eq!(entry.get("queue"), Some(&long_string("q")));
        assert_eq!(entry.get("exchange"), Some(&long_string("ex")));
        assert_eq!(entry.get("time"), Some(&AMQPValue::Timestamp(12)));
        assert_eq!(entry.get("original-expiration"), Some(&long_string("500")));
        let headers = out.properties.headers.as_ref().unwrap().inner();
        assert_eq!(headers.get("x-first-death-reason"), Some(&long_string("expired")));
        assert_eq!(headers.get("x-first-death-queue"), Some(&long_string("q")));
    }

    #[test]
    fn same_queue_and_reason_bumps_the_count() {
        let once = dead_lettered_message(&dead(message(), DeathReason::Rejected), 0);
        let twice = dead_lettered_message(&dead(once, DeathReason::Rejected), 0);
        let deaths = x_death(&twice);
        assert_eq!(deaths.len(), 1);
        assert_eq!(deaths[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        let thrice = dead_lettered_message(&dead(twice, DeathReason::Expired), 0);
        let deaths = x_death(&thrice);
        assert_eq!(deaths.len(), 2);
        assert_eq!(deaths[0].inner().get("reason"), Some(&long_string("expired")));
        let headers = thrice.properties.headers.as_ref().unwrap().inner();
        assert_eq!(headers.get("x-first-death-reason"), Some(&long_string("rejected")));
    }

    #[test]
    fn cycles_without_rejection_are_detected() {
        let deaths = vec![
            ("b".to_owned(), "expired".to_owned()),
            ("a".to_owned(), "maxlen".to_owned()),
        ];
        assert!(is_cycle(&QueueName::from("a"), &deaths));
        assert!(!is_cycle(&QueueName::from("c"), &deaths));
        let deaths = vec![
            ("b".to_owned(), "rejected".to_owned()),
            ("a".to_owned(), "expired".to_owned()),
        ];
        assert!(!is_cycle(&QueueName::from("a"), &deaths));
    }
}
