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
    /// Its `Consume`'s lookahead (ADR 0026): what windows apply.
    /// [`Lookahead::NONE`] for consumers of older snapshots and log entries.
    #[serde(deserialize_with = "since_v5")]
    pub lookahead: Lookahead,
    /// For a consumer of a stream: the offset it reads next (ADR 0030).
    /// `None` for other consumers, and for those of codec version 5 and
    /// earlier.
    #[serde(deserialize_with = "since_v6")]
    pub stream_next: Option<u64>,
}

/// How far past its prefetch the core assigns deliveries to a consumer
/// (ADR 0026), as its `Consume` said. It is carried by the command, not
/// decided when it applies, so that replaying a log written by an older
/// build gives what that build gave: every replica must agree on every
/// entry.
///
/// - `0` ([`Lookahead::NONE`]): no window: exactly the prefetch, and a
///   `no_ack` consumer without a bound (codec version 4 and earlier).
/// - `n ≥ 1`: a manual consumer of prefetch `p ≥ LOOKAHEAD_FROM` is
///   assigned up to `p × (1 + n)`, and a `no_ack` consumer is bound by
///   [`NO_ACK_WINDOW`]. Codec version 5 wrote `true` here, a single byte
///   1: [`Lookahead::V5`], twice the prefetch. An older build reading a
///   larger value refuses the entry (a bool must be 0 or 1) instead of
///   reading it differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lookahead(pub u8);

impl Lookahead {
    pub const NONE: Lookahead = Lookahead(0);
    /// What codec version 5's `credit: true` meant: twice the prefetch.
    pub const V5: Lookahead = Lookahead(1);
    /// What this build's front end asks for: four times the prefetch. Twice
    /// was not enough for a consumer to keep up with a confirming publisher
    /// on one node (docs/benchmarks.md, 2026-12-06 midday: 83 % of the
    /// confirm rate at prefetch 100, 100 % at four times).
    pub const CURRENT: Lookahead = Lookahead(3);

    /// Whether the windows of ADR 0026 apply at all.
    pub fn windowed(self) -> bool {
        self.0 > 0
    }
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

/// Reads a field added in codec version 6 (see [`since_v4`]).
pub(crate) fn since_v6<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if reading_before(6) {
        return Ok(T::default());
    }
    T::deserialize(deserializer)
}

/// The smallest prefetch for which the core assigns more than the
/// prefetch (ADR 0026): below it a consumer gets exactly its prefetch, so
/// that work queues of prefetch 1 (RabbitMQ's "fair dispatch") stay fair.
pub const LOOKAHEAD_FROM: u16 = 10;

/// How many unacked deliveries the core assigns to a consumer of prefetch
/// `prefetch` (0: no limit) and `lookahead`: from [`LOOKAHEAD_FROM`] on,
/// `prefetch × (1 + lookahead)`. The consumer's node sends the client at
/// most `prefetch` and holds the rest, ready to go as the client acks,
/// before the acks commit. A channel's global prefetch is exact.
///
/// `assigned_window(9, CURRENT) == 9`, `assigned_window(10, V5) == 20`,
/// `assigned_window(10, CURRENT) == 40`, `assigned_window(u16::MAX, Lookahead(255)) == 16_776_960`.
pub fn assigned_window(prefetch: u16, lookahead: Lookahead) -> u32 {
    let prefetch = u32::from(prefetch);
    if prefetch >= u32::from(LOOKAHEAD_FROM) {
        prefetch * (1 + u32::from(lookahead.0))
    } else {
        prefetch
    }
}

impl Consumer {
    /// Whether its own prefetch allows the core to assign one more delivery.
    pub fn has_credit(&self) -> bool {
        if self.no_ack {
            return !self.lookahead.windowed()
                || (self.in_flight < NO_ACK_WINDOW && self.in_flight_bytes < NO_ACK_WINDOW_BYTES);
        }
        self.room().is_none_or(|room| room > 0)
    }

    /// How many more deliveries a manual-ack consumer may be assigned
    /// (`None`: no prefetch, no limit).
    pub fn room(&self) -> Option<u32> {
        (self.prefetch != 0).then(|| assigned_window(self.prefetch, self.lookahead).saturating_sub(self.unacked))
    }
}

/// A queue's reference to one of its consumers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsumerRef {
    pub channel: ChannelId,
    pub tag: ConsumerTag,
}
