//! A queue: its attributes, ready messages and consumers.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;

use amq_protocol_types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::consumer::ConsumerRef;
use crate::ids::{ConnectionId, MessageId, NodeId, QueueName};
use crate::message::Message;
use crate::queue_args::QueueArgs;
use crate::ready::Ready;

/// A message in a queue (ready) or, moved into a channel, unacked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub id: MessageId,
    /// Position in the queue; a requeued message goes back to it.
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// When it expires (`x-message-ttl`, `expiration`), ms since epoch.
    pub expires_at_ms: Option<u64>,
    /// Its priority in a priority queue (`x-max-priority`), else 0.
    #[serde(default)]
    pub priority: u8,
    /// How often it came back to a quorum queue unacked (nack or reject
    /// with requeue, recover, its channel closed): RabbitMQ's
    /// `x-delivery-count`. Always 0 in other queues.
    #[serde(deserialize_with = "crate::consumer::since_v4")]
    pub returns: u32,
    /// When a stream appended it, ms since epoch (`x-stream-offset` by
    /// timestamp; ADR 0030). 0 in other queues and in records of codec
    /// version 5 and earlier.
    #[serde(deserialize_with = "crate::consumer::since_v6")]
    pub appended_ms: u64,
}

impl QueuedMessage {
    /// Whether it has expired at `now_ms`; `inclusive` counts a message
    /// expiring exactly now (TTL 0 undeliverable right away, or a `Tick`).
    pub fn is_expired(&self, now_ms: u64, inclusive: bool) -> bool {
        match self.expires_at_ms {
            Some(at) if inclusive => at <= now_ms,
            Some(at) => at < now_ms,
            None => false,
        }
    }

    /// Where it sits among ready messages: higher priority first, then
    /// publish order.
    pub fn order_key(&self) -> (Reverse<u8>, u64) {
        (Reverse(self.priority), self.seq)
    }
}

/// A declared queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub name: QueueName,
    /// Broker-unique incarnation id: a queue deleted and declared again
    /// under the same name is another queue.
    pub uid: u64,
    pub durable: bool,
    /// The owning connection of an exclusive queue.
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub args: QueueArgs,
    /// The node (and its boot) that declared it; a non-durable queue is
    /// lost when that node restarts.
    pub home: Option<(NodeId, u64)>,
    /// Ready messages, ordered by [`QueuedMessage::order_key`]; a backlog
    /// is paged out to the node's store ([`crate::ready`]).
    pub ready: Ready,
    /// `(expires_at_ms, seq)` of every ready message that can expire, so
    /// the next expiry is found without scanning the queue.
    #[serde(default)]
    pub expiries: BTreeSet<(u64, u64)>,
    pub ready_bytes: u64,
    /// Deliveries from this queue awaiting ack in some channel.
    pub unacked: u64,
    pub next_seq: u64,
    /// Consumers in subscription order; dispatch goes round-robin.
    pub consumers: Vec<ConsumerRef>,
    /// Index in `consumers` where the next round-robin search starts.
    pub next_consumer: usize,
    /// A stream's segments, oldest first (ADR 0030); empty for other
    /// queues and in records of codec version 5 and earlier.
    #[serde(deserialize_with = "crate::consumer::since_v6")]
    pub segments: std::collections::VecDeque<crate::stream::StreamSegment>,
    /// Whether it ever had a consumer (auto-delete applies only then).
    pub had_consumer: bool,
    /// Last declare / get / consumer activity, for `x-expires`.
    pub last_used_ms: u64,
    /// Message counts ([`crate::stats`]): not encoded, never unequal.
    #[serde(skip)]
    pub stats: crate::stats::QueueStats,
    /// The policy whose definition is merged into `args` (not encoded:
    /// computed again when a snapshot is restored; `args` is encoded).
    #[serde(skip)]
    pub policy: Option<String>,
}

impl Queue {
    /// Whether connection `conn` may use it (not another's exclusive queue).
    pub fn accessible_by(&self, conn: Option<ConnectionId>) -> bool {
        match (self.exclusive_owner, conn) {
            (None, _) => true,
            (Some(owner), Some(conn)) => owner == conn,
            // System commands (no origin) act on any queue.
            (Some(_), None) => true,
        }
    }

    pub fn ready_count(&self) -> u32 {
        u32::try_from(self.ready.len()).unwrap_or(u32::MAX)
    }

    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.consumers.len()).unwrap_or(u32::MAX)
    }

    /// Whether `expected` (message count and body bytes after adding a
    /// message) would exceed `x-max-length` / `x-max-length-bytes`.
    fn over_limits(&self, count: u64, bytes: u64) -> bool {
        self.args.max_length.is_some_and(|max| count > max) || self.args.max_length_bytes.is_some_and(|max| bytes > max)
    }

    /// Whether adding a message of `body_len` bytes would exceed a limit
    /// (RabbitMQ `will_overflow`).
    pub fn would_overflow(&self, body_len: u64) -> bool {
        self.over_limits(self.ready.len() as u64 + 1, self.ready_bytes + body_len)
    }

    /// Whether the ready messages exceed a limit now.
    pub fn is_over_limits(&self) -> bool {
        self.over_limits(self.ready.len() as u64, self.ready_bytes)
    }

    /// The priority a message gets in this queue: its `priority` property
    /// capped at `x-max-priority`, or 0 if the queue has no priorities.
    pub fn priority_of(&self, message: &Message) -> u8 {
        match self.args.max_priority {
            Some(max) => message.properties.priority.unwrap_or(0).min(max),
            None => 0,
        }
    }

    /// Adds a newly published message after every ready message of its
    /// priority (at the tail, for a queue without priorities).
    pub fn push_back(&mut self, id: MessageId, message: Arc<Message>, expires_at_ms: Option<u64>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let priority = self.priority_of(&message);
        self.insert(QueuedMessage {
            id,
            seq,
            message,
            redelivered: false,
            expires_at_ms,
            priority,
            returns: 0,
            appended_ms: 0,
        });
    }

    /// Puts a requeued message back at its original position; in a quorum
    /// queue it counts one more return, and one past `x-delivery-limit`
    /// is given back instead (to be dead-lettered, reason
    /// `delivery_limit`).
    pub fn requeue(&mut self, mut entry: QueuedMessage) -> Option<QueuedMessage> {
        entry.redelivered = true;
        if self.is_quorum() {
            entry.returns = entry.returns.saturating_add(1);
            if self
                .delivery_limit()
                .is_some_and(|limit| u64::from(entry.returns) > limit)
            {
                return Some(entry);
            }
        }
        self.insert(entry);
        None
    }

    /// Puts back a message that was assigned to a consumer but never sent
    /// to it (ADR 0026): at its original position, unchanged.
    pub fn put_back(&mut self, entry: QueuedMessage) {
        self.insert(entry);
    }

    /// Whether it was declared `x-queue-type = quorum`.
    pub fn is_quorum(&self) -> bool {
        crate::queue_args::is_queue_type(&self.arguments, "quorum")
    }

    /// Its `x-delivery-limit` (a quorum queue's), if a non-negative integer.
    pub fn delivery_limit(&self) -> Option<u64> {
        let value = self.arguments.inner().get("x-delivery-limit")?;
        crate::queue_args::integer(value).and_then(|n| u64::try_from(n).ok())
    }

    /// `message` as a delivery of `entry` shows it: a quorum queue adds
    /// `x-delivery-count` (0 on the first delivery), as RabbitMQ's does.
    pub fn delivered_message(&self, entry: &QueuedMessage) -> Arc<Message> {
        if !self.is_quorum() {
            return Arc::clone(&entry.message);
        }
        let mut message = (*entry.message).clone();
        let properties = Arc::make_mut(&mut message.properties);
        let headers = properties.headers.get_or_insert_with(FieldTable::default);
        headers.insert(
            "x-delivery-count".into(),
            AMQPValue::LongLongInt(i64::from(entry.returns)),
        );
        Arc::new(message)
    }

    pub(crate) fn insert(&mut self, entry: QueuedMessage) {
        self.ready_bytes += entry.message.body_len();
        if let Some(at) = entry.expires_at_ms {
            self.expiries.insert((at, entry.seq));
        }
        self.ready.insert(entry, self.args.max_priority.is_none());
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let entry = self.ready.pop_front()?;
        self.ready_bytes -= entry.message.body_len();
        if let Some(at) = entry.expires_at_ms {
            self.expiries.remove(&(at, entry.seq));
        }
        Some(entry)
    }

    /// Removes expired messages from the head only (RabbitMQ expires
    /// lazily at the head), returning them.
    pub fn take_expired_head(&mut self, now_ms: u64, inclusive: bool) -> Vec<QueuedMessage> {
        let mut expired = Vec::new();
        if self.next_message_expiry_ms().is_none() {
            return expired;
        }
        while self.ready.front().is_some_and(|m| m.is_expired(now_ms, inclusive)) {
            expired.extend(self.pop_front());
        }
        expired
    }

    /// Removes every message expired at `now_ms` wherever it is (on `Tick`).
    pub fn take_all_expired(&mut self, now_ms: u64) -> Vec<QueuedMessage> {
        if self.next_message_expiry_ms().is_none_or(|at| at > now_ms) {
            return Vec::new();
        }
        let seqs: BTreeSet<u64> = self
            .expiries
            .range(..=(now_ms, u64::MAX))
            .map(|(_, seq)| *seq)
            .collect();
        let expired = self.ready.remove_seqs(&seqs);
        for entry in &expired {
            self.ready_bytes -= entry.message.body_len();
            if let Some(at) = entry.expires_at_ms {
                self.expiries.remove(&(at, entry.seq));
            }
        }
        expired
    }

    /// Removes every ready message; returns how many there were.
    pub fn purge(&mut self) -> u64 {
        self.ready_bytes = 0;
        self.expiries.clear();
        self.ready.clear()
    }

    /// Earliest message expiry among ready messages.
    pub fn next_message_expiry_ms(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// When `x-expires` deletes it, if it is unused (no consumers).
    pub fn expiry_deadline_ms(&self) -> Option<u64> {
        let expires = self.args.expires_ms?;
        if !self.consumers.is_empty() {
            return None;
        }
        Some(self.last_used_ms.saturating_add(expires))
    }

    /// Consumers dispatch may try, in the order to try them: the single
    /// active consumer only, or round-robin from `next_consumer`.
    /// An iterator, not a vector: dispatch asks for every message. It
    /// yields exactly the indices [`Queue::dispatches_to`] allows.
    pub fn dispatch_order(&self) -> impl Iterator<Item = usize> {
        let n = self.consumers.len();
        let (tried, start) = if self.args.single_active_consumer {
            (n.min(1), 0)
        } else {
            (n, self.next_consumer)
        };
        (0..tried).map(move |i| (start + i) % n)
    }

    /// Whether dispatch tries consumer `index` at all: on a
    /// single-active-consumer queue only the first (the active one).
    pub fn dispatches_to(&self, index: usize) -> bool {
        index < self.consumers.len() && (index == 0 || !self.args.single_active_consumer)
    }

    pub fn remove_consumer(&mut self, consumer: &ConsumerRef) {
        if let Some(index) = self.consumers.iter().position(|c| c == consumer) {
            self.consumers.remove(index);
            if index < self.next_consumer {
                self.next_consumer -= 1;
            }
        }
        if self.next_consumer >= self.consumers.len() {
            self.next_consumer = 0;
        }
    }
}
