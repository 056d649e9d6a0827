//! A virtual host: its exchanges and queues.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::exchange::Exchange;
use crate::ids::{ExchangeName, QueueName};
use crate::queue::Queue;

/// Everything declared in one vhost. The default exchange is implicit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VHostState {
    pub exchanges: BTreeMap<ExchangeName, Exchange>,
    pub queues: BTreeMap<QueueName, Queue>,
}

impl Default for VHostState {
    fn default() -> Self {
        Self::new()
    }
}

impl VHostState {
    /// A vhost with the pre-declared `amq.*` exchanges.
    pub fn new() -> Self {
        let exchanges = Exchange::predeclared()
            .into_iter()
            .map(|x| (x.name.clone(), x))
            .collect();
        Self {
            exchanges,
            queues: BTreeMap::new(),
        }
    }
}

impl VHostState {
    /// Queues reached by `message` published to `exchange`.
    ///
    /// The default exchange delivers to the queue named by the routing key.
    /// Exchange-to-exchange bindings are followed, each exchange at most
    /// once (so cycles end). If the exchange reaches no queue and has an
    /// `alternate-exchange`, the message goes there instead (and so on).
    /// The result is sorted and deduplicated, so every replica enqueues in
    /// the same order. A missing exchange routes nowhere (callers check
    /// existence when it is an error).
    pub fn route(&self, exchange: &ExchangeName, message: &crate::message::Message) -> Vec<QueueName> {
        if exchange.is_default() {
            let queue = QueueName::new(message.routing_key.clone());
            return if self.queues.contains_key(&queue) {
                vec![queue]
            } else {
                Vec::new()
            };
        }
        let mut tried = std::collections::BTreeSet::new();
        let mut current = exchange.clone();
        loop {
            let targets = self.route_through(&current, message);
            if !targets.is_empty() {
                return targets;
            }
            tried.insert(current.clone());
            let alternate = self.exchanges.get(&current).and_then(|x| x.alternate_exchange());
            match alternate {
                Some(next) if !tried.contains(&next) => current = next,
                _ => return targets,
            }
        }
    }

    /// Queues reached through `exchange`'s bindings, without alternates.
    fn route_through(&self, exchange: &ExchangeName, message: &crate::message::Message) -> Vec<QueueName> {
        use crate::exchange::Destination;
        use std::collections::BTreeSet;

        let mut targets = BTreeSet::new();
        let mut visited = BTreeSet::new();
        let mut pending = vec![exchange.clone()];
        while let Some(name) = pending.pop() {
            if !visited.insert(name.clone()) {
                continue;
            }
            let Some(source) = self.exchanges.get(&name) else {
                continue;
            };
            for destination in source.matching(message) {
                match destination {
                    Destination::Queue(queue) if self.queues.contains_key(queue) => {
                        targets.insert(queue.clone());
                    }
                    Destination::Queue(_) => {}
                    Destination::Exchange(next) => pending.push(next.clone()),
                }
            }
        }
        targets.into_iter().collect()
    }
}
