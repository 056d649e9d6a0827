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
