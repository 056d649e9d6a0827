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
use crate::ledger::{check_history, Event, Ledger, Summary, Violation};

/// How long the consumers get to consume everything once the publishers
/// stopped (a bound against hangs: abandoned connections are closed
/// through proposers that retry every 200 ms, and clients give up a silent
/// connection after `REPLY_LIMIT`).
const QUIET_LIMIT: Duration = Duration::from_secs(10);

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
    /// The queue's `x-message-ttl`: with one, a message that expires
    /// before it is consumed is lost to the checks, so the TTL must be
    /// far longer than the test unless the clock moves under it.
    pub message_ttl_ms: Option<u32>,
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
            message_ttl_ms: None,
        }
    }
}

/// Publishers and consumers running against a cluster, and the log of
/// what the test did to it (printed with every failure, with the seed).
pub struct Workload {
    cluster: Cluster,
    ledger: Arc<Ledger>,
    options: LoadOptions,
    stop_publishers: watch::Sender<bool>,
    stop_consumers: watch::Sender<bool>,
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
        cluster.attach_ledger(ledger.clone());
        let first = options.publishers.first().copied().unwrap_or(1);
        declare(cluster, &ledger, first, &options.queue, options.message_ttl_ms, 20)
            .await
            .map_err(|e| format!("seed {}: declaring the queue: {e}", cluster.seed()))?;
        let (stop_publishers, _) = watch::channel(false);
        let (stop_consumers, consumers_stopped) = watch::channel(false);
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
                    consumers_stopped.clone(),
                ))
            })
            .collect();
        let workload = Workload {
            cluster: cluster.clone(),
            ledger,
            options,
            stop_publishers,
            stop_consumers,
            publishers: Vec::new(),
            consumers,
            started: tokio::time::Instant::now(),
            phases: Mutex::new(Vec::new()),
        };
        let mut workload = workload;
        for node in workload.options.publishers.clone() {
            workload.add_publisher(node);
        }
        workload.phase(format!("load started on {:?}", cluster.running_ids()));
        Ok(workload)
    }

    /// Starts one more publisher, on `node`.
    pub fn add_publisher(&mut self, node: u64) {
        let publisher = PublisherOptions {
            queue: self.options.queue.clone(),
            messages: self.options.messages_per_publisher,
            window: self.options.window,
            pause: self.options.publish_pause,
        };
        self.publishers.push(tokio::spawn(run_publisher(
            self.cluster.clone(),
            self.ledger.clone(),
            node,
            publisher,
            self.stop_publishers.subscribe(),
        )));
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

    /// Waits until `confirmed` publishes have been confirmed in total
    /// (bounded: 30 s).
    ///
    /// # Errors
    /// They were not, in time or before every publisher ended: the load
    /// this test meant to run never ran.
    pub async fn wait_for_confirms(&self, confirmed: u64) -> Result<(), String> {
        for _ in 0..1500 {
            if self.ledger.summary().confirmed >= confirmed {
                return Ok(());
            }
            if self.publishers.iter().all(JoinHandle::is_finished) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reached = self.ledger.summary().confirmed;
        Err(self.failure(&format!(
            "only {reached} of the {confirmed} confirms the test waits for came (in 30 s, or before the publishers ended)"
        )))
    }

    /// Waits until `confirms` more publishes are confirmed than when it was
    /// called (or every publisher has finished: nothing more to wait for;
    /// what they published is checked at the end): the cluster makes progress in the phase the test is
    /// in — what a majority must do while a minority is cut off or lossy.
    ///
    /// # Errors
    /// No such progress within `within`: the phase stalled the cluster.
    pub async fn expect_progress(&self, what: &str, confirms: u64, within: Duration) -> Result<(), String> {
        let from = self.ledger.summary().confirmed;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let summary = self.ledger.summary();
            if summary.confirmed >= from + confirms {
                self.phase(format!(
                    "{what}: {} confirms since the phase began",
                    summary.confirmed - from
                ));
                return Ok(());
            }
            if self.publishers.iter().all(JoinHandle::is_finished) {
                self.phase(format!("{what}: the publishers finished"));
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "{what}: {} confirms in {within:?}, expected at least {confirms}",
                    summary.confirmed - from
                )));
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

    /// Ends the test: heals every fault, stops the publishers, waits until
    /// the consumers consumed everything (a consumer that never gets a
    /// message the broker assigned to it stalls this), stops them (their
    /// connections close), drains the queue through the leader, waits
    /// until every running node applied the same log and compares their
    /// states, then checks the history.
    ///
    /// # Errors
    /// A failure message (see [`Workload::failure`]) naming every problem.
    pub async fn finish(mut self) -> Result<Report, String> {
        self.cluster.net().heal();
        self.phase("faults healed; stopping clients");
        let _ = self.stop_publishers.send(true);
        let mut publishers = Vec::new();
        let mut problems = Vec::new();
        for task in std::mem::take(&mut self.publishers) {
            match task.await {
                Ok(stats) => publishers.push(stats),
                Err(e) => problems.push(format!("a publisher task failed: {e}")),
            }
        }
        self.phase(format!("publishers stopped: {publishers:?}"));
        // The consumers still run: every message the broker assigned to
        // them must reach them, so they consume the queue to the end.
        let stalled = match self.wait_until_consumed(QUIET_LIMIT).await {
            Ok(()) => {
                self.phase("the running consumers consumed every message");
                false
            }
            Err(e) => {
                problems.push(format!("consumers stalled: {e}"));
                true
            }
        };
        let _ = self.stop_consumers.send(true);
        let mut consumers = Vec::new();
        for task in std::mem::take(&mut self.consumers) {
            match task.await {
                Ok(stats) => consumers.push(stats),
                Err(e) => problems.push(format!("a consumer task failed: {e}")),
            }
        }
        self.phase(format!("consumers stopped: {consumers:?}"));
        let drain_from = self.ledger.records().len();
        match self.drain().await {
            Ok(()) => self.phase("queue drained"),
            Err(e) => problems.push(e),
        }
        if stalled {
            problems.push(format!(
                "the drain got these messages as redelivered though no client had seen them before \
                 (assigned to a consumer whose client never received them): {:?}",
                self.never_seen_before(drain_from)
            ));
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
        let acks = self.cluster.applied_acks();
        let records = self.ledger.records();
        let (unknown, took_effect) = records.iter().fold((0, 0), |(n, k), r| match r.event {
            Event::AckUnknown {
                channel, delivery_tag, ..
            } => (n + 1, k + u64::from(acks.contains(channel, delivery_tag))),
            _ => (n, k),
        });
        self.phase(format!(
            "acks of unknown outcome: {unknown}, of which {took_effect} took effect"
        ));
        let violations = check_history(&records, |channel, tag| acks.contains(channel, tag));
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

    /// Ids delivered (redelivered) from ledger position `from` on that no
    /// client had been delivered before.
    fn never_seen_before(&self, from: usize) -> Vec<u64> {
        let records = self.ledger.records();
        let (before, after) = records.split_at(from.min(records.len()));
        let seen: std::collections::BTreeSet<u64> = before
            .iter()
            .filter(|r| matches!(r.event, Event::Delivered { .. }))
            .filter_map(|r| r.event.message())
            .collect();
        after
            .iter()
            .filter_map(|r| match r.event {
                Event::Delivered {
                    id, redelivered: true, ..
                } if !seen.contains(&id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Waits until the leader's replica shows the queue with nothing
    /// ready and nothing unacked (bounded by `limit`).
    async fn wait_until_consumed(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(leader) = self.cluster.leader().await else {
                continue;
            };
            let Some(node) = self.cluster.node(leader) else {
                continue;
            };
            let queue = node.read(|b| b.queue_summaries().into_iter().find(|q| q.name == self.options.queue));
            if queue
                .as_ref()
                .is_some_and(|q| q.messages_ready == 0 && q.messages_unacked == 0)
            {
                return Ok(());
            }
            last = queue.map(|q| (leader, q));
        }
        Err(format!(
            "after {limit:?} with consumers running and no publishers, the queue still holds (leader, queue) = {last:?}"
        ))
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
