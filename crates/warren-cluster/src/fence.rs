//! Whether this node may hand deliveries to its clients now (ADR 0028).
//!
//! A node that was paused, or cut off from the cluster, for longer than
//! `node_down_after_ms` is declared down by the others: the messages its
//! consumers held go back to their queues and on to other consumers. The
//! node itself learns of it only once it hears from the leader again and
//! applies that entry; before, it would still write what it held (and
//! what log entries from before its demise assign it) to its clients:
//! the same message delivered twice, the second time without the
//! redelivered flag. `warren chaos` found it (a paused node, 198 such
//! deliveries in one run).
//!
//! So a node holds its deliveries back while it has not heard from a
//! leader for half of `node_down_after_ms` (it may be declared down), and
//! once contact resumes after such a gap, until it has applied what the
//! leader had committed in the first [`SETTLE_MS`] after it: by then any
//! verdict on it is applied and has closed the connections concerned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// After contact resumes, appends arriving within this time still raise
/// the index that must be applied before deliveries go out again: a
/// verdict proposed just as the node came back commits within it.
pub const SETTLE_MS: u64 = 500;

/// The times and index behind [`DeliveryFence::fenced`].
#[derive(Debug)]
pub struct DeliveryFence {
    epoch: Instant,
    /// Without contact for longer than this, deliveries are held.
    fence_after_ms: u64,
    /// Last contact with a leader: an append accepted as follower, or a
    /// majority's answer as leader (ms since `epoch`).
    last_contact_ms: AtomicU64,
    /// When contact last resumed after a gap.
    resumed_ms: AtomicU64,
    /// One more than the index to apply before deliveries go out (0: none).
    target: AtomicU64,
}

impl DeliveryFence {
    /// A fence for a node declared down after `node_down_after_ms`.
    pub fn new(node_down_after_ms: u64) -> Self {
        Self {
            epoch: Instant::now(),
            fence_after_ms: (node_down_after_ms / 2).max(1),
            last_contact_ms: AtomicU64::new(0),
            resumed_ms: AtomicU64::new(0),
            target: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A leader's append was accepted; it had committed `leader_commit`.
    pub fn heard_from_leader(&self, leader_commit: Option<u64>) {
        self.contact_at(self.now_ms(), leader_commit);
    }

    fn contact_at(&self, now: u64, leader_commit: Option<u64>) {
        // `resumed_ms` before `last_contact_ms`: a reader in between must
        // not see "in touch" without "settling".
        let previous = self.last_contact_ms.load(Ordering::Acquire);
        if now.saturating_sub(previous) > self.fence_after_ms {
            self.resumed_ms.store(now, Ordering::Release);
        }
        self.last_contact_ms.store(now, Ordering::Release);
        if now.saturating_sub(self.resumed_ms.load(Ordering::Acquire)) <= SETTLE_MS {
            if let Some(commit) = leader_commit {
                self.target.fetch_max(commit.saturating_add(1), Ordering::AcqRel);
            }
        }
    }

    /// This node leads and a majority answered it recently.
    pub fn in_touch_as_leader(&self) {
        self.touch_at(self.now_ms());
    }

    fn touch_at(&self, now: u64) {
        self.last_contact_ms.store(now, Ordering::Release);
    }

    /// Deliveries must wait: no contact for a while, or contact resumed
    /// and `applied` has not reached what the leader had committed then.
    pub fn fenced(&self, applied: Option<u64>) -> bool {
        self.fenced_at(self.now_ms(), applied)
    }

    fn fenced_at(&self, now: u64, applied: Option<u64>) -> bool {
        let silent = now.saturating_sub(self.last_contact_ms.load(Ordering::Acquire)) > self.fence_after_ms;
        let settling = now.saturating_sub(self.resumed_ms.load(Ordering::Acquire)) <= SETTLE_MS;
        let behind = applied.map_or(0, |a| a.saturating_add(1)) < self.target.load(Ordering::Acquire);
        silent || settling || behind
    }

    /// Milliseconds since the last contact with a leader.
    pub fn silent_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.last_contact_ms.load(Ordering::Acquire))
    }

    /// How long deliveries wait without contact (for the docs and tests).
    pub fn fence_after_ms(&self) -> u64 {
        self.fence_after_ms
    }
}

#[cfg(test)]
mod tests {
    use super::{DeliveryFence, SETTLE_MS};

    #[test]
    fn steady_contact_lets_deliveries_out() {
        let fence = DeliveryFence::new(3000);
        assert!(!fence.fenced_at(1500, None), "a node just started is not silent yet");
        assert!(fence.fenced_at(1501, None), "one that heard nothing for 1.5 s is");
        // A first contact after that counts as resuming: it settles first.
        fence.contact_at(2000, Some(5));
        assert!(fence.fenced_at(2000 + SETTLE_MS, Some(5)));
        for t in (2100..=5000).step_by(100) {
            fence.contact_at(t, Some(5));
        }
        assert!(!fence.fenced_at(5000, Some(5)));
        assert!(
            !fence.fenced_at(5000 + 1500, Some(5)),
            "1.5 s of silence is still in touch"
        );
        assert!(fence.fenced_at(5000 + 1501, Some(5)), "then it may be declared down");
    }

    #[test]
    fn after_a_gap_deliveries_wait_until_what_was_committed_is_applied() {
        let fence = DeliveryFence::new(3000);
        for t in (0..=2000).step_by(100) {
            fence.contact_at(t, Some(10));
        }
        assert!(!fence.fenced_at(2000, Some(10)));
        // Paused for five seconds: the others declared it down at index 42,
        // committed at 43 by the time it is back.
        assert!(fence.fenced_at(7000, Some(10)));
        fence.contact_at(7000, Some(40));
        fence.contact_at(7100, Some(43));
        assert!(fence.fenced_at(7000 + SETTLE_MS + 1, Some(42)), "43 not applied");
        fence.contact_at(7000 + SETTLE_MS + 50, Some(60)); // after the settling: no longer raises the bar
        assert!(!fence.fenced_at(7000 + SETTLE_MS + 60, Some(43)));
    }

    #[test]
    fn a_leader_in_touch_is_never_silent() {
        let fence = DeliveryFence::new(3000);
        fence.touch_at(10_000);
        assert!(!fence.fenced_at(10_000 + 1500, None));
        assert!(fence.fenced_at(10_000 + 1501, None), "no majority for too long");
        assert_eq!(fence.fence_after_ms(), 1500);
        assert_eq!(DeliveryFence::new(0).fence_after_ms(), 1);
    }
}
