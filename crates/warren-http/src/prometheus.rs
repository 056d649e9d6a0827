//! Prometheus metrics in rabbitmq_prometheus's names, so the Grafana
//! dashboards built for RabbitMQ find what they query (issue 10, item 4,
//! in part).
//!
//! [`MetricsSnapshot`] is read from the node once per scrape; rendering is
//! a pure function of it. `/metrics` has the aggregated series (one value
//! per node), `/metrics/per-object` adds one series per queue, as
//! rabbitmq_prometheus does. Counts come from this node's replica of the
//! broker state (they may lag the leader by the entries not applied yet);
//! connections are this node's.
//!
//! The `rabbitmq_global_messages_*_total` counters are this node's (the
//! AMQP front end counts its own clients' messages), as RabbitMQ's are, so
//! dashboards that sum them over the nodes get the cluster's. Not yet
//! here: per-connection and
//! per-channel series, Erlang-specific series, and the Raft commit index
//! (openraft 0.9 does not report it).

use std::fmt::Write;

use warren_core::QueueSummary;

/// What one scrape reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub node_id: u64,
    pub version: String,
    pub queues: Vec<QueueSummary>,
    pub connections: u64,
    /// Channels with a channel-scoped command applied (consumers, acks…).
    pub channels: u64,
    pub resident_memory_bytes: u64,
    pub memory_watermark_bytes: u64,
    pub memory_alarm: bool,
    pub disk_available_bytes: Option<u64>,
    pub disk_limit_bytes: u64,
    pub disk_alarm: bool,
    pub raft_term: u64,
    pub raft_last_log_index: Option<u64>,
    pub raft_last_applied_index: Option<u64>,
    pub raft_snapshot_index: Option<u64>,
    pub raft_purged_index: Option<u64>,
    pub raft_is_leader: bool,
    pub store_bytes: u64,
    /// The body store's segment files and their bytes, if the node keeps
    /// queued bodies on disk.
    pub body_store: Option<(usize, u64)>,
    /// Bytes of bodies held in memory (the body cache, bodies arriving in
    /// parts, or every held body without a body store).
    pub body_memory_bytes: u64,
    /// This node's message counters (its own clients', since it started).
    pub messages: warren_amqp::counters::MessageCounts,
}

/// The label set every RabbitMQ series joins on through
/// `rabbitmq_identity_info`.
fn node_name(snapshot: &MetricsSnapshot) -> String {
    format!("warren@node-{}", snapshot.node_id)
}

/// Escapes a label value (text format: `\`, `"` and newline).
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

fn sum(queues: &[QueueSummary], field: impl Fn(&QueueSummary) -> u64) -> u64 {
    queues.iter().map(field).sum()
}

/// The text of `/metrics` (and, with `per_object`, of `/metrics/per-object`).
pub fn render(snapshot: &MetricsSnapshot, per_object: bool) -> String {
    let mut w = Writer { out: String::new() };
    let node = node_name(snapshot);
    w.family(
        "rabbitmq_identity_info",
        "gauge",
        "RabbitMQ node & cluster identity info",
    );
    w.sample(
        "rabbitmq_identity_info",
        &[
            ("rabbitmq_node", &node),
            ("rabbitmq_cluster", "warren"),
            ("rabbitmq_cluster_permanent_id", "warren"),
        ],
        1,
    );
    w.family("rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info");
    w.sample(
        "rabbitmq_build_info",
        &[
            ("rabbitmq_version", &snapshot.version),
            ("prometheus_plugin_version", &snapshot.version),
            ("prometheus_client_version", &snapshot.version),
            ("erlang_version", "none"),
        ],
        1,
    );
    let queues = &snapshot.queues;
    let index = |i: Option<u64>| i.unwrap_or(0);
    let consumers = sum(queues, |q| q.consumers);
    let mut gauges: Vec<(&str, &str, u64)> = vec![
        ("rabbitmq_queues", "Queues available", queues.len() as u64),
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            sum(queues, |q| q.messages_ready),
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            sum(queues, |q| q.messages_unacked),
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            sum(queues, |q| q.messages_ready + q.messages_unacked),
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", consumers),
        ("rabbitmq_consumers", "Consumers currently connected", consumers),
        (
            "rabbitmq_connections",
            "Connections currently open",
            snapshot.connections,
        ),
        ("rabbitmq_channels", "Channels currently open", snapshot.channels),
        (
            "rabbitmq_process_resident_memory_bytes",
            "Memory used in bytes",
            snapshot.resident_memory_bytes,
        ),
        (
            "rabbitmq_resident_memory_limit_bytes",
            "Memory high watermark in bytes",
            snapshot.memory_watermark_bytes,
        ),
        (
            "rabbitmq_alarms_memory_used_watermark",
            "is 1 if VM memory watermark alarm is in effect",
            u64::from(snapshot.memory_alarm),
        ),
        (
            "rabbitmq_disk_space_available_limit_bytes",
            "Free disk space low watermark in bytes",
            snapshot.disk_limit_bytes,
        ),
        (
            "rabbitmq_alarms_free_disk_space_watermark",
            "is 1 if free disk space watermark alarm is in effect",
            u64::from(snapshot.disk_alarm),
        ),
        (
            "rabbitmq_raft_term_total",
            "Current Raft term number",
            snapshot.raft_term,
        ),
        (
            "rabbitmq_raft_log_last_written_index",
            "Raft log last written index",
            index(snapshot.raft_last_log_index),
        ),
        (
            "rabbitmq_raft_log_last_applied_index",
            "Raft log last applied index",
            index(snapshot.raft_last_applied_index),
        ),
        (
            "rabbitmq_raft_log_snapshot_index",
            "Raft log snapshot index",
            index(snapshot.raft_snapshot_index),
        ),
        (
            "warren_raft_log_purged_index",
            "Last Raft log index purged behind a snapshot",
            index(snapshot.raft_purged_index),
        ),
        (
            "warren_raft_is_leader",
            "1 if this node is the Raft leader",
            u64::from(snapshot.raft_is_leader),
        ),
        (
            "warren_store_bytes",
            "Bytes the Raft log, metadata and snapshot take on disk",
            snapshot.store_bytes,
        ),
        (
            "warren_body_memory_bytes",
            "Bytes of message bodies held in memory (body cache, bodies arriving in parts)",
            snapshot.body_memory_bytes,
        ),
    ];
    if let Some((segments, bytes)) = snapshot.body_store {
        gauges.push((
            "warren_body_store_bytes",
            "Bytes the body store's segment files take on disk",
            bytes,
        ));
        gauges.push((
            "warren_body_store_segments",
            "Segment files of the body store",
            segments as u64,
        ));
    }
    if let Some(available) = snapshot.disk_available_bytes {
        gauges.push((
            "rabbitmq_disk_space_available_bytes",
            "Disk space available in bytes",
            available,
        ));
    }
    for (name, help, value) in gauges {
        w.gauge(name, help, value);
    }
    render_global_counters(&mut w, snapshot);
    if per_object {
        render_per_queue(&mut w, queues);
    }
    w.out
}

/// rabbitmq_prometheus's `rabbitmq_global_messages_*_total` (label
/// `protocol="amqp091"`): this node's, as RabbitMQ's are (a cluster's
/// total is the sum over its nodes).
fn render_global_counters(w: &mut Writer, snapshot: &MetricsSnapshot) {
    let m = &snapshot.messages;
    let counters: [(&str, &str, u64); 12] = [
        ("received", "Total number of messages received from publishers", m.received),
        ("routed", "Total number of messages routed to queues or streams", m.routed),
        ("confirmed", "Total number of messages confirmed to publishers", m.confirmed),
        ("delivered", "Total number of messages delivered to consumers", m.delivered()),
        (
            "delivered_consume_auto_ack",
            "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
            m.delivered_consume_auto_ack,
        ),
        (
            "delivered_consume_manual_ack",
            "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
            m.delivered_consume_manual_ack,
        ),
        (
            "delivered_get_auto_ack",
            "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
            m.delivered_get_auto_ack,
        ),
        (
            "delivered_get_manual_ack",
            "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
            m.delivered_get_manual_ack,
        ),
        ("redelivered", "Total number of messages redelivered to consumers", m.redelivered),
        ("acknowledged", "Total number of message acknowledgements received from consumers", m.acknowledged),
        (
            "unroutable_dropped",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            m.unroutable_dropped,
        ),
        (
            "unroutable_returned",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            m.unroutable_returned,
        ),
    ];
    for (what, help, value) in counters {
        let name = format!("rabbitmq_global_messages_{what}_total");
        w.family(&name, "counter", help);
        w.sample(&name, &[("protocol", "amqp091")], value);
    }
}

/// A per-queue series: name, help, and how to read it from a queue.
type QueueSeries = (&'static str, &'static str, fn(&QueueSummary) -> u64);

fn render_per_queue(w: &mut Writer, queues: &[QueueSummary]) {
    let series: [QueueSeries; 4] = [
        (
            "rabbitmq_detailed_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |q| q.messages_ready,
        ),
        (
            "rabbitmq_detailed_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |q| q.messages_unacked,
        ),
        (
            "rabbitmq_detailed_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |q| q.messages_ready + q.messages_unacked,
        ),
        ("rabbitmq_detailed_queue_consumers", "Consumers on a queue", |q| {
            q.consumers
        }),
    ];
    for (name, help, value) in series {
        w.family(name, "gauge", help);
        for queue in queues {
            w.sample(
                name,
                &[("vhost", queue.vhost.as_str()), ("queue", queue.name.as_str())],
                value(queue),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::{QueueName, VHost};

    fn queue(vhost: &str, name: &str, ready: u64, unacked: u64, consumers: u64) -> QueueSummary {
        QueueSummary {
            vhost: VHost::new(vhost),
            name: QueueName::new(name),
            durable: true,
            exclusive: false,
            auto_delete: false,
            messages_ready: ready,
            messages_unacked: unacked,
            consumers,
        }
    }

    fn value_of(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn aggregated_series_sum_the_queues() {
        let snapshot = MetricsSnapshot {
            node_id: 2,
            version: "0.1.0".to_owned(),
            queues: vec![queue("/", "a", 3, 1, 1), queue("/", "b", 4, 0, 2)],
            connections: 5,
            raft_term: 7,
            body_store: Some((3, 4096)),
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot, false);
        assert_eq!(value_of(&text, "warren_body_store_bytes"), Some(4096));
        assert_eq!(value_of(&text, "warren_body_store_segments"), Some(3));
        assert_eq!(value_of(&text, "rabbitmq_queues"), Some(2));
        assert_eq!(value_of(&text, "rabbitmq_queue_messages_ready"), Some(7));
        assert_eq!(value_of(&text, "rabbitmq_queue_messages"), Some(8));
        assert_eq!(value_of(&text, "rabbitmq_queue_consumers"), Some(3));
        assert_eq!(value_of(&text, "rabbitmq_connections"), Some(5));
        assert_eq!(value_of(&text, "rabbitmq_raft_term_total"), Some(7));
        assert!(text.contains("rabbitmq_identity_info{rabbitmq_node=\"warren@node-2\""));
        assert!(
            !text.contains("rabbitmq_detailed_queue"),
            "per-object series only on request"
        );
    }

    #[test]
    fn per_object_series_carry_escaped_vhost_and_queue_labels() {
        let snapshot = MetricsSnapshot {
            queues: vec![queue("/", "q\"1\\\n", 9, 0, 0), queue("ü", "", 0, 0, 0)],
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot, true);
        assert!(
            text.contains("rabbitmq_detailed_queue_messages_ready{vhost=\"/\",queue=\"q\\\"1\\\\\\n\"} 9"),
            "{text}"
        );
        assert!(text.contains("rabbitmq_detailed_queue_messages_ready{vhost=\"ü\",queue=\"\"} 0"));
    }
}
