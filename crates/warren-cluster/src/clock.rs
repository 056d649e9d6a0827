//! The one place the cluster layer reads the wall clock: the proposer
//! stamps it into every batch (apply itself never reads time) and the tick
//! driver compares it with the next expiry.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The time a node stamps into the batches it writes to the log as
/// leader: its wall clock, never below the log's time as this node applied
/// it. Batches a
/// follower forwards are stamped again with it, so one clock — the
/// leader's — decides when TTLs and `x-expires` fire (issue 13).
///
/// Everything of the cluster layer that reads time for the log (batches,
/// ticks, `NodeDown` verdicts) reads it here, so a fault test can set this
/// node's clock off by an offset ([`crate::Node::skew_clock`]).
///
/// The floor under its stamps is shared with the node's state machine,
/// which raises it to the time of every batch it applies: a node that
/// becomes leader with a clock behind the previous leader's goes on from
/// the log's time instead of taking it back (messages it stamped would
/// otherwise carry expiries already past by the others' clocks), and one
/// whose clock was ahead and was put right while it followed stamps the
/// log's time, not the future it once saw.
///
/// Only applied batches raise it, not the stamps themselves: a node that
/// believes it still leads after it was deposed (cut off, then healed)
/// stamps batches that never reach the log; with its clock ahead, those
/// stamps raised the floor, and once it led again it stamped that future
/// and expired every queued message with a TTL. The price: while a
/// leader's clock goes back, its stamps can fall behind those of its
/// batches still in flight (not yet applied) — the log's time goes back by
/// at most that window, milliseconds, never by the clock's jump.
#[derive(Debug, Default)]
pub(crate) struct LeaderClock {
    /// The highest batch time this node applied.
    floor_ms: Arc<AtomicU64>,
    /// Added to the wall clock: 0 but in fault tests.
    offset_ms: AtomicI64,
}

impl LeaderClock {
    /// A clock whose floor is `floor_ms` (the state machine's).
    pub(crate) fn with_floor(floor_ms: Arc<AtomicU64>) -> Self {
        Self {
            floor_ms,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// The time for a batch this node writes as leader: its clock, never
    /// below the time of a batch it applied. Leaves the floor as it is.
    pub(crate) fn stamp(&self) -> u64 {
        self.log_now_ms()
    }

    /// The time the log would get now: the clock, or the floor while the
    /// clock is behind it (the tick driver compares expiries with this).
    pub(crate) fn log_now_ms(&self) -> u64 {
        self.now_ms().max(self.floor_ms.load(Ordering::Relaxed))
    }

    /// This node's clock, offset included.
    pub(crate) fn now_ms(&self) -> u64 {
        wall_clock_ms().saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch; 0 if the clock is before it,
/// `u64::MAX` past the year 584 million.
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_behind_the_applied_log_stamps_the_logs_time() {
        let floor = Arc::new(AtomicU64::new(0));
        let clock = LeaderClock::with_floor(floor.clone());
        let log_time = wall_clock_ms() + 60_000;
        floor.fetch_max(log_time, Ordering::Relaxed); // what apply does
        assert_eq!(clock.stamp(), log_time, "not a minute back");
    }

    #[test]
    fn an_offset_moves_the_clock_and_stamps_never_go_below_the_applied_log() {
        let floor = Arc::new(AtomicU64::new(0));
        let clock = LeaderClock::with_floor(floor.clone());
        let ahead = 10 * 60 * 1000;
        clock.set_offset_ms(ahead);
        let skewed = clock.stamp();
        assert!(skewed >= wall_clock_ms() + 9 * 60 * 1000, "{skewed}");
        floor.fetch_max(skewed, Ordering::Relaxed); // the batch was applied
        clock.set_offset_ms(-ahead);
        assert!(clock.now_ms() < wall_clock_ms());
        assert!(clock.stamp() >= skewed, "a stamp went below the applied log");
    }

    #[test]
    fn a_stamp_that_never_reached_the_log_leaves_the_floor_where_it_was() {
        let floor = Arc::new(AtomicU64::new(0));
        let clock = LeaderClock::with_floor(floor.clone());
        clock.set_offset_ms(10 * 60 * 1000);
        let _ = clock.stamp(); // a deposed leader's batch, never appended
        clock.set_offset_ms(0);
        assert!(clock.stamp() < wall_clock_ms() + 60_000, "the future stuck");
        assert_eq!(floor.load(Ordering::Relaxed), 0);
    }
}
