//! Command-level test clients: no AMQP sockets, requests go straight to a
//! node's proposer and effects come back through its [`Router`].
//!
//! A [`Connection`] is one connection with one channel on one node. The
//! publisher and the consumer loops record what they see in a [`Ledger`];
//! a reply that does not come, a node that stops, or (for a consumer) an
//! `Unavailable` reply make them give the connection up (closing it as a
//! front end would) and open a new one on the next running node. A
//! publisher treats an `Unavailable` reply as an AMQP client treats a
//! nack: it goes on, and moves to another node only after a few in a row.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol_types::FieldTable;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use warren_cluster::Proposer;
use warren_core::{
    ChannelId, Command, ConnectionId, ConsumerTag, CoreError, Effect, ExchangeName, Message, Outcome, Properties,
    QueueName, Request, VHost,
};

use crate::cluster::Cluster;
use crate::ledger::{Event, Ledger, MsgId};
use crate::router::Router;

/// How long a client waits for the next reply it expects before it gives
/// the connection up (as a client's own timeout would).
pub const REPLY_LIMIT: Duration = Duration::from_secs(3);

/// The one channel number every test connection uses.
pub const CHANNEL: u16 = 1;

/// Pause before reconnecting after giving a connection up.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// `Unavailable` replies in a row after which a publisher tries another node.
const UNAVAILABLE_BEFORE_RECONNECT: usize = 3;

/// What the next effect on a connection was.
#[derive(Debug)]
pub enum Next {
    Effect(Effect),
    /// The node stopped: its connections are gone.
    Closed,
    /// Nothing arrived within the limit.
    Idle,
}

/// One connection with one channel on one node.
pub struct Connection {
    node_id: u64,
    conn: ConnectionId,
    channel: ChannelId,
    proposer: Proposer,
    router: Arc<Router>,
    effects: mpsc::UnboundedReceiver<Effect>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("channel", &crate::ledger::show(&self.channel))
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens a connection on `node_id`'s running incarnation; `None` if it
    /// is not running.
    pub fn open(cluster: &Cluster, node_id: u64) -> Option<Connection> {
        let handle = cluster.handle(node_id)?;
        let conn = cluster.new_connection_id(node_id, handle.boot);
        let effects = handle.router.register(conn);
        Some(Connection {
            node_id,
            conn,
            channel: ChannelId { conn, channel: CHANNEL },
            proposer: handle.node.proposer(),
            router: handle.router,
            effects,
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Submits `command` from this connection's channel.
    ///
    /// # Errors
    /// The node's proposer has stopped (no reply will come).
    pub async fn submit(&self, command: Command) -> Result<(), warren_cluster::ClusterError> {
        self.proposer
            .submit(Request {
                origin: Some(self.channel),
                command,
            })
            .await
    }

    /// The next effect for this connection, waiting at most `limit`.
    pub async fn next_effect(&mut self, limit: Duration) -> Next {
        match tokio::time::timeout(limit, self.effects.recv()).await {
            Ok(Some(effect)) => Next::Effect(effect),
            Ok(None) => Next::Closed,
            Err(_) => Next::Idle,
        }
    }

    /// Submits `command` and waits for its reply (for requests sent one at
    /// a time, before any delivery can arrive).
    pub async fn call(&mut self, command: Command) -> Result<Outcome, CoreError> {
        if let Err(e) = self.submit(command).await {
            return Err(CoreError::Unavailable(e.to_string()));
        }
        loop {
            match self.next_effect(REPLY_LIMIT).await {
                Next::Effect(Effect::Reply { outcome, .. }) => return outcome,
                Next::Effect(_) => continue,
                Next::Closed => return Err(CoreError::Unavailable("the node stopped".to_owned())),
                Next::Idle => return Err(CoreError::Unavailable("no reply in time".to_owned())),
            }
        }
    }

    /// Gives the connection up: no more effects reach the client, the
    /// ledger records that it holds nothing, and `CloseConnection` is
    /// proposed through its node, as the node's front end does when a
    /// socket closes (the proposer retries it until it commits).
    pub async fn close(self, ledger: &Ledger) {
        self.router.unregister(self.conn);
        drop(self.effects);
        ledger.record(Event::ChannelGone { channel: self.channel });
        let close = Request {
            origin: None,
            command: Command::CloseConnection { conn: self.conn },
        };
        // Bounded: a stopped node's proposer may no longer take requests.
        let _ = tokio::time::timeout(REPLY_LIMIT, self.proposer.submit(close)).await;
    }
}

fn vhost() -> VHost {
    VHost::from("/")
}

/// `queue.declare` of a durable queue, with `x-message-ttl` if given.
pub fn declare_queue(queue: &QueueName, message_ttl_ms: Option<u32>) -> Command {
    let mut arguments = FieldTable::default();
    if let Some(ttl) = message_ttl_ms {
        arguments.insert("x-message-ttl".into(), amq_protocol_types::AMQPValue::LongUInt(ttl));
    }
    Command::DeclareQueue {
        vhost: vhost(),
        name: queue.clone(),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments,
    }
}

/// A persistent message to `queue` through the default exchange, its
/// body the id.
pub fn publish(queue: &QueueName, id: MsgId) -> Command {
    Command::Publish {
        vhost: vhost(),
        mandatory: false,
        message: Arc::new(Message {
            exchange: ExchangeName::default_exchange(),
            routing_key: queue.as_str().to_owned(),
            properties: std::sync::Arc::new(Properties {
                delivery_mode: Some(2),
                ..Properties::default()
            }),
            body: Bytes::from(id.to_string()).into(),
        }),
    }
}

/// The id in a test message's body.
pub fn message_id(message: &Message) -> Option<MsgId> {
    std::str::from_utf8(message.body.inline()?).ok()?.parse().ok()
}

/// Opens a connection on `node` or, if it is not running, the next
/// running node after it; `None` if nothing runs.
fn open_somewhere(cluster: &Cluster, node: &mut u64) -> Option<Connection> {
    if let Some(conn) = Connection::open(cluster, *node) {
        return Some(conn);
    }
    *node = cluster.next_running(*node)?;
    Connection::open(cluster, *node)
}

/// Declares `queue` (see [`declare_queue`]) through `node`, retrying on
/// other nodes until it is declared (bounded by `attempts`).
///
/// # Errors
/// The last failure, after `attempts` tries.
pub async fn declare(
    cluster: &Cluster,
    ledger: &Ledger,
    node: u64,
    queue: &QueueName,
    message_ttl_ms: Option<u32>,
    attempts: usize,
) -> Result<(), CoreError> {
    let mut node = node;
    let mut last = CoreError::Unavailable("no node running".to_owned());
    for _ in 0..attempts.max(1) {
        if let Some(mut conn) = open_somewhere(cluster, &mut node) {
            let outcome = conn.call(declare_queue(queue, message_ttl_ms)).await;
            conn.close(ledger).await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
        }
        node = cluster.next_running(node).unwrap_or(node);
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    Err(last)
}

/// What a publisher does.
#[derive(Clone, Debug)]
pub struct PublisherOptions {
    pub queue: QueueName,
    /// Publishes at most this many messages (each attempt a new id).
    pub messages: usize,
    /// Publishes awaiting their reply, at most.
    pub window: usize,
    /// Pause after each publish, to spread the load over the test.
    pub pause: Duration,
}

/// What a publisher saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    pub confirmed: u64,
    pub unknown: u64,
    pub reconnects: u64,
}

/// Publishes until `options.messages` were attempted or `stop` turns
/// true, starting on node `start`; records every outcome in `ledger`.
pub async fn run_publisher(
    cluster: Cluster,
    ledger: Arc<Ledger>,
    start: u64,
    options: PublisherOptions,
    stop: watch::Receiver<bool>,
) -> PublisherStats {
    let mut stats = PublisherStats::default();
    let mut node = start;
    let mut attempted = 0;
    while attempted < options.messages && !*stop.borrow() {
        let Some(mut conn) = open_somewhere(&cluster, &mut node) else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        let mut pending: VecDeque<MsgId> = VecDeque::new();
        let mut broken = false;
        let mut unavailable_in_a_row = 0;
        loop {
            while !broken && pending.len() < options.window.max(1) && attempted < options.messages && !*stop.borrow() {
                let id = ledger.next_id();
                attempted += 1;
                pending.push_back(id);
                if conn.submit(publish(&options.queue, id)).await.is_err() {
                    broken = true;
                }
                if !options.pause.is_zero() {
                    tokio::time::sleep(options.pause).await;
                }
            }
            if broken || pending.is_empty() {
                break;
            }
            match conn.next_effect(REPLY_LIMIT).await {
                Next::Effect(Effect::Reply { outcome, .. }) => {
                    let Some(id) = pending.pop_front() else {
                        ledger.record(Event::Unexpected {
                            what: format!("publisher {}: a reply nobody waits for: {outcome:?}", conn.node_id()),
                        });
                        broken = true;
                        continue;
                    };
                    match outcome {
                        Ok(Outcome::Published {
                            routed: true,
                            rejected: false,
                            returned: None,
                        }) => {
                            unavailable_in_a_row = 0;
                            stats.confirmed += 1;
                            ledger.record(Event::Confirmed { id });
                        }
                        Err(CoreError::Unavailable(_)) => {
                            // Like an AMQP publisher after a nack, the session
                            // goes on (for a while): replies that reached the
                            // channel out of order would then confirm an id
                            // that was never committed, and the ledger sees it
                            // lost.
                            stats.unknown += 1;
                            ledger.record(Event::Unknown { id });
                            unavailable_in_a_row += 1;
                            broken = unavailable_in_a_row >= UNAVAILABLE_BEFORE_RECONNECT;
                        }
                        other => {
                            ledger.record(Event::Unexpected {
                                what: format!("publish of {id} answered {other:?}"),
                            });
                            pending.push_front(id);
                            broken = true;
                        }
                    }
                }
                Next::Effect(other) => {
                    ledger.record(Event::Unexpected {
                        what: format!("publisher got {other:?}"),
                    });
                }
                Next::Closed | Next::Idle => broken = true,
            }
        }
        for id in pending.drain(..) {
            stats.unknown += 1;
            ledger.record(Event::Unknown { id });
        }
        conn.close(&ledger).await;
        if broken {
            stats.reconnects += 1;
            node = cluster.next_running(node).unwrap_or(node);
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    stats
}

/// What a consumer does.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub queue: QueueName,
    pub prefetch: u16,
    /// How long it holds each delivery before acking it (random in range).
    pub hold_ms: Range<u64>,
}

/// What a consumer saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    pub delivered: u64,
    pub acked: u64,
    pub reconnects: u64,
}

/// What the consumer's channel is waiting a reply for, in order.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Setup,
    /// The ack of a message, by its delivery tag.
    Ack(MsgId, u64),
}

/// Consumes `options.queue` with manual acks until `stop` turns true,
/// starting on node `start`; records deliveries and acks in `ledger`.
pub async fn run_consumer(
    cluster: Cluster,
    ledger: Arc<Ledger>,
    start: u64,
    options: ConsumerOptions,
    mut stop: watch::Receiver<bool>,
) -> ConsumerStats {
    let mut stats = ConsumerStats::default();
    let mut node = start;
    let mut tag_seq = 0u64;
    loop {
        if *stop.borrow() {
            return stats;
        }
        let Some(mut conn) = open_somewhere(&cluster, &mut node) else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        tag_seq += 1;
        let tag = ConsumerTag::new(format!("ctag-{tag_seq}"));
        let stopped = consume_on(&cluster, &ledger, &mut conn, &options, &tag, &mut stats, &mut stop).await;
        conn.close(&ledger).await;
        if stopped {
            return stats;
        }
        stats.reconnects += 1;
        node = cluster.next_running(node).unwrap_or(node);
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// Consumes on `conn` until it breaks (`false`) or `stop` turns true and
/// the acks in flight are answered (`true`). Acks still unanswered when
/// it breaks are recorded as of unknown outcome.
async fn consume_on(
    cluster: &Cluster,
    ledger: &Ledger,
    conn: &mut Connection,
    options: &ConsumerOptions,
    tag: &ConsumerTag,
    stats: &mut ConsumerStats,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let stopped = consume_until_broken(cluster, ledger, conn, options, tag, stats, stop, &mut pending).await;
    for waiting in pending {
        if let Pending::Ack(id, delivery_tag) = waiting {
            ledger.record(Event::AckUnknown {
                id,
                channel: conn.channel(),
                delivery_tag,
            });
        }
    }
    stopped
}

#[allow(clippy::too_many_arguments)]
async fn consume_until_broken(
    cluster: &Cluster,
    ledger: &Ledger,
    conn: &mut Connection,
    options: &ConsumerOptions,
    tag: &ConsumerTag,
    stats: &mut ConsumerStats,
    stop: &mut watch::Receiver<bool>,
    pending: &mut VecDeque<Pending>,
) -> bool {
    let setup = [
        Command::Qos {
            prefetch_count: options.prefetch,
            global: false,
        },
        Command::Consume {
            vhost: vhost(),
            queue: options.queue.clone(),
            consumer_tag: tag.clone(),
            no_ack: false,
            exclusive: false,
            arguments: FieldTable::default(),
            lookahead: warren_core::Lookahead::CURRENT,
        },
    ];
    for command in setup {
        if conn.submit(command).await.is_err() {
            return false;
        }
        pending.push_back(Pending::Setup);
    }
    let mut stopping = false;
    loop {
        if stopping && pending.is_empty() {
            return true;
        }
        let limit = if pending.is_empty() {
            Duration::from_secs(3600)
        } else {
            REPLY_LIMIT
        };
        let next = tokio::select! {
            next = conn.next_effect(limit) => next,
            changed = stop.changed(), if !stopping => {
                stopping = changed.is_err() || *stop.borrow();
                continue;
            }
        };
        match next {
            Next::Closed | Next::Idle => return stopping && pending.is_empty(),
            Next::Effect(Effect::Reply { outcome, .. }) => {
                let Some(waiting) = pending.pop_front() else {
                    ledger.record(Event::Unexpected {
                        what: format!("consumer: a reply nobody waits for: {outcome:?}"),
                    });
                    return false;
                };
                match (waiting, outcome) {
                    (Pending::Setup, Ok(_)) => {}
                    (Pending::Ack(id, _), Ok(Outcome::Done)) => {
                        stats.acked += 1;
                        ledger.record(Event::Acked {
                            id,
                            channel: conn.channel(),
                        });
                    }
                    (waiting, Err(CoreError::Unavailable(_))) => {
                        // Outcome unknown: the caller records it with the rest.
                        pending.push_front(waiting);
                        return false;
                    }
                    (waiting, other) => {
                        pending.push_front(waiting);
                        ledger.record(Event::Unexpected {
                            what: format!("consumer on node {}: {waiting:?} answered {other:?}", conn.node_id()),
                        });
                        return false;
                    }
                }
            }
            Next::Effect(Effect::Deliver {
                delivery_tag,
                redelivered,
                message,
                ..
            }) => {
                let Some(id) = message_id(&message) else {
                    ledger.record(Event::Unexpected {
                        what: format!("a delivery with a foreign body {:?}", message.body),
                    });
                    return false;
                };
                let channel = conn.channel();
                if !ledger.record(Event::Delivered {
                    id,
                    channel,
                    redelivered,
                }) {
                    // Its node was killed: the connection is gone.
                    return false;
                }
                stats.delivered += 1;
                if stopping {
                    // Not acked: closing the connection gives it back.
                    continue;
                }
                let hold = cluster.net().random_in(options.hold_ms.clone());
                if hold > 0 {
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                }
                ledger.record(Event::Released { id, channel });
                let ack = Command::Ack {
                    delivery_tag,
                    multiple: false,
                };
                if conn.submit(ack).await.is_err() {
                    return false;
                }
                pending.push_back(Pending::Ack(id, delivery_tag.0));
            }
            Next::Effect(Effect::CancelConsumer { .. }) => {
                ledger.record(Event::Unexpected {
                    what: format!("consumer {tag} cancelled by the server"),
                });
                return false;
            }
        }
    }
}
