//! `warren-core`: the pure, deterministic broker state machine.
//!
//! It owns the model (vhosts, users, exchanges, queues, bindings, consumers,
//! channels and queued messages), routing, and the rules of AMQP 0-9-1 as
//! RabbitMQ applies them. It turns `(state, batch of commands)` into
//! `(state', effects)`; it has no I/O, no clock and no randomness: the
//! proposer stamps time and generated names into the commands. Everything
//! above it (Raft glue, AMQP front end) carries effects out and decides
//! nothing.

pub mod broker;
pub mod command;
pub mod effect;
pub mod error;
pub mod ids;
pub mod message;

pub use broker::{Broker, QueueSummary, User};
pub use command::{Batch, Command, ExchangeKind, Request};
pub use effect::{Effect, Outcome};
pub use error::{reply_code, CoreError};
pub use ids::{
    ChannelId, ConnectionId, ConsumerTag, DeliveryTag, ExchangeName, MessageId, NodeId, QueueName, UserName, VHost,
};
pub use message::{Message, Properties};
