//! The memory high-watermark (RabbitMQ's memory alarm, ADR 0009).
//!
//! Warren keeps queued messages in memory, so a backlog that consumers do
//! not drain grows the process until the kernel kills it. While this node's
//! estimate of the memory its ready messages hold is above
//! `queued_bytes_high_watermark`, the alarm is on: every connection that has
//! published stops reading from its socket (TCP pushes back on the
//! publisher) and, if the client asked for the `connection.blocked`
//! capability, is told `connection.blocked`; when the estimate drops to
//! [`CLEAR_PERCENT`] % of the watermark they are told `connection.unblocked`
//! and read again (the gap keeps a load at the watermark from flipping the
//! alarm every check).
//! Connections that only consume are never blocked, so consumers drain the
//! backlog that ends the alarm.
//!
//! The estimate is computed from the replicated broker state, not from the
//! process's RSS: memory the allocator keeps after a drain would hold an
//! RSS-based alarm on forever.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};
use warren_cluster::Node;

/// Bytes counted per ready message on top of its body: properties, routing
/// key, queue entry and message id (an estimate; see ADR 0009).
pub const PER_MESSAGE_OVERHEAD: u64 = 512;

/// How often the backlog is measured.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The reason `connection.blocked` carries (RabbitMQ's words).
pub const BLOCKED_REASON: &str = "low on memory";

/// Estimated bytes held by `messages` ready messages with `body_bytes` of
/// bodies in all.
pub fn backlog_estimate(messages: u64, body_bytes: u64) -> u64 {
    body_bytes.saturating_add(messages.saturating_mul(PER_MESSAGE_OVERHEAD))
}

/// The alarm clears once the estimate is back to this share of the
/// watermark.
pub const CLEAR_PERCENT: u64 = 90;

/// Whether the alarm is on after a check that found `estimate` bytes, given
/// whether it was `on` before: set above `watermark`, cleared at
/// [`CLEAR_PERCENT`] % of it (0: no watermark, never on).
pub fn alarm_on(on: bool, estimate: u64, watermark: u64) -> bool {
    if watermark == 0 {
        return false;
    }
    if on {
        estimate > watermark / 100 * CLEAR_PERCENT
    } else {
        estimate > watermark
    }
}

/// Measures this node's backlog and sets `alarm` accordingly; logs each
/// change as RabbitMQ does.
pub(crate) fn check(node: &Node, watermark: u64, alarm: &watch::Sender<bool>) {
    let (messages, body_bytes) = node.read(warren_core::Broker::ready_backlog);
    let estimate = backlog_estimate(messages, body_bytes);
    alarm.send_if_modified(|state| {
        let on = alarm_on(*state, estimate, watermark);
        if *state == on {
            return false;
        }
        if on {
            warn!(
                estimate,
                watermark,
                messages,
                "memory alarm set: ready messages hold more than the high-watermark; blocking publishers"
            );
        } else {
            info!(
                estimate,
                watermark, messages, "memory alarm cleared: publishers may go on"
            );
        }
        *state = on;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_bodies_and_a_fixed_overhead_per_message() {
        assert_eq!(backlog_estimate(0, 0), 0);
        assert_eq!(backlog_estimate(2, 1000), 1000 + 2 * PER_MESSAGE_OVERHEAD);
        assert_eq!(backlog_estimate(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn the_alarm_sets_above_the_watermark_and_clears_at_ninety_percent() {
        assert!(!alarm_on(false, 1 << 40, 0), "0 means no watermark");
        assert!(!alarm_on(true, 1 << 40, 0));
        assert!(!alarm_on(false, 1000, 1000), "at the watermark: not set");
        assert!(alarm_on(false, 1001, 1000));
        assert!(alarm_on(true, 950, 1000), "between 90 % and the watermark: stays set");
        assert!(!alarm_on(false, 950, 1000), "... and stays clear");
        assert!(alarm_on(true, 901, 1000));
        assert!(!alarm_on(true, 900, 1000), "at 90 %: cleared");
    }
}
