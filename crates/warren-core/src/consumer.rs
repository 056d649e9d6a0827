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
    #[serde(deserialize_with = "priority_if_encoded")]
    pub priority: i32,
}

thread_local! {
    static WITHOUT_PRIORITY: std::cell::RefCell<bool> = const { std::cell::RefCell::new(false) };
}

/// Runs `f` (a decode on this thread) reading consumers as codec version
/// 3 and earlier encoded them: without a priority.
pub fn with_consumers_without_priority<R>(f: impl FnOnce() -> R) -> R {
    crate::message::with_local(&WITHOUT_PRIORITY, true, f)
}

/// Reads the priority, or nothing (0) from an encoding that had none:
/// bincode reads fields in order, so leaving the field unread is how an
/// older record decodes.
fn priority_if_encoded<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    if WITHOUT_PRIORITY.with(|flag| *flag.borrow()) {
        return Ok(0);
    }
    i32::deserialize(deserializer)
}

impl Consumer {
    /// Whether its own prefetch allows one more delivery.
    pub fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked < u32::from(self.prefetch)
    }
}

/// A queue's reference to one of its consumers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsumerRef {
    pub channel: ChannelId,
    pub tag: ConsumerTag,
}
