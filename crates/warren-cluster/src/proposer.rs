//! The proposer: coalesces waiting requests into one Raft entry (group
//! commit) and keeps a few entries in flight while the next batch fills.
//!
//! On the leader a batch goes straight into openraft. On a follower it is
//! forwarded to the leader ([`Peers::forward`]), one batch at a time: the
//! next batch is sent only once the previous one is committed or failed,
//! so batches reach the log in submission order (replies are matched to
//! requests by order, ADR 0002) while the next batch keeps filling.

use std::sync::Arc;
use std::time::Duration;

use warren_core::staged::StagedPublish;

use openraft::{Raft, ServerState};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use warren_core::{Batch, ChannelId, Command, NodeId, Request};

use crate::effect_sink::EffectSink;
use crate::error::ClusterError;
use crate::handover::NotCommitted;
use crate::peers::{PeerError, Peers};
use crate::tracker::ProposalTracker;
use crate::type_config::{Proposal, TypeConfig};

/// Submits requests to the node's proposer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Proposer {
    tx: mpsc::Sender<Request>,
}

impl Proposer {
    /// Queues `request` for the next batch; waits only while the queue is
    /// full (backpressure).
    ///
    /// The outcome arrives through the node's [`EffectSink`] as an
    /// `Effect::Reply` to the request's origin, like any effect. If the batch
    /// cannot be committed (not leader, shut down, storage error), the
    /// proposer sends `Err(CoreError::Unavailable(reason))` replies instead,
    /// through the same sink: every request with an origin on this node gets
    /// exactly one reply.
    ///
    /// # Errors
    /// [`ClusterError::Closed`] if the proposer's task has stopped (the request
    /// was not queued and no reply will come).
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call has not queued the request.
    pub async fn submit(&self, request: Request) -> Result<(), ClusterError> {
        self.tx.send(request).await.map_err(|_| ClusterError::Closed)
    }
}

/// What the proposer's task needs.
pub(crate) struct ProposerTask {
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) tracker: Arc<ProposalTracker>,
    pub(crate) sink: Arc<dyn EffectSink>,
    pub(crate) peers: Arc<dyn Peers>,
    /// Batch sizes, forwards and commit times (Prometheus).
    pub(crate) counters: Arc<crate::raft_stats::RaftCounters>,
    /// The node's batch time (shared with [`crate::Node::write_forwarded`]).
    pub(crate) clock: Arc<crate::clock::LeaderClock>,
    pub(crate) max_batch: usize,
    /// A batch stops taking requests once their estimated size
    /// ([`request_bytes`]) reaches this (see [`crate::NodeConfig::max_batch_bytes`]).
    pub(crate) max_batch_bytes: u64,
    pub(crate) max_in_flight: usize,
    /// Bound on one forwarded batch (the leader's commit included).
    pub(crate) forward_timeout: Duration,
    /// How long a follower waits for a leader to be known before failing a batch.
    pub(crate) leader_wait: Duration,
    /// Held while this leader hands its leadership over (ADR 0035): no
    /// batch is proposed meanwhile.
    pub(crate) hold: Arc<crate::handover::WriteHold>,
}

impl ProposerTask {
    /// Starts the task; it runs until every [`Proposer`] is dropped.
    pub(crate) fn spawn(self) -> (Proposer, JoinHandle<()>) {
        let capacity = self.max_batch.max(1).saturating_mul(self.max_in_flight.max(1) + 1);
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(self.run(rx, tx.downgrade()));
        (Proposer { tx }, task)
    }

    async fn run(self, mut rx: mpsc::Receiver<Request>, resubmit: mpsc::WeakSender<Request>) {
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        let max_batch = self.max_batch.max(1);
        let mut seq: u64 = 0;
        // The leader the last forwarded batch failed to reach, if it failed.
        let mut suspect: Option<u64> = None;
        loop {
            // Hold a slot before taking requests: while all slots are busy,
            // requests pile up in the channel and the next batch takes them all.
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut requests = Vec::with_capacity(rx.len().min(max_batch) + 1);
            let mut bytes = request_bytes(&first);
            requests.push(first);
            while requests.len() < max_batch && bytes < self.max_batch_bytes {
                match rx.try_recv() {
                    Ok(request) => {
                        bytes += request_bytes(&request);
                        requests.push(request);
                    }
                    Err(_) => break,
                }
            }
            // Only a leader's time reaches the log: a follower's batch is
            // stamped again by the leader it is forwarded to. (No stamp
            // raises the floor; applied batches do: ADR 0032.)
            // Held from this check until openraft has the batch: during a
            // hand-over the batch waits here, then finds this node a
            // follower and goes to the new leader (ADR 0035).
            let append = self.hold.append().await;
            let leader = self.is_leader();
            let now_ms = if leader {
                self.clock.stamp()
            } else {
                self.clock.now_ms()
            };
            seq += 1;
            let tag = self
                .tracker
                .register(seq, local_origins(NodeId(self.tracker.node), &requests));
            let retry = Retry {
                requests: must_commit(&requests),
                resubmit: resubmit.clone(),
                raft: self.raft.clone(),
            };
            let proposal = Proposal {
                tag: Some(tag),
                batch: Batch { now_ms, requests },
            };
            let request_count = proposal.batch.requests.len();
            let proposed_at = std::time::Instant::now();
            if !leader {
                drop(append);
                self.counters.proposed(request_count, true);
                self.forward(proposal, permit, &in_flight, seq, retry, &mut suspect)
                    .await;
                continue;
            }
            // `client_write_ff` hands the entry to RaftCore before it returns,
            // so entries reach the log in submission order; only the wait for
            // the commit runs concurrently.
            self.counters.proposed(request_count, false);
            let handed = self.raft.client_write_ff(proposal).await;
            drop(append);
            match handed {
                Ok(responded) => {
                    let counters = self.counters.clone();
                    let tracker = self.tracker.clone();
                    let sink = self.sink.clone();
                    let commit_timeout = self.forward_timeout;
                    tokio::spawn(async move {
                        // A leader cut off from the majority never commits and
                        // openraft keeps it leader: answer within a bound
                        // instead of leaving clients waiting forever.
                        let outcome = tokio::time::timeout(commit_timeout, responded).await;
                        drop(permit);
                        let reason = match outcome {
                            Ok(Ok(Ok(_))) => {
                                counters.commit_took(proposed_at.elapsed());
                                return;
                            }
                            Ok(Ok(Err(e))) => e.to_string(),
                            Ok(Err(_)) => "the Raft node stopped before the batch was committed".to_owned(),
                            Err(_) => "the batch was not committed in time (is this node cut off from the majority?)"
                                .to_owned(),
                        };
                        fail_batch(&tracker, &*sink, seq, &reason);
                        retry.spawn();
                    });
                }
                Err(fatal) => {
                    drop(permit);
                    fail_batch(&self.tracker, &*self.sink, seq, &fatal.to_string());
                    retry.spawn();
                }
            }
        }
    }

    fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.tracker.node)
    }

    /// Forwards one batch to the leader and waits for the outcome. Holding
    /// every in-flight slot meanwhile makes batches this node appended as
    /// leader settle first, so the log keeps submission order across a
    /// change of leader.
    async fn forward(
        &self,
        proposal: Proposal,
        permit: OwnedSemaphorePermit,
        in_flight: &Arc<Semaphore>,
        seq: u64,
        retry: Retry,
        suspect: &mut Option<u64>,
    ) {
        let others = u32::try_from(self.max_in_flight.max(1) - 1).unwrap_or(u32::MAX);
        let rest = tokio::time::timeout(self.forward_timeout, in_flight.clone().acquire_many_owned(others)).await;
        let sent_at = std::time::Instant::now();
        let outcome = self.forward_to_leader(proposal, suspect).await;
        if outcome.is_ok() {
            self.counters.commit_took(sent_at.elapsed());
        }
        drop(rest);
        drop(permit);
        if let Err(reason) = outcome {
            fail_batch(&self.tracker, &*self.sink, seq, &reason);
            retry.spawn();
        }
    }

    /// Sends `proposal` to the leader until it is committed, for up to
    /// `forward_timeout`.
    ///
    /// A node that says it is not the leader appended nothing; the batch
    /// goes to the leader it names. An attempt that fails or gets no answer
    /// within `leader_wait` has an unknown outcome, and the batch is sent
    /// again — to another leader if one is elected meanwhile: the state
    /// machine applies only the first copy that commits (`sessions.rs`).
    /// So a leader that dies or pauses costs the batch an election, not an
    /// `Unavailable` reply.
    ///
    /// `suspect` is the leader the previous batch could not reach: while it
    /// is still the known leader (a dead leader stays "known" until the
    /// election timeout), a batch first waits a while for another one.
    async fn forward_to_leader(&self, proposal: Proposal, suspect: &mut Option<u64>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.forward_timeout;
        let mut hint: Option<(Option<u64>, String)> = None;
        let mut last_error = "no leader is known".to_owned();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(last_error);
            }
            let found = match hint.take() {
                Some(hinted) => Some(hinted),
                None => {
                    let mut found = None;
                    if suspect.is_some() {
                        found = self
                            .wait_for_leader(&[*suspect], remaining.min(self.leader_wait / 2))
                            .await;
                    }
                    if found.is_none() {
                        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                        found = self.wait_for_leader(&[], remaining).await;
                    }
                    found.map(|(leader, addr)| (Some(leader), addr))
                }
            };
            let Some((leader, addr)) = found else {
                return Err(last_error);
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.forward_once(leader, &addr, &proposal, remaining).await {
                Forwarded::Committed => {
                    *suspect = None;
                    return Ok(());
                }
                Forwarded::Redirect { leader_id, leader_addr } => {
                    *suspect = leader;
                    hint = leader_addr
                        .filter(|hinted| *hinted != addr)
                        .map(|hinted| (leader_id, hinted));
                    last_error = format!("{addr} is not the leader");
                }
                Forwarded::Unknown(reason) => {
                    tracing::debug!(node = self.tracker.node, to = %addr, reason, "forward failed; sending the batch again");
                    *suspect = leader;
                    last_error = reason;
                    // Do not spin against a leader that fails fast.
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
            }
        }
    }

    /// One attempt of [`Self::forward_to_leader`] at `leader`.
    async fn forward_once(
        &self,
        leader: Option<u64>,
        addr: &str,
        proposal: &Proposal,
        remaining: Duration,
    ) -> Forwarded {
        let limit = remaining.min(self.leader_wait);
        if leader == Some(self.tracker.node) {
            // This node became leader meanwhile: the batch carries its
            // clock as a follower read it, which no leader stamped yet.
            let mut proposal = proposal.clone();
            proposal.batch.now_ms = self.clock.stamp();
            let responded = {
                let _append = self.hold.append().await;
                self.raft.client_write_ff(proposal).await
            };
            return match crate::handover::committed(responded, limit).await {
                Ok(_) => Forwarded::Committed,
                Err(NotCommitted::NotLeader { leader_id, leader_addr }) => {
                    Forwarded::Redirect { leader_id, leader_addr }
                }
                Err(NotCommitted::Failed(reason)) => Forwarded::Unknown(reason),
            };
        }
        // A leader cut off by a partition answers nothing: rather than wait
        // out `limit` (up to four election timeouts), give the attempt up as
        // soon as another leader is known. Its outcome is unknown either
        // way, and the batch sent again commits once at most (`sessions.rs`).
        // "Another" is neither the target nor the leader this node knew
        // when the attempt began: after a redirect to the leader some peer
        // named, this node may still show the old one for a heartbeat.
        let known_here = self.raft.metrics().borrow().current_leader;
        let attempt = tokio::time::timeout(limit, self.peers.forward(addr, proposal.clone()));
        let replaced = async {
            match leader {
                Some(target) => self.wait_for_leader(&[Some(target), known_here], limit).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            Some((new_leader, _)) = replaced => {
                return Forwarded::Unknown(format!(
                    "forwarding to the leader at {addr}: node {new_leader} was elected meanwhile"
                ));
            }
        };
        match outcome {
            Ok(Ok(())) => Forwarded::Committed,
            Ok(Err(PeerError::NotLeader { leader_id, leader_addr })) => {
                tracing::debug!(node = self.tracker.node, to = %addr, ?leader_id, "forwarded to a non-leader; retrying");
                Forwarded::Redirect { leader_id, leader_addr }
            }
            Ok(Err(e)) => Forwarded::Unknown(format!("forwarding to the leader at {addr}: {e}")),
            Err(_) => Forwarded::Unknown(format!("forwarding to the leader at {addr}: no answer in {limit:?}")),
        }
    }

    /// The leader this node knows of (none of `not`), with its cluster
    /// address; waits up to `wait` for one.
    async fn wait_for_leader(&self, not: &[Option<u64>], wait: Duration) -> Option<(u64, String)> {
        let found = self
            .raft
            .wait(Some(wait))
            .metrics(
                |m| {
                    m.current_leader.is_some_and(|leader| {
                        !not.contains(&Some(leader)) && m.membership_config.membership().get_node(&leader).is_some()
                    })
                },
                "a known leader",
            )
            .await
            .ok()?;
        let leader = found.current_leader?;
        let addr = found.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }
}

/// Pause before a batch is sent again after an attempt with an unknown outcome.
const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// What one forwarding attempt came to.
enum Forwarded {
    Committed,
    /// Failed or unanswered: the batch may or may not be in the log.
    Unknown(String),
    /// The node asked is not the leader: nothing was appended.
    Redirect {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
}

/// Roughly what `request` adds to an encoded entry: a publish's body and
/// routing key, plus a fixed allowance for the rest.
fn request_bytes(request: &Request) -> u64 {
    const OTHER: u64 = 128;
    match &request.command {
        Command::Publish { message, .. } | Command::PublishStaged(StagedPublish { message, .. }) => {
            OTHER + message.body_len() + message.routing_key.len() as u64
        }
        Command::StageBody { part, .. } => OTHER + part.len() as u64,
        Command::Commit(tx) => OTHER + tx.approximate_bytes(),
        Command::ReturnUnsent { tags, .. } => OTHER + 8 * tags.len() as u64,
        _ => OTHER,
    }
}

fn local_origins(node: NodeId, requests: &[Request]) -> Vec<ChannelId> {
    requests
        .iter()
        .filter_map(|r| r.origin)
        .filter(|origin| origin.conn.node == node)
        .collect()
}

/// Requests of a batch that must be committed even though the batch
/// failed: those without an origin that clean up after a connection or a
/// node (`CloseConnection`, `NodeStarted`, …). Nobody waits for their reply,
/// so nobody would retry them, and a lost `CloseConnection` would keep the
/// connection's consumers — and their unacked messages — forever. They are
/// idempotent, so submitting one again after an unknown outcome is safe.
///
/// They are submitted again after every failure, whether or not the
/// failure settled the batch in the tracker: a batch the tracker no longer
/// holds was either applied (a second copy is harmless) or dropped
/// unapplied — skipped behind a later batch, or cleared by a snapshot
/// install (`settle_all_failed`) — and the tracker cannot tell which. Only
/// retrying when the failure settled the batch lost a dead connection's
/// `CloseConnection` after a snapshot install, and its consumers kept
/// their unacked messages.
/// `Tick` is left out: the tick driver proposes a new one by itself.
fn must_commit(requests: &[Request]) -> Vec<Request> {
    requests
        .iter()
        .filter(|r| r.origin.is_none() && !matches!(r.command, Command::Tick))
        .cloned()
        .collect()
}

/// Submits a failed batch's [`must_commit`] requests again, after a pause.
struct Retry {
    requests: Vec<Request>,
    resubmit: mpsc::WeakSender<Request>,
    raft: Raft<TypeConfig>,
}

/// Pause before a failed batch's cleanup requests are submitted again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Retry {
    fn spawn(self) {
        if self.requests.is_empty() {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(RETRY_PAUSE).await;
            // Stop once Raft has stopped (node shutdown) or every
            // `Proposer` is gone.
            if self.raft.metrics().borrow().running_state.is_err() {
                return;
            }
            let Some(tx) = self.resubmit.upgrade() else {
                return;
            };
            tracing::debug!(
                requests = self.requests.len(),
                "resubmitting cleanup requests of a failed batch"
            );
            for request in self.requests {
                if tx.send(request).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Answers `Unavailable` to every origin of a batch whose commit failed,
/// unless apply already settled the batch (then the broker's replies went
/// out); the replies wait for every earlier batch's (`tracker.rs`).
fn fail_batch(tracker: &ProposalTracker, sink: &dyn EffectSink, seq: u64, reason: &str) {
    if tracker.fail(seq, reason, sink) {
        tracing::warn!(node = tracker.node, batch = seq, reason, "batch not committed");
    }
}
