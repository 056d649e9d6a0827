//! `warren-core`: the pure, deterministic broker state machine.
//!
//! It owns the model (vhosts, users, exchanges, queues, bindings, consumers,
//! channels and queued messages), routing, and the rules of AMQP 0-9-1 as
//! RabbitMQ applies them. It turns `(state, batch of commands)` into
//! `(state', effects)`; it has no I/O, no clock and no randomness: the
//! proposer stamps time and generated names into the commands. Everything
//! above it (Raft glue, AMQP front end) carries effects out and decides
//! nothing.
//!
//! Layout: [`broker`] holds the state and the apply loop; the command
//! handlers are `impl Broker` blocks by concern (`exchange_ops`,
//! `queue_ops`, `publish`, `consume`, `ack`, `dispatch`, `dead_letter`,
//! `lifecycle`); the model types have a file each (`exchange`, `queue`,
//! `channel`, `consumer`, `vhost`, `queue_args`); [`topic`] and
//! [`headers`] are the pure matching rules; [`reply_to`] is direct
//! reply-to. `test_support` (feature `test-support`) has batch builders and
//! a harness that checks [`Broker::check_invariants`] after every batch.
//!
//! Decisions where RabbitMQ leaves room or where we differ:
//! - Deleting a missing queue or exchange succeeds (RabbitMQ 3.x); so does
//!   unbinding a missing binding. Redeclaring an existing `amq.*` exchange
//!   with the same attributes is allowed; `amq.gen-…` queue names are
//!   accepted because the front end generates them.
//! - A requeued message goes back to its original position (RabbitMQ puts
//!   it near the head); redelivered = true.
//! - A deleted queue's unacked deliveries stay in their channels so acks of
//!   them are valid; requeued, they are dropped. Queues are told apart from
//!   a later queue of the same name by an incarnation id.
//! - Messages expire at the queue head during dispatch and `get`, and
//!   anywhere in the queue on `Tick`; `next_expiry_ms` is the earliest
//!   expiry of any ready message, so a `Tick` at that time always changes
//!   something (a property test checks it).
//! - A bad `expiration` property fails the publish with 406.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access;
mod ack;
pub mod broker;
mod channel;
pub mod command;
mod consume;
pub mod consumer;
mod dead_letter;
mod dispatch;
pub mod effect;
pub mod error;
pub mod exchange;
mod exchange_ops;
mod fail;
pub mod headers;
pub mod ids;
mod invariants;
mod lifecycle;
pub mod message;
pub mod policy;
mod policy_apply;
mod publish;
pub mod queue;
pub mod queue_args;
mod queue_ops;
pub mod ready;
pub mod reply_to;
pub mod staged;
pub mod stats;
pub mod stream;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod topic;
pub mod tx;
pub mod vhost;

pub use broker::{Broker, ChannelSummary, QueueSummary, User};
pub use command::{AfterReturn, Batch, Command, ExchangeKind, Request};
pub use consumer::{
    assigned_window, with_record_version, Lookahead, LOOKAHEAD_FROM, NO_ACK_WINDOW, NO_ACK_WINDOW_BYTES,
};
pub use effect::{Effect, Outcome};
pub use error::{reply_code, CoreError};
pub use ids::{
    ChannelId, ConnectionId, ConsumerTag, DeliveryTag, ExchangeName, MessageId, NodeId, QueueName, UserName, VHost,
};
pub use message::{
    with_body_codec, with_legacy_bodies, without_body_codec, Body, BodyCodec, Message, Properties, StoredBody,
};
pub use ready::{with_pager, with_plain_ready, Page, Pager};

#[cfg(test)]
mod tests;
