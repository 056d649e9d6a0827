//! Commands: every change of replicated broker state is one of these,
//! committed through Raft and applied by [`crate::Broker::apply`] on every
//! node in log order.

use std::sync::Arc;

use amq_protocol_types::FieldTable;
use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, ConnectionId, ConsumerTag, DeliveryTag, ExchangeName, NodeId, QueueName, UserName, VHost};
use crate::message::Message;

/// One Raft entry's payload: the commands a node's proposer coalesced, with
/// the time the proposer stamped on them (apply never reads a clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Milliseconds since the Unix epoch, stamped by the proposer.
    pub now_ms: u64,
    pub requests: Vec<Request>,
}

/// A command and the channel it came from. Every request with an origin
/// gets exactly one [`crate::Effect::Reply`] addressed to that channel, in
/// the order the requests were applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `None` for system commands (ticks, node events, user management).
    pub origin: Option<ChannelId>,
    pub command: Command,
}

impl Command {
    /// Whether applying it may change who may do what (users,
    /// permissions, vhosts): caches of access checks are dropped after it.
    pub fn changes_access(&self) -> bool {
        matches!(
            self,
            Command::PutUser { .. }
                | Command::DeleteUser { .. }
                | Command::SetPermissions { .. }
                | Command::ClearPermissions { .. }
                | Command::InitAccess
                | Command::DeleteVHost { .. }
        )
    }
}

/// The kind of an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    /// Parses the AMQP type name (`direct`, `fanout`, `topic`, `headers`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// A change of broker state.
///
/// Channel-scoped commands (consume, ack, qos, get, …) act on the channel
/// named by the request's `origin`; a channel-scoped command without an
/// origin is ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    DeclareExchange {
        vhost: VHost,
        name: ExchangeName,
        kind: ExchangeKind,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    DeleteExchange {
        vhost: VHost,
        name: ExchangeName,
        if_unused: bool,
    },
    /// Exchange-to-exchange binding: messages routed by `source` with a
    /// matching key also go through `destination`.
    BindExchange {
        vhost: VHost,
        destination: ExchangeName,
        source: ExchangeName,
        routing_key: String,
        arguments: FieldTable,
    },
    UnbindExchange {
        vhost: VHost,
        destination: ExchangeName,
        source: ExchangeName,
        routing_key: String,
        arguments: FieldTable,
    },
    /// `name` is never empty: the front end generates `amq.gen-…` names.
    DeclareQueue {
        vhost: VHost,
        name: QueueName,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
    },
    BindQueue {
        vhost: VHost,
        queue: QueueName,
        exchange: ExchangeName,
        routing_key: String,
        arguments: FieldTable,
    },
    UnbindQueue {
        vhost: VHost,
        queue: QueueName,
        exchange: ExchangeName,
        routing_key: String,
        arguments: FieldTable,
    },
    PurgeQueue {
        vhost: VHost,
        queue: QueueName,
    },
    DeleteQueue {
        vhost: VHost,
        queue: QueueName,
        if_unused: bool,
        if_empty: bool,
    },
    /// The message's `exchange` and `routing_key` say where it goes.
    Publish {
        vhost: VHost,
        mandatory: bool,
        message: Arc<Message>,
    },
    Qos {
        prefetch_count: u16,
        global: bool,
    },
    /// `consumer_tag` is never empty: the front end generates `amq.ctag-…`.
    Consume {
        vhost: VHost,
        queue: QueueName,
        consumer_tag: ConsumerTag,
        no_ack: bool,
        exclusive: bool,
        arguments: FieldTable,
        /// The windows of ADR 0026 the consumer gets (a manual one a multiple
        /// of its prefetch from 10 on, a `no_ack` one a window its node's
        /// `Written` reports free; see [`crate::Lookahead`]). None in
        /// entries of codec version 4 and earlier, so that replaying an old
        /// log gives what the old build gave (every replica must agree on
        /// every entry).
        #[serde(deserialize_with = "crate::consumer::since_v5")]
        lookahead: crate::Lookahead,
    },
    Cancel {
        consumer_tag: ConsumerTag,
    },
    Get {
        vhost: VHost,
        queue: QueueName,
        no_ack: bool,
    },
    Ack {
        delivery_tag: DeliveryTag,
        multiple: bool,
    },
    Nack {
        delivery_tag: DeliveryTag,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        delivery_tag: DeliveryTag,
        requeue: bool,
    },
    /// `basic.recover`: requeue (always, as RabbitMQ does) every unacked
    /// message of the channel.
    Recover {
        requeue: bool,
    },
    /// The origin channel closed: cancel its consumers, requeue its unacked
    /// messages (redelivered = true).
    CloseChannel,
    /// A connection closed: every channel of it closes, its exclusive queues
    /// are deleted.
    CloseConnection {
        conn: ConnectionId,
    },
    /// Expire messages (`x-message-ttl`, `expiration`) and queues
    /// (`x-expires`) due at or before the batch's `now_ms`.
    Tick,
    /// A node (re)started with a new boot id: remove what RabbitMQ loses on
    /// a restart of that node — its connections of earlier boots (their
    /// consumers cancelled, unacked requeued), exclusive queues they owned,
    /// and non-durable queues homed on it.
    NodeStarted {
        node: NodeId,
        boot: u64,
    },
    /// A node died or left: the same clean-up for all its connections.
    NodeDown {
        node: NodeId,
    },
    DeclareVHost {
        vhost: VHost,
    },
    DeleteVHost {
        vhost: VHost,
    },
    /// Creates or replaces a user. `password_hash` is RabbitMQ's format:
    /// base64(salt(4) ++ sha256(salt ++ password)).
    PutUser {
        name: UserName,
        password_hash: String,
        tags: Vec<String>,
    },
    DeleteUser {
        name: UserName,
    },
    // New variants go last: entries in logs written by earlier builds are
    // decoded by variant index.
    /// Part `index` of the body of message `body` (a number the channel
    /// gives each message it sends in parts) too large for one Raft entry
    /// ([`crate::staged`]).
    StageBody {
        body: u64,
        index: u32,
        part: bytes::Bytes,
    },
    /// The end of a body sent in parts.
    PublishStaged(crate::staged::StagedPublish),
    /// Grants (or replaces) `user`'s permissions in `vhost`: regular
    /// expressions over resource names ([`crate::access`]), checked by
    /// whoever submits it.
    SetPermissions {
        user: UserName,
        vhost: VHost,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        user: UserName,
        vhost: VHost,
    },
    /// Submitted once by a node that finds permissions uninitialized (a
    /// fresh cluster, or one from a build before permissions): every user
    /// gets full permissions on every vhost, as every user had before.
    InitAccess,
    /// Creates or replaces a policy that is stored and listed but acts on
    /// nothing: what builds before policies were applied wrote to the log
    /// (kept with that meaning, so that replaying an old log and restoring
    /// an old snapshot agree; ADR 0017). Nothing submits it now.
    PutPolicy(crate::policy::Policy),
    DeletePolicy {
        vhost: VHost,
        name: String,
    },
    /// Creates or replaces a policy that acts on the queues and exchanges
    /// it matches (checked by whoever submits it; ADR 0017).
    SetPolicy(crate::policy::Policy),
    /// `tx.commit`: a transactional channel's publishes and settlements
    /// since its last commit or rollback, applied together ([`crate::tx`]).
    Commit(crate::tx::Transaction),
    /// Deliveries of the origin channel that its node held and never sent
    /// to the client (ADR 0026) go back to their queues as they were (not
    /// redelivered, no delivery counted), then `then` runs in the same
    /// request, with no dispatch in between: a returned message cannot go
    /// back to the consumer that is being cancelled or closed. Tags that
    /// are not unacked on the channel are skipped.
    ReturnUnsent {
        tags: Vec<DeliveryTag>,
        then: AfterReturn,
    },
    /// The origin channel's node wrote `count` more deliveries (`bytes` of
    /// bodies) of its `no_ack` consumer `consumer_tag` to the client: that
    /// much of the consumer's window comes back ([`crate::NO_ACK_WINDOW`],
    /// ADR 0026). Ignored for a consumer that is gone.
    Written {
        consumer_tag: ConsumerTag,
        count: u32,
        bytes: u64,
    },
    /// Names the cluster, once: the first `SetClusterId` applied wins and
    /// later ones change nothing (every node proposes one at start while
    /// the state has none). Nodes carry the id in their cluster RPCs and
    /// refuse a caller of another cluster (issue 13, ADR 0022).
    SetClusterId {
        id: String,
    },
}

/// What a [`Command::ReturnUnsent`] does once the deliveries are back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterReturn {
    /// Nothing more (replies `Done`).
    Nothing,
    /// [`Command::Cancel`].
    Cancel { consumer_tag: ConsumerTag },
    /// [`Command::Recover`].
    Recover,
    /// [`Command::CloseChannel`].
    CloseChannel,
}
