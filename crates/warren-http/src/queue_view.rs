//! A queue as `/api/queues` shows it, built fast: the state read lock is
//! held only to copy each queue's few fields into a [`QueueRow`]; rates
//! are looked up, pages cut and JSON written after it is released, and
//! written by `Serialize` straight to bytes (no `serde_json::Value` tree of
//! 10,000 queues).

use serde::ser::{Serialize, SerializeMap, Serializer};
use warren_core::stats::QueueStats;
use warren_core::{QueueName, VHost};

use crate::rates::Rates;

/// What `/api/queues` shows of one queue, owned.
#[derive(Clone, Debug)]
pub(crate) struct QueueRow {
    pub name: QueueName,
    pub vhost: VHost,
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    pub arguments: amq_protocol_types::FieldTable,
    pub ready: u64,
    pub unacked: u64,
    pub ready_bytes: u64,
    pub consumers: usize,
    pub stats: QueueStats,
    /// The policy that applies to it.
    pub policy: Option<String>,
    /// That policy's definition, as JSON (filled in after the lock is
    /// released, by [`crate::api::fill_policy_definitions`]).
    pub policy_definition: Option<serde_json::Value>,
    /// Filled in after the lock is released.
    pub rates: Rates,
}

impl QueueRow {
    pub fn new(vhost: &VHost, queue: &warren_core::queue::Queue) -> Self {
        use amq_protocol_types::AMQPValue;
        let kind = match queue.arguments.inner().get("x-queue-type") {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
            _ => "classic".to_owned(),
        };
        Self {
            name: queue.name.clone(),
            vhost: vhost.clone(),
            kind,
            durable: queue.durable,
            auto_delete: queue.auto_delete,
            exclusive: queue.exclusive_owner.is_some(),
            arguments: queue.arguments.clone(),
            ready: queue.ready.len() as u64,
            unacked: queue.unacked,
            ready_bytes: queue.ready_bytes,
            consumers: queue.consumers.len(),
            stats: queue.stats,
            policy: queue.policy.clone(),
            policy_definition: None,
            rates: Rates::default(),
        }
    }
}

/// A queue row with the node it is shown as on.
pub(crate) struct QueueView<'a> {
    pub row: QueueRow,
    pub node: &'a str,
}

/// `{"rate": r}`, rounded as RabbitMQ shows it.
struct Rate(f64);

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("rate", &((self.0 * 10.0).round() / 10.0))?;
        map.end()
    }
}

/// `message_stats`: each count with its `_details`.
struct MessageStats<'a>(&'a QueueStats, &'a Rates);

impl Serialize for MessageStats<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (s, r) = (self.0, self.1);
        let deliver_get_rate = r.deliver + r.deliver_no_ack + r.get + r.get_no_ack;
        let entries: [(&str, &str, u64, f64); 8] = [
            ("publish", "publish_details", s.publish, r.publish),
            ("deliver", "deliver_details", s.deliver, r.deliver),
            (
                "deliver_no_ack",
                "deliver_no_ack_details",
                s.deliver_no_ack,
                r.deliver_no_ack,
            ),
            ("get", "get_details", s.get, r.get),
            ("get_no_ack", "get_no_ack_details", s.get_no_ack, r.get_no_ack),
            ("deliver_get", "deliver_get_details", s.deliver_get(), deliver_get_rate),
            ("redeliver", "redeliver_details", s.redeliver, r.redeliver),
            ("ack", "ack_details", s.ack, r.ack),
        ];
        let mut map = serializer.serialize_map(Some(entries.len() * 2))?;
        for (key, details, count, rate) in entries {
            map.serialize_entry(key, &count)?;
            map.serialize_entry(details, &Rate(rate))?;
        }
        map.end()
    }
}

impl Serialize for QueueView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let q = &self.row;
        let mut map = serializer.serialize_map(Some(20))?;
        map.serialize_entry("name", q.name.as_str())?;
        map.serialize_entry("vhost", q.vhost.as_str())?;
        map.serialize_entry("type", &q.kind)?;
        map.serialize_entry("durable", &q.durable)?;
        map.serialize_entry("auto_delete", &q.auto_delete)?;
        map.serialize_entry("exclusive", &q.exclusive)?;
        map.serialize_entry("arguments", &crate::api::table_json(&q.arguments))?;
        map.serialize_entry("node", self.node)?;
        map.serialize_entry("policy", &q.policy)?;
        map.serialize_entry(
            "effective_policy_definition",
            q.policy_definition
                .as_ref()
                .unwrap_or(&serde_json::Value::Object(serde_json::Map::new())),
        )?;
        map.serialize_entry("state", "running")?;
        map.serialize_entry("messages", &(q.ready + q.unacked))?;
        map.serialize_entry("messages_ready", &q.ready)?;
        map.serialize_entry("messages_unacknowledged", &q.unacked)?;
        map.serialize_entry("message_bytes_ready", &q.ready_bytes)?;
        map.serialize_entry(
            "messages_details",
            &Rate(q.rates.messages_ready + q.rates.messages_unacknowledged),
        )?;
        map.serialize_entry("messages_ready_details", &Rate(q.rates.messages_ready))?;
        map.serialize_entry(
            "messages_unacknowledged_details",
            &Rate(q.rates.messages_unacknowledged),
        )?;
        map.serialize_entry("message_stats", &MessageStats(&q.stats, &q.rates))?;
        // rabbitmq_http_client reads it as a u16.
        map.serialize_entry("consumers", &q.consumers.min(usize::from(u16::MAX)))?;
        map.end()
    }
}
