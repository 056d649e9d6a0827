//! Counters of the node's Raft work, for Prometheus (issue 10, item 4):
//! the commit index (openraft 0.9's metrics do not carry it; the log store
//! sees it in `save_committed`), the commit latency of this node's
//! batches, the proposer's batch sizes and forwards, and the time spent
//! applying entries. Relaxed atomics: each is bumped once per batch or
//! entry, never per message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The counters, shared by the log store, the proposer and the state
/// machine of one node.
#[derive(Debug, Default)]
pub(crate) struct RaftCounters {
    /// The committed index + 1 (0: nothing committed yet).
    committed: AtomicU64,
    batches_proposed: AtomicU64,
    requests_proposed: AtomicU64,
    batches_forwarded: AtomicU64,
    requests_forwarded: AtomicU64,
    commits_timed: AtomicU64,
    commit_micros: AtomicU64,
    /// A moving average of the commit latency (µs; each new batch weighs
    /// 1/8): RabbitMQ's `commit_latency` gauge.
    recent_commit_micros: AtomicU64,
    entries_applied: AtomicU64,
    apply_micros: AtomicU64,
}

/// [`RaftCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftCounts {
    /// The highest log index this node knows to be committed.
    pub committed: Option<u64>,
    /// Batches this node's proposer wrote to the log as leader.
    pub batches_proposed: u64,
    /// Requests in those batches.
    pub requests_proposed: u64,
    /// Batches this node's proposer sent to the leader as a follower.
    pub batches_forwarded: u64,
    /// Requests in those batches.
    pub requests_forwarded: u64,
    /// Batches whose commit was timed (proposal to applied, or a forward's
    /// round trip), and the sum of those times.
    pub commits_timed: u64,
    pub commit_micros: u64,
    /// The moving average of the last batches' commit latency.
    pub recent_commit_micros: u64,
    /// Log entries applied to the state machine, and the time it took.
    pub entries_applied: u64,
    pub apply_micros: u64,
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

impl RaftCounters {
    pub(crate) fn committed(&self, index: u64) {
        self.committed.fetch_max(index.saturating_add(1), Ordering::Relaxed);
    }

    /// A batch of `requests` written to the log (`forwarded`: sent to the
    /// leader instead).
    pub(crate) fn proposed(&self, requests: usize, forwarded: bool) {
        let (batches, counted) = if forwarded {
            (&self.batches_forwarded, &self.requests_forwarded)
        } else {
            (&self.batches_proposed, &self.requests_proposed)
        };
        batches.fetch_add(1, Ordering::Relaxed);
        counted.fetch_add(requests as u64, Ordering::Relaxed);
    }

    /// A batch committed (and applied) `elapsed` after it was proposed.
    pub(crate) fn commit_took(&self, elapsed: Duration) {
        let took = micros(elapsed);
        self.commits_timed.fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add(took, Ordering::Relaxed);
        // A lost update between two concurrent commits only skews the
        // average a little; no lock for a gauge.
        let old = self.recent_commit_micros.load(Ordering::Relaxed);
        let new = if old == 0 { took } else { old - old / 8 + took / 8 };
        self.recent_commit_micros.store(new, Ordering::Relaxed);
    }

    pub(crate) fn applied(&self, entries: u64, elapsed: Duration) {
        self.entries_applied.fetch_add(entries, Ordering::Relaxed);
        self.apply_micros.fetch_add(micros(elapsed), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RaftCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RaftCounts {
            committed: read(&self.committed).checked_sub(1),
            batches_proposed: read(&self.batches_proposed),
            requests_proposed: read(&self.requests_proposed),
            batches_forwarded: read(&self.batches_forwarded),
            requests_forwarded: read(&self.requests_forwarded),
            commits_timed: read(&self.commits_timed),
            commit_micros: read(&self.commit_micros),
            recent_commit_micros: read(&self.recent_commit_micros),
            entries_applied: read(&self.entries_applied),
            apply_micros: read(&self.apply_micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_committed_reads_as_none_and_index_zero_as_some() {
        let counters = RaftCounters::default();
        assert_eq!(counters.snapshot().committed, None);
        counters.committed(0);
        assert_eq!(counters.snapshot().committed, Some(0));
        counters.committed(9);
        counters.committed(4);
        assert_eq!(
            counters.snapshot().committed,
            Some(9),
            "the commit index never goes back"
        );
    }

    #[test]
    fn proposals_and_forwards_are_counted_apart() {
        let counters = RaftCounters::default();
        counters.proposed(3, false);
        counters.proposed(5, true);
        counters.proposed(2, false);
        let counts = counters.snapshot();
        assert_eq!((counts.batches_proposed, counts.requests_proposed), (2, 5));
        assert_eq!((counts.batches_forwarded, counts.requests_forwarded), (1, 5));
    }

    #[test]
    fn the_recent_commit_latency_follows_the_newest_batches() {
        let counters = RaftCounters::default();
        counters.commit_took(Duration::from_micros(800));
        assert_eq!(counters.snapshot().recent_commit_micros, 800);
        for _ in 0..100 {
            counters.commit_took(Duration::from_micros(8_000));
        }
        let counts = counters.snapshot();
        assert!(counts.recent_commit_micros > 7_000, "{counts:?}");
        assert_eq!(counts.commits_timed, 101);
        assert_eq!(counts.commit_micros, 800 + 100 * 8_000);
    }
}
