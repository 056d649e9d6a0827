//! What every connection of this node shares ([`Frontend`]), and the
//! node's own short-lived connections ([`Session`], [`Frontend::execute`])
//! through which the management API runs commands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use warren_cluster::{Node, Proposer};
use warren_core::{ChannelId, Command, ConnectionId, CoreError, Effect, NodeId, Outcome, Request};

use crate::{counters, flow, AmqpConfig, EffectBatch, Registry};

/// What every connection of this node shares.
pub struct Frontend {
    pub node_id: NodeId,
    /// This process's boot id; connection ids carry it so the core can tell
    /// connections of an earlier run of this node from current ones.
    pub boot: u64,
    pub node: Node,
    pub proposer: Proposer,
    pub registry: Arc<Registry>,
    pub config: AmqpConfig,
    /// The memory and disk alarms; publishers are blocked while either is on.
    pub alarms: Arc<flow::Alarms>,
    /// Bytes of message bodies being received (publishes whose content is
    /// not complete yet), over every connection: counted by the memory alarm.
    pub receiving_bytes: Arc<AtomicU64>,
    /// This node's message counters (Prometheus' global series).
    pub counters: Arc<counters::MessageCounters>,
    next_connection: AtomicU64,
    /// Connection tasks running, until their close is proposed.
    live_connections: AtomicU64,
}

/// Why [`Frontend::execute`] has no outcome to give.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The command was applied and refused.
    #[error("{0}")]
    Refused(CoreError),
    /// The node is shutting down, or no answer came: the command may or
    /// may not have been applied.
    #[error("{0}")]
    Unavailable(String),
}

/// How long [`Frontend::execute`] waits for the cluster to answer.
pub const EXECUTE_TIMEOUT: Duration = Duration::from_secs(30);

impl Frontend {
    /// Runs `command` as a short-lived connection of this node (a
    /// connection id of its own, so clients' exclusive queues stay out of
    /// reach): submits it through the proposer, waits for the core's
    /// reply, then closes the connection (through Raft, as any other).
    /// For the management API and `warren ctl`.
    ///
    /// # Errors
    /// The core refused the command, or the node could not get an answer.
    pub async fn execute(&self, command: Command) -> Result<Outcome, ExecuteError> {
        let mut session = self.session();
        let outcome = session.execute(command).await;
        session.close().await;
        outcome
    }

    /// A short-lived connection of this node on which several commands
    /// run in order on one channel (a `get` and the ack of what it got).
    pub fn session(&self) -> Session {
        let conn = ConnectionId {
            node: self.node_id,
            boot: self.boot,
            seq: self.next_connection_seq(),
        };
        Session {
            conn,
            effects: self.registry.register(conn),
            registry: self.registry.clone(),
            proposer: self.proposer.clone(),
            closed: false,
        }
    }

    /// The sequence number of a new connection of this node (the AMQP
    /// listener's, or the management API's short-lived ones).
    pub fn next_connection_seq(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    pub fn new(node_id: NodeId, boot: u64, node: Node, registry: Arc<Registry>, config: AmqpConfig) -> Self {
        let proposer = node.proposer();
        Self {
            node_id,
            boot,
            node,
            proposer,
            registry,
            config,
            alarms: Arc::new(flow::Alarms::default()),
            receiving_bytes: Arc::new(AtomicU64::new(0)),
            counters: Arc::default(),
            next_connection: AtomicU64::new(1),
            live_connections: AtomicU64::new(0),
        }
    }
}

impl Frontend {
    /// Closes every client connection of this node with 320
    /// CONNECTION_FORCED and `reason` (RabbitMQ's text for a stopping
    /// node: "broker forced connection closure with reason 'shutdown'"),
    /// then waits, at most `limit`, until every connection task has
    /// proposed its close, so their unacked messages go back to their
    /// queues now rather than when the cluster declares this node down.
    /// Stop accepting connections first.
    pub async fn drain(&self, reason: &str, limit: Duration) {
        let closed = self.registry.close_all_clients(reason);
        let deadline = tokio::time::Instant::now() + limit;
        while self.live_connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.live_connections.load(Ordering::Acquire);
        info!(closed, left, "AMQP connections drained");
    }

    /// Counts a connection task as live until the guard drops.
    pub(crate) fn live_connection(self: &Arc<Self>) -> LiveConnection {
        self.live_connections.fetch_add(1, Ordering::AcqRel);
        LiveConnection(self.clone())
    }
}

/// See [`Frontend::live_connection`].
pub(crate) struct LiveConnection(Arc<Frontend>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.live_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection of this node's own (see [`Frontend::session`]): its
/// commands run on channel 1. Closed by [`Session::close`], or when
/// dropped (the close is then proposed in the background).
pub struct Session {
    conn: ConnectionId,
    effects: tokio::sync::mpsc::UnboundedReceiver<EffectBatch>,
    registry: Arc<Registry>,
    proposer: Proposer,
    closed: bool,
}

impl Session {
    /// Submits `command` and waits for the core's reply.
    ///
    /// # Errors
    /// The core refused the command, or the node could not get an answer.
    pub async fn execute(&mut self, command: Command) -> Result<Outcome, ExecuteError> {
        let origin = ChannelId {
            conn: self.conn,
            channel: 1,
        };
        let request = Request {
            origin: Some(origin),
            command,
        };
        if self.proposer.submit(request).await.is_err() {
            return Err(ExecuteError::Unavailable("the node is shutting down".to_owned()));
        }
        match tokio::time::timeout(EXECUTE_TIMEOUT, reply_to(&mut self.effects, origin)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ExecuteError::Unavailable(format!(
                "no answer from the cluster within {} s",
                EXECUTE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Publishes `message` (its body in memory) as a client's publish
    /// would go: a body over the part size travels in parts, each its own
    /// Raft entry ([`warren_core::staged`]), as the AMQP front end sends it.
    ///
    /// # Errors
    /// As [`Session::execute`].
    pub async fn publish(
        &mut self,
        vhost: warren_core::VHost,
        mandatory: bool,
        message: warren_core::Message,
    ) -> Result<Outcome, ExecuteError> {
        let mut body = message.body.inline().cloned().unwrap_or_default();
        if body.len() <= crate::connection::STAGED_PART_BYTES {
            let command = Command::Publish {
                vhost,
                mandatory,
                message: Arc::new(message),
            };
            return self.execute(command).await;
        }
        let (mut parts, mut staged_bytes) = (0u32, 0u64);
        while body.len() > crate::connection::STAGED_PART_BYTES {
            let part = body.split_to(crate::connection::STAGED_PART_BYTES);
            staged_bytes += part.len() as u64;
            let command = Command::StageBody {
                body: 1,
                index: parts,
                part,
            };
            self.execute(command).await?;
            parts += 1;
        }
        let message = warren_core::Message {
            body: body.into(),
            ..message
        };
        let end = warren_core::staged::StagedPublish {
            vhost,
            mandatory,
            message: Arc::new(message),
            body: 1,
            parts,
            staged_bytes,
        };
        self.execute(Command::PublishStaged(end)).await
    }

    /// Closes the connection (what it got and did not ack is requeued)
    /// and waits for the close to be proposed.
    pub async fn close(mut self) {
        self.closed = true;
        self.registry.unregister(self.conn);
        let close = Request {
            origin: None,
            command: Command::CloseConnection { conn: self.conn },
        };
        if self.proposer.submit(close).await.is_err() {
            warn!(conn = ?self.conn, "could not propose the close of a short-lived connection: node shutting down");
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.registry.unregister(self.conn);
        let proposer = self.proposer.clone();
        let close = Request {
            origin: None,
            command: Command::CloseConnection { conn: self.conn },
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = proposer.submit(close).await;
            });
        }
    }
}

/// The core's reply to `origin`, from the connection's effect stream.
async fn reply_to(
    effects: &mut tokio::sync::mpsc::UnboundedReceiver<EffectBatch>,
    origin: ChannelId,
) -> Result<Outcome, ExecuteError> {
    while let Some(batch) = effects.recv().await {
        for effect in batch {
            if let Effect::Reply { channel, outcome } = effect {
                if channel == origin {
                    return outcome.map_err(ExecuteError::Refused);
                }
            }
        }
    }
    Err(ExecuteError::Unavailable(
        "the node dropped its connections (declared down, or it installed a snapshot): the outcome is unknown"
            .to_owned(),
    ))
}
