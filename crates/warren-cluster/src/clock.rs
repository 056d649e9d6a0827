//! The one place the cluster layer reads the wall clock: the proposer
//! stamps it into every batch (apply itself never reads time) and the tick
//! driver compares it with the next expiry.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before it,
/// `u64::MAX` past the year 584 million.
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
