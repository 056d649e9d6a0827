//! What applying a command tells the world: replies to the requesting
//! channel, deliveries to consumers, server-initiated cancels. Each node acts
//! on the effects addressed to its own connections and ignores the rest.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{ChannelId, ConsumerTag, DeliveryTag, QueueName};
use crate::message::Message;

/// The successful result of one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Commands with nothing to report (ack, qos, bind, close, …).
    Done,
    ExchangeDeclared,
    ExchangeDeleted,
    QueueDeclared {
        queue: QueueName,
        message_count: u32,
        consumer_count: u32,
        /// The declare made a new queue (the front end's
        /// `queues_created` counter).
        created: bool,
    },
    QueuePurged {
        message_count: u32,
    },
    QueueDeleted {
        message_count: u32,
    },
    /// Publish outcome. `routed`: reached at least one queue. `rejected`:
    /// a queue with `x-overflow=reject-publish` refused it (the publisher
    /// gets `basic.nack`). `returned`: mandatory and unroutable — the front
    /// end sends `basic.return` (312 NO_ROUTE) with this message before the
    /// confirm.
    Published {
        routed: bool,
        rejected: bool,
        returned: Option<Arc<Message>>,
    },
    ConsumeOk {
        consumer_tag: ConsumerTag,
    },
    CancelOk {
        consumer_tag: ConsumerTag,
    },
    GetOk {
        delivery_tag: DeliveryTag,
        redelivered: bool,
        /// Messages left ready in the queue after this one.
        message_count: u32,
        message: Arc<Message>,
    },
    GetEmpty,
    /// `tx.commit` applied. `returned`: its mandatory unroutable messages,
    /// for `basic.return` before `commit-ok`; `rejected`: a queue refused
    /// one of its publishes (RabbitMQ then fails the commit as a partial
    /// completion).
    Committed {
        returned: Vec<Arc<Message>>,
        rejected: bool,
    },
}

/// One thing a node must do after applying a command.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// The answer to a request, sent to the channel it came from.
    Reply {
        channel: ChannelId,
        outcome: Result<Outcome, CoreError>,
    },
    /// `basic.deliver` to a consumer.
    Deliver {
        channel: ChannelId,
        consumer_tag: ConsumerTag,
        delivery_tag: DeliveryTag,
        redelivered: bool,
        message: Arc<Message>,
    },
    /// Server-initiated `basic.cancel` (the queue was deleted, or its node
    /// went away).
    CancelConsumer {
        channel: ChannelId,
        consumer_tag: ConsumerTag,
    },
}

impl Effect {
    /// The channel this effect is addressed to.
    pub fn channel(&self) -> ChannelId {
        match self {
            Effect::Reply { channel, .. }
            | Effect::Deliver { channel, .. }
            | Effect::CancelConsumer { channel, .. } => *channel,
        }
    }
}
