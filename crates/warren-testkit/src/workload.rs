//! A test's load and its end: publishers and consumers on chosen nodes,
//! then heal, stop, drain, converge and check.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_core::QueueName;

use crate::client::{
    declare, run_consumer, run_publisher, ConsumerOptions, ConsumerStats, PublisherOptions, PublisherStats,
};
use crate::cluster::Cluster;
use crate::ledger::{check_history, Ledger, Summary, Violation};

/// The shape of a test's load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub queue: QueueName,
    /// The node each publisher starts on.
    pub publishers: Vec<u64>,
    /// The node each consumer starts on.
    pub consumers: Vec<u64>,
    /// Messages each publisher attempts at most.
    pub messages_per_publisher: usize,
    pub window: usize,
    pub publish_pause: Duration,
    pub prefetch: u16,
    pub hold_ms: std::ops::Range<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            queue: QueueName::from("jobs"),
            publishers: vec![1, 2],
            consumers: vec![2, 3],
            messages_per_publisher: 2_000,
            window: 8,
            publish_pause: Duration::from_millis(3),
            prefetch: 10,
            hold_ms: 0..3,
        }
    }
}

/// Publishers and consumers running against a cluster, and the log of
/// what the test did to it (printed with every failure, with the seed).
pub struct Workload {
    cluster: Cluster,
    ledger: Arc<Ledger>,
    options: LoadOptions,
    stop: watch::Sender<bool>,
    publishers: Vec<JoinHandle<PublisherStats>>,
    consumers: Vec<JoinHandle<ConsumerStats>>,
    started: tokio::time::Instant,
    phases: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("seed", &self.cluster.seed())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a finished test saw.
#[derive(Clone, Debug)]
pub struct Report {
    pub summary: Summary,
    pub publishers: Vec<PublisherStats>,
    pub consumers: Vec<ConsumerStats>,
    pub applied_index: u64,
}

impl Workload {
    /// Declares the queue and starts the publishers and consumers.
    ///
    /// # Errors
    /// The queue could not be declared.
    pub async fn start(cluster: &Cluster, options: LoadOptions) -> Result<Workload, String> {
        let ledger = Arc::new(Ledger::new());
        let first = options.publishers.first().copied().unwrap_or(1);
        declare(cluster, &ledger, first, &options.queue, 20)
            .await
            .map_err(|e| format!("seed {}: declaring the queue: {e}", cluster.seed()))?;
        let (stop, stopped) = watch::channel(false);
        let publishers = options
            .publishers
            .iter()
            .map(|node| {
                let publisher = PublisherOptions {
                    queue: options.queue.clone(),
                    messages: options.messages_per_publisher,
                    window: options.window,
                    pause: options.publish_pause,
                };
                tokio::spawn(run_publisher(
                    cluster.clone(),
                    ledger.clone(),
                    *node,
                    publisher,
                    stopped.clone(),
                ))
            })
            .collect();
        let consumers = options
            .consumers
            .iter()
            .map(|node| {
                let consumer = ConsumerOptions {
                    queue: options.queue.clone(),
                    prefetch: options.prefetch,
                    hold_ms: options.hold_ms.clone(),
                };
                tokio::spawn(run_consumer(
                    cluster.clone(),
                    ledger.clone(),
                    *node,
                    consumer,
                    stopped.clone(),
                ))
            })
            .collect();
        let workload = Workload {
            cluster: cluster.clone(),
            ledger,
            options,
            stop,
            publishers,
            consumers,
            started: tokio::time::Instant::now(),
            phases: Mutex::new(Vec::new()),
        };
        workload.phase(format!("load started on {:?}", cluster.running_ids()));
        Ok(workload)
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Logs a phase of the test (with the time since the load started).
    pub fn phase(&self, what: impl Into<String>) {
        let line = format!("+{} ms: {}", self.started.elapsed().as_millis(), what.into());
        tracing::info!(seed = self.cluster.seed(), "{line}");
        eprintln!("[seed {}] {line}", self.cluster.seed());
        self.phases.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    /// Lets the load run for `duration`.
    pub async fn run_for(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Waits until `confirmed` publishes have been confirmed in total, or
    /// the publishers are done (bounded).
    pub async fn wait_for_confirms(&self, confirmed: u64) {
        for _ in 0..1500 {
            if self.ledger.summary().confirmed >= confirmed || self.publishers.iter().all(JoinHandle::is_finished) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A failure message: the reason, the seed, and the phases so far.
    pub fn failure(&self, reason: &str) -> String {
        let phases = self.phases.lock().unwrap_or_else(PoisonError::into_inner).join("\n  ");
        format!(
            "{reason}\n  seed: {} (rerun with WARREN_TESTKIT_SEED={})\n  faults now: {:?}\n  ledger: {:?}\n  phases:\n  {phases}",
            self.cluster.seed(),
            self.cluster.seed(),
            self.cluster.net().faults(),
            self.ledger.summary(),
        )
    }

    /// Ends the test: heals every fault, stops the clients (their
    /// connections close), drains the queue through the leader, waits
    /// until every running node applied the same log and compares their
    /// states, then checks the history.
    ///
    /// # Errors
    /// A failure message (see [`Workload::failure`]) naming every problem.
    pub async fn finish(mut self) -> Result<Report, String> {
        self.cluster.net().heal();
        self.phase("faults healed; stopping clients");
        let _ = self.stop.send(true);
        let mut publishers = Vec::new();
        for task in std::mem::take(&mut self.publishers) {
            publishers.push(task.await.unwrap_or_default());
        }
        let mut consumers = Vec::new();
        for task in std::mem::take(&mut self.consumers) {
            consumers.push(task.await.unwrap_or_default());
        }
        self.phase(format!("clients stopped: {publishers:?} {consumers:?}"));
        let mut problems = Vec::new();
        match self.drain().await {
            Ok(()) => self.phase("queue drained"),
            Err(e) => problems.push(e),
        }
        let applied_index = match self.cluster.converge().await {
            Ok(index) => {
                self.phase(format!("nodes converged at index {index}"));
                index
            }
            Err(e) => {
                problems.push(format!("convergence: {e}"));
                0
            }
        };
        let violations = check_history(&self.ledger.records());
        const SHOWN: usize = 20;
        problems.extend(violations.iter().take(SHOWN).map(|violation| {
            let history = match violation {
                Violation::Lost { id }
                | Violation::HeldTwice { id, .. }
                | Violation::RedeliveredFlagMissing { id, .. }
                | Violation::DeliveredAfterAck { id, .. } => self.ledger.history_of(*id),
                Violation::Unexpected { .. } => Vec::new(),
            };
            let history: Vec<String> = history.iter().map(|r| format!("#{} {:?}", r.at, r.event)).collect();
            format!("{violation}\n      history: {}", history.join("\n               "))
        }));
        if violations.len() > SHOWN {
            problems.push(format!("… and {} more violations", violations.len() - SHOWN));
        }
        let summary = self.ledger.summary();
        if problems.is_empty() {
            self.phase(format!("checks passed: {summary:?}"));
            return Ok(Report {
                summary,
                publishers,
                consumers,
                applied_index,
            });
        }
        let reason = format!("{} problem(s):\n  {}", problems.len(), problems.join("\n  "));
        Err(self.failure(&reason))
    }

    /// Consumes on the leader until its replica shows the queue empty and
    /// nothing unacked (bounded).
    async fn drain(&self) -> Result<(), String> {
        let leader = self.cluster.leader().await.map_err(|e| e.to_string())?;
        let (stop, stopped) = watch::channel(false);
        let consumer = ConsumerOptions {
            queue: self.options.queue.clone(),
            prefetch: 100,
            hold_ms: 0..0,
        };
        let task = tokio::spawn(run_consumer(
            self.cluster.clone(),
            self.ledger.clone(),
            leader,
            consumer,
            stopped,
        ));
        let mut last = None;
        let mut drained = false;
        for _ in 0..1500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let Some(node) = self.cluster.node(leader) else { break };
            let queue = node.read(|b| b.queue_summaries().into_iter().find(|q| q.name == self.options.queue));
            // Only the drain consumer may be left on the queue.
            drained = queue
                .as_ref()
                .is_some_and(|q| q.messages_ready == 0 && q.messages_unacked == 0 && q.consumers <= 1);
            last = queue;
            if drained {
                break;
            }
        }
        let _ = stop.send(true);
        let _ = task.await;
        if drained {
            Ok(())
        } else {
            Err(format!("the queue did not drain on leader {leader}: {last:?}"))
        }
    }
}
