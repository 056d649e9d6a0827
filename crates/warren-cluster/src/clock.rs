//! The one place the cluster layer reads the wall clock: the proposer
//! stamps it into every batch (apply itself never reads time) and the tick
//! driver compares it with the next expiry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The time a node stamps into the batches it writes to the log as
/// leader: its wall clock, never below a time it stamped before. Batches a
/// follower forwards are stamped again with it, so one clock — the
/// leader's — decides when TTLs and `x-expires` fire (issue 13).
#[derive(Debug, Default)]
pub(crate) struct LeaderClock {
    last_ms: AtomicU64,
}

impl LeaderClock {
    pub(crate) fn stamp(&self) -> u64 {
        let now = wall_clock_ms();
        self.last_ms.fetch_max(now, Ordering::Relaxed).max(now)
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
