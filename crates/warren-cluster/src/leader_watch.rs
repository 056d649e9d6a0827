//! A follower that finds its leader's process gone starts an election at
//! once, instead of waiting out a random election timeout on top of the
//! leader lease (ADR 0029).
//!
//! openraft 0.9 starts an election on a follower only after
//! `election_timeout_max` (the leader lease, during which the other voters
//! also refuse to vote) plus this node's random election timeout have
//! passed without a word from the leader: 0.9-1.2 s with the defaults.
//! `warren chaos` measured a median of 1.11 s from a leader's kill -9 to the
//! next confirm. When the leader's host answers but nothing listens on its
//! cluster port (connection refused: the process died; or its name no
//! longer resolves: its container is gone), nothing is gained by waiting
//! past the lease: this task asks openraft for an election as soon as the
//! lease has run out here, which is when the other followers, who heard the
//! same last heartbeat, will grant their vote.
//!
//! A leader that is merely slow, paused or cut off answers neither way
//! (the probe times out), and the ordinary timer decides, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::{Raft, ServerState};
use tokio::task::JoinHandle;

use crate::fence::DeliveryFence;
use crate::type_config::TypeConfig;

/// How long the probe of the leader's cluster port may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// Past the lease, before asking: the other followers' leases, started by
/// the same heartbeat, must have run out too.
const LEASE_MARGIN_MS: u64 = 30;

/// The leader watch of one node.
pub(crate) struct LeaderWatch {
    pub(crate) node_id: u64,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) fence: std::sync::Arc<DeliveryFence>,
    /// Off while [`crate::Node::allow_elections`] forbids elections: the
    /// watch's election must not bypass that (openraft's switch only
    /// stops its timer, not `trigger().elect()`).
    pub(crate) elections_allowed: std::sync::Arc<AtomicBool>,
    /// Asked whether the leader's process is gone.
    pub(crate) peers: std::sync::Arc<dyn crate::peers::Peers>,
    /// openraft's leader lease: `election_timeout_max_ms`.
    pub(crate) lease_ms: u64,
    pub(crate) heartbeat_ms: u64,
}

/// What the probe of a leader's cluster port found.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Something accepted the connection, or nothing answered in time.
    AliveOrUnknown,
    /// Refused, or the name does not resolve: no leader process there.
    Gone,
}

impl LeaderWatch {
    pub(crate) fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let every = Duration::from_millis((self.heartbeat_ms / 2).clamp(10, 250));
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The (term, leader) an election was asked for already: once each.
        let mut asked: Option<(u64, u64)> = None;
        loop {
            interval.tick().await;
            let (term, leader, addr, rank) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                let is_voter = membership.voter_ids().any(|id| id == self.node_id);
                let voters = membership.voter_ids().count();
                let Some(leader) = metrics.current_leader else {
                    continue;
                };
                if metrics.state != ServerState::Follower || !is_voter || voters < 2 || leader == self.node_id {
                    continue;
                }
                let Some(node) = membership.get_node(&leader) else {
                    continue;
                };
                // Followers ask one after the other, by node id: asking at
                // once, they would split the vote and both wait out a
                // random election timeout again.
                let rank = membership
                    .voter_ids()
                    .filter(|id| *id != leader && *id < self.node_id)
                    .count() as u64;
                (metrics.current_term, leader, node.addr.clone(), rank)
            };
            let stagger_ms = self.heartbeat_ms.max(50);
            let due_ms = self.lease_ms + LEASE_MARGIN_MS + rank * stagger_ms;
            if asked == Some((term, leader))
                || self.fence.silent_ms() < due_ms
                || !self.elections_allowed.load(Ordering::SeqCst)
            {
                continue;
            }
            if !self.peers.process_gone(&addr).await {
                continue;
            }
            if !self.elections_allowed.load(Ordering::SeqCst) {
                continue;
            }
            asked = Some((term, leader));
            tracing::info!(
                node = self.node_id,
                leader,
                term,
                addr,
                "the leader's cluster port is gone and its lease ran out: starting an election"
            );
            if self.raft.trigger().elect().await.is_err() {
                return;
            }
        }
    }
}

/// Whether the TCP probe finds no process at `addr` (`Peers::process_gone`'s
/// default).
pub(crate) async fn port_gone(addr: &str) -> bool {
    probe(addr).await == Probe::Gone
}

/// Connects to `addr` (host:port) once.
async fn probe(addr: &str) -> Probe {
    let resolved = match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host(addr)).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        Ok(Err(_)) => return Probe::Gone,
        Err(_) => return Probe::AliveOrUnknown,
    };
    let Some(target) = resolved else {
        return Probe::Gone;
    };
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Gone,
        _ => Probe::AliveOrUnknown,
    }
}

#[cfg(test)]
mod tests {
    use super::{probe, Probe};

    #[tokio::test]
    async fn a_closed_port_or_an_unknown_name_is_gone_and_a_listener_is_not() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let open = listener.local_addr()?.to_string();
        assert_eq!(probe(&open).await, Probe::AliveOrUnknown);
        drop(listener);
        assert_eq!(probe(&open).await, Probe::Gone, "nothing listens there any more");
        // A name lookup goes to the machine's resolver, which a loaded CI
        // machine once kept past the probe's 100 ms (a timeout is
        // "unknown", rightly): the answer must be Gone once it comes in time.
        let mut unknown_name = Probe::AliveOrUnknown;
        for _ in 0..5 {
            unknown_name = probe("no-such-host.invalid:25672").await;
            if unknown_name == Probe::Gone {
                break;
            }
        }
        assert_eq!(unknown_name, Probe::Gone);
        Ok(())
    }
}
