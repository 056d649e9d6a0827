//! Exactly-once application of proposer batches (the client sessions of
//! Raft, Ongaro's dissertation §6.3).
//!
//! A follower forwards a batch to the leader; when the answer does not come
//! (the leader died, paused, or the network cut the reply) the batch may or
//! may not be in the log. Resending it is only safe if a second copy is not
//! applied again. Every batch carries its proposer's tag (node, run,
//! sequence number), and one proposer run's batches reach the log in
//! increasing sequence order (see `proposer.rs`), so the state machine
//! remembers the highest sequence applied per run and skips any copy at or
//! below it. The table is replicated state: every replica applies the same
//! entries, and snapshots carry it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::type_config::ProposalTag;

/// Proposer runs remembered at most. A run that has applied nothing for
/// this many other runs' batches is long gone (each node start is a run).
const MAX_RUNS: usize = 4096;

/// Highest batch sequence applied per proposer run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sessions {
    /// (node, incarnation) → (highest seq applied, log index where it was).
    runs: BTreeMap<(u64, u64), (u64, u64)>,
}

impl Sessions {
    /// Whether the batch tagged `tag`, at log `index`, is to be applied:
    /// `false` for a copy of a batch already applied (or of an earlier one).
    /// Records it when `true`.
    pub(crate) fn admit(&mut self, tag: &ProposalTag, index: u64) -> bool {
        let run = (tag.node, tag.incarnation);
        if let Some(&(seq, _)) = self.runs.get(&run) {
            if tag.seq <= seq {
                return false;
            }
        }
        self.runs.insert(run, (tag.seq, index));
        if self.runs.len() > MAX_RUNS {
            // Forget the run that applied least recently (deterministic:
            // the same on every replica).
            if let Some(oldest) = self.runs.iter().min_by_key(|(_, &(_, at))| at).map(|(run, _)| *run) {
                self.runs.remove(&oldest);
            }
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(node: u64, incarnation: u64, seq: u64) -> ProposalTag {
        ProposalTag { node, incarnation, seq }
    }

    #[test]
    fn a_second_copy_of_a_batch_is_skipped() {
        let mut sessions = Sessions::default();
        assert!(sessions.admit(&tag(2, 7, 1), 10));
        assert!(!sessions.admit(&tag(2, 7, 1), 11), "the resent copy");
        assert!(sessions.admit(&tag(2, 7, 2), 12));
    }

    #[test]
    fn a_late_copy_of_an_earlier_batch_is_skipped() {
        let mut sessions = Sessions::default();
        assert!(sessions.admit(&tag(2, 7, 5), 10));
        assert!(sessions.admit(&tag(2, 7, 6), 11));
        assert!(!sessions.admit(&tag(2, 7, 5), 12), "a delayed first attempt of batch 5");
    }

    #[test]
    fn runs_and_nodes_are_separate() {
        let mut sessions = Sessions::default();
        assert!(sessions.admit(&tag(2, 7, 5), 10));
        assert!(sessions.admit(&tag(2, 8, 1), 11), "a new run of node 2 starts over");
        assert!(sessions.admit(&tag(3, 7, 1), 12), "another node");
        assert!(!sessions.admit(&tag(2, 7, 5), 13), "the old run is still remembered");
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent_run() {
        let mut sessions = Sessions::default();
        for run in 0..(MAX_RUNS as u64 + 10) {
            assert!(sessions.admit(&tag(1, run, 1), run));
        }
        assert_eq!(sessions.len(), MAX_RUNS);
        assert!(
            !sessions.admit(&tag(1, MAX_RUNS as u64 + 9, 1), 1_000_000),
            "recent runs are kept"
        );
        assert!(sessions.admit(&tag(1, 0, 1), 1_000_001), "the oldest run was forgotten");
    }
}
