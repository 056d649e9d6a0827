//! Load for the process-level cluster tests: publishers with confirms and
//! consumers with manual acks that run until told to stop, reconnect to
//! another node after any error, and record every id in a shared [`Tally`].
//!
//! A message body is its id as decimal text; each publisher draws ids from
//! its own range, so ids are unique across publishers and sessions. After a
//! run, [`Tally::report`] compares the confirmed ids with the consumed ones:
//! a confirmed id never consumed is lost (the broker broke its promise); an
//! id consumed twice is a duplicate (allowed: at-least-once delivery after a
//! consumer's connection died with the message unacked).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tokio::sync::watch;

use crate::{connect, within, within_for};

/// Unconfirmed publishes one publisher keeps in flight at most.
pub const PUBLISH_WINDOW: usize = 64;

/// Prefetch of each load consumer.
pub const CONSUMER_PREFETCH: u16 = 100;

/// How long a publisher waits for one confirm before it gives the session up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed session, before the next node is tried.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What the load tasks record.
#[derive(Debug, Default)]
pub struct Tally {
    pub confirmed: BTreeSet<u64>,
    pub nacked: BTreeSet<u64>,
    /// How often each id was delivered.
    pub consumed: BTreeMap<u64, usize>,
    pub publisher_errors: usize,
    pub consumer_errors: usize,
    /// The first errors of the sessions that failed (capped).
    pub errors: Vec<String>,
    /// Confirmed ids not consumed yet, kept by [`Tally::confirm`] and
    /// [`Tally::consume`] so the drain's "all consumed?" check is O(1)
    /// (a scan per delivery throttled one consumer to ~125 msg/s).
    confirmed_not_consumed: usize,
}

/// The tally shared by the load tasks of one test.
pub type SharedTally = Arc<Mutex<Tally>>;

/// Locks the tally (a panicked task does not hide the figures).
pub fn tally(shared: &SharedTally) -> MutexGuard<'_, Tally> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Errors kept in [`Tally::errors`] at most.
const MAX_ERRORS_KEPT: usize = 50;

impl Tally {
    fn record_error(&mut self, error: String) {
        if self.errors.len() < MAX_ERRORS_KEPT {
            self.errors.push(error);
        }
    }

    /// Records the confirm of `id`.
    pub fn confirm(&mut self, id: u64) {
        if self.confirmed.insert(id) && !self.consumed.contains_key(&id) {
            self.confirmed_not_consumed += 1;
        }
    }

    /// Records a delivery of `id`.
    pub fn consume(&mut self, id: u64) {
        let count = self.consumed.entry(id).or_insert(0);
        *count += 1;
        if *count == 1 && self.confirmed.contains(&id) {
            self.confirmed_not_consumed -= 1;
        }
    }

    /// Every confirmed id was consumed at least once.
    pub fn all_confirmed_consumed(&self) -> bool {
        self.confirmed_not_consumed == 0
    }

    /// The figures of the run.
    pub fn report(&self) -> LoadReport {
        let lost: Vec<u64> = self
            .confirmed
            .iter()
            .filter(|id| !self.consumed.contains_key(id))
            .copied()
            .collect();
        LoadReport {
            confirmed: self.confirmed.len(),
            nacked: self.nacked.len(),
            consumed: self.consumed.len(),
            deliveries: self.consumed.values().sum(),
            duplicated_ids: self.consumed.values().filter(|count| **count > 1).count(),
            consumed_unconfirmed: self.consumed.keys().filter(|id| !self.confirmed.contains(id)).count(),
            lost,
            publisher_errors: self.publisher_errors,
            consumer_errors: self.consumer_errors,
        }
    }
}

/// What a load run measured (see [`Tally::report`]).
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub confirmed: usize,
    pub nacked: usize,
    /// Distinct ids consumed.
    pub consumed: usize,
    /// Deliveries in all, duplicates included.
    pub deliveries: usize,
    /// Ids delivered more than once.
    pub duplicated_ids: usize,
    /// Consumed ids whose confirm never came (the publisher's session died
    /// first, or a nack whose entry committed anyway): allowed.
    pub consumed_unconfirmed: usize,
    /// Confirmed but never consumed: must be empty.
    pub lost: Vec<u64>,
    pub publisher_errors: usize,
    pub consumer_errors: usize,
}

impl LoadReport {
    /// Deliveries beyond the first of each id.
    pub fn duplicates(&self) -> usize {
        self.deliveries.saturating_sub(self.consumed)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "confirmed {}, consumed {}, lost {}, duplicates {} (ids delivered twice or more: {}), nacked {}, \
             consumed but unconfirmed {}, publisher reconnects {}, consumer reconnects {}",
            self.confirmed,
            self.consumed,
            self.lost.len(),
            self.duplicates(),
            self.duplicated_ids,
            self.nacked,
            self.consumed_unconfirmed,
            self.publisher_errors,
            self.consumer_errors
        )
    }
}

/// The AMQP URI of each node, by node id. A node restarted on a new AMQP
/// port gets its entry replaced; load clients read it at each reconnect.
#[derive(Clone, Debug, Default)]
pub struct Endpoints(Arc<Mutex<BTreeMap<u64, String>>>);

impl Endpoints {
    pub fn set(&self, node: u64, uri: String) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(node, uri);
    }

    pub fn remove(&self, node: u64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&node);
    }

    pub fn get(&self, node: u64) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }
}

/// One load client: which nodes it connects to, in order of preference.
/// Session `n` goes to `nodes[n % len]`, so after its node dies the client
/// moves on to the next one.
#[derive(Clone, Debug)]
pub struct Client {
    pub name: String,
    pub nodes: Vec<u64>,
    pub endpoints: Endpoints,
    pub queue: String,
}

impl Client {
    pub fn new(name: &str, nodes: &[u64], endpoints: &Endpoints, queue: &str) -> Self {
        Self {
            name: name.to_owned(),
            nodes: nodes.to_vec(),
            endpoints: endpoints.clone(),
            queue: queue.to_owned(),
        }
    }

    fn uri(&self, session: usize) -> anyhow::Result<String> {
        let node = self.nodes[session % self.nodes.len().max(1)];
        self.endpoints
            .get(node)
            .ok_or_else(|| anyhow::anyhow!("{}: node {node} has no AMQP address", self.name))
    }
}

/// The publishers' stop switch: `true` once they must stop (they still
/// wait for the confirms of what they sent).
pub type Stop = watch::Receiver<bool>;

/// The consumers' drain switch: `None` while publishers run; `Some(deadline)`
/// once every publisher has finished, so no confirm can arrive any more, and
/// consumers drain until every confirmed id was consumed or `deadline`.
/// (One switch for both once let a consumer see "all consumed" between the
/// stop and the publishers' last confirms: 63 ids reported lost in CI.)
pub type Drain = watch::Receiver<Option<tokio::time::Instant>>;

/// Publishes persistent messages with confirms until `stop`, reconnecting
/// after any error. Ids: `publisher << 32` upwards. Records confirms and
/// nacks in `shared`.
///
/// # Errors
/// Never in practice: session failures are counted and retried.
pub async fn publish_until(client: Client, publisher: u64, shared: SharedTally, stop: Stop) -> anyhow::Result<()> {
    let mut next_id: u64 = publisher << 32;
    let mut session_no = 0;
    while !*stop.borrow() {
        let uri = client.uri(session_no);
        session_no += 1;
        let session = async {
            let conn = connect(&uri?).await?;
            let ch = within("channel.open", conn.create_channel()).await?;
            within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
            let mut in_flight = VecDeque::new();
            let mut stopping = false;
            loop {
                stopping = stopping || *stop.borrow();
                if !stopping {
                    let id = next_id;
                    next_id += 1;
                    let confirm = within(
                        "basic.publish",
                        ch.basic_publish(
                            "".into(),
                            client.queue.as_str().into(),
                            Default::default(),
                            id.to_string().as_bytes(),
                            BasicProperties::default().with_delivery_mode(2),
                        ),
                    )
                    .await?;
                    in_flight.push_back((id, confirm));
                }
                while in_flight.len() >= PUBLISH_WINDOW || (stopping && !in_flight.is_empty()) {
                    let Some((id, confirm)) = in_flight.pop_front() else {
                        break;
                    };
                    if within_for(CONFIRM_TIMEOUT, "publisher confirm", confirm)
                        .await?
                        .is_ack()
                    {
                        tally(&shared).confirm(id);
                    } else {
                        tally(&shared).nacked.insert(id);
                    }
                }
                if stopping {
                    break;
                }
            }
            let _ = within("connection.close", conn.close(200, "done".into())).await;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = session.await {
            {
                let mut tally = tally(&shared);
                tally.publisher_errors += 1;
                tally.record_error(format!("{}: {e:#}", client.name));
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    Ok(())
}

/// Consumes with manual acks until `drain` is set and every confirmed id was
/// consumed, or until the deadline `drain` carries; reconnects after any
/// error.
///
/// # Errors
/// Never in practice: session failures are counted and retried.
pub async fn consume_until(client: Client, shared: SharedTally, drain: Drain) -> anyhow::Result<()> {
    let done = |shared: &SharedTally| {
        let drain_until = *drain.borrow();
        drain_until
            .is_some_and(|deadline| tokio::time::Instant::now() >= deadline || tally(shared).all_confirmed_consumed())
    };
    let mut session_no = 0;
    while !done(&shared) {
        let uri = client.uri(session_no);
        session_no += 1;
        let session = async {
            let conn = connect(&uri?).await?;
            let ch = within("channel.open", conn.create_channel()).await?;
            within("basic.qos", ch.basic_qos(CONSUMER_PREFETCH, BasicQosOptions::default())).await?;
            let mut consumer = within(
                "basic.consume",
                ch.basic_consume(
                    client.queue.as_str().into(),
                    client.name.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            while !done(&shared) {
                let Ok(next) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await else {
                    continue;
                };
                let delivery = next.ok_or_else(|| anyhow::anyhow!("consumer stream ended"))??;
                let id: u64 = String::from_utf8_lossy(&delivery.data).parse()?;
                tally(&shared).consume(id);
                within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
            }
            let _ = within("connection.close", conn.close(200, "done".into())).await;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = session.await {
            {
                let mut tally = tally(&shared);
                tally.consumer_errors += 1;
                tally.record_error(format!("{}: {e:#}", client.name));
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    Ok(())
}

/// Waits until at least `count` ids are confirmed, checking every 20 ms.
pub async fn confirmed_at_least(shared: &SharedTally, count: usize) {
    while tally(shared).confirmed.len() < count {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Running load: the publisher and consumer tasks and their stop switch.
pub struct Load {
    pub shared: SharedTally,
    stop: watch::Sender<bool>,
    drain: watch::Sender<Option<tokio::time::Instant>>,
    publishers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    consumers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    /// Starts `publishers` and `consumers`.
    pub fn start(publishers: Vec<Client>, consumers: Vec<Client>) -> Self {
        let shared = SharedTally::default();
        let (stop, stop_rx) = watch::channel(false);
        let (drain, drain_rx) = watch::channel(None);
        let publishers = publishers
            .into_iter()
            .zip(1u64..)
            .map(|(client, no)| tokio::spawn(publish_until(client, no, shared.clone(), stop_rx.clone())))
            .collect();
        let consumers = consumers
            .into_iter()
            .map(|client| tokio::spawn(consume_until(client, shared.clone(), drain_rx.clone())))
            .collect();
        Self {
            shared,
            stop,
            drain,
            publishers,
            consumers,
        }
    }

    /// Confirmed ids so far.
    pub fn confirmed(&self) -> usize {
        tally(&self.shared).confirmed.len()
    }

    /// Waits until `more` ids beyond those confirmed now are confirmed,
    /// within `limit`; returns the count reached.
    ///
    /// # Errors
    /// Not reached in time (the error carries the first session errors).
    pub async fn confirm_more(&self, more: usize, limit: Duration) -> anyhow::Result<usize> {
        let target = self.confirmed() + more;
        if tokio::time::timeout(limit, confirmed_at_least(&self.shared, target))
            .await
            .is_err()
        {
            let tally = tally(&self.shared);
            anyhow::bail!(
                "{more} more confirms not reached within {limit:?} ({}); errors: {:#?}",
                tally.report(),
                tally.errors
            );
        }
        Ok(self.confirmed())
    }

    /// Stops the publishers and waits until each has its last confirms (or
    /// gave its session up), then lets the consumers drain every confirmed
    /// id for at most `drain_limit`.
    ///
    /// # Errors
    /// A task panicked, failed or hung.
    pub async fn stop_and_drain(self, drain_limit: Duration) -> anyhow::Result<LoadReport> {
        let _ = self.stop.send(true);
        // Every client step is bounded (`within`), so a task still running
        // well past its limit is stuck: say so rather than hang.
        let publish_limit = CONFIRM_TIMEOUT + 2 * crate::STEP_TIMEOUT;
        join_all(self.publishers, publish_limit, "publisher", &self.shared).await?;
        let _ = self.drain.send(Some(tokio::time::Instant::now() + drain_limit));
        join_all(
            self.consumers,
            drain_limit + 2 * crate::STEP_TIMEOUT,
            "consumer",
            &self.shared,
        )
        .await?;
        let report = tally(&self.shared).report();
        Ok(report)
    }

    /// The first session errors, for a failure report.
    pub fn errors(&self) -> Vec<String> {
        tally(&self.shared).errors.clone()
    }
}

/// Joins `tasks` within `limit`; aborts them and says where things stood if
/// they do not finish.
async fn join_all(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    limit: Duration,
    what: &str,
    shared: &SharedTally,
) -> anyhow::Result<()> {
    let aborts: Vec<_> = tasks.iter().map(tokio::task::JoinHandle::abort_handle).collect();
    let joined = tokio::time::timeout(limit, async {
        for task in tasks {
            task.await??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let Ok(finished) = joined else {
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
        let tally = tally(shared);
        anyhow::bail!(
            "{what} tasks still running {limit:?} after the stop ({}); errors: {:#?}",
            tally.report(),
            tally.errors
        );
    };
    finished
}

/// Publishes the persistent messages `ids` (body = id) to `queue` through
/// `uri` with confirms, [`PUBLISH_WINDOW`] in flight; returns the ids the
/// broker acked.
///
/// # Errors
/// The connection, a publish or a confirm failed.
pub async fn publish_confirmed(
    uri: &str,
    queue: &str,
    ids: impl IntoIterator<Item = u64>,
) -> anyhow::Result<BTreeSet<u64>> {
    let conn = connect(uri).await?;
    let ch = crate::within("channel.open", conn.create_channel()).await?;
    crate::within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut in_flight = VecDeque::new();
    let mut confirmed = BTreeSet::new();
    let mut ids = ids.into_iter().peekable();
    while let Some(id) = ids.next() {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                id.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        in_flight.push_back((id, confirm));
        while in_flight.len() >= PUBLISH_WINDOW || (ids.peek().is_none() && !in_flight.is_empty()) {
            let Some((id, confirm)) = in_flight.pop_front() else {
                break;
            };
            if crate::within("publisher confirm", confirm).await?.is_ack() {
                confirmed.insert(id);
            }
        }
    }
    crate::within("connection.close", conn.close(200, "done".into())).await?;
    Ok(confirmed)
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn all_confirmed_consumed_follows_confirms_and_deliveries_in_any_order() {
        let mut tally = Tally::default();
        assert!(tally.all_confirmed_consumed());
        tally.confirm(1);
        tally.consume(2); // consumed before its confirm arrived
        assert!(!tally.all_confirmed_consumed());
        tally.confirm(2);
        tally.consume(1);
        tally.consume(1); // a duplicate
        tally.confirm(1); // a repeated confirm counts once
        assert!(tally.all_confirmed_consumed());
        tally.confirm(3);
        assert!(!tally.all_confirmed_consumed());
        assert_eq!(tally.report().lost, [3]);
    }
}
