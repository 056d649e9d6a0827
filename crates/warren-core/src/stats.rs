//! Message statistics (issue 10, item 3): counters the apply function bumps
//! as it publishes, delivers and settles, so every replica counts every
//! message once without a command of its own.
//!
//! They are not state: snapshots do not carry them (a node counts from its
//! start, or from the snapshot it last installed, as a RabbitMQ node counts
//! from its start), and they never make two brokers unequal — two replicas
//! that applied the same commands from different starting points hold the
//! same broker with different counts.

/// Counts of one queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueStats {
    /// Messages that entered the queue (published, or dead-lettered to it).
    pub publish: u64,
    /// Deliveries to consumers that ack.
    pub deliver: u64,
    pub deliver_no_ack: u64,
    /// `basic.get` answered with a message, acked later or not.
    pub get: u64,
    pub get_no_ack: u64,
    /// Deliveries and gets of messages delivered before.
    pub redeliver: u64,
    pub ack: u64,
}

impl QueueStats {
    /// `deliver_get`: every way a message left the queue for a client.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    /// The sum of two counts, field by field.
    #[must_use]
    pub fn plus(self, other: QueueStats) -> QueueStats {
        QueueStats {
            publish: self.publish + other.publish,
            deliver: self.deliver + other.deliver,
            deliver_no_ack: self.deliver_no_ack + other.deliver_no_ack,
            get: self.get + other.get,
            get_no_ack: self.get_no_ack + other.get_no_ack,
            redeliver: self.redeliver + other.redeliver,
            ack: self.ack + other.ack,
        }
    }
}

/// Statistics are never part of a broker's equality.
impl PartialEq for QueueStats {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Counts of the whole broker beyond its queues'.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerStats {
    /// Messages published (by clients; dead letters are not counted here).
    pub publish: u64,
    /// Published messages that reached no queue and were dropped.
    pub drop_unroutable: u64,
    /// Mandatory messages that reached no queue and were returned.
    pub return_unroutable: u64,
}

impl PartialEq for BrokerStats {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Counts of one exchange, as RabbitMQ's `publish_in` / `publish_out`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExchangeStats {
    /// Messages published to it (by clients).
    pub publish_in: u64,
    /// Of those, the ones it routed to at least one queue.
    pub publish_out: u64,
}

impl PartialEq for ExchangeStats {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
