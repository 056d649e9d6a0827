//! The broker state and its apply function.
//!
//! CONTRACT (used by the front end and the Raft glue; keep these signatures):
//! - `Broker::new()` has vhost `/` with the default exchange and `amq.direct`,
//!   `amq.fanout`, `amq.topic`, `amq.headers`, `amq.match` pre-declared, and no users.
//! - `apply` is deterministic: same state + same batch = same state + same effects.
//! - Every request with an origin gets exactly one `Effect::Reply`, and effects
//!   are pushed in the order a client must see them (e.g. `consume-ok` before
//!   the first `deliver` to that consumer; `get-ok` reply carries its message).
//! - `Broker` is `Serialize + Deserialize` (snapshots) and `Clone`.

use serde::{Deserialize, Serialize};

use crate::command::Batch;
use crate::effect::Effect;
use crate::ids::{QueueName, UserName, VHost};

/// A user of the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: UserName,
    /// base64(salt(4) ++ sha256(salt ++ password)), as RabbitMQ stores it.
    pub password_hash: String,
    pub tags: Vec<String>,
}

/// One row of `list-queues`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    pub vhost: VHost,
    pub name: QueueName,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub messages_ready: u64,
    pub messages_unacked: u64,
    pub consumers: u64,
}

/// The whole replicated broker state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Broker {
    // filled in by the implementation
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// A fresh broker: vhost `/` with its pre-declared exchanges, no users.
    pub fn new() -> Self {
        todo!()
    }

    /// Applies every request of `batch` in order, appending effects.
    pub fn apply(&mut self, batch: &Batch, effects: &mut Vec<Effect>) {
        let _ = (batch, effects);
        todo!()
    }

    /// The earliest time (ms since epoch) at which a `Tick` would change
    /// something (a message or queue expires), if any.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        todo!()
    }

    pub fn user(&self, name: &UserName) -> Option<&User> {
        let _ = name;
        todo!()
    }

    pub fn has_users(&self) -> bool {
        todo!()
    }

    pub fn has_vhost(&self, vhost: &VHost) -> bool {
        let _ = vhost;
        todo!()
    }

    /// Every queue, sorted by vhost and name.
    pub fn queue_summaries(&self) -> Vec<QueueSummary> {
        todo!()
    }

    /// Checks the state's invariants: every message is ready, unacked or gone
    /// (counts add up between queues and channels), bindings point at live
    /// objects, consumers point at live queues and channels.
    ///
    /// # Errors
    /// A description of the first violated invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        todo!()
    }
}
