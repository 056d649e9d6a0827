//! Helpers for tests (this crate's, and others' with feature
//! `test-support`): concise command builders and a [`Harness`] that applies
//! one request at a time and checks the invariants after every batch.

use std::sync::Arc;

use amq_protocol_types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::Bytes;

use crate::broker::Broker;
use crate::command::{Batch, Command, ExchangeKind, Request};
use crate::effect::{Effect, Outcome};
use crate::error::CoreError;
use crate::ids::{ChannelId, ConnectionId, ConsumerTag, DeliveryTag, ExchangeName, NodeId, QueueName, VHost};
use crate::message::Message;

/// Connection `seq` on node 1, boot 1.
pub fn conn(seq: u64) -> ConnectionId {
    ConnectionId {
        node: NodeId(1),
        boot: 1,
        seq,
    }
}

/// Channel `channel` of connection `seq` on node 1, boot 1.
pub fn chan(seq: u64, channel: u16) -> ChannelId {
    ChannelId {
        conn: conn(seq),
        channel,
    }
}

/// The vhost `/`.
pub fn root() -> VHost {
    VHost::from("/")
}

/// A field table from `(key, value)` pairs.
pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// A long-string field value.
pub fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// A long-int field value.
pub fn int(value: i32) -> AMQPValue {
    AMQPValue::LongInt(value)
}

/// A body's bytes as text (lossy), or where it is stored.
pub fn body_text(body: &crate::message::Body) -> String {
    match body {
        crate::message::Body::Inline(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        crate::message::Body::Stored(stored) => format!("<stored {stored:?}>"),
    }
}

/// A message for `exchange` / `routing_key` with body `body`.
pub fn message(exchange: &str, routing_key: &str, body: &str) -> Message {
    Message {
        exchange: ExchangeName::from(exchange),
        routing_key: routing_key.to_owned(),
        properties: Arc::default(),
        body: Bytes::copy_from_slice(body.as_bytes()).into(),
    }
}

pub fn declare_exchange(name: &str, kind: ExchangeKind) -> Command {
    Command::DeclareExchange {
        vhost: root(),
        name: ExchangeName::from(name),
        kind,
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    }
}

/// A plain (non-durable, non-exclusive, not auto-delete) queue declare.
/// `declare_exchange` with `arguments` (e.g. `alternate-exchange`).
pub fn declare_exchange_with(name: &str, kind: ExchangeKind, arguments: FieldTable) -> Command {
    let mut command = declare_exchange(name, kind);
    if let Command::DeclareExchange { arguments: a, .. } = &mut command {
        *a = arguments;
    }
    command
}

/// A harness with exchange `x` of `kind` and every `(queue, key)` of
/// `bindings` declared and bound to it.
pub fn harness_with_exchange(kind: ExchangeKind, bindings: &[(&str, &str)]) -> Harness {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("x", kind));
    for (queue, key) in bindings {
        h.ok(c, declare_queue(queue));
        h.ok(c, bind(queue, "x", key));
    }
    h
}

pub fn declare_queue(name: &str) -> Command {
    declare_queue_with(name, FieldTable::default())
}

pub fn declare_queue_with(name: &str, arguments: FieldTable) -> Command {
    Command::DeclareQueue {
        vhost: root(),
        name: QueueName::from(name),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments,
    }
}

pub fn bind(queue: &str, exchange: &str, routing_key: &str) -> Command {
    bind_with(queue, exchange, routing_key, FieldTable::default())
}

pub fn bind_with(queue: &str, exchange: &str, routing_key: &str, arguments: FieldTable) -> Command {
    Command::BindQueue {
        vhost: root(),
        queue: QueueName::from(queue),
        exchange: ExchangeName::from(exchange),
        routing_key: routing_key.to_owned(),
        arguments,
    }
}

pub fn publish_message(message: Message) -> Command {
    Command::Publish {
        vhost: root(),
        mandatory: false,
        message: Arc::new(message),
    }
}

/// Publishes `body` to `exchange` with `routing_key`.
pub fn publish(exchange: &str, routing_key: &str, body: &str) -> Command {
    publish_message(message(exchange, routing_key, body))
}

/// A `Consume` with the lookahead of codec version 5 (twice the prefetch
/// from 10 on), as the core's tests were written for.
pub fn consume(queue: &str, tag: &str, no_ack: bool) -> Command {
    consume_with(queue, tag, no_ack, crate::Lookahead::V5)
}

/// A `Consume` with `lookahead` (`NONE`: as an entry of codec version 4
/// or earlier decodes).
pub fn consume_with(queue: &str, tag: &str, no_ack: bool, lookahead: crate::Lookahead) -> Command {
    Command::Consume {
        vhost: root(),
        queue: QueueName::from(queue),
        consumer_tag: ConsumerTag::from(tag),
        no_ack,
        exclusive: false,
        arguments: FieldTable::default(),
        lookahead,
    }
}

pub fn get(queue: &str, no_ack: bool) -> Command {
    Command::Get {
        vhost: root(),
        queue: QueueName::from(queue),
        no_ack,
    }
}

pub fn ack(tag: u64, multiple: bool) -> Command {
    Command::Ack {
        delivery_tag: DeliveryTag(tag),
        multiple,
    }
}

pub fn nack(tag: u64, multiple: bool, requeue: bool) -> Command {
    Command::Nack {
        delivery_tag: DeliveryTag(tag),
        multiple,
        requeue,
    }
}

pub fn qos(prefetch_count: u16, global: bool) -> Command {
    Command::Qos { prefetch_count, global }
}

/// A broker plus a clock; applies one request per batch and checks the
/// invariants after each.
pub struct Harness {
    pub broker: Broker,
    pub now_ms: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self {
            broker: Broker::new(),
            now_ms: 1_000_000,
        }
    }

    /// Applies `command` from `origin`; returns every effect.
    ///
    /// # Panics
    /// If an invariant breaks.
    pub fn run(&mut self, origin: Option<ChannelId>, command: Command) -> Vec<Effect> {
        let batch = Batch {
            now_ms: self.now_ms,
            requests: vec![Request { origin, command }],
        };
        let mut effects = Vec::new();
        self.broker.apply(&batch, &mut effects);
        if let Err(violation) = self.broker.check_invariants() {
            panic!("invariant violated: {violation}");
        }
        effects
    }

    /// Applies `command` from channel `origin` and returns its reply.
    ///
    /// # Panics
    /// If there is not exactly one reply to `origin`, or an invariant breaks.
    pub fn call(&mut self, origin: ChannelId, command: Command) -> Result<Outcome, CoreError> {
        reply_of(&self.run(Some(origin), command), origin)
    }

    /// Like [`Harness::call`], returning every effect too.
    pub fn call_with_effects(
        &mut self,
        origin: ChannelId,
        command: Command,
    ) -> (Result<Outcome, CoreError>, Vec<Effect>) {
        let effects = self.run(Some(origin), command);
        (reply_of(&effects, origin), effects)
    }

    /// Applies `command` and expects success.
    ///
    /// # Panics
    /// On an error reply.
    pub fn ok(&mut self, origin: ChannelId, command: Command) -> Outcome {
        match self.call(origin, command.clone()) {
            Ok(outcome) => outcome,
            Err(error) => panic!("{command:?} failed: {error}"),
        }
    }
}

/// The single reply to `origin` among `effects`.
///
/// # Panics
/// If there is not exactly one.
pub fn reply_of(effects: &[Effect], origin: ChannelId) -> Result<Outcome, CoreError> {
    let replies: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { channel, outcome } if *channel == origin => Some(outcome.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "expected one reply to {origin:?}, got {effects:?}");
    replies.into_iter().next().unwrap_or(Ok(Outcome::Done))
}

/// The deliveries among `effects`: (channel, consumer tag, delivery tag, redelivered, body).
pub fn deliveries(effects: &[Effect]) -> Vec<(ChannelId, String, u64, bool, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver {
                channel,
                consumer_tag,
                delivery_tag,
                redelivered,
                message,
            } => Some((
                *channel,
                consumer_tag.as_str().to_owned(),
                delivery_tag.0,
                *redelivered,
                body_text(&message.body),
            )),
            _ => None,
        })
        .collect()
}

/// The bodies delivered among `effects`, in order.
pub fn delivered_bodies(effects: &[Effect]) -> Vec<String> {
    deliveries(effects).into_iter().map(|d| d.4).collect()
}

impl Harness {
    /// The `list-queues` row of queue `name` in `/`.
    ///
    /// # Panics
    /// If there is no such queue.
    pub fn summary(&self, name: &str) -> crate::broker::QueueSummary {
        match self
            .broker
            .queue_summaries()
            .into_iter()
            .find(|s| s.vhost == root() && s.name.as_str() == name)
        {
            Some(summary) => summary,
            None => panic!("no queue '{name}'"),
        }
    }

    /// Whether queue `name` exists in `/`.
    pub fn has_queue(&self, name: &str) -> bool {
        self.broker
            .queue_summaries()
            .iter()
            .any(|s| s.vhost == root() && s.name.as_str() == name)
    }

    /// Drains queue `name` with no-ack gets, returning the bodies.
    pub fn drain(&mut self, origin: ChannelId, name: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        while let Ok(Outcome::GetOk { message, .. }) = self.call(origin, get(name, true)) {
            bodies.push(body_text(&message.body));
        }
        bodies
    }

    /// The queues of `queues` that hold a message after one publish to
    /// `exchange` with `routing_key` (each is drained).
    pub fn routed_to(&mut self, exchange: &str, routing_key: &str, queues: &[&str]) -> Vec<String> {
        let c = chan(9, 9);
        self.ok(c, publish(exchange, routing_key, "probe"));
        queues
            .iter()
            .filter(|queue| !self.drain(c, queue).is_empty())
            .map(|queue| (*queue).to_owned())
            .collect()
    }
}

/// Where a live message is: ready in its queue, or delivered and awaiting
/// ack in a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Ready,
    Unacked { channel: ChannelId, tag: DeliveryTag },
}

/// A message the broker still owes someone (see [`Broker::live_messages`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveMessage {
    pub vhost: VHost,
    /// The queue it is in or was delivered from, and that queue's
    /// incarnation (`uid`), which may since have been deleted.
    pub queue: QueueName,
    pub queue_uid: u64,
    pub place: Place,
    /// As it sits in the broker (a dead-lettered copy carries `x-death`).
    pub message: Arc<Message>,
    pub expires_at_ms: Option<u64>,
}

impl Broker {
    /// Every message the broker holds, ready or unacked, by id: what a
    /// ledger of the messages it accepted must find still owed.
    pub fn live_messages(&self) -> std::collections::BTreeMap<crate::ids::MessageId, LiveMessage> {
        let mut live = std::collections::BTreeMap::new();
        for (vhost, vh) in &self.vhosts {
            for queue in vh.queues.values() {
                let ready = queue
                    .ready
                    .entries()
                    .expect("a page of a queue's backlog cannot be read");
                for entry in &ready {
                    live.insert(
                        entry.id,
                        LiveMessage {
                            vhost: vhost.clone(),
                            queue: queue.name.clone(),
                            queue_uid: queue.uid,
                            place: Place::Ready,
                            message: Arc::clone(&entry.message),
                            expires_at_ms: entry.expires_at_ms,
                        },
                    );
                }
            }
        }
        for (channel, state) in &self.channels {
            for (tag, unacked) in &state.unacked {
                live.insert(
                    unacked.entry.id,
                    LiveMessage {
                        vhost: unacked.vhost.clone(),
                        queue: unacked.queue.clone(),
                        queue_uid: unacked.queue_uid,
                        place: Place::Unacked {
                            channel: *channel,
                            tag: *tag,
                        },
                        message: Arc::clone(&unacked.entry.message),
                        expires_at_ms: unacked.entry.expires_at_ms,
                    },
                );
            }
        }
        live
    }

    /// The first message id not yet issued.
    pub fn next_message_id(&self) -> crate::ids::MessageId {
        crate::ids::MessageId(self.next_message_id)
    }
}

/// The obviously-correct recursive definition of topic matching, over
/// words (split with [`topic_words`]): the reference the bit-mask matcher
/// and the broker's routing are property-tested against.
pub fn reference_topic_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| reference_topic_match(rest, &key[skip..])),
        Some((&"*", rest)) => !key.is_empty() && reference_topic_match(rest, &key[1..]),
        Some((word, rest)) => key.first() == Some(word) && reference_topic_match(rest, &key[1..]),
    }
}

/// The words of a topic key or pattern: none for "", else split on `.`.
pub fn topic_words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}
