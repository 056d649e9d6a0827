//! Property tests: random command sequences keep the invariants, every
//! request with an origin gets exactly one reply in order, and apply is
//! deterministic (also across a snapshot round trip).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use amq_protocol_types::FieldTable;
use bytes::Bytes;
use proptest::prelude::*;

use crate::queue::Queue;
use crate::queue_args::Overflow;
use crate::test_support::*;
use crate::{
    Batch, Broker, ChannelId, Command, ConnectionId, DeliveryTag, Effect, ExchangeKind, ExchangeName, MessageId,
    NodeId, Outcome, QueueName, Request,
};

const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const EXCHANGES: [&str; 4] = ["", "amq.direct", "amq.fanout", "e2e"];
const KEYS: [&str; 4] = ["q0", "q1", "q2", "a.b"];

fn connection(index: usize) -> ConnectionId {
    match index % 3 {
        0 => ConnectionId {
            node: NodeId(1),
            boot: 1,
            seq: 1,
        },
        1 => ConnectionId {
            node: NodeId(1),
            boot: 1,
            seq: 2,
        },
        _ => ConnectionId {
            node: NodeId(2),
            boot: 1,
            seq: 1,
        },
    }
}

/// Four channels: two on connection 0, one each on connections 1 and 2.
fn channel(index: usize) -> ChannelId {
    match index % 4 {
        0 => ChannelId {
            conn: connection(0),
            channel: 1,
        },
        1 => ChannelId {
            conn: connection(0),
            channel: 2,
        },
        2 => ChannelId {
            conn: connection(1),
            channel: 1,
        },
        _ => ChannelId {
            conn: connection(2),
            channel: 1,
        },
    }
}

fn queue_arguments(variant: usize) -> FieldTable {
    match variant {
        0 => FieldTable::default(),
        1 => table(&[("x-max-length", int(2))]),
        2 => table(&[("x-max-length", int(1)), ("x-overflow", text("reject-publish"))]),
        3 => table(&[
            ("x-message-ttl", int(5)),
            ("x-dead-letter-exchange", text("amq.fanout")),
        ]),
        4 => table(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("q0")),
        ]),
        5 => table(&[
            ("x-expires", int(60)),
            ("x-single-active-consumer", amq_protocol_types::AMQPValue::Boolean(true)),
        ]),
        6 => table(&[("x-max-priority", int(3)), ("x-message-ttl", int(30))]),
        7 => table(&[
            ("x-max-length", int(1)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("amq.fanout")),
        ]),
        _ => table(&[
            ("x-max-length-bytes", int(8)),
            ("x-max-priority", int(2)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("q0")),
        ]),
    }
}

/// How many argument variants [`queue_arguments`] has; the layout draws
/// from all of them.
const ARGUMENT_VARIANTS: usize = 9;

/// The attributes each queue is declared with in one test case, so that
/// redeclares mostly agree (a random mix would mostly fail with 406).
#[derive(Clone, Copy, Debug)]
struct QueueLayout {
    arguments: usize,
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
}

fn layout() -> impl Strategy<Value = [QueueLayout; 3]> {
    let one = (
        0..ARGUMENT_VARIANTS,
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(arguments, durable, auto_delete, exclusive)| QueueLayout {
            arguments,
            durable,
            auto_delete,
            exclusive,
        });
    [one.clone(), one.clone(), one]
}

fn declare_from(layout: &[QueueLayout; 3], q: usize) -> Command {
    let spec = layout[q];
    Command::DeclareQueue {
        vhost: root(),
        name: QUEUES[q].into(),
        passive: false,
        durable: spec.durable,
        exclusive: spec.exclusive,
        auto_delete: spec.auto_delete,
        arguments: queue_arguments(spec.arguments),
    }
}

/// One generated request.
fn request(layout: [QueueLayout; 3]) -> impl Strategy<Value = Request> {
    let ch = 0..4usize;
    let q = 0..QUEUES.len();
    let tag = 0..5u64;
    prop_oneof![
        3 => (ch.clone(), q.clone(), prop::bool::weighted(0.1)).prop_map(move |(c, q, odd)| {
            let mut command = declare_from(&layout, q);
            if let (true, Command::DeclareQueue { durable, .. }) = (odd, &mut command) {
                *durable = !*durable;
            }
            Request { origin: Some(channel(c)), command }
        }),
        2 => (ch.clone(), q.clone(), 1..EXCHANGES.len(), 0..KEYS.len())
            .prop_map(|(c, q, x, k)| Request { origin: Some(channel(c)), command: bind(QUEUES[q], EXCHANGES[x], KEYS[k]) }),
        8 => (ch.clone(), 0..EXCHANGES.len(), 0..KEYS.len(), any::<bool>(), prop::option::weighted(0.15, 0..8u8), 0..4usize).prop_map(
            |(c, x, k, mandatory, expiration, size)| {
                let mut m = message(EXCHANGES[x], KEYS[k], &"x".repeat(size));
                std::sync::Arc::make_mut(&mut m.properties).expiration = expiration.map(|e| e.to_string());
                std::sync::Arc::make_mut(&mut m.properties).priority = Some(size as u8 * 2);
                Request { origin: Some(channel(c)), command: Command::Publish { vhost: root(), mandatory, message: Arc::new(m) } }
            }
        ),
        4 => (ch.clone(), q.clone(), 0..3u8, any::<bool>(), prop::bool::weighted(0.1)).prop_map(
            |(c, q, t, no_ack, exclusive)| {
                let command = Command::Consume {
                    vhost: root(),
                    queue: QUEUES[q].into(),
                    consumer_tag: format!("t{t}").as_str().into(),
                    no_ack,
                    exclusive,
                    arguments: FieldTable::default(),
                    lookahead: crate::Lookahead::V5,
                };
                Request { origin: Some(channel(c)), command }
            }
        ),
        1 => (ch.clone(), 0..3u8).prop_map(|(c, t)| Request {
            origin: Some(channel(c)),
            command: Command::Cancel { consumer_tag: format!("t{t}").as_str().into() }
        }),
        3 => (ch.clone(), 0..3u16, any::<bool>()).prop_map(|(c, n, g)| Request { origin: Some(channel(c)), command: qos(n, g) }),
        3 => (ch.clone(), q.clone(), any::<bool>()).prop_map(|(c, q, no_ack)| Request { origin: Some(channel(c)), command: get(QUEUES[q], no_ack) }),
        6 => (ch.clone(), tag.clone(), any::<bool>()).prop_map(|(c, t, m)| Request { origin: Some(channel(c)), command: ack(t, m) }),
        3 => (ch.clone(), tag.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(c, t, m, r)| Request { origin: Some(channel(c)), command: nack(t, m, r) }),
        1 => (ch.clone(), tag, any::<bool>()).prop_map(|(c, t, r)| Request {
            origin: Some(channel(c)),
            command: Command::Reject { delivery_tag: DeliveryTag(t), requeue: r }
        }),
        1 => ch.clone().prop_map(|c| Request { origin: Some(channel(c)), command: Command::Recover { requeue: true } }),
        1 => ch.clone().prop_map(|c| Request { origin: Some(channel(c)), command: Command::CloseChannel }),
        1 => (ch.clone(), 0..3usize).prop_map(|(c, n)| Request {
            origin: Some(channel(c)),
            command: Command::CloseConnection { conn: connection(n) }
        }),
        1 => (ch.clone(), q.clone(), any::<bool>(), any::<bool>()).prop_map(|(c, q, u, e)| Request {
            origin: Some(channel(c)),
            command: Command::DeleteQueue { vhost: root(), queue: QUEUES[q].into(), if_unused: u, if_empty: e }
        }),
        1 => (ch.clone(), q).prop_map(|(c, q)| Request {
            origin: Some(channel(c)),
            command: Command::PurgeQueue { vhost: root(), queue: QUEUES[q].into() }
        }),
        1 => (ch.clone(), any::<bool>()).prop_map(|(c, delete)| {
            let command = if delete {
                Command::DeleteExchange { vhost: root(), name: ExchangeName::from("e2e"), if_unused: false }
            } else {
                declare_exchange("e2e", ExchangeKind::Topic)
            };
            Request { origin: Some(channel(c)), command }
        }),
        1 => ch.prop_map(|c| Request {
            origin: Some(channel(c)),
            command: Command::BindExchange {
                vhost: root(),
                destination: ExchangeName::from("e2e"),
                source: ExchangeName::from("amq.direct"),
                routing_key: "a.b".into(),
                arguments: FieldTable::default(),
            }
        }),
        1 => (0..4usize, 0..2u64, 0..3u32, 0..3usize).prop_map(|(c, body, index, size)| Request {
            origin: Some(channel(c)),
            command: Command::StageBody { body, index, part: Bytes::from("s".repeat(size)) },
        }),
        1 => (0..4usize, 0..QUEUES.len(), 0..2u64, 0..3u32, 0..6u64, any::<bool>()).prop_map(|(c, q, body, parts, staged_bytes, mandatory)| Request {
            origin: Some(channel(c)),
            command: Command::PublishStaged(crate::staged::StagedPublish {
                vhost: root(),
                mandatory,
                message: Arc::new(message("", QUEUES[q], "t")),
                body,
                parts,
                staged_bytes,
            }),
        }),
        2 => Just(Request { origin: None, command: Command::Tick }),
        1 => prop_oneof![
            6 => Just(Request { origin: None, command: Command::Tick }),
            1 => Just(Request { origin: None, command: Command::NodeDown { node: NodeId(2) } }),
            1 => (1..3u64).prop_map(|boot| Request { origin: None, command: Command::NodeStarted { node: NodeId(1), boot } }),
        ],
    ]
}

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    batches_of(1..25)
}

/// Sequences of `steps` batches after the setup.
fn batches_of(steps: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Batch>> {
    layout().prop_flat_map(move |layout| {
        let steps = prop::collection::vec((0..8u64, prop::collection::vec(request(layout), 1..6)), steps.clone());
        steps.prop_map(move |steps| {
            let mut now_ms = 1_000_000;
            let mut batches = vec![Batch {
                now_ms,
                requests: setup(&layout),
            }];
            for (advance, requests) in steps {
                now_ms += advance;
                batches.push(Batch { now_ms, requests });
            }
            batches
        })
    })
}

/// The first batch: the three queues, and some wiring so that most
/// publishes reach a queue.
fn setup(layout: &[QueueLayout; 3]) -> Vec<Request> {
    let mut commands: Vec<Command> = (0..QUEUES.len()).map(|q| declare_from(layout, q)).collect();
    commands.extend([
        declare_exchange("e2e", ExchangeKind::Topic),
        bind("q1", "amq.fanout", ""),
        bind("q2", "amq.direct", "a.b"),
        bind("q0", "e2e", "#"),
        Command::BindExchange {
            vhost: root(),
            destination: ExchangeName::from("e2e"),
            source: ExchangeName::from("amq.direct"),
            routing_key: "a.b".into(),
            arguments: FieldTable::default(),
        },
    ]);
    commands
        .into_iter()
        .map(|command| Request {
            origin: Some(channel(0)),
            command,
        })
        .collect()
}

/// Points most generated acks at deliveries that exist: a generated tag
/// `t < 4` becomes the `t`-th unacked tag of the channel (when it has that
/// many), using the state before the batch; other tags stay as generated
/// (mostly unknown, exercising the 406 path).
fn aim_acks(broker: &Broker, batch: &Batch) -> Batch {
    let mut batch = batch.clone();
    for request in &mut batch.requests {
        let Some(origin) = request.origin else { continue };
        let Some(channel) = broker.channels.get(&origin) else {
            continue;
        };
        let tags: Vec<DeliveryTag> = channel.unacked.keys().copied().collect();
        let (Command::Ack { delivery_tag, .. }
        | Command::Nack { delivery_tag, .. }
        | Command::Reject { delivery_tag, .. }) = &mut request.command
        else {
            continue;
        };
        if let Some(tag) = usize::try_from(delivery_tag.0)
            .ok()
            .filter(|&t| t < 4)
            .and_then(|t| tags.get(t))
        {
            *delivery_tag = *tag;
        }
    }
    batch
}

/// Gives every publish of `batch` a body no other message of the run has
/// (`m<n>` padded with `x` to keep the generated size), so the ledger can
/// tell messages and their dead-lettered copies apart.
fn stamp_publishes(batch: &mut Batch, next_stamp: &mut u64) {
    for request in &mut batch.requests {
        if let Command::Publish { message, .. } = &mut request.command {
            let mut stamped = (**message).clone();
            let stamp = format!("m{next_stamp}.{}", "x".repeat(stamped.body.len() as usize));
            *next_stamp += 1;
            stamped.body = Bytes::from(stamp).into();
            *message = Arc::new(stamped);
        }
    }
}

type Body = crate::message::Body;

/// `(queue, incarnation)`: where a message was routed or delivered from.
type QueueRef = (QueueName, u64);

fn queue<'a>(broker: &'a Broker, name: &QueueName) -> Option<&'a Queue> {
    broker.vhosts.get(&root()).and_then(|v| v.queues.get(name))
}

fn alive(broker: &Broker, name: &QueueName, uid: u64) -> bool {
    queue(broker, name).is_some_and(|q| q.uid == uid)
}

/// Takes one from the multiset `map` at `key`, if there is one.
fn take<K: Ord>(map: &mut BTreeMap<K, usize>, key: &K) -> bool {
    match map.get_mut(key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// Takes one from a count, if it is not zero.
fn take_one(n: &mut usize) -> bool {
    let some = *n > 0;
    *n = n.saturating_sub(1);
    some
}

fn add<K: Ord>(map: &mut BTreeMap<K, usize>, key: K, n: usize) {
    *map.entry(key).or_default() += n;
}

/// The delivery tags an ack/nack of `tag` covers on a channel holding
/// `held` (AMQP: `multiple` covers every tag up to it, tag 0 with
/// `multiple` covers all), or `None` for an unknown tag.
fn covered(held: &[DeliveryTag], tag: DeliveryTag, multiple: bool) -> Option<Vec<DeliveryTag>> {
    if multiple && tag.0 == 0 {
        return Some(held.to_vec());
    }
    if !held.contains(&tag) {
        return None;
    }
    if multiple {
        Some(held.iter().copied().filter(|t| *t <= tag).collect())
    } else {
        Some(vec![tag])
    }
}

/// Whether `m` is a dead-lettered copy (it has an `x-death` history; the
/// generated publishes have no headers).
fn is_dead_letter(m: &LiveMessage) -> bool {
    m.message
        .properties
        .headers
        .as_ref()
        .is_some_and(|h| h.contains_key("x-death"))
}

/// Whether a queue drops its oldest message when a new one would take it
/// past a length limit.
fn drops_head(q: &Queue) -> bool {
    q.args.overflow == Overflow::DropHead && (q.args.max_length.is_some() || q.args.max_length_bytes.is_some())
}

/// Whether `q` refuses a message of `len` bytes (`x-overflow=reject-publish`).
fn refuses(q: &Queue, len: u64) -> bool {
    q.args.overflow != Overflow::DropHead
        && (q.args.max_length.is_some_and(|max| q.ready.len() as u64 + 1 > max)
            || q.args.max_length_bytes.is_some_and(|max| q.ready_bytes + len > max))
}

/// Every message the broker accepted, by id, until the broker is quit of
/// it: acked, delivered with no-ack, purged, dropped with its queue, or
/// dropped (dead-lettered or not) by expiry, a length limit or a reject.
/// It learns each request's consequences from the request, its reply and
/// effects, the time and the queues' arguments only, and then must find
/// exactly the broker's live messages.
#[derive(Default)]
struct Ledger {
    owed: BTreeMap<MessageId, LiveMessage>,
}

impl Ledger {
    /// Accounts for `request`, applied to `pre` (giving `post`, `effects`).
    #[allow(clippy::too_many_lines)]
    fn account(
        &mut self,
        pre: &Broker,
        post: &Broker,
        request: &Request,
        now_ms: u64,
        effects: &[Effect],
    ) -> Result<(), String> {
        let live = post.live_messages();
        let reply = request.origin.map(|origin| reply_of(effects, origin));
        let ok = matches!(reply, Some(Ok(_)));
        let unacked_at: BTreeMap<(ChannelId, DeliveryTag), &LiveMessage> = live
            .values()
            .filter_map(|m| match m.place {
                Place::Unacked { channel, tag } => Some(((channel, tag), m)),
                Place::Ready => None,
            })
            .collect();
        let queues_now = |b: &Broker| b.vhosts.get(&root()).map_or(0, |v| v.queues.len());
        // A dead letter may be copied into every queue its exchange reaches.
        let fan_out = queues_now(pre).max(queues_now(post));

        // What left the broker through the wire: no-ack deliveries.
        let mut no_ack: BTreeMap<(QueueRef, Body), usize> = BTreeMap::new();
        let mut expect_unacked: Vec<(ChannelId, DeliveryTag, Body)> = Vec::new();
        for effect in effects {
            let Effect::Deliver {
                channel,
                consumer_tag,
                delivery_tag,
                message,
                ..
            } = effect
            else {
                continue;
            };
            let Some(state) = post.channels.get(channel) else {
                return Err(format!("delivery to unknown channel {channel:?}"));
            };
            if state.reply_consumer.as_ref() == Some(consumer_tag) {
                continue;
            }
            let Some(consumer) = state.consumers.get(consumer_tag) else {
                return Err(format!("delivery to unknown consumer {consumer_tag} of {channel:?}"));
            };
            if consumer.no_ack {
                add(
                    &mut no_ack,
                    ((consumer.queue.clone(), consumer.queue_uid), message.body.clone()),
                    1,
                );
            } else {
                expect_unacked.push((*channel, *delivery_tag, message.body.clone()));
            }
        }
        if let (
            Command::Get {
                queue: name,
                no_ack: get_no_ack,
                ..
            },
            Some(Ok(Outcome::GetOk {
                delivery_tag, message, ..
            })),
        ) = (&request.command, &reply)
        {
            let uid = queue(pre, name).map(|q| q.uid).ok_or("get-ok from a missing queue")?;
            if *get_no_ack {
                add(&mut no_ack, ((name.clone(), uid), message.body.clone()), 1);
            } else if let Some(origin) = request.origin {
                expect_unacked.push((origin, *delivery_tag, message.body.clone()));
            }
        }
        let delivered: BTreeSet<(ChannelId, DeliveryTag)> = expect_unacked.iter().map(|(c, t, _)| (*c, *t)).collect();
        for (channel, tag, body) in expect_unacked {
            if unacked_at.get(&(channel, tag)).is_none_or(|m| m.message.body != body) {
                return Err(format!("delivery {tag:?} on {channel:?} is not held unacked"));
            }
        }

        // Settled deliveries: gone for good, or back to their queue.
        let mut settled: BTreeSet<MessageId> = BTreeSet::new();
        let mut requeued: BTreeSet<MessageId> = BTreeSet::new();
        let mut dead_letters: BTreeMap<Body, usize> = BTreeMap::new();
        let held_by = |channel: ChannelId| -> Vec<(DeliveryTag, MessageId)> {
            self.owed
                .iter()
                .filter_map(|(id, m)| match m.place {
                    Place::Unacked { channel: c, tag } if c == channel => Some((tag, *id)),
                    _ => None,
                })
                .collect()
        };
        let origin = request.origin;
        let settling = match &request.command {
            Command::Ack { delivery_tag, multiple }
            | Command::Nack {
                delivery_tag, multiple, ..
            } => Some((*delivery_tag, *multiple)),
            Command::Reject { delivery_tag, .. } => Some((*delivery_tag, false)),
            _ => None,
        };
        match (&request.command, origin, settling) {
            (_, Some(channel), Some((delivery_tag, multiple))) => {
                let held = held_by(channel);
                let tags: Vec<DeliveryTag> = held.iter().map(|(t, _)| *t).collect();
                let tags = covered(&tags, delivery_tag, multiple);
                if tags.is_some() != ok {
                    return Err(format!("settling {delivery_tag:?} of {tags:?} answered {reply:?}"));
                }
                let requeue = match request.command {
                    Command::Nack { requeue, .. } | Command::Reject { requeue, .. } => requeue,
                    _ => false,
                };
                for (tag, id) in held {
                    if !tags.as_ref().is_some_and(|t| t.contains(&tag)) {
                        continue;
                    }
                    if requeue {
                        requeued.insert(id);
                        continue;
                    }
                    settled.insert(id);
                    let m = &self.owed[&id];
                    let rejected = !matches!(request.command, Command::Ack { .. });
                    let dlx = queue(pre, &m.queue)
                        .filter(|q| q.uid == m.queue_uid)
                        .is_some_and(|q| q.args.dead_letter_exchange.is_some());
                    if rejected && dlx {
                        add(&mut dead_letters, m.message.body.clone(), fan_out);
                    }
                }
            }
            (Command::Recover { .. } | Command::CloseChannel, Some(channel), _) => {
                requeued.extend(held_by(channel).into_iter().map(|(_, id)| id));
            }
            _ => {}
        }
        let closing: Option<Box<dyn Fn(ChannelId) -> bool>> = match &request.command {
            Command::CloseConnection { conn } => {
                let conn = *conn;
                Some(Box::new(move |c: ChannelId| c.conn == conn))
            }
            Command::NodeDown { node } => {
                let node = *node;
                Some(Box::new(move |c: ChannelId| c.conn.node == node))
            }
            Command::NodeStarted { node, boot } => {
                let (node, boot) = (*node, *boot);
                Some(Box::new(move |c: ChannelId| c.conn.node == node && c.conn.boot != boot))
            }
            _ => None,
        };
        if let Some(closing) = closing {
            for (id, m) in &self.owed {
                if matches!(m.place, Place::Unacked { channel, .. } if closing(channel)) {
                    requeued.insert(*id);
                }
            }
        }
        for id in &settled {
            if live.contains_key(id) {
                return Err(format!("{id:?} settled but still held"));
            }
        }

        // Counts the replies report.
        match (&request.command, &reply) {
            (Command::PurgeQueue { queue: name, .. }, Some(Ok(Outcome::QueuePurged { message_count }))) => {
                let held = queue(pre, name).map_or(0, |q| q.ready.len());
                if *message_count as usize != held {
                    return Err(format!("purge of {name} reports {message_count}, it held {held}"));
                }
            }
            (Command::DeleteQueue { queue: name, .. }, Some(Ok(Outcome::QueueDeleted { message_count }))) => {
                let held = queue(pre, name).map_or(0, |q| q.ready.len());
                if *message_count as usize != held {
                    return Err(format!("delete of {name} reports {message_count}, it held {held}"));
                }
            }
            _ => {}
        }
        let purged = match (&request.command, ok) {
            (Command::PurgeQueue { queue: name, .. }, true) => queue(pre, name).map(|q| (q.name.clone(), q.uid)),
            _ => None,
        };

        let issued = post.next_message_id().0 - pre.next_message_id().0;
        let issued = usize::try_from(issued).unwrap_or(usize::MAX);
        let mut dropped_for_length: BTreeMap<QueueRef, usize> = BTreeMap::new();
        let mut requeued_into: BTreeMap<QueueRef, usize> = BTreeMap::new();
        for id in &requeued {
            let m = &self.owed[id];
            add(&mut requeued_into, (m.queue.clone(), m.queue_uid), 1);
        }

        // Why each message the broker no longer holds is gone. Copies of
        // one message can share a queue (a dead letter routed back to a
        // queue that holds the original), so the no-ack deliveries go first
        // to the copies that cannot have expired, then to the others.
        let mut departed = Vec::new();
        let mut undecided = Vec::new();
        for (id, m) in &self.owed {
            if live.contains_key(id) {
                continue;
            }
            departed.push(*id);
            if settled.contains(id) {
                continue;
            }
            if matches!(m.place, Place::Unacked { .. }) && !requeued.contains(id) {
                return Err(format!("{id:?} ({m:?}) vanished while unacked"));
            }
            let at = (m.queue.clone(), m.queue_uid);
            if !alive(post, &m.queue, m.queue_uid) {
                // Its queue was deleted with its ready messages; requeued
                // first, it may have been dropped for length before that.
                let dlx = queue(pre, &m.queue)
                    .filter(|q| q.uid == m.queue_uid)
                    .is_some_and(|q| drops_head(q) && q.args.dead_letter_exchange.is_some());
                if dlx && requeued.contains(id) {
                    add(&mut dead_letters, m.message.body.clone(), fan_out);
                }
                continue;
            }
            if purged.as_ref() == Some(&at) && m.place == Place::Ready {
                continue;
            }
            undecided.push((*id, m, at));
        }
        // A message past its expiry is never delivered; one expiring right
        // now may be, if a consumer can take it at once.
        let expired = |m: &LiveMessage| m.expires_at_ms.is_some_and(|at| at <= now_ms);
        let overdue = |m: &LiveMessage| m.expires_at_ms.is_some_and(|at| at < now_ms);
        undecided.sort_by_key(|(id, m, _)| (expired(m), *id));
        for (id, m, at) in undecided {
            let q = queue(post, &m.queue).ok_or("alive queue missing")?;
            let dlx = q.args.dead_letter_exchange.is_some();
            if !overdue(m) && take(&mut no_ack, &(at.clone(), m.message.body.clone())) {
                // Expiring right now, it may instead have been dead-lettered
                // (and the delivery was of a copy that arrived).
                if expired(m) && dlx {
                    add(&mut dead_letters, m.message.body.clone(), fan_out);
                }
                continue;
            }
            if expired(m) {
                if dlx {
                    add(&mut dead_letters, m.message.body.clone(), fan_out);
                }
                continue;
            }
            // A new message, or a requeue, pushes the oldest out.
            let pushed = issued + requeued_into.get(&at).copied().unwrap_or(0);
            if drops_head(q) && pushed > 0 {
                let n = dropped_for_length.entry(at).or_default();
                *n += 1;
                // One message pushes out one under a count limit; under a
                // byte limit a big one may push out several.
                if *n > pushed && q.args.max_length_bytes.is_none() {
                    return Err(format!(
                        "{id:?} dropped for length by only {pushed} new or requeued messages"
                    ));
                }
                if dlx {
                    add(&mut dead_letters, m.message.body.clone(), fan_out);
                }
                continue;
            }
            return Err(format!("{id:?} ({m:?}) lost"));
        }

        // The publish: one copy into every queue its exchange routes to.
        let mut slots: Vec<QueueRef> = Vec::new();
        let mut routed_copies = 0;
        let mut published: Option<Body> = None;
        // A staged publish is the whole message when its parts all came,
        // and a plain rejection (no ids, nothing routed) when they did not.
        let staged_whole: Option<Arc<crate::Message>> = match &request.command {
            Command::PublishStaged(crate::staged::StagedPublish {
                message,
                body,
                parts,
                staged_bytes,
                ..
            }) => {
                // None staged counts as zero parts of zero bytes, as in apply.
                let s = request
                    .origin
                    .and_then(|o| pre.staged_bodies().get(&o).cloned())
                    .unwrap_or_default();
                let same_body = *parts == 0 || s.body == *body;
                if !s.spoiled && same_body && s.parts.len() == *parts as usize && s.bytes == *staged_bytes {
                    let mut body = Vec::new();
                    for part in &s.parts {
                        body.extend_from_slice(part);
                    }
                    body.extend_from_slice(message.body.inline().expect("bodies stay in memory here"));
                    Some(Arc::new(crate::Message {
                        body: Bytes::from(body).into(),
                        ..(**message).clone()
                    }))
                } else {
                    let expected = Some(Ok(Outcome::Published {
                        routed: false,
                        rejected: true,
                        returned: None,
                    }));
                    if reply != expected || issued != 0 {
                        return Err(format!("an incomplete staged publish got {reply:?}, {issued} ids"));
                    }
                    None
                }
            }
            _ => None,
        };
        let publish = match &request.command {
            Command::Publish { message, .. } => Some(message),
            Command::PublishStaged(_) => staged_whole.as_ref(),
            _ => None,
        };
        if let (Some(message), Some(Ok(Outcome::Published { routed, rejected, .. }))) = (publish, &reply) {
            let vh = pre.vhosts.get(&root()).ok_or("no vhost")?;
            let targets = vh.route(&message.exchange, message);
            let reaches_a_queue = !targets.is_empty();
            if *routed != reaches_a_queue {
                return Err(format!("routed = {routed}, but it reaches {targets:?}"));
            }
            let mut refused = false;
            let ttl_ms = message
                .properties
                .expiration
                .as_ref()
                .and_then(|e| e.parse::<u64>().ok());
            for name in targets {
                let q = queue(pre, &name).ok_or("routed to a missing queue")?;
                let at = (name.clone(), q.uid);
                slots.push(at.clone());
                routed_copies += 1;
                let arrived = live.iter().any(|(id, m)| {
                    !self.owed.contains_key(id)
                        && !is_dead_letter(m)
                        && m.message.body == message.body
                        && m.queue == name
                });
                if arrived || take(&mut no_ack, &(at, message.body.clone())) {
                    continue;
                }
                let dlx = q.args.dead_letter_exchange.is_some();
                if refuses(q, message.body_len()) {
                    refused = true;
                    if q.args.overflow == Overflow::RejectPublishDlx && dlx {
                        add(&mut dead_letters, message.body.clone(), fan_out);
                    }
                    continue;
                }
                // The smaller TTL wins: zero in either expires it at once
                // (a consumer that could take it would have, above).
                let expires_now = ttl_ms == Some(0) || q.args.message_ttl_ms == Some(0);
                if expires_now || drops_head(q) {
                    if dlx {
                        add(&mut dead_letters, message.body.clone(), fan_out);
                    }
                    continue;
                }
                return Err(format!("published message lost at queue {name}"));
            }
            if *rejected != refused {
                return Err(format!("rejected = {rejected}, but a target refused it: {refused}"));
            }
            published = Some(message.body.clone());
        }

        // Messages that arrived: the publish's copies, and dead letters.
        // A copy that never showed (refused, dropped or expired as it
        // arrived) may itself have been dead-lettered on: each such id
        // allows `fan_out` more copies of any message.
        let fresh = live.keys().filter(|id| !self.owed.contains_key(id)).count();
        let mut cascade = fan_out * issued.saturating_sub(fresh);
        let dead_lettered: usize = dead_letters.values().sum();
        if issued < routed_copies || issued > routed_copies + dead_lettered + cascade {
            return Err(format!(
                "{issued} ids issued for {routed_copies} routed copies and {dead_lettered} dead letters"
            ));
        }
        let mut arrived = Vec::new();
        for (id, m) in &live {
            if self.owed.contains_key(id) {
                continue;
            }
            if *id < pre.next_message_id() {
                return Err(format!("{id:?} ({m:?}) came back"));
            }
            arrived.push(*id);
            let slot = slots
                .iter()
                .position(|(name, uid)| *name == m.queue && *uid == m.queue_uid);
            if published.as_ref() == Some(&m.message.body) && !is_dead_letter(m) {
                if let Some(slot) = slot {
                    slots.remove(slot);
                    continue;
                }
            }
            let owed = take(&mut dead_letters, &m.message.body) || (is_dead_letter(m) && take_one(&mut cascade));
            if !owed {
                return Err(format!("{id:?} ({m:?}) appeared from nowhere"));
            }
        }
        // Dead letters delivered with no-ack as they arrived.
        for ((at, body), n) in no_ack {
            for _ in 0..n {
                if !take(&mut dead_letters, &body) && !take_one(&mut cascade) {
                    return Err(format!("{body:?} delivered from {at:?} but not owed"));
                }
            }
        }

        // Messages still owed may only have moved as the wire says: into
        // a channel by a delivery, back to their queue by a requeue.
        for (id, m) in &live {
            let Some(before) = self.owed.get(id) else { continue };
            if (&before.queue, before.queue_uid, &before.message.body) != (&m.queue, m.queue_uid, &m.message.body) {
                return Err(format!("{id:?} changed from {before:?} to {m:?}"));
            }
            let moved = before.place != m.place;
            if moved && m.place == Place::Ready && !requeued.contains(id) {
                return Err(format!("{id:?} back in its queue without a requeue"));
            }
            if let (true, Place::Unacked { channel, tag }) = (moved, &m.place) {
                if !delivered.contains(&(*channel, *tag)) {
                    return Err(format!("{id:?} moved to {channel:?} {tag:?} without a delivery"));
                }
            }
        }

        for id in departed {
            self.owed.remove(&id);
        }
        for id in arrived {
            self.owed.insert(id, live[&id].clone());
        }
        for (id, m) in self.owed.iter_mut() {
            m.place = live[id].place.clone();
        }
        if !self.owed.keys().eq(live.keys()) {
            return Err("the ledger and the broker disagree on what is owed".to_owned());
        }
        Ok(())
    }
}

/// The broker as a snapshot holds it: its own encoding, and the bodies in
/// progress and the log's time beside it (as warren-cluster's `Replicated`).
fn snapshot(broker: &Broker) -> Vec<u8> {
    bincode::serialize(&(broker, broker.staged_bodies(), broker.log_time_ms())).expect("serialize")
}

fn restore(bytes: &[u8]) -> Broker {
    let (mut broker, staged, log_time_ms): (Broker, crate::staged::StagedBodies, u64) =
        bincode::deserialize(bytes).expect("deserialize");
    broker.set_staged_bodies(staged);
    broker.set_log_time_ms(log_time_ms);
    broker
}

#[test]
fn every_queue_argument_variant_is_generated() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let variants: Vec<FieldTable> = (0..ARGUMENT_VARIANTS).map(queue_arguments).collect();
    for (i, a) in variants.iter().enumerate() {
        assert!(variants[..i].iter().all(|b| b != a), "variant {i} repeats another");
    }
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..500 {
        let layouts = layout().new_tree(&mut runner).unwrap().current();
        seen.extend(layouts.iter().map(|l| l.arguments));
    }
    assert_eq!(seen, (0..ARGUMENT_VARIANTS).collect::<BTreeSet<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_invariants_and_reply_once_per_request(batches in batches()) {
        let mut broker = Broker::new();
        let mut ledger = Ledger::default();
        let mut next_stamp = 0;
        for batch in &batches {
            let mut batch = aim_acks(&broker, batch);
            stamp_publishes(&mut batch, &mut next_stamp);
            let batch = &batch;
            // Applied one request at a time (which is what `apply` does)
            // so the ledger sees each request's effects on their own.
            let mut whole = broker.clone();
            let mut effects = Vec::new();
            for request in &batch.requests {
                let pre = broker.clone();
                let mut own = Vec::new();
                broker.apply(&Batch { now_ms: batch.now_ms, requests: vec![request.clone()] }, &mut own);
                if let Err(violation) = ledger.account(&pre, &broker, request, batch.now_ms, &own) {
                    return Err(TestCaseError::fail(format!("ledger: {violation}\nafter {request:#?}\nin {batch:#?}")));
                }
                effects.extend(own);
            }
            let mut whole_effects = Vec::new();
            whole.apply(batch, &mut whole_effects);
            prop_assert_eq!(&whole_effects, &effects);
            prop_assert!(snapshot(&whole) == snapshot(&broker), "a batch applies as its requests one by one");
            if let Err(violation) = broker.check_invariants() {
                return Err(TestCaseError::fail(format!("{violation}\nafter {batch:#?}")));
            }
            let replies: Vec<ChannelId> = effects.iter().filter_map(|e| match e {
                Effect::Reply { channel, .. } => Some(*channel),
                _ => None,
            }).collect();
            let origins: Vec<ChannelId> = batch.requests.iter().filter_map(|r| r.origin).collect();
            prop_assert_eq!(replies, origins);
            let Some(next) = broker.next_expiry_ms() else { continue };
            // A tick at the announced time changes something, so the leader
            // never proposes ticks in a loop.
            let mut ticked = broker.clone();
            ticked.apply(&Batch { now_ms: next.max(batch.now_ms), requests: vec![Request { origin: None, command: Command::Tick }] }, &mut Vec::new());
            prop_assert!(snapshot(&ticked) != snapshot(&broker), "tick at {} changed nothing", next);
        }
    }

    #[test]
    fn apply_is_deterministic_across_replicas_and_snapshots(batches in batches()) {
        let mut first = Broker::new();
        let mut second = Broker::new();
        let mut restored = Broker::new();
        for batch in &batches {
            let batch = &aim_acks(&first, batch);
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            first.apply(batch, &mut a);
            second.apply(batch, &mut b);
            restored.apply(batch, &mut c);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &c);
            let bytes = snapshot(&first);
            prop_assert_eq!(&bytes, &snapshot(&second));
            restored = restore(&bytes);
            prop_assert_eq!(&bytes, &snapshot(&restored));
        }
    }
}

/// Paging a backlog out (issue 9) is a node's own affair: a broker whose
/// queues page after one (or three) messages gives every effect, holds
/// every message and keeps every invariant as one that keeps all in
/// memory, through random sequences and snapshots (encoded with the pages
/// as handles, decoded with the same pager).
#[test]
fn paging_a_backlog_changes_no_outcome() {
    use crate::ready::test_pager::MemPager;
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::Ordering;

    for page_len in [1, 3] {
        let pager = MemPager::new(page_len);
        let mut runner = TestRunner::new(Config {
            cases: 250,
            ..Config::default()
        });
        let result = runner.run(&batches_of(1..80), |batches| {
            let mut plain = Broker::new();
            let mut paged = Broker::new();
            for batch in &batches {
                let batch = &aim_acks(&plain, batch);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                plain.apply(batch, &mut a);
                crate::with_pager(pager.clone(), || paged.apply(batch, &mut b));
                prop_assert_eq!(&a, &b);
                if let Err(violation) = paged.check_invariants() {
                    return Err(TestCaseError::fail(format!("paged: {violation}\nafter {batch:#?}")));
                }
                prop_assert!(plain == paged, "the same messages in the same order");
                prop_assert_eq!(plain.next_expiry_ms(), paged.next_expiry_ms());
                let bytes = snapshot(&paged);
                let restored = crate::with_pager(pager.clone(), || restore(&bytes));
                prop_assert!(restored == paged, "a snapshot of pages restores them");
                paged = restored;
            }
            Ok(())
        });
        if let Err(failure) = result {
            panic!("pages of {page_len}: {failure}");
        }
        assert!(pager.failures.lock().unwrap().is_empty());
        let written = pager.pages.lock().unwrap().len();
        let read = pager.reads.load(Ordering::SeqCst);
        assert!(
            written > 5 && read > 5,
            "the sequences paged ({written} pages of {page_len} written, {read} read)"
        );
    }
}

/// A random transaction on one channel: publishes (some mandatory, some
/// with a bad or short expiration) and settlements of tags `t < 4` (aimed
/// at the channel's unacked deliveries by [`aim_commit`]) or unknown ones.
fn commit_request() -> impl Strategy<Value = Request> {
    let publish = (
        0..EXCHANGES.len(),
        0..KEYS.len(),
        any::<bool>(),
        prop::option::weighted(0.2, 0..3u8),
    )
        .prop_map(|(x, k, mandatory, expiration)| {
            let mut m = message(EXCHANGES[x], KEYS[k], "tx");
            Arc::make_mut(&mut m.properties).expiration = expiration.map(|e| match e {
                2 => "soon".to_owned(),
                e => e.to_string(),
            });
            crate::tx::TxPublish {
                mandatory,
                message: Arc::new(m),
            }
        });
    let settle = (prop::collection::vec(0..6u64, 0..3), 0..3u8).prop_map(|(tags, how)| crate::tx::TxSettle {
        tags: tags.into_iter().map(DeliveryTag).collect(),
        how: match how {
            0 => crate::tx::TxSettleKind::Ack,
            1 => crate::tx::TxSettleKind::Requeue,
            _ => crate::tx::TxSettleKind::Reject,
        },
    });
    (
        0..4usize,
        prop::collection::vec(publish, 0..4),
        prop::collection::vec(settle, 0..4),
    )
        .prop_map(|(c, publishes, settles)| Request {
            origin: Some(channel(c)),
            command: Command::Commit(crate::tx::Transaction {
                vhost: root(),
                publishes,
                settles,
            }),
        })
}

/// Points a commit's settled tags `t < 4` at the channel's `t`-th unacked
/// delivery, as [`aim_acks`] does for acks.
fn aim_commit(broker: &Broker, request: &Request) -> Request {
    let mut request = request.clone();
    let (Some(origin), Command::Commit(tx)) = (request.origin, &mut request.command) else {
        return request;
    };
    let held: Vec<DeliveryTag> = broker
        .channels
        .get(&origin)
        .map(|c| c.unacked.keys().copied().collect())
        .unwrap_or_default();
    for tag in tx.settles.iter_mut().flat_map(|s| s.tags.iter_mut()) {
        if let Some(aimed) = usize::try_from(tag.0).ok().filter(|&t| t < 4).and_then(|t| held.get(t)) {
            *tag = *aimed;
        }
    }
    request
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Commits among random sequences: the invariants hold after each, a
    /// commit gets exactly one reply, a failed commit changes nothing, and
    /// replicas and snapshot round trips agree.
    #[test]
    fn commits_keep_invariants_and_fail_whole(batches in batches_of(1..12), commits in prop::collection::vec(commit_request(), 1..6)) {
        let mut broker = Broker::new();
        let mut replica = Broker::new();
        let mut commits = commits.into_iter();
        for batch in &batches {
            let batch = aim_acks(&broker, batch);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            broker.apply(&batch, &mut a);
            replica.apply(&batch, &mut b);
            let Some(commit) = commits.next() else { continue };
            let commit = aim_commit(&broker, &commit);
            let before = snapshot(&broker);
            let commit_batch = Batch { now_ms: batch.now_ms, requests: vec![commit.clone()] };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            broker.apply(&commit_batch, &mut a);
            replica.apply(&commit_batch, &mut b);
            prop_assert_eq!(&a, &b);
            let replies: Vec<&Effect> = a.iter().filter(|e| matches!(e, Effect::Reply { .. })).collect();
            prop_assert_eq!(replies.len(), 1);
            if let Effect::Reply { outcome: Err(error), .. } = replies[0] {
                prop_assert!(snapshot(&broker) == before, "a failed commit ({}) changed the state", error);
                prop_assert_eq!(a.len(), 1, "a failed commit had effects");
            }
            if let Err(violation) = broker.check_invariants() {
                return Err(TestCaseError::fail(format!("{violation}\nafter {commit:#?}")));
            }
            let bytes = snapshot(&broker);
            prop_assert_eq!(&bytes, &snapshot(&replica));
            prop_assert_eq!(&bytes, &snapshot(&restore(&bytes)));
        }
    }
}
