//! The workload: publishers with confirms and consumers with manual acks
//! on every node, each reconnecting after any error (to its own node every
//! other time, to the others in turn in between), and recording what it saw in the [`History`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::{watch, Semaphore};

use crate::history::{History, MessageId, Side};

/// One AMQP step (connect, open, declare, ack) may take this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A publish waits this long for its confirm before the session is given up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause after a failed session before the next node is tried.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// AMQP URLs, one per node.
    pub nodes: Vec<String>,
    pub queue: String,
    /// Declared with `x-queue-type` (RabbitMQ's quorum queue by default).
    pub queue_type: String,
    pub publishers_per_node: usize,
    pub consumers_per_node: usize,
    /// Publishes per second per publisher.
    pub rate: u32,
    /// Unconfirmed publishes one publisher keeps in flight at most.
    pub window: usize,
    pub prefetch: u16,
    pub message_size: usize,
    /// Tells this run's messages from any left in the queue.
    pub run: u64,
}

/// Opens a connection to `uri`, bounded by [`STEP_TIMEOUT`].
async fn connect(uri: &str) -> anyhow::Result<Connection> {
    within("connect", Connection::connect(uri, ConnectionProperties::default())).await
}

async fn within<T, E: Into<anyhow::Error>>(
    what: &str,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(result) => result.map_err(|e| e.into().context(format!("{what} failed"))),
        Err(_) => anyhow::bail!("{what}: no answer within {STEP_TIMEOUT:?}"),
    }
}

impl Workload {
    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if !self.queue_type.is_empty() {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(self.queue_type.as_str().into()),
            );
        }
        arguments
    }

    /// Declares the durable queue and purges what an earlier run left,
    /// through the first node that answers.
    ///
    /// # Errors
    /// No node could declare it.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let mut last_error = None;
        for uri in &self.nodes {
            let attempt = async {
                let conn = connect(uri).await?;
                let channel = within("channel.open", conn.create_channel()).await?;
                within(
                    "queue.declare",
                    channel.queue_declare(
                        self.queue.as_str().into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..QueueDeclareOptions::default()
                        },
                        self.queue_arguments(),
                    ),
                )
                .await?;
                within(
                    "queue.purge",
                    channel.queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default()),
                )
                .await?;
                let _ = within("connection.close", conn.close(200, "prepared".into())).await;
                Ok::<_, anyhow::Error>(())
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e.context(format!("declaring {} through {uri}", self.queue))),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no node to declare the queue on")))
    }

    /// The node a client's `session`-th session goes to: its own node
    /// every other session, in between the others in turn. A client that
    /// lost its session on another node goes back home: round robin alone
    /// had every client drift onto one node within a few faults (CI, a
    /// random run: all six clients on the node then paused, 4.8 s without
    /// a confirm after a follower pause).
    fn node_for(&self, home: usize, session: u64) -> &str {
        let count = self.nodes.len().max(1);
        let offset = if count == 1 || session.is_multiple_of(2) {
            0
        } else {
            // 1, 2, …, count - 1, 1, …
            1 + usize::try_from((session / 2) % (count as u64 - 1)).unwrap_or(0)
        };
        &self.nodes[(home + offset) % count]
    }
}

/// The consumers' switch: `None` while publishers run; then the deadline
/// until which they drain, unless everything confirmed was delivered first.
pub type Drain = watch::Receiver<Option<tokio::time::Instant>>;

/// Publishes with confirms until `stop`, reconnecting after errors.
pub async fn publish(
    workload: Arc<Workload>,
    history: Arc<History>,
    publisher: u32,
    home: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut session: u32 = 0;
    let pause = Duration::from_secs_f64(1.0 / f64::from(workload.rate.max(1)));
    while !*stop.borrow() {
        let uri = workload.node_for(home, u64::from(session)).to_owned();
        let result = publish_session(&workload, &history, publisher, session, &uri, pause, &mut stop).await;
        session += 1;
        if let Err(e) = result {
            history.error(Side::Publisher, format!("publisher {publisher} on {uri}: {e:#}"));
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

async fn publish_session(
    workload: &Workload,
    history: &Arc<History>,
    publisher: u32,
    session: u32,
    uri: &str,
    pause: Duration,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let conn = connect(uri).await?;
    let channel = within("channel.open", conn.create_channel()).await?;
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    let window = Arc::new(Semaphore::new(workload.window.max(1)));
    let failed = Arc::new(AtomicBool::new(false));
    // Why the first confirm that failed did (the session's error).
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut ticker = tokio::time::interval(pause);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() || failed.load(Ordering::Relaxed) {
            break;
        }
        let permit = tokio::select! {
            permit = window.clone().acquire_owned() => permit.context("the window closed")?,
            _ = stop.changed() => break,
        };
        let id = MessageId {
            publisher,
            session,
            seq,
        };
        seq += 1;
        let sent = Instant::now();
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "".into(),
                workload.queue.as_str().into(),
                BasicPublishOptions::default(),
                &id.body(workload.run, workload.message_size),
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await;
        let confirm = match confirm {
            Ok(confirm) => confirm,
            Err(e) => {
                history.unknown();
                return Err(e);
            }
        };
        history.published();
        let (history, failed, failure) = (history.clone(), failed.clone(), failure.clone());
        tokio::spawn(async move {
            let why = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Ok(Ok(confirmation)) if confirmation.is_ack() => {
                    history.confirmed(id, sent.elapsed().as_secs_f64() * 1000.0);
                    None
                }
                Ok(Ok(_nack)) => {
                    history.nacked();
                    None
                }
                Ok(Err(e)) => Some(format!("the confirm failed: {e}")),
                Err(_) => Some(format!("no confirm within {CONFIRM_TIMEOUT:?}")),
            };
            if let Some(why) = why {
                history.unknown();
                failed.store(true, Ordering::Relaxed);
                failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert(why);
            }
            drop(permit);
        });
    }
    // Wait for the confirms still in flight (each is bounded by its timeout).
    let _ = tokio::time::timeout(
        CONFIRM_TIMEOUT + Duration::from_secs(1),
        window.acquire_many(u32::try_from(workload.window.max(1)).unwrap_or(u32::MAX)),
    )
    .await;
    let _ = within("connection.close", conn.close(200, "done".into())).await;
    if failed.load(Ordering::Relaxed) {
        let why = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        anyhow::bail!("{why}");
    }
    Ok(())
}

/// Numbers consumer sessions across all consumers (for the order check).
static CONSUMER_SESSIONS: AtomicU64 = AtomicU64::new(0);

/// Consumes with manual acks until drained, reconnecting after errors.
pub async fn consume(workload: Arc<Workload>, history: Arc<History>, consumer: u32, home: usize, drain: Drain) {
    let done = || {
        let deadline = *drain.borrow();
        deadline.is_some_and(|deadline| {
            tokio::time::Instant::now() >= deadline || history.records().all_confirmed_delivered()
        })
    };
    let mut session = 0u64;
    while !done() {
        let uri = workload.node_for(home, session).to_owned();
        session += 1;
        let result = consume_session(&workload, &history, consumer, &uri, &done).await;
        if let Err(e) = result {
            history.error(Side::Consumer, format!("consumer {consumer} on {uri}: {e:#}"));
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

async fn consume_session(
    workload: &Workload,
    history: &History,
    consumer: u32,
    uri: &str,
    done: &impl Fn() -> bool,
) -> anyhow::Result<()> {
    let session = CONSUMER_SESSIONS.fetch_add(1, Ordering::Relaxed);
    let conn = connect(uri).await?;
    let channel = within("channel.open", conn.create_channel()).await?;
    within(
        "basic.qos",
        channel.basic_qos(workload.prefetch, BasicQosOptions::default()),
    )
    .await?;
    let mut deliveries = within(
        "basic.consume",
        channel.basic_consume(
            workload.queue.as_str().into(),
            format!("chaos-consumer-{consumer}-{session}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    while !done() {
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await else {
            continue;
        };
        let delivery = next.context("the consumer's stream ended")??;
        match MessageId::parse(&delivery.data, workload.run) {
            Some(Ok(id)) => history.delivered(session, id, delivery.redelivered),
            Some(Err(())) | None => history.foreign(),
        }
        within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
    }
    let _ = within("connection.close", conn.close(200, "done".into())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Workload;

    #[test]
    fn a_client_goes_home_every_other_session_and_to_the_others_in_turn_between() {
        let workload = Workload {
            nodes: vec!["a".into(), "b".into(), "c".into()],
            queue: "q".into(),
            queue_type: String::new(),
            publishers_per_node: 1,
            consumers_per_node: 1,
            rate: 1,
            window: 1,
            prefetch: 1,
            message_size: 0,
            run: 0,
        };
        let order: Vec<&str> = (0..8).map(|session| workload.node_for(1, session)).collect();
        assert_eq!(order, ["b", "c", "b", "a", "b", "c", "b", "a"]);
        let alone = Workload {
            nodes: vec!["a".into()],
            ..workload
        };
        let order: Vec<&str> = (0..3).map(|session| alone.node_for(0, session)).collect();
        assert_eq!(order, ["a", "a", "a"]);
    }
}
