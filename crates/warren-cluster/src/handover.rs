//! A leader that is stopping hands its leadership to another voter before
//! it goes (issue 14, ADR 0035), so that a rolling restart costs its
//! clients a hand-over instead of an election timeout.
//!
//! openraft 0.9 has no leadership transfer. It has what one needs:
//!
//! 1. A leader refuses every vote within a lease of its election (its vote
//!    is stamped then and not renewed by heartbeats): in a cluster of three
//!    a leader elected less than `election_timeout_max` ago waits until
//!    then, its writes going on meanwhile ([`LeadingSince`]).
//! 2. It holds its writes ([`WriteHold`]): its proposer keeps new batches,
//!    [`crate::Node::write_forwarded`] keeps forwarded ones, the failure
//!    detector its verdicts, and no membership change starts, so its log
//!    stops growing; then it commits an empty batch, which openraft
//!    appends after every write it took before.
//! 3. It waits until a voter's replicated log reaches that batch, and asks
//!    such voters in turn to stand for election now
//!    ([`crate::Peers::stand_for_election`]). The candidate's log is as
//!    long as the leader's, so the leader grants its vote and steps down.
//!    In a cluster of three that vote and the candidate's own are a
//!    majority; in a larger one the leader first stops its heartbeats for
//!    a lease, so that the other followers' leases run out and they vote
//!    too.
//! 4. Once another leader is known the hold ends: the held batches go to
//!    the new leader like any follower's.
//!
//! Every step is bounded; a hand-over that does not finish in time ends the
//! hold, and the node stops as it did before (its followers elect a leader
//! when its heartbeats stop).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::{Raft, RaftMetrics, ServerState};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use warren_core::Batch;

use crate::member::Member;
use crate::peers::Peers;
use crate::type_config::{Proposal, TypeConfig};

/// The gate every write of this node passes while it checks that this
/// node leads and hands the entry to openraft. A hand-over closes it: it
/// waits for the writes between check and hand-off, and holds new ones
/// back until it is done (then they find this node a follower).
#[derive(Debug, Default)]
pub(crate) struct WriteHold(RwLock<()>);

impl WriteHold {
    pub(crate) fn new() -> Arc<WriteHold> {
        Arc::new(WriteHold::default())
    }

    /// Held from the "do I lead?" check until openraft has the entry
    /// (`client_write_ff` returned); never across the wait for its commit.
    pub(crate) async fn append(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().await
    }

    async fn hold(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().await
    }
}

/// Since when this node leads, in which term: a leader grants no vote
/// until it has led for a lease (openraft stamps its vote when it is
/// elected and not after), so a hand-over waits that long.
#[derive(Debug, Default)]
pub(crate) struct LeadingSince(Mutex<Option<(u64, Instant)>>);

impl LeadingSince {
    /// Records, from openraft's server metrics (which change only with the
    /// vote, the state, the leader or the membership), when this node
    /// became leader in each term it led. The instant is at or after the
    /// one openraft stamped on its vote.
    pub(crate) fn spawn(raft: &Raft<TypeConfig>, node_id: u64) -> (Arc<LeadingSince>, JoinHandle<()>) {
        let since = Arc::new(LeadingSince::default());
        let mut server = raft.server_metrics();
        let record = since.clone();
        let task = tokio::spawn(async move {
            loop {
                let term = {
                    let metrics = server.borrow_and_update();
                    (metrics.state == ServerState::Leader && metrics.current_leader == Some(node_id))
                        .then_some(metrics.vote.leader_id().term)
                };
                if let Some(term) = term {
                    let mut led = record.0.lock().unwrap_or_else(PoisonError::into_inner);
                    if led.is_none_or(|(led_term, _)| led_term != term) {
                        *led = Some((term, Instant::now()));
                    }
                }
                if server.changed().await.is_err() {
                    return;
                }
            }
        });
        (since, task)
    }

    /// When this node became leader in `term`, if it did and it was seen.
    fn in_term(&self, term: u64) -> Option<Instant> {
        let led = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        led.filter(|(led_term, _)| *led_term == term).map(|(_, since)| since)
    }
}

/// How [`hand_over`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandOver {
    /// This node was not the leader: nothing to hand over.
    NotLeader,
    /// This node is the only voter: no one to hand over to.
    NoOtherVoter,
    /// Node `0` leads now.
    HandedTo(u64),
    /// Not done within the limit; this node may still lead.
    Failed(String),
}

/// What [`hand_over`] works with.
pub(crate) struct HandOverCtx<'a> {
    pub(crate) node_id: u64,
    pub(crate) raft: &'a Raft<TypeConfig>,
    pub(crate) peers: &'a dyn Peers,
    pub(crate) hold: &'a Arc<WriteHold>,
    pub(crate) leading_since: &'a LeadingSince,
    pub(crate) clock: &'a crate::clock::LeaderClock,
    /// One membership change at a time ([`crate::Node::add_voter`],
    /// [`crate::Node::remove_node`]): held during the hand-over.
    pub(crate) membership_changes: &'a tokio::sync::Semaphore,
    /// openraft's leader lease: `election_timeout_max_ms`.
    pub(crate) lease: Duration,
}

/// Hands this node's leadership to a voter that holds its whole log, within
/// `limit`. See the module's documentation.
pub(crate) async fn hand_over(ctx: HandOverCtx<'_>, limit: Duration) -> HandOver {
    let deadline = Instant::now() + limit;
    let (voters, term) = {
        let metrics = ctx.raft.metrics();
        let metrics = metrics.borrow();
        if !(metrics.state == ServerState::Leader && metrics.current_leader == Some(ctx.node_id)) {
            return HandOver::NotLeader;
        }
        (
            metrics.membership_config.membership().voter_ids().count(),
            metrics.current_term,
        )
    };
    if voters < 2 {
        return HandOver::NoOtherVoter;
    }
    if voters <= 3 {
        // This leader's own lease: it votes for no one within a lease of
        // its election (a full lease from now if that was not seen). Waited
        // out before the hold, while writes still go on.
        let led_since = ctx.leading_since.in_term(term).unwrap_or_else(Instant::now);
        tokio::time::sleep_until((led_since + ctx.lease + LEASE_MARGIN).min(deadline)).await;
    }
    // No membership change meanwhile: openraft appends its entries itself,
    // past the gate (and a joint change's second one after the first).
    let Ok(_no_membership_change) = tokio::time::timeout_at(deadline, ctx.membership_changes.acquire()).await else {
        return HandOver::Failed(format!("a membership change went on for {limit:?}"));
    };
    let _hold = ctx.hold.hold().await;
    let held_from = Instant::now();
    // An empty batch behind every write handed to openraft before the
    // hold (its request queue keeps their order): once a voter has it, it
    // has them all.
    let barrier = Proposal {
        tag: None,
        batch: Batch {
            now_ms: ctx.clock.stamp(),
            requests: Vec::new(),
        },
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let last = match committed(ctx.raft.client_write_ff(barrier).await, remaining).await {
        Ok(index) => index,
        Err(NotCommitted::NotLeader { .. }) => return HandOver::NotLeader,
        Err(NotCommitted::Failed(reason)) => {
            return HandOver::Failed(format!("the empty batch before the hand-over: {reason}"))
        }
    };
    // (Past the leader's last index too, should anything have been
    // appended after the empty batch.)
    let whole_log = |m: &RaftMetrics<u64, Member>| m.last_log_index.unwrap_or(0).max(last);
    let caught_up = ctx
        .raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(
            |m| m.state != ServerState::Leader || !successors(m, ctx.node_id, whole_log(m)).is_empty(),
            "a voter that holds the leader's whole log",
        )
        .await;
    let Ok(metrics) = caught_up else {
        return HandOver::Failed(format!("no voter had this leader's whole log within {limit:?}"));
    };
    let successors = successors(&metrics, ctx.node_id, whole_log(&metrics));
    if successors.is_empty() {
        return match metrics.current_leader {
            Some(leader) if leader != ctx.node_id => HandOver::HandedTo(leader),
            _ => HandOver::Failed("this node stopped leading before it could hand over".to_owned()),
        };
    }
    let _quiet = (voters > 3).then(|| {
        // The candidate's vote and this leader's are no majority: the other
        // followers must hear nothing for a lease before they vote.
        ctx.raft.runtime_config().heartbeat(false);
        Quiet(ctx.raft)
    });
    if voters > 3 {
        tokio::time::sleep_until((Instant::now() + ctx.lease + LEASE_MARGIN).min(deadline)).await;
    }
    let outcome = ask_in_turn(&ctx, &successors, term, deadline).await;
    match &outcome {
        HandOver::HandedTo(leader) => {
            tracing::info!(node = ctx.node_id, leader, held = ?held_from.elapsed(), "leadership handed over");
        }
        HandOver::Failed(reason) => tracing::warn!(node = ctx.node_id, %reason, "leadership not handed over"),
        HandOver::NotLeader | HandOver::NoOtherVoter => {}
    }
    outcome
}

/// Asks each of `successors` in turn to stand for election until one does,
/// then waits for another leader to be known.
async fn ask_in_turn(ctx: &HandOverCtx<'_>, successors: &[(u64, String)], term: u64, deadline: Instant) -> HandOver {
    let mut refusals = Vec::new();
    for (target, addr) in successors {
        match tokio::time::timeout_at(deadline, ctx.peers.stand_for_election(addr, ctx.node_id, term)).await {
            Err(_) => refusals.push(format!("node {target} did not answer in time")),
            Ok(Err(e)) => refusals.push(format!("node {target} did not stand for election: {e}")),
            Ok(Ok(())) => {
                let other_leader = ctx
                    .raft
                    .wait(Some(deadline.saturating_duration_since(Instant::now())))
                    .metrics(
                        |m| m.current_leader.is_some_and(|leader| leader != ctx.node_id),
                        "another leader",
                    )
                    .await;
                return match other_leader {
                    Ok(metrics) => HandOver::HandedTo(metrics.current_leader.unwrap_or(*target)),
                    Err(e) => {
                        let metrics = ctx.raft.metrics().borrow().clone();
                        HandOver::Failed(format!(
                            "node {target} stood for election but no other leader was known in time \
                             ({e}; now {:?} in term {}, leader {:?})",
                            metrics.state, metrics.current_term, metrics.current_leader
                        ))
                    }
                };
            }
        }
    }
    HandOver::Failed(refusals.join("; "))
}

/// Turns this node's heartbeats back on when dropped, however the
/// hand-over ended (even if its caller stopped waiting for it).
struct Quiet<'a>(&'a Raft<TypeConfig>);

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

/// Past the lease, before asking: every follower's lease, started by the
/// last heartbeat, must have run out.
const LEASE_MARGIN: Duration = Duration::from_millis(30);

/// The voters other than `me` whose replicated log reaches index `last`,
/// with their cluster addresses, lowest id first.
fn successors(metrics: &RaftMetrics<u64, Member>, me: u64, last: u64) -> Vec<(u64, String)> {
    let Some(replication) = metrics.replication.as_ref() else {
        return Vec::new();
    };
    let membership = metrics.membership_config.membership();
    membership
        .voter_ids()
        .filter(|id| *id != me)
        .filter(|id| {
            replication
                .get(id)
                .and_then(Option::as_ref)
                .is_some_and(|matched| matched.index >= last)
        })
        .filter_map(|id| membership.get_node(&id).map(|node| (id, node.addr.clone())))
        .collect()
}

/// Why a write handed to openraft did not commit.
#[derive(Debug)]
pub(crate) enum NotCommitted {
    /// This node does not lead: nothing was appended. The leader it knows of.
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// Anything else: the entry may or may not commit.
    Failed(String),
}

/// Waits up to `limit` for the commit of the entry `client_write_ff`
/// handed to openraft (`responded` is what it returned); the entry's index.
pub(crate) async fn committed<R, E>(
    responded: Result<R, openraft::error::Fatal<u64>>,
    limit: Duration,
) -> Result<u64, NotCommitted>
where
    R: std::future::Future<
        Output = Result<Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<u64, Member>>, E>,
    >,
{
    let responded = responded.map_err(|fatal| NotCommitted::Failed(fatal.to_string()))?;
    match tokio::time::timeout(limit, responded).await {
        Ok(Ok(Ok(response))) => Ok(response.log_id.index),
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(forward)))) => Err(NotCommitted::NotLeader {
            leader_id: forward.leader_id,
            leader_addr: forward.leader_node.map(|n| n.addr),
        }),
        Ok(Ok(Err(e))) => Err(NotCommitted::Failed(e.to_string())),
        Ok(Err(_)) => Err(NotCommitted::Failed(
            "the Raft node stopped before the batch was committed".to_owned(),
        )),
        Err(_) => Err(NotCommitted::Failed("the batch was not committed in time".to_owned())),
    }
}
