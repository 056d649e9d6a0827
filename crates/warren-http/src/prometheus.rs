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
//! dashboards that sum them over the nodes get the cluster's; so are the
//! connection, channel and queue churn counters, the publishers and
//! consumers, and the message size histogram. Every series the Grafana
//! dashboards "RabbitMQ-Overview" and "RabbitMQ-Quorum-Queues-Raft" query
//! is here (a test holds the list); `rabbitmq_erlang_uptime_seconds` is the
//! process's uptime. Not here: per-connection and per-channel series, and
//! the Erlang VM's own series. The Raft series describe the node's one Raft
//! group (RabbitMQ has one per quorum queue, labelled by queue).

use std::fmt::Write;

use warren_core::QueueSummary;

/// Every series the Grafana dashboards "RabbitMQ-Overview" (10991) and
/// "RabbitMQ-Quorum-Queues-Raft" (11340) query, as their JSON in
/// rabbitmq-server's `deps/rabbitmq_prometheus/docker/grafana/dashboards`
/// names them (the `expr` fields, read 2026-12-04).
pub const DASHBOARD_SERIES: [&str; 47] = [
    "rabbitmq_build_info",
    "rabbitmq_channels",
    "rabbitmq_channels_closed_total",
    "rabbitmq_channels_opened_total",
    "rabbitmq_connections",
    "rabbitmq_connections_closed_total",
    "rabbitmq_connections_opened_total",
    "rabbitmq_disk_space_available_bytes",
    "rabbitmq_disk_space_available_limit_bytes",
    "rabbitmq_erlang_uptime_seconds",
    "rabbitmq_global_consumers",
    "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_consume_auto_ack_total",
    "rabbitmq_global_messages_delivered_consume_manual_ack_total",
    "rabbitmq_global_messages_delivered_get_auto_ack_total",
    "rabbitmq_global_messages_delivered_get_manual_ack_total",
    "rabbitmq_global_messages_delivered_total",
    "rabbitmq_global_messages_get_empty_total",
    "rabbitmq_global_messages_received_confirm_total",
    "rabbitmq_global_messages_received_total",
    "rabbitmq_global_messages_redelivered_total",
    "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_unroutable_returned_total",
    "rabbitmq_global_publishers",
    "rabbitmq_identity_info",
    "rabbitmq_message_size_bytes_bucket",
    "rabbitmq_message_size_bytes_count",
    "rabbitmq_message_size_bytes_sum",
    "rabbitmq_process_max_fds",
    "rabbitmq_process_open_fds",
    "rabbitmq_process_resident_memory_bytes",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queues",
    "rabbitmq_queues_created_total",
    "rabbitmq_queues_declared_total",
    "rabbitmq_queues_deleted_total",
    "rabbitmq_resident_memory_limit_bytes",
    "rabbitmq_raft_commit_index",
    "rabbitmq_raft_commit_latency_seconds",
    "rabbitmq_raft_last_written_index",
    "rabbitmq_raft_log_commit_index",
    "rabbitmq_raft_log_last_written_index",
    "rabbitmq_raft_log_snapshot_index",
    "rabbitmq_raft_term",
];

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
    /// Ready messages held in memory, and in pages on disk (ADR 0019).
    pub ready_in_memory: u64,
    pub ready_paged: u64,
    /// This node's message counters (its own clients', since it started).
    pub messages: warren_amqp::counters::MessageCounts,
    /// Consumers on this node's channels.
    pub consumers_here: u64,
    pub uptime_seconds: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    /// The commit index, proposals, commit and apply times.
    pub raft: warren_cluster::RaftCounts,
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

    /// Counters without labels: `(name, help, value)` each.
    fn counters(&mut self, table: &[(&str, &str, u64)]) {
        for (name, help, value) in table {
            self.family(name, "counter", help);
            self.sample(name, &[], *value);
        }
    }

    fn float_sample(&mut self, name: &str, value: f64) {
        let _ = writeln!(self.out, "{name} {value}");
    }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
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
    let raft = &snapshot.raft;
    let committed = index(raft.committed);
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
            "rabbitmq_global_consumers",
            "Current number of consumers",
            snapshot.consumers_here,
        ),
        (
            "rabbitmq_global_publishers",
            "Current number of publishers",
            snapshot.messages.publishers,
        ),
        (
            "rabbitmq_erlang_uptime_seconds",
            "Node uptime (Warren: the process's)",
            snapshot.uptime_seconds,
        ),
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
        ("rabbitmq_raft_term", "Current Raft term number", snapshot.raft_term),
        (
            "rabbitmq_raft_log_last_written_index",
            "Raft log last written index",
            index(snapshot.raft_last_log_index),
        ),
        (
            "rabbitmq_raft_last_written_index",
            "Raft log last written index",
            index(snapshot.raft_last_log_index),
        ),
        ("rabbitmq_raft_log_commit_index", "Raft log commit index", committed),
        ("rabbitmq_raft_commit_index", "Raft log commit index", committed),
        (
            "rabbitmq_raft_log_last_applied_index",
            "Raft log last applied index",
            index(snapshot.raft_last_applied_index),
        ),
        (
            "rabbitmq_raft_last_applied_index",
            "Raft log last applied index",
            index(snapshot.raft_last_applied_index),
        ),
        (
            "rabbitmq_raft_log_snapshot_index",
            "Raft log snapshot index",
            index(snapshot.raft_snapshot_index),
        ),
        (
            "rabbitmq_raft_snapshot_index",
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
        (
            "warren_ready_messages_in_memory",
            "Ready messages whose records are held in memory (queue heads and tails)",
            snapshot.ready_in_memory,
        ),
        (
            "warren_ready_messages_paged",
            "Ready messages whose records are in pages on disk",
            snapshot.ready_paged,
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
    if let Some(open) = snapshot.open_fds {
        gauges.push(("rabbitmq_process_open_fds", "Open file descriptors", open));
    }
    if let Some(max) = snapshot.max_fds {
        gauges.push(("rabbitmq_process_max_fds", "Open file descriptors limit", max));
    }
    for (name, help, value) in gauges {
        w.gauge(name, help, value);
    }
    w.family(
        "rabbitmq_raft_commit_latency_seconds",
        "gauge",
        "Time taken for a log entry to be committed (Warren: a moving average over this node's batches)",
    );
    w.float_sample(
        "rabbitmq_raft_commit_latency_seconds",
        seconds(raft.recent_commit_micros),
    );
    render_churn(&mut w, snapshot);
    render_warren_raft(&mut w, raft);
    render_global_counters(&mut w, snapshot);
    render_message_sizes(&mut w, &snapshot.messages);
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
    let counters: [(&str, &str, u64); 14] = [
        ("received", "Total number of messages received from publishers", m.received),
        (
            "received_confirm",
            "Total number of messages received from publishers expecting confirmations",
            m.received_confirm,
        ),
        (
            "get_empty",
            "Total number of times basic.get operations fetched no message",
            m.get_empty,
        ),
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

/// The connection, channel and queue churn counters (this node's clients').
fn render_churn(w: &mut Writer, snapshot: &MetricsSnapshot) {
    let m = &snapshot.messages;
    w.counters(&[
        (
            "rabbitmq_connections_opened_total",
            "Total number of connections opened",
            m.connections_opened,
        ),
        (
            "rabbitmq_connections_closed_total",
            "Total number of connections closed or terminated",
            m.connections_closed,
        ),
        (
            "rabbitmq_channels_opened_total",
            "Total number of channels opened",
            m.channels_opened,
        ),
        (
            "rabbitmq_channels_closed_total",
            "Total number of channels closed",
            m.channels_closed,
        ),
        (
            "rabbitmq_queues_declared_total",
            "Total number of queues declared",
            m.queues_declared,
        ),
        (
            "rabbitmq_queues_created_total",
            "Total number of queues created",
            m.queues_created,
        ),
        (
            "rabbitmq_queues_deleted_total",
            "Total number of queues deleted",
            m.queues_deleted,
        ),
    ]);
}

/// Warren's own Raft series: what the proposer batches and forwards, and
/// how long commits and applies take (summaries: `_sum` in seconds and
/// `_count`).
fn render_warren_raft(w: &mut Writer, raft: &warren_cluster::RaftCounts) {
    w.counters(&[
        (
            "warren_raft_batches_proposed_total",
            "Batches this node's proposer wrote to the Raft log as leader",
            raft.batches_proposed,
        ),
        (
            "warren_raft_requests_proposed_total",
            "Requests in the batches this node wrote as leader (divided by the batches: the mean batch size)",
            raft.requests_proposed,
        ),
        (
            "warren_raft_batches_forwarded_total",
            "Batches this node's proposer forwarded to the leader",
            raft.batches_forwarded,
        ),
        (
            "warren_raft_requests_forwarded_total",
            "Requests in the batches this node forwarded",
            raft.requests_forwarded,
        ),
    ]);
    let summaries = [
        (
            "warren_raft_commit_seconds",
            "From this node proposing or forwarding a batch to its commit and apply",
            raft.commit_micros,
            raft.commits_timed,
        ),
        (
            "warren_raft_apply_seconds",
            "Time spent applying log entries to the state machine (_count: entries)",
            raft.apply_micros,
            raft.entries_applied,
        ),
    ];
    for (name, help, micros, count) in summaries {
        w.family(name, "summary", help);
        w.float_sample(&format!("{name}_sum"), seconds(micros));
        w.sample(&format!("{name}_count"), &[], count);
    }
}

/// `rabbitmq_message_size_bytes`: a histogram of the bodies this node's
/// clients published, with RabbitMQ's bucket bounds.
fn render_message_sizes(w: &mut Writer, m: &warren_amqp::counters::MessageCounts) {
    let name = "rabbitmq_message_size_bytes";
    w.family(name, "histogram", "Size of messages received from publishers");
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (i, (_, le)) in warren_amqp::counters::MESSAGE_SIZE_BUCKETS.iter().enumerate() {
        cumulative += m.message_sizes[i];
        w.sample(&bucket, &[("protocol", "amqp091"), ("le", le)], cumulative);
    }
    let count: u64 = m.message_sizes.iter().sum();
    w.sample(&bucket, &[("protocol", "amqp091"), ("le", "+Inf")], count);
    w.sample(&format!("{name}_sum"), &[("protocol", "amqp091")], m.message_bytes);
    w.sample(&format!("{name}_count"), &[("protocol", "amqp091")], count);
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

    /// The names of the samples in `text`.
    pub(crate) fn sample_names(text: &str) -> std::collections::BTreeSet<&str> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect()
    }

    #[test]
    fn every_series_the_grafana_dashboards_query_is_rendered() {
        let snapshot = MetricsSnapshot {
            disk_available_bytes: Some(1),
            open_fds: Some(1),
            max_fds: Some(2),
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot, false);
        let names = sample_names(&text);
        let missing: Vec<_> = DASHBOARD_SERIES.iter().filter(|s| !names.contains(*s)).collect();
        assert!(missing.is_empty(), "missing: {missing:?}");
        // The size buckets the Overview dashboard selects by their `le`.
        for le in [
            "100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "5e+07", "1e+08", "+Inf",
        ] {
            assert!(
                text.contains(&format!(
                    "rabbitmq_message_size_bytes_bucket{{protocol=\"amqp091\",le=\"{le}\"}}"
                )),
                "no bucket {le}"
            );
        }
    }

    #[test]
    fn size_buckets_are_cumulative_and_the_raft_counters_shown() {
        let messages = warren_amqp::counters::MessageCounts {
            message_sizes: [1, 2, 0, 0, 0, 0, 0, 0, 4],
            message_bytes: 12_345,
            ..Default::default()
        };
        let snapshot = MetricsSnapshot {
            messages,
            raft: warren_cluster::RaftCounts {
                committed: Some(41),
                batches_proposed: 3,
                requests_proposed: 12,
                recent_commit_micros: 2_500,
                commit_micros: 9_000_000,
                commits_timed: 3,
                ..warren_cluster::RaftCounts::default()
            },
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot, false);
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "rabbitmq_message_size_bytes_bucket{{protocol=\"amqp091\",le=\"{le}\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(bucket("100.0").as_deref(), Some("1"));
        assert_eq!(bucket("1000.0").as_deref(), Some("3"));
        assert_eq!(bucket("1e+08").as_deref(), Some("3"));
        assert_eq!(bucket("+Inf").as_deref(), Some("7"));
        assert!(text.contains("rabbitmq_message_size_bytes_count{protocol=\"amqp091\"} 7"));
        assert!(text.contains("rabbitmq_message_size_bytes_sum{protocol=\"amqp091\"} 12345"));
        assert_eq!(value_of(&text, "rabbitmq_raft_commit_index"), Some(41));
        assert_eq!(value_of(&text, "rabbitmq_raft_log_commit_index"), Some(41));
        assert_eq!(value_of(&text, "warren_raft_requests_proposed_total"), Some(12));
        assert!(text.contains("rabbitmq_raft_commit_latency_seconds 0.0025\n"), "{text}");
        assert!(text.contains("warren_raft_commit_seconds_sum 9\n"), "{text}");
        assert_eq!(value_of(&text, "warren_raft_commit_seconds_count"), Some(3));
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
