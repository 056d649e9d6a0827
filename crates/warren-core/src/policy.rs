//! Policies as RabbitMQ's `rabbitmqctl set_policy` and `/api/policies` keep
//! them: per vhost, a name, a regular expression over queue or exchange
//! names, what they apply to, a priority and a definition (a JSON object,
//! kept as its text). Stored, replicated, listed, exported, and applied
//! (ADR 0017): of the policies that match a queue or an exchange, the one
//! with the highest priority (then the first by name) sets what its
//! definition says of [`APPLIED_KEYS`]; other keys (`ha-*`, `queue-mode`,
//! …) are kept and shown but change nothing. As RabbitMQ's classic queues
//! resolve them: a queue's own `x-` argument wins over the policy for
//! `dead-letter-exchange`, `dead-letter-routing-key` and `overflow`, and
//! the lower of the two counts for `message-ttl`, `expires`, `max-length`
//! and `max-length-bytes`; an exchange's own `alternate-exchange` wins.

use std::collections::{BTreeMap, BTreeSet};

use amq_protocol_types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::access::Pattern;
use crate::ids::{ExchangeName, QueueName, VHost};
use crate::queue_args::QueueArgs;

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
    /// The policies that act (set with `SetPolicy`; one stored by an older
    /// build's `PutPolicy` does not). Not in this type's encoding, which
    /// snapshots of older builds hold: snapshots carry it beside it
    /// ([`Policies::acting`], [`Policies::set_acting`]).
    #[serde(skip)]
    acting: BTreeSet<(VHost, String)>,
}

impl Policies {
    pub fn get(&self, vhost: &VHost, name: &str) -> Option<&Policy> {
        self.by_name.get(&(vhost.clone(), name.to_owned()))
    }

    /// Every policy, by vhost then name.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.by_name.values()
    }

    /// Stores `policy`, acting or not; whether the one it replaced acted.
    pub(crate) fn put(&mut self, policy: Policy, acts: bool) -> bool {
        let key = (policy.vhost.clone(), policy.name.clone());
        let acted = if acts {
            !self.acting.insert(key.clone())
        } else {
            self.acting.remove(&key)
        };
        self.by_name.insert(key, policy);
        acted
    }

    /// Removes a policy: `None` if there was none, else whether it acted.
    pub(crate) fn remove(&mut self, vhost: &VHost, name: &str) -> Option<bool> {
        let key = (vhost.clone(), name.to_owned());
        self.by_name.remove(&key)?;
        Some(self.acting.remove(&key))
    }

    /// Whether the policy acts (see [`Policies::acting`]).
    pub fn acts(&self, vhost: &VHost, name: &str) -> bool {
        self.acting.contains(&(vhost.clone(), name.to_owned()))
    }

    /// The policies that act, by vhost and name (for snapshots).
    pub fn acting(&self) -> &BTreeSet<(VHost, String)> {
        &self.acting
    }

    /// Restores [`Policies::acting`] from a snapshot (names of policies
    /// not stored are dropped).
    pub fn set_acting(&mut self, acting: BTreeSet<(VHost, String)>) {
        self.acting = acting
            .into_iter()
            .filter(|key| self.by_name.contains_key(key))
            .collect();
    }

    pub(crate) fn forget_vhost(&mut self, vhost: &VHost) {
        self.by_name.retain(|(v, _), _| v != vhost);
        self.acting.retain(|(v, _)| v != vhost);
    }
}

/// The definition keys a policy applies.
pub const APPLIED_KEYS: [&str; 8] = [
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "alternate-exchange",
];

/// What a definition sets of [`APPLIED_KEYS`], parsed from its JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Definition {
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<String>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub alternate_exchange: Option<String>,
}

impl Definition {
    /// Parses a definition: an object whose applied keys have the right
    /// types and ranges (RabbitMQ's policy validators); other keys are
    /// not looked at.
    ///
    /// # Errors
    /// What is wrong, naming the key.
    pub fn parse(json: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let object = value.as_object().ok_or("a definition is a JSON object")?;
        let count = |key: &str, least: u64| -> Result<Option<u64>, String> {
            match object.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n >= least)
                    .map(Some)
                    .ok_or_else(|| format!("{key} must be an integer of at least {least}, got {v}")),
            }
        };
        let text = |key: &str| -> Result<Option<String>, String> {
            match object.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(format!("{key} must be a string, got {v}")),
            }
        };
        let overflow = text("overflow")?;
        if let Some(o) = &overflow {
            if !["drop-head", "reject-publish", "reject-publish-dlx"].contains(&o.as_str()) {
                return Err(format!(
                    "overflow must be drop-head, reject-publish or reject-publish-dlx, got \"{o}\""
                ));
            }
        }
        Ok(Self {
            message_ttl: count("message-ttl", 0)?,
            expires: count("expires", 1)?,
            max_length: count("max-length", 0)?,
            max_length_bytes: count("max-length-bytes", 0)?,
            overflow,
            dead_letter_exchange: text("dead-letter-exchange")?,
            dead_letter_routing_key: text("dead-letter-routing-key")?,
            alternate_exchange: text("alternate-exchange")?,
        })
    }

    /// `declared` (a queue's own arguments) with this definition merged in
    /// as RabbitMQ resolves the two.
    fn merged_into(&self, declared: &FieldTable) -> FieldTable {
        let mut merged = declared.clone();
        let own = declared.inner();
        let lowest = |key: &str, policy: Option<u64>, merged: &mut FieldTable| {
            let Some(policy) = policy else { return };
            let own_value = own
                .get(key)
                .and_then(crate::queue_args::integer)
                .and_then(|n| u64::try_from(n).ok());
            let value = own_value.map_or(policy, |own| own.min(policy));
            merged.insert(
                key.into(),
                AMQPValue::LongLongInt(i64::try_from(value).unwrap_or(i64::MAX)),
            );
        };
        lowest("x-message-ttl", self.message_ttl, &mut merged);
        lowest("x-expires", self.expires, &mut merged);
        lowest("x-max-length", self.max_length, &mut merged);
        lowest("x-max-length-bytes", self.max_length_bytes, &mut merged);
        for (key, policy) in [
            ("x-overflow", &self.overflow),
            ("x-dead-letter-exchange", &self.dead_letter_exchange),
            ("x-dead-letter-routing-key", &self.dead_letter_routing_key),
        ] {
            if let (Some(policy), false) = (policy, own.contains_key(key)) {
                merged.insert(key.into(), AMQPValue::LongString(policy.as_str().into()));
            }
        }
        // A routing key without an exchange to dead-letter to means
        // nothing; RabbitMQ resolves each key on its own, so the rest of
        // the policy still applies (a queue would refuse the pair).
        if merged.inner().contains_key("x-dead-letter-exchange") {
            return merged;
        }
        let mut without = FieldTable::default();
        for (key, value) in merged.inner() {
            if key.as_str() != "x-dead-letter-routing-key" {
                without.insert(key.clone(), value.clone());
            }
        }
        without
    }
}

/// What a policy can apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    ClassicQueue,
    QuorumQueue,
    Stream,
    Exchange,
}

impl Policy {
    fn applies_to(&self, target: Target) -> bool {
        matches!(
            (self.apply_to.as_str(), target),
            ("all", _)
                | ("exchanges", Target::Exchange)
                | ("queues", Target::ClassicQueue | Target::QuorumQueue | Target::Stream)
                | ("classic_queues", Target::ClassicQueue)
                | ("quorum_queues", Target::QuorumQueue)
                | ("streams", Target::Stream)
        )
    }
}

/// A vhost's policies, compiled once, in the order they win: highest
/// priority first, then by name.
pub(crate) struct Matcher<'a> {
    policies: Vec<(&'a Policy, Pattern, Definition)>,
}

impl<'a> Matcher<'a> {
    pub(crate) fn new(policies: &'a Policies, vhost: &VHost) -> Self {
        let mut compiled: Vec<(&Policy, Pattern, Definition)> = policies
            .by_name
            .range((vhost.clone(), String::new())..)
            .take_while(|((v, _), _)| v == vhost)
            .filter(|(key, _)| policies.acting.contains(*key))
            .filter_map(|(_, policy)| {
                // A stored policy that no longer parses applies nothing.
                let pattern = Pattern::parse(&policy.pattern).ok()?;
                let definition = Definition::parse(&policy.definition).ok()?;
                Some((policy, pattern, definition))
            })
            .collect();
        compiled.sort_by(|a, b| b.0.priority.cmp(&a.0.priority).then_with(|| a.0.name.cmp(&b.0.name)));
        Self { policies: compiled }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policy that applies to `name` as `target`, if one does.
    pub(crate) fn find(&self, name: &str, target: Target) -> Option<(&'a Policy, &Definition)> {
        // An empty pattern matches every name, as RabbitMQ's `re:run`
        // (for permissions it matches only the empty name).
        self.policies
            .iter()
            .find(|(policy, pattern, _)| {
                policy.applies_to(target) && (policy.pattern.is_empty() || pattern.matches(name))
            })
            .map(|(policy, _, definition)| (*policy, definition))
    }
}

/// A queue's arguments as they act, with `definition` merged into its own
/// (`None`: the merged arguments do not parse, and the policy is not
/// applied to this queue).
pub(crate) fn effective_queue_args(
    vhost: &VHost,
    name: &QueueName,
    declared: &FieldTable,
    definition: &Definition,
) -> Option<QueueArgs> {
    QueueArgs::parse(vhost, name, &definition.merged_into(declared)).ok()
}

/// The alternate exchange a policy gives an exchange without its own.
pub(crate) fn policy_alternate(definition: &Definition) -> Option<ExchangeName> {
    definition.alternate_exchange.as_deref().map(ExchangeName::new)
}
