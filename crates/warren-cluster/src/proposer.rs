//! The proposer: coalesces waiting requests into one Raft entry (group
//! commit) and keeps a few entries in flight while the next batch fills.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::Raft;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use warren_core::{Batch, ChannelId, CoreError, Effect, NodeId, Request};

use crate::error::ClusterError;
use crate::node::EffectSink;
use crate::state_machine::ProposalTracker;
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
    pub(crate) max_batch: usize,
    pub(crate) max_in_flight: usize,
}

impl ProposerTask {
    /// Starts the task; it runs until every [`Proposer`] is dropped.
    pub(crate) fn spawn(self) -> (Proposer, JoinHandle<()>) {
        let capacity = self.max_batch.max(1).saturating_mul(self.max_in_flight.max(1) + 1);
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(self.run(rx));
        (Proposer { tx }, task)
    }

    async fn run(self, mut rx: mpsc::Receiver<Request>) {
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        let max_batch = self.max_batch.max(1);
        let mut seq: u64 = 0;
        let mut last_now_ms: u64 = 0;
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
            requests.push(first);
            while requests.len() < max_batch {
                match rx.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
            last_now_ms = last_now_ms.max(wall_clock_ms());
            seq += 1;
            let origins = local_origins(NodeId(self.tracker.node), &requests);
            let tag = self.tracker.register(seq);
            let proposal = Proposal {
                tag: Some(tag),
                batch: Batch {
                    now_ms: last_now_ms,
                    requests,
                },
            };
            // `client_write_ff` hands the entry to RaftCore before it returns,
            // so entries reach the log in submission order; only the wait for
            // the commit runs concurrently.
            match self.raft.client_write_ff(proposal).await {
                Ok(responded) => {
                    let tracker = self.tracker.clone();
                    let sink = self.sink.clone();
                    tokio::spawn(async move {
                        let outcome = responded.await;
                        drop(permit);
                        let reason = match outcome {
                            Ok(Ok(_)) => return,
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "the Raft node stopped before the batch was committed".to_owned(),
                        };
                        fail_batch(&tracker, &*sink, seq, origins, &reason);
                    });
                }
                Err(fatal) => {
                    drop(permit);
                    fail_batch(&self.tracker, &*self.sink, seq, origins, &fatal.to_string());
                }
            }
        }
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn local_origins(node: NodeId, requests: &[Request]) -> Vec<ChannelId> {
    requests
        .iter()
        .filter_map(|r| r.origin)
        .filter(|origin| origin.conn.node == node)
        .collect()
}

/// Sends `Unavailable` to every origin of a batch whose commit failed,
/// unless apply already settled the batch (then the broker's replies went out).
fn fail_batch(tracker: &ProposalTracker, sink: &dyn EffectSink, seq: u64, origins: Vec<ChannelId>, reason: &str) {
    if !tracker.settle_failed(seq) {
        return;
    }
    tracing::warn!(
        node = tracker.node,
        batch = seq,
        requests = origins.len(),
        reason,
        "batch not committed"
    );
    if origins.is_empty() {
        return;
    }
    let effects = origins
        .into_iter()
        .map(|channel| Effect::Reply {
            channel,
            outcome: Err(CoreError::Unavailable(format!("command not committed: {reason}"))),
        })
        .collect();
    sink.emit(effects);
}
