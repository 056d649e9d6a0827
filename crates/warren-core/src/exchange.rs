//! An exchange and its outgoing bindings.

use amq_protocol_types::FieldTable;
use serde::{Deserialize, Serialize};

use crate::command::ExchangeKind;
use crate::headers::headers_match;
use crate::ids::{ExchangeName, NodeId, QueueName};
use crate::message::Message;
use crate::topic::{topic_matches, TopicKey};

/// Where a binding sends matching messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Destination {
    Queue(QueueName),
    /// Exchange-to-exchange binding.
    Exchange(ExchangeName),
}

/// A binding from its source exchange to a destination. Bindings are
/// identified by all three fields, as in RabbitMQ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

impl Binding {
    /// Whether `message` published to an exchange of `kind` matches.
    pub fn matches(&self, kind: ExchangeKind, message: &Message) -> bool {
        match kind {
            ExchangeKind::Direct => self.routing_key == message.routing_key,
            ExchangeKind::Fanout => true,
            ExchangeKind::Topic => topic_matches(&self.routing_key, &message.routing_key),
            ExchangeKind::Headers => headers_match(&self.arguments, message.properties.headers.as_ref()),
        }
    }
}

/// A declared exchange. The default exchange is not stored: it routes by
/// queue name and cannot be bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub name: ExchangeName,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// Bindings with this exchange as source, in the order they were made.
    pub bindings: Vec<Binding>,
    /// The node (and its boot) that declared it; a non-durable exchange is
    /// lost when that node restarts, as RabbitMQ loses it on a restart.
    #[serde(default)]
    pub home: Option<(NodeId, u64)>,
    /// Message counts ([`crate::stats`]): not encoded, never unequal.
    #[serde(skip)]
    pub stats: crate::stats::ExchangeStats,
    /// The policy that applies to it, and the alternate exchange that
    /// policy gives it (not encoded: computed from the policies).
    #[serde(skip)]
    pub policy: Option<String>,
    #[serde(skip)]
    pub policy_alternate: Option<ExchangeName>,
}

impl Exchange {
    /// The exchanges every vhost starts with (all durable).
    pub fn predeclared() -> Vec<Exchange> {
        [
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ]
        .into_iter()
        .map(|(name, kind)| Exchange {
            name: ExchangeName::from(name),
            kind,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
            bindings: Vec::new(),
            home: None,
            stats: crate::stats::ExchangeStats::default(),
            policy: None,
            policy_alternate: None,
        })
        .collect()
    }

    /// The `alternate-exchange` argument (or a policy's): where messages
    /// this exchange cannot route go instead.
    pub fn alternate_exchange(&self) -> Option<ExchangeName> {
        // Its own argument wins over a policy's.
        match self.arguments.inner().get("alternate-exchange") {
            Some(value) => crate::queue_args::string(value).map(ExchangeName::new),
            None => self.policy_alternate.clone(),
        }
    }

    /// Adds `binding` unless an identical one exists. Returns whether it was added.
    pub fn bind(&mut self, binding: Binding) -> bool {
        if self.bindings.contains(&binding) {
            return false;
        }
        self.bindings.push(binding);
        true
    }

    /// Removes `binding` if present. Returns whether it was there.
    pub fn unbind(&mut self, binding: &Binding) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| b != binding);
        self.bindings.len() != before
    }

    /// Removes every binding to `destination`. Returns how many went.
    pub fn unbind_destination(&mut self, destination: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|b| &b.destination != destination);
        before - self.bindings.len()
    }

    /// Destinations of the bindings `message` matches, in binding order.
    pub fn matching<'a>(&'a self, message: &'a Message) -> impl Iterator<Item = &'a Destination> + 'a {
        // A topic key is split into words once, not once per binding.
        let topic = (self.kind == ExchangeKind::Topic).then(|| TopicKey::new(&message.routing_key));
        self.bindings
            .iter()
            .filter(move |b| match &topic {
                Some(key) => key.matches(&b.routing_key),
                None => b.matches(self.kind, message),
            })
            .map(|b| &b.destination)
    }
}
