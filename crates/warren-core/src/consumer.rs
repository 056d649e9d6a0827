//! A consumer (`basic.consume`), owned by its channel.

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, ConsumerTag, QueueName, VHost};

/// A consumer as its channel keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub vhost: VHost,
    pub queue: QueueName,
    /// The incarnation of the queue consumed from (see `Queue::uid`).
    pub queue_uid: u64,
    /// Broker-unique, so unacked deliveries of a cancelled consumer never
    /// count against a later consumer reusing its tag.
    pub serial: u64,
    pub no_ack: bool,
    pub exclusive: bool,
    /// `basic.qos` prefetch (global = false) in force when it was created; 0 = unlimited.
    pub prefetch: u16,
    /// Deliveries to it not yet acked (always 0 for `no_ack`).
    pub unacked: u32,
    /// `x-priority`: a queue's messages go to its consumers of the highest
    /// priority that can take one (round-robin among equals). Not in
    /// snapshots of codec version 3 and earlier (0 when read from them).
    #[serde(deserialize_with = "since_v4")]
    pub priority: i32,
    /// For a `no_ack` consumer: deliveries its node has not yet reported
    /// written to the client (`Command::Written`); the core assigns it no
    /// more while [`NO_ACK_WINDOW`] or [`NO_ACK_WINDOW_BYTES`] is reached
    /// (ADR 0026). Always 0 for others. Not in snapshots of codec version
    /// 4 and earlier (0 when read from them), nor is `in_flight_bytes`.
    #[serde(deserialize_with = "since_v5")]
    pub in_flight: u32,
    /// The body bytes of those deliveries.
    #[serde(deserialize_with = "since_v5")]
    pub in_flight_bytes: u64,
    /// Created by a `Consume` with `credit` (ADR 0026): the windows apply.
    /// False for consumers of older snapshots and log entries.
    #[serde(deserialize_with = "since_v5")]
    pub credit: bool,
}

/// How many deliveries a `no_ack` consumer may have assigned and not yet
/// written to its client: with [`NO_ACK_WINDOW_BYTES`], what bounds a
/// connection's queue of effects when the client reads slower than its
/// queue fills (ADR 0003's risk; RabbitMQ bounds it by credit flow between
/// queue and channel). Large enough that a consumer that keeps up never
/// waits for its node's reports to commit.
pub const NO_ACK_WINDOW: u32 = 20_000;

/// The body bytes a `no_ack` consumer may have assigned and not yet
/// written (one delivery past it is allowed: a body larger than the window
/// still goes).
pub const NO_ACK_WINDOW_BYTES: u64 = 16 * 1024 * 1024;

thread_local! {
    /// The codec version of the records being decoded on this thread
    /// (`u8::MAX`: the current one).
    static RECORD_VERSION: std::cell::RefCell<u8> = const { std::cell::RefCell::new(u8::MAX) };
}

/// Runs `f` (a decode on this thread) reading records as codec version
/// `version` encoded them: before 4, consumers without a priority and
/// queued messages without a delivery count; before 5, consumers without
/// their `in_flight` count.
pub fn with_record_version<R>(version: u8, f: impl FnOnce() -> R) -> R {
    crate::message::with_local(&RECORD_VERSION, version, f)
}

fn reading_before(version: u8) -> bool {
    RECORD_VERSION.with(|current| *current.borrow() < version)
}

/// Reads a field added in codec version 4, or nothing (its default) from
/// an older encoding: bincode reads fields in order, so leaving the last
/// field unread is how an older record decodes.
pub(crate) fn since_v4<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if reading_before(4) {
        return Ok(T::default());
    }
    T::deserialize(deserializer)
}

/// Reads a field added in codec version 5 (see [`since_v4`]).
pub(crate) fn since_v5<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if reading_before(5) {
        return Ok(T::default());
    }
    T::deserialize(deserializer)
}

/// The smallest prefetch for which the core assigns more than the
/// prefetch (ADR 0026): below it a consumer gets exactly its prefetch, so
/// that work queues of prefetch 1 (RabbitMQ's "fair dispatch") stay fair.
pub const LOOKAHEAD_FROM: u16 = 10;

/// How many unacked deliveries the core assigns to a consumer (or a
/// channel, for `qos global=true`) of prefetch `prefetch` (0: no limit).
/// From [`LOOKAHEAD_FROM`] on it is twice the prefetch: the consumer's
/// node sends the client at most `prefetch` and holds the rest, ready to
/// go as the client acks, before the acks commit.
///
/// `assigned_window(1) == 1`, `assigned_window(9) == 9`,
/// `assigned_window(10) == 20`, `assigned_window(u16::MAX) == 131070`.
pub fn assigned_window(prefetch: u16) -> u32 {
    let prefetch = u32::from(prefetch);
    if prefetch >= u32::from(LOOKAHEAD_FROM) {
        prefetch * 2
    } else {
        prefetch
    }
}

impl Consumer {
    /// Whether its own prefetch allows the core to assign one more delivery.
    pub fn has_credit(&self) -> bool {
        if self.no_ack {
            return !self.credit || (self.in_flight < NO_ACK_WINDOW && self.in_flight_bytes < NO_ACK_WINDOW_BYTES);
        }
        let window = if self.credit {
            assigned_window(self.prefetch)
        } else {
            u32::from(self.prefetch)
        };
        self.prefetch == 0 || self.unacked < window
    }
}

/// A queue's reference to one of its consumers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsumerRef {
    pub channel: ChannelId,
    pub tag: ConsumerTag,
}
