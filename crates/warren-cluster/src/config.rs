//! Configuration of a Raft node.

use std::path::PathBuf;
use std::time::Duration;

/// Largest snapshot chunk sent in one InstallSnapshot RPC.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// How a [`crate::Node`] runs. Every field has a default.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's stable Raft id (never reuse the id of a wiped node).
    pub node_id: u64,
    /// Where the store lives (`<data_dir>/VERSION`, `<data_dir>/log/`, or
    /// `<data_dir>/sled` for a directory the sled engine wrote).
    pub data_dir: PathBuf,
    /// The cluster (gRPC) address other nodes use; stored in the membership.
    pub cluster_addr: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Log entries between snapshots; the log behind a snapshot is purged.
    pub snapshot_every: u64,
    /// A snapshot is also taken once the log has grown by this many bytes
    /// (or by the last snapshot's size, if larger): entries are batches, so
    /// a count alone lets the log hold gigabytes (`compaction.rs`).
    pub snapshot_log_bytes: u64,
    /// Commands per Raft entry at most.
    pub max_batch: usize,
    /// A Raft entry stops taking commands once their estimated size
    /// reaches this many bytes: a publish counts its body and routing key
    /// plus 128 B, any other command 128 B (so at most ~768 acks, and
    /// ~650 16-byte publishes, per entry); the last command may overshoot.
    /// sled 0.34 keeps a value over ~128 KiB in a separate blob file, and
    /// with entries of up to 2048 1 KiB messages the blob files stayed
    /// after the log was purged (sled issue #786): 944 MiB RSS and 3.5 GiB
    /// on disk after 1 M consumed 1 KiB messages with snapshots by size
    /// running. At 96 KiB both stay flat (~100-190 MiB of blobs, ~140 MiB
    /// RSS after 3 M) at the same throughput; 32 KiB cut it to about half
    /// (measured 2026-11-29, ADR 0010).
    pub max_batch_bytes: u64,
    /// Batches submitted to Raft and not yet committed, at most.
    pub max_batches_in_flight: usize,
    /// sled's page cache (data directories of the sled engine only).
    pub cache_capacity_bytes: u64,
    /// How long [`crate::Node::start`] waits to become ready (leader known,
    /// log replayed, joined when `join` is set).
    pub start_timeout_ms: u64,
    /// Cluster addresses of members to join through when the store is
    /// empty; empty = bootstrap a one-member cluster.
    pub join: Vec<String>,
    /// This node is the seed of the join list (its first entry, ADR 0022):
    /// on an empty store it bootstraps only once every member in `join`
    /// answered that it is in no cluster, and joins through any that is.
    pub seed: bool,
    /// How long a follower waits for the leader to commit a forwarded batch
    /// before answering its requests `Unavailable`.
    pub forward_timeout_ms: u64,
    /// The leader declares a member down (`NodeDown`: its connections
    /// close, their unacked messages return to their queues, its exclusive
    /// queues go) after it has not answered for this long.
    pub node_down_after_ms: u64,
    /// Most bytes of log entries the leader sends in one AppendEntries (at
    /// least one entry): each must arrive within `heartbeat_interval_ms`,
    /// openraft's bound on that RPC.
    pub append_budget_bytes: u64,
    /// Filled with the cluster's id once this node's state holds it; the
    /// RPC client and service share it (pass the same cell to them).
    pub cluster_id: std::sync::Arc<crate::ClusterIdCell>,
    /// This node's incarnation (ADR 0033), settled when the node opens its
    /// store; the RPC client shares it (pass the same cell). Keep it in
    /// the data directory ([`crate::IncarnationCell::persisted_in`]).
    pub incarnation: std::sync::Arc<crate::IncarnationCell>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::from("./warren-data"),
            cluster_addr: "127.0.0.1:25672".to_owned(),
            heartbeat_interval_ms: 100,
            // openraft 0.9 waits the lease (the max) plus a random timeout
            // before a follower stands: 450-600 ms of silence. A leader whose
            // process is gone is replaced after the lease alone (ADR 0029).
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_every: 10_000,
            snapshot_log_bytes: 64 * 1024 * 1024,
            max_batch: 2048,
            max_batch_bytes: 96 * 1024,
            max_batches_in_flight: 4,
            cache_capacity_bytes: 256 * 1024 * 1024,
            start_timeout_ms: 60_000,
            seed: false,
            join: Vec::new(),
            forward_timeout_ms: 10_000,
            node_down_after_ms: 3_000,
            append_budget_bytes: 1 << 20,
            cluster_id: std::sync::Arc::default(),
            incarnation: std::sync::Arc::default(),
        }
    }
}

impl NodeConfig {
    pub(crate) fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }

    pub(crate) fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }

    /// openraft's configuration for this node.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        openraft::Config {
            cluster_name: "warren".to_owned(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            // Everything behind a snapshot goes; a lagging follower gets the
            // snapshot instead.
            max_in_snapshot_log_to_keep: 0,
            // One InstallSnapshot RPC carries at most this much (gRPC frames stay bounded).
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: 5_000,
            ..openraft::Config::default()
        }
        .validate()
    }
}
