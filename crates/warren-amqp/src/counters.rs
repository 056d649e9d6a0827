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
}

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
        }
    }
}
