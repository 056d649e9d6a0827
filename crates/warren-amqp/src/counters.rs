//! This node's message counters, as rabbitmq_prometheus's
//! `rabbitmq_global_messages_*_total` count them: per node, for the
//! clients connected to it (a cluster's total is the sum over its nodes,
//! as RabbitMQ's dashboards take it). Kept by the AMQP front end, which
//! sees each of these events once: publishes it received, deliveries and
//! gets it sent, acks and confirms.

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters, bumped by the connections.
#[derive(Debug, Default)]
pub struct MessageCounters {
    pub received: AtomicU64,
    pub routed: AtomicU64,
    pub unroutable_dropped: AtomicU64,
    pub unroutable_returned: AtomicU64,
    pub confirmed: AtomicU64,
    pub delivered_consume_auto_ack: AtomicU64,
    pub delivered_consume_manual_ack: AtomicU64,
    pub delivered_get_auto_ack: AtomicU64,
    pub delivered_get_manual_ack: AtomicU64,
    pub redelivered: AtomicU64,
    pub acknowledged: AtomicU64,
    /// Messages received on channels in confirm mode.
    pub received_confirm: AtomicU64,
    /// `basic.get` answered with `get-empty`.
    pub get_empty: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub channels_opened: AtomicU64,
    pub channels_closed: AtomicU64,
    /// `queue.declare`s answered (new queues or not), queues they created,
    /// and queues deleted by `queue.delete`.
    pub queues_declared: AtomicU64,
    pub queues_created: AtomicU64,
    pub queues_deleted: AtomicU64,
    /// Open channels that have published (a gauge).
    pub publishers: AtomicU64,
    /// Sizes of the bodies received: a count per bucket of
    /// [`MESSAGE_SIZE_BUCKETS`] (the last: larger than every bound), and
    /// their sum.
    pub message_sizes: [AtomicU64; MESSAGE_SIZE_BUCKETS.len() + 1],
    pub message_bytes: AtomicU64,
}

/// rabbitmq_prometheus's `rabbitmq_message_size_bytes` bucket bounds, in
/// bytes, with their `le` labels as RabbitMQ writes them (the Overview
/// dashboard selects buckets by these exact strings).
pub const MESSAGE_SIZE_BUCKETS: [(u64, &str); 8] = [
    (100, "100.0"),
    (1_000, "1000.0"),
    (10_000, "10000.0"),
    (100_000, "100000.0"),
    (1_000_000, "1e+06"),
    (10_000_000, "1e+07"),
    (50_000_000, "5e+07"),
    (100_000_000, "1e+08"),
];

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub received: u64,
    pub routed: u64,
    pub unroutable_dropped: u64,
    pub unroutable_returned: u64,
    pub confirmed: u64,
    pub delivered_consume_auto_ack: u64,
    pub delivered_consume_manual_ack: u64,
    pub delivered_get_auto_ack: u64,
    pub delivered_get_manual_ack: u64,
    pub redelivered: u64,
    pub acknowledged: u64,
    pub received_confirm: u64,
    pub get_empty: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
    pub queues_declared: u64,
    pub queues_created: u64,
    pub queues_deleted: u64,
    pub publishers: u64,
    /// Bodies received per size bucket (not cumulative), and their bytes.
    pub message_sizes: [u64; MESSAGE_SIZE_BUCKETS.len() + 1],
    pub message_bytes: u64,
}

impl MessageCounts {
    /// Every delivery and get.
    pub fn delivered(&self) -> u64 {
        self.delivered_consume_auto_ack
            + self.delivered_consume_manual_ack
            + self.delivered_get_auto_ack
            + self.delivered_get_manual_ack
    }
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Takes `n` from a gauge.
pub(crate) fn drop_by(gauge: &AtomicU64, n: u64) {
    gauge.fetch_sub(n, Ordering::Relaxed);
}

impl MessageCounters {
    pub fn snapshot(&self) -> MessageCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MessageCounts {
            received: read(&self.received),
            routed: read(&self.routed),
            unroutable_dropped: read(&self.unroutable_dropped),
            unroutable_returned: read(&self.unroutable_returned),
            confirmed: read(&self.confirmed),
            delivered_consume_auto_ack: read(&self.delivered_consume_auto_ack),
            delivered_consume_manual_ack: read(&self.delivered_consume_manual_ack),
            delivered_get_auto_ack: read(&self.delivered_get_auto_ack),
            delivered_get_manual_ack: read(&self.delivered_get_manual_ack),
            redelivered: read(&self.redelivered),
            acknowledged: read(&self.acknowledged),
            received_confirm: read(&self.received_confirm),
            get_empty: read(&self.get_empty),
            connections_opened: read(&self.connections_opened),
            connections_closed: read(&self.connections_closed),
            channels_opened: read(&self.channels_opened),
            channels_closed: read(&self.channels_closed),
            queues_declared: read(&self.queues_declared),
            queues_created: read(&self.queues_created),
            queues_deleted: read(&self.queues_deleted),
            publishers: read(&self.publishers),
            message_sizes: std::array::from_fn(|i| read(&self.message_sizes[i])),
            message_bytes: read(&self.message_bytes),
        }
    }

    /// Counts a received body of `len` bytes in the size histogram.
    pub(crate) fn message_size(&self, len: u64) {
        let bucket = MESSAGE_SIZE_BUCKETS
            .iter()
            .position(|(bound, _)| len <= *bound)
            .unwrap_or(MESSAGE_SIZE_BUCKETS.len());
        bump(&self.message_sizes[bucket], 1);
        bump(&self.message_bytes, len);
    }
}

/// What one connection counts, as RabbitMQ's connection statistics:
/// bytes and socket reads / writes, and the messages of its channels.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    values: [AtomicU64; CONNECTION_COUNTERS.len()],
}

/// The names of a connection's counters, in [`ConnectionCounters`]' order
/// (RabbitMQ's field names; the last five are `message_stats`').
pub const CONNECTION_COUNTERS: [&str; 9] = [
    "recv_oct",
    "recv_cnt",
    "send_oct",
    "send_cnt",
    "publish",
    "deliver_get",
    "ack",
    "confirm",
    "redeliver",
];

/// Indexes into [`CONNECTION_COUNTERS`].
pub mod connection_counter {
    pub const RECV_OCT: usize = 0;
    pub const RECV_CNT: usize = 1;
    pub const SEND_OCT: usize = 2;
    pub const SEND_CNT: usize = 3;
    pub const PUBLISH: usize = 4;
    pub const DELIVER_GET: usize = 5;
    pub const ACK: usize = 6;
    pub const CONFIRM: usize = 7;
    pub const REDELIVER: usize = 8;
}

impl ConnectionCounters {
    pub(crate) fn bump(&self, which: usize, n: u64) {
        self.values[which].fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> [u64; CONNECTION_COUNTERS.len()] {
        std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_sizes_fall_into_rabbitmqs_buckets_bounds_included() {
        let counters = MessageCounters::default();
        for len in [0, 100, 101, 1_000, 100_000_000, 100_000_001] {
            counters.message_size(len);
        }
        let counts = counters.snapshot();
        assert_eq!(counts.message_sizes, [2, 2, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(counts.message_bytes, 200_001_202);
    }
}
