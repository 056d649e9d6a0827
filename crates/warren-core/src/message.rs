//! A message as the core keeps it: where it was published, its content
//! properties and its body.

use amq_protocol_types::FieldTable;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::ExchangeName;

/// The fourteen AMQP `basic` content properties, in domain form.
///
/// They round-trip exactly: the front end converts from and to the wire's
/// property list without loss.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
}

impl Properties {
    /// `delivery_mode = 2`.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }
}

/// A published message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The exchange it was published to (or dead-lettered through).
    pub exchange: ExchangeName,
    pub routing_key: String,
    pub properties: Properties,
    pub body: Bytes,
}

impl Message {
    /// Bytes counted against `x-max-length-bytes` (the body, as RabbitMQ counts).
    pub fn body_len(&self) -> u64 {
        self.body.len() as u64
    }
}
