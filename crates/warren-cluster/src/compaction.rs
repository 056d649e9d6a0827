//! Snapshots by log size, not only by entry count.
//!
//! openraft snapshots every `snapshot_every` entries, but a Warren entry is a
//! batch of up to `max_batch` commands: 10,000 entries of publishes can hold
//! gigabytes of message bodies, and the log (on disk, and in sled's caches)
//! keeps them all until the snapshot lets it purge. Measured before this
//! trigger (2026-11-29): a single node that carried 1 M transient 1 KiB
//! messages — every one consumed — held 1.2 GiB RSS and 3 GiB on disk, with
//! no snapshot built yet.
//!
//! So a snapshot is also triggered once the log has grown by
//! `snapshot_log_bytes`, or by the size of the last snapshot if that is
//! larger: the log behind the snapshot is then purged, and building
//! snapshots costs at most about as many bytes as the log itself takes in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use tokio::task::JoinHandle;

use crate::state_machine::Shared;
use crate::type_config::TypeConfig;

/// How often the log's growth is checked.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Bytes the log may grow by before a snapshot is asked for: `min_bytes`,
/// or the last snapshot's size if that is larger.
pub(crate) fn growth_budget(min_bytes: u64, last_snapshot_bytes: u64) -> u64 {
    min_bytes.max(last_snapshot_bytes).max(1)
}

/// Starts the task that asks openraft for a snapshot whenever `appended`
/// (bytes appended to the log) has grown by [`growth_budget`] since the last
/// request. It ends when Raft stops.
pub(crate) fn spawn(
    raft: Raft<TypeConfig>,
    appended: Arc<AtomicU64>,
    shared: Arc<Shared>,
    min_bytes: u64,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut mark = appended.load(Ordering::Relaxed);
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            check.tick().await;
            if raft.metrics().borrow().running_state.is_err() {
                return;
            }
            let now = appended.load(Ordering::Relaxed);
            let budget = growth_budget(min_bytes, shared.snapshot_bytes.load(Ordering::Relaxed));
            if now.saturating_sub(mark) < budget {
                continue;
            }
            tracing::debug!(
                grown = now - mark,
                budget,
                "log grew past its budget: asking for a snapshot"
            );
            mark = now;
            // Ignored by openraft while a snapshot is being built.
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::growth_budget;

    #[test]
    fn the_budget_is_the_minimum_or_the_last_snapshot_whichever_is_larger() {
        assert_eq!(growth_budget(64, 0), 64);
        assert_eq!(growth_budget(64, 1000), 1000);
        assert_eq!(growth_budget(0, 0), 1, "never zero");
    }
}
