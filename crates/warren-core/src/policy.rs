//! Policies as RabbitMQ's `rabbitmqctl set_policy` and `/api/policies` keep
//! them: per vhost, a name, a regular expression over queue or exchange
//! names, what they apply to, a priority and a definition (a JSON object,
//! kept as its text: the core has no JSON). Stored, replicated, listed and
//! exported; not applied to queues yet (ADR 0015).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::VHost;

/// One policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub vhost: VHost,
    pub name: String,
    pub pattern: String,
    /// `queues`, `exchanges`, `all`, `classic_queues`, `quorum_queues`, `streams`.
    pub apply_to: String,
    pub priority: i64,
    /// A JSON object, as given.
    pub definition: String,
}

/// What `apply-to` may say.
pub const APPLY_TO: [&str; 6] = [
    "queues",
    "exchanges",
    "all",
    "classic_queues",
    "quorum_queues",
    "streams",
];

/// Every policy, by vhost then name. Kept beside the broker in snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    by_name: BTreeMap<(VHost, String), Policy>,
}

impl Policies {
    pub fn get(&self, vhost: &VHost, name: &str) -> Option<&Policy> {
        self.by_name.get(&(vhost.clone(), name.to_owned()))
    }

    /// Every policy, by vhost then name.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.by_name.values()
    }

    pub(crate) fn put(&mut self, policy: Policy) {
        self.by_name.insert((policy.vhost.clone(), policy.name.clone()), policy);
    }

    pub(crate) fn remove(&mut self, vhost: &VHost, name: &str) -> bool {
        self.by_name.remove(&(vhost.clone(), name.to_owned())).is_some()
    }

    pub(crate) fn forget_vhost(&mut self, vhost: &VHost) {
        self.by_name.retain(|(v, _), _| v != vhost);
    }
}
