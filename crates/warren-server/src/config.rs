//! The server's configuration: flags, `WARREN_*` environment variables and
//! an optional TOML file, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

/// `warren server` flags. Each is also `WARREN_<FLAG>` in the environment
/// and a key of the `--config` TOML file.
#[derive(Clone, Debug, Default, Parser)]
pub struct ServerArgs {
    /// This node's id (stable; never reuse the id of a node whose data was wiped).
    #[arg(long, env = "WARREN_NODE_ID")]
    pub node_id: Option<u64>,
    /// Take the node id from the hostname's trailing ordinal, plus one
    /// (Kubernetes StatefulSet pod `warren-0` is node 1). Excludes --node-id.
    #[arg(long, env = "WARREN_NODE_ID_FROM_HOSTNAME")]
    pub node_id_from_hostname: bool,
    /// Where the Raft log, snapshots and state live.
    #[arg(long, env = "WARREN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// AMQP listen address.
    #[arg(long, env = "WARREN_AMQP_LISTEN")]
    pub amqp_listen: Option<SocketAddr>,
    /// gRPC address for other nodes.
    #[arg(long, env = "WARREN_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// The cluster address other nodes use (default: the bound cluster
    /// address, with 127.0.0.1 for a wildcard listen address).
    #[arg(long, env = "WARREN_ADVERTISE")]
    pub advertise: Option<String>,
    /// Cluster addresses of members to join through when the data directory
    /// is empty (absent: bootstrap a one-member cluster). An entry equal to
    /// this node's own advertised address is ignored, so every node may be
    /// given the same list. The first entry is the seed: on an empty data
    /// directory it bootstraps once every other entry answered that it is
    /// in no cluster, and joins any that is (ADR 0022).
    #[arg(long, env = "WARREN_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Shared secret every inter-node request carries; a node with another
    /// one is refused. The default is for laptops only: change it.
    #[arg(long, env = "WARREN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// AMQP over TLS (`amqps://`, RabbitMQ's 5671): off unless given, and
    /// then with --tls-cert-file and --tls-key-file.
    #[arg(long, env = "WARREN_AMQPS_LISTEN")]
    pub amqps_listen: Option<SocketAddr>,
    /// The server's certificate chain, PEM (leaf first).
    #[arg(long, env = "WARREN_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WARREN_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates, PEM: clients are asked for a certificate, and one
    /// they send must chain to these (RabbitMQ's `verify_peer`).
    #[arg(long, env = "WARREN_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// With --tls-ca-file: refuse clients that send no certificate.
    #[arg(long, env = "WARREN_TLS_FAIL_IF_NO_PEER_CERT")]
    pub tls_fail_if_no_peer_cert: bool,
    /// Mutual TLS between nodes (ADR 0024): the cluster CA, PEM. With
    /// --cluster-tls-cert-file and --cluster-tls-key-file (this node's
    /// certificate, naming its advertised host, and key), all or none.
    #[arg(long, env = "WARREN_CLUSTER_TLS_CA_FILE")]
    pub cluster_tls_ca_file: Option<PathBuf>,
    #[arg(long, env = "WARREN_CLUSTER_TLS_CERT_FILE")]
    pub cluster_tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "WARREN_CLUSTER_TLS_KEY_FILE")]
    pub cluster_tls_key_file: Option<PathBuf>,
    /// Serve the cluster port on a non-loopback address with the public
    /// default secret anyway (anyone who can reach the port can then join
    /// or drive the cluster). Without it such a node refuses to start.
    #[arg(long, env = "WARREN_INSECURE_DEV_SECRET")]
    pub insecure_dev_secret: bool,
    /// The management HTTP API, its read side (default 0.0.0.0:15672). If
    /// the address is taken the node logs it and runs without it.
    #[arg(long, env = "WARREN_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Prometheus metrics, `/metrics` and `/metrics/per-object` (default
    /// 0.0.0.0:15692, as rabbitmq_prometheus). If the address is taken the
    /// node logs it and runs without metrics.
    #[arg(long, env = "WARREN_PROMETHEUS_LISTEN")]
    pub prometheus_listen: Option<SocketAddr>,
    /// User created on the first start of an empty cluster (default guest,
    /// which may connect from loopback only).
    #[arg(long, env = "WARREN_DEFAULT_USER")]
    pub default_user: Option<String>,
    /// That user's password (default guest).
    #[arg(long, env = "WARREN_DEFAULT_PASS", hide_env_values = true)]
    pub default_pass: Option<String>,
    /// Optional TOML file with any of these keys (snake_case).
    #[arg(long, env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The optional TOML file. Every key may be left out.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<u64>,
    pub node_id_from_hostname: Option<bool>,
    pub data_dir: Option<PathBuf>,
    pub amqp_listen: Option<SocketAddr>,
    pub cluster_listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub join: Option<Vec<String>>,
    pub cluster_secret: Option<String>,
    pub insecure_dev_secret: Option<bool>,
    pub amqps_listen: Option<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_fail_if_no_peer_cert: Option<bool>,
    pub cluster_tls_ca_file: Option<PathBuf>,
    pub cluster_tls_cert_file: Option<PathBuf>,
    pub cluster_tls_key_file: Option<PathBuf>,
    pub http_listen: Option<SocketAddr>,
    pub prometheus_listen: Option<SocketAddr>,
    /// Largest accepted message body, bytes (default 16 MiB).
    pub max_message_size: Option<u64>,
    /// Heartbeat the server proposes, seconds (default 60).
    pub heartbeat_secs: Option<u64>,
    /// A channel whose oldest delivery awaiting an ack is older than this
    /// many milliseconds is closed with 406 (RabbitMQ's `consumer_timeout`,
    /// default 1800000 = 30 minutes; 0 = never).
    pub consumer_timeout: Option<u64>,
    /// Largest frame, bytes (default 131072).
    pub frame_max: Option<u32>,
    /// Users created on first start of an empty cluster (default: guest/guest).
    pub default_user: Option<String>,
    pub default_pass: Option<String>,
    /// Users allowed only from loopback (default: ["guest"]).
    pub loopback_users: Option<Vec<String>>,
    /// SASL mechanisms offered, in order (default: ["PLAIN", "AMQPLAIN"];
    /// "EXTERNAL" logs in as the user a client certificate names, on the
    /// AMQPS listener only; RabbitMQ's `auth_mechanisms`).
    pub auth_mechanisms: Option<Vec<String>>,
    /// What names an EXTERNAL login's user: "distinguished_name" (default)
    /// or "common_name" (RabbitMQ's `ssl_cert_login_from`).
    pub ssl_cert_login_from: Option<String>,
    /// Raft heartbeat interval, ms (default 100).
    pub raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout range, ms (default 150–300): how long followers
    /// wait for a dead leader before electing another (openraft waits the
    /// max, its leader lease, plus a random timeout in the range; a leader
    /// whose process is gone is replaced after the lease alone, ADR 0029).
    pub raft_election_timeout_min_ms: Option<u64>,
    pub raft_election_timeout_max_ms: Option<u64>,
    /// The leader declares a member down after this long without an answer
    /// (default 3000): its connections close, their unacked messages return
    /// to their queues, its exclusive queues go.
    pub node_down_after_ms: Option<u64>,
    /// How long a node keeps trying to commit a batch (resending it to a new
    /// leader after a failover) before answering its requests 541 (default 10000).
    pub commit_timeout_ms: Option<u64>,
    /// Raft log entries between snapshots (default 10000); the log behind a
    /// snapshot is purged.
    pub snapshot_every: Option<u64>,
    /// A snapshot is also taken once the log has grown by this many bytes
    /// (or by the last snapshot's size, if larger); default 64 MiB.
    pub snapshot_log_bytes: Option<u64>,
    /// A Raft entry (a batch of commands from every connection of a node)
    /// stops taking commands at this many estimated bytes (default 96 KiB).
    pub max_batch_bytes: Option<u64>,
    /// Batches proposed and not yet committed, at most (default 4).
    pub max_batches_in_flight: Option<usize>,
    /// Memory high-watermark: while the estimated bytes of the messages a
    /// node holds (ready, and delivered but not acked: bodies plus 512 B
    /// each) plus the bodies it is still receiving exceed this, publishing
    /// connections are blocked (`connection.blocked`). Default: a twentieth of the memory
    /// the process may use (RAM, or the cgroup limit in a container): RSS
    /// ran 2-9x the estimate in benchmarks, so this stays near RabbitMQ's
    /// 0.4 of RAM. 0 = off (ADR 0009).
    pub queued_bytes_high_watermark: Option<u64>,
    /// Disk alarm: while the data directory's file system has fewer bytes
    /// available than this, publishing connections are blocked
    /// (`connection.blocked`, reason "low on disk"). Default 50000000
    /// (RabbitMQ's 50 MB). 0 = off.
    pub disk_free_limit: Option<u64>,
    /// Virtual hosts that must exist besides `/` (created at start if missing).
    pub vhosts: Option<Vec<String>>,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub amqp_listen: SocketAddr,
    /// The AMQPS listener and its files, if configured.
    pub amqps: Option<AmqpsConfig>,
    pub cluster_listen: SocketAddr,
    /// The cluster address given explicitly; `None`: derived from the bound
    /// cluster listener ([`advertise_for`]).
    pub advertise: Option<String>,
    pub join: Vec<String>,
    pub cluster_secret: String,
    /// Mutual TLS between nodes, read from its files; `None`: off.
    pub cluster_tls: Option<warren_rpc::ClusterTls>,
    pub http_listen: SocketAddr,
    pub prometheus_listen: SocketAddr,
    pub max_message_size: u64,
    pub heartbeat_secs: u64,
    /// Milliseconds; 0 = off.
    pub consumer_timeout_ms: u64,
    pub frame_max: u32,
    pub default_user: String,
    pub default_pass: String,
    pub loopback_users: Vec<String>,
    pub auth_mechanisms: Vec<warren_amqp::AuthMechanism>,
    pub ssl_cert_login_from: warren_amqp::CertLoginFrom,
    pub raft_heartbeat_ms: u64,
    pub raft_election_timeout_min_ms: u64,
    pub raft_election_timeout_max_ms: u64,
    pub node_down_after_ms: u64,
    pub commit_timeout_ms: u64,
    pub snapshot_every: u64,
    pub snapshot_log_bytes: u64,
    pub max_batch_bytes: u64,
    pub max_batches_in_flight: usize,
    pub queued_bytes_high_watermark: u64,
    pub disk_free_limit: u64,
    pub vhosts: Vec<String>,
}

impl Config {
    /// Resolves flags/environment over the file over the defaults.
    ///
    /// # Errors
    /// The config file cannot be read or parsed.
    pub fn resolve(args: ServerArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let cluster_secret = args
            .cluster_secret
            .or(file.cluster_secret)
            .unwrap_or_else(|| warren_rpc::DEV_SECRET.to_owned());
        let dev_secret = cluster_secret == warren_rpc::DEV_SECRET;
        // With the public default secret the cluster port is loopback
        // unless an address is given (a single node needs no other).
        let cluster_listen = args.cluster_listen.or(file.cluster_listen).unwrap_or(if dev_secret {
            ([127, 0, 0, 1], 25672).into()
        } else {
            ([0, 0, 0, 0], 25672).into()
        });
        let insecure = args.insecure_dev_secret || file.insecure_dev_secret.unwrap_or(false);
        anyhow::ensure!(
            !dev_secret || cluster_listen.ip().is_loopback() || insecure,
            "the cluster port {cluster_listen} is reachable from other hosts and the cluster secret is the public \
             default: anyone who can reach it could join or drive the cluster. Set --cluster-secret \
             (WARREN_CLUSTER_SECRET, the same on every node), listen on loopback, or pass --insecure-dev-secret"
        );
        let amqps = AmqpsConfig::resolve(
            args.amqps_listen.or(file.amqps_listen),
            args.tls_cert_file.or(file.tls_cert_file),
            args.tls_key_file.or(file.tls_key_file),
            args.tls_ca_file.or(file.tls_ca_file),
            args.tls_fail_if_no_peer_cert || file.tls_fail_if_no_peer_cert.unwrap_or(false),
        )?;
        let cluster_tls = cluster_tls(
            args.cluster_tls_ca_file.or(file.cluster_tls_ca_file),
            args.cluster_tls_cert_file.or(file.cluster_tls_cert_file),
            args.cluster_tls_key_file.or(file.cluster_tls_key_file),
        )?;
        let advertise = args.advertise.or(file.advertise);
        let raft_defaults = warren_cluster::NodeConfig::default();
        let explicit_node_id = args.node_id.or(file.node_id);
        let node_id = if args.node_id_from_hostname || file.node_id_from_hostname.unwrap_or(false) {
            anyhow::ensure!(
                explicit_node_id.is_none(),
                "both a node id ({}) and node_id_from_hostname are set: give one of them",
                explicit_node_id.unwrap_or_default()
            );
            let hostname = read_hostname()?;
            node_id_from_hostname(&hostname)?
        } else {
            explicit_node_id.unwrap_or(1)
        };
        Ok(Self {
            node_id,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./warren-data")),
            amqp_listen: args
                .amqp_listen
                .or(file.amqp_listen)
                .unwrap_or(([0, 0, 0, 0], 5672).into()),
            amqps,
            cluster_listen,
            advertise,
            join: if args.join.is_empty() {
                file.join.unwrap_or_default()
            } else {
                args.join
            },
            cluster_secret,
            cluster_tls,
            http_listen: args
                .http_listen
                .or(file.http_listen)
                .unwrap_or(([0, 0, 0, 0], 15672).into()),
            prometheus_listen: args
                .prometheus_listen
                .or(file.prometheus_listen)
                .unwrap_or(([0, 0, 0, 0], 15692).into()),
            max_message_size: checked_max_message_size(file.max_message_size)?,
            heartbeat_secs: file.heartbeat_secs.unwrap_or(60),
            consumer_timeout_ms: file.consumer_timeout.unwrap_or(CONSUMER_TIMEOUT_MS),
            frame_max: file.frame_max.unwrap_or(131_072),
            default_user: args
                .default_user
                .or(file.default_user)
                .unwrap_or_else(|| "guest".to_owned()),
            default_pass: args
                .default_pass
                .or(file.default_pass)
                .unwrap_or_else(|| "guest".to_owned()),
            loopback_users: file.loopback_users.unwrap_or_else(|| vec!["guest".to_owned()]),
            auth_mechanisms: auth_mechanisms(file.auth_mechanisms)?,
            ssl_cert_login_from: match file.ssl_cert_login_from {
                Some(from) => from.parse().map_err(anyhow::Error::msg)?,
                None => warren_amqp::CertLoginFrom::default(),
            },
            vhosts: file.vhosts.unwrap_or_default(),
            raft_heartbeat_ms: file.raft_heartbeat_ms.unwrap_or(raft_defaults.heartbeat_interval_ms),
            raft_election_timeout_min_ms: file
                .raft_election_timeout_min_ms
                .unwrap_or(raft_defaults.election_timeout_min_ms),
            raft_election_timeout_max_ms: file
                .raft_election_timeout_max_ms
                .unwrap_or(raft_defaults.election_timeout_max_ms),
            node_down_after_ms: file.node_down_after_ms.unwrap_or(raft_defaults.node_down_after_ms),
            commit_timeout_ms: file.commit_timeout_ms.unwrap_or(raft_defaults.forward_timeout_ms),
            snapshot_every: file.snapshot_every.unwrap_or(raft_defaults.snapshot_every),
            snapshot_log_bytes: file.snapshot_log_bytes.unwrap_or(raft_defaults.snapshot_log_bytes),
            max_batch_bytes: checked_max_batch_bytes(
                file.max_batch_bytes.unwrap_or(raft_defaults.max_batch_bytes),
                checked_max_message_size(file.max_message_size)?,
            )?,
            max_batches_in_flight: file
                .max_batches_in_flight
                .unwrap_or(raft_defaults.max_batches_in_flight)
                .max(1),
            queued_bytes_high_watermark: file
                .queued_bytes_high_watermark
                .unwrap_or_else(|| memory_limit() / HIGH_WATERMARK_DIVISOR),
            disk_free_limit: file.disk_free_limit.unwrap_or(DEFAULT_DISK_FREE_LIMIT),
        })
    }
}

/// Mutual TLS between nodes (ADR 0024) from its three PEM files, read now
/// (`None` when none is given).
///
/// # Errors
/// Some but not all three are given, or one cannot be read or holds no
/// PEM block.
pub fn cluster_tls(
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
) -> anyhow::Result<Option<warren_rpc::ClusterTls>> {
    let (ca_file, cert_file, key_file) = match (ca_file, cert_file, key_file) {
        (None, None, None) => return Ok(None),
        (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
        _ => anyhow::bail!(
            "cluster TLS needs all three of cluster_tls_ca_file, cluster_tls_cert_file and cluster_tls_key_file"
        ),
    };
    let read = |path: &Path, what: &str| -> anyhow::Result<Vec<u8>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))?;
        anyhow::ensure!(
            String::from_utf8_lossy(&bytes).contains("-----BEGIN "),
            "no PEM block in the {what} {}",
            path.display()
        );
        Ok(bytes)
    };
    Ok(Some(warren_rpc::ClusterTls {
        ca_pem: read(&ca_file, "cluster CA file")?,
        cert_pem: read(&cert_file, "cluster certificate file")?,
        key_pem: read(&key_file, "cluster key file")?,
    }))
}

/// AMQP over TLS (ADR 0023): where it listens and the PEM files it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpsConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Clients' certificates are asked for and checked against these CAs.
    pub ca_file: Option<PathBuf>,
    /// A client without a certificate is refused (needs `ca_file`).
    pub fail_if_no_peer_cert: bool,
}

impl AmqpsConfig {
    /// `None` when TLS is not configured at all; an error for half a
    /// configuration (a listener without its files, files without a
    /// listener), which would otherwise be silently ignored.
    fn resolve(
        listen: Option<SocketAddr>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        fail_if_no_peer_cert: bool,
    ) -> anyhow::Result<Option<Self>> {
        let Some(listen) = listen else {
            anyhow::ensure!(
                cert_file.is_none() && key_file.is_none() && ca_file.is_none() && !fail_if_no_peer_cert,
                "TLS files are configured but amqps_listen is not: set --amqps-listen (e.g. 0.0.0.0:5671) or remove them"
            );
            return Ok(None);
        };
        let (Some(cert_file), Some(key_file)) = (cert_file, key_file) else {
            anyhow::bail!("amqps_listen {listen} needs tls_cert_file and tls_key_file (PEM)");
        };
        anyhow::ensure!(
            ca_file.is_some() || !fail_if_no_peer_cert,
            "tls_fail_if_no_peer_cert needs tls_ca_file: the CAs client certificates must chain to"
        );
        Ok(Some(Self {
            listen,
            cert_file,
            key_file,
            ca_file,
            fail_if_no_peer_cert,
        }))
    }
}

/// The largest `max_message_size` a node accepts: 512 MiB, as RabbitMQ's
/// own ceiling (its default is 16 MiB since 4.0, 128 MiB in 3.x).
pub const MAX_MESSAGE_SIZE_CEILING: u64 = 512 * 1024 * 1024;

/// `max_message_size` as configured (default 16 MiB), checked against
/// 1 byte ..= [`MAX_MESSAGE_SIZE_CEILING`].
fn checked_max_message_size(configured: Option<u64>) -> anyhow::Result<u64> {
    let size = configured.unwrap_or(16 * 1024 * 1024);
    anyhow::ensure!(
        (1..=MAX_MESSAGE_SIZE_CEILING).contains(&size),
        "max_message_size is {size}: it must be between 1 and {MAX_MESSAGE_SIZE_CEILING} bytes (512 MiB)"
    );
    Ok(size)
}

/// `max_batch_bytes` as configured, checked against the cluster RPC bound
/// that `max_message_size` sets ([`warren_rpc::rpc_message_limit`]): a
/// batch travels whole in one AppendEntries or Forward, and one over the
/// bound would be refused by every peer, for good.
fn checked_max_batch_bytes(batch: u64, max_message_size: u64) -> anyhow::Result<u64> {
    let limit = warren_rpc::rpc_message_limit(max_message_size) as u64 / 2;
    anyhow::ensure!(
        batch <= limit,
        "max_batch_bytes is {batch}: at most {limit} bytes with max_message_size {max_message_size} \
         (half the cluster RPC bound, twice max_message_size, at least 16 MiB)"
    );
    Ok(batch)
}

/// The configured SASL mechanisms: known names, at least one, none twice.
fn auth_mechanisms(names: Option<Vec<String>>) -> anyhow::Result<Vec<warren_amqp::AuthMechanism>> {
    let Some(names) = names else {
        return Ok(warren_amqp::AuthMechanism::DEFAULT.to_vec());
    };
    let mut mechanisms = Vec::new();
    for name in &names {
        let mechanism: warren_amqp::AuthMechanism = name.parse().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!mechanisms.contains(&mechanism), "auth_mechanisms names {name} twice");
        mechanisms.push(mechanism);
    }
    anyhow::ensure!(
        !mechanisms.is_empty(),
        "auth_mechanisms is empty: no client could log in"
    );
    Ok(mechanisms)
}

/// RabbitMQ's default `consumer_timeout`: 30 minutes, in milliseconds.
pub const CONSUMER_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// RabbitMQ's default `disk_free_limit`: 50 MB.
pub const DEFAULT_DISK_FREE_LIMIT: u64 = 50_000_000;

/// The default memory high-watermark is the memory limit divided by this.
pub const HIGH_WATERMARK_DIVISOR: u64 = 20;

/// Memory assumed when neither `/proc/meminfo` nor a cgroup says.
const FALLBACK_MEMORY: u64 = 4 << 30;

/// The memory this process may use: the cgroup v2 limit if one is set and
/// below RAM, else RAM (`MemTotal`); [`FALLBACK_MEMORY`] if neither is known.
fn memory_limit() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total_bytes(&text));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (ram, cgroup) {
        (Some(ram), Some(limit)) => ram.min(limit),
        (Some(bytes), None) | (None, Some(bytes)) => bytes,
        (None, None) => FALLBACK_MEMORY,
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// This machine's hostname: the kernel's (`/proc/sys/kernel/hostname`),
/// else `$HOSTNAME`.
///
/// # Errors
/// Neither is available.
fn read_hostname() -> anyhow::Result<String> {
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        if !name.trim().is_empty() {
            return Ok(name.trim().to_owned());
        }
    }
    std::env::var("HOSTNAME")
        .context("node_id_from_hostname: cannot read the hostname (no /proc/sys/kernel/hostname, no $HOSTNAME)")
}

/// The node id of a StatefulSet pod: the trailing `-N` ordinal of the
/// hostname's first label, plus one (ids start at 1; ordinals at 0).
///
/// `warren-0` → 1, `warren-2.warren.default.svc.cluster.local` → 3,
/// `my-broker-10` → 11.
///
/// # Errors
/// The first label does not end in `-` and decimal digits, or the ordinal
/// is too large.
pub fn node_id_from_hostname(hostname: &str) -> anyhow::Result<u64> {
    let label = hostname.split('.').next().unwrap_or_default();
    let ordinal = label
        .rsplit_once('-')
        .map(|(_, digits)| digits)
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    let Some(ordinal) = ordinal else {
        anyhow::bail!(
            "node_id_from_hostname: hostname {hostname:?} does not end in -N (a StatefulSet ordinal such as warren-0); \
             set --node-id instead"
        );
    };
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .with_context(|| format!("node_id_from_hostname: the ordinal of hostname {hostname:?} is too large"))
}

/// The `--join` addresses to ask, without this node's own advertised
/// address: every pod of a StatefulSet gets the same list (pod 0's
/// address), and pod 0 must bootstrap rather than ask itself. Entries are
/// compared after trimming, host names case-insensitively.
pub fn join_targets(join: &[String], advertise: &str) -> Vec<String> {
    let own = advertise.trim().to_ascii_lowercase();
    join.iter()
        .map(|addr| addr.trim())
        .filter(|addr| !addr.is_empty() && addr.to_ascii_lowercase() != own)
        .map(str::to_owned)
        .collect()
}

/// Whether this node is the seed of the join list: its first entry (ADR
/// 0022). A seed on an empty data directory bootstraps once every other
/// listed member answered that it is in no cluster; the others never
/// bootstrap. Compared as [`join_targets`] compares.
pub fn is_seed(join: &[String], advertise: &str) -> bool {
    join.iter()
        .map(|addr| addr.trim())
        .find(|addr| !addr.is_empty())
        .is_some_and(|first| first.eq_ignore_ascii_case(advertise.trim()))
}

/// The cluster address to advertise when none is configured, from the
/// address the cluster listener is bound to (its real port, also for port
/// 0). A wildcard address is not reachable by others: advertise loopback
/// for it (set `--advertise` on a multi-host cluster).
pub fn advertise_for(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        bound.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let config = Config::resolve(ServerArgs::default()).expect("defaults resolve");
        assert_eq!(config.node_id, 1);
        assert_eq!(config.amqp_listen, "0.0.0.0:5672".parse().expect("addr"));
        assert_eq!(
            config.cluster_listen,
            "127.0.0.1:25672".parse().expect("addr"),
            "loopback with the default secret"
        );
        assert_eq!(config.http_listen, "0.0.0.0:15672".parse().expect("addr"));
        assert_eq!(config.prometheus_listen, "0.0.0.0:15692".parse().expect("addr"));
        assert_eq!(config.data_dir, PathBuf::from("./warren-data"));
        assert_eq!(config.max_message_size, 16 * 1024 * 1024);
        assert_eq!(config.cluster_secret, warren_rpc::DEV_SECRET);
        assert!(config.join.is_empty());
        assert_eq!(config.advertise, None);
    }

    #[test]
    fn max_message_size_is_checked_against_rabbitmq_s_ceiling() {
        assert_eq!(checked_max_message_size(None).expect("default"), 16 * 1024 * 1024);
        assert_eq!(
            checked_max_message_size(Some(MAX_MESSAGE_SIZE_CEILING)).expect("the ceiling"),
            512 * 1024 * 1024
        );
        assert_eq!(checked_max_message_size(Some(1)).expect("one byte"), 1);
        assert!(checked_max_message_size(Some(MAX_MESSAGE_SIZE_CEILING + 1)).is_err());
        assert!(checked_max_message_size(Some(0)).is_err());
    }

    #[test]
    fn amqps_needs_a_listener_and_both_files_or_nothing() {
        let addr: SocketAddr = "127.0.0.1:5671".parse().expect("addr");
        let file = |name: &str| Some(PathBuf::from(name));
        assert_eq!(AmqpsConfig::resolve(None, None, None, None, false).expect("off"), None);
        let on = AmqpsConfig::resolve(Some(addr), file("c.pem"), file("k.pem"), None, false)
            .expect("on")
            .expect("some");
        assert_eq!((on.listen, on.ca_file, on.fail_if_no_peer_cert), (addr, None, false));
        for (listen, cert, key, ca, fail, why) in [
            (Some(addr), None, file("k.pem"), None, false, "tls_cert_file"),
            (Some(addr), file("c.pem"), None, None, false, "tls_key_file"),
            (None, file("c.pem"), file("k.pem"), None, false, "amqps_listen is not"),
            (None, None, None, file("ca.pem"), false, "amqps_listen is not"),
            (
                Some(addr),
                file("c.pem"),
                file("k.pem"),
                None,
                true,
                "needs tls_ca_file",
            ),
        ] {
            let refused = AmqpsConfig::resolve(listen, cert, key, ca, fail).expect_err(why);
            assert!(refused.to_string().contains(why), "{refused}");
        }
    }

    #[test]
    fn the_public_default_secret_stays_on_loopback_unless_told_otherwise() {
        let secret = ServerArgs {
            cluster_secret: Some("s3cret".into()),
            ..ServerArgs::default()
        };
        let config = Config::resolve(secret).expect("a secret: every address");
        assert_eq!(config.cluster_listen, "0.0.0.0:25672".parse().expect("addr"));
        let exposed = ServerArgs {
            cluster_listen: Some("0.0.0.0:25672".parse().expect("addr")),
            ..ServerArgs::default()
        };
        let refused = Config::resolve(exposed.clone()).expect_err("refused");
        assert!(refused.to_string().contains("--insecure-dev-secret"), "{refused}");
        let told = ServerArgs {
            insecure_dev_secret: true,
            ..exposed
        };
        assert!(Config::resolve(told).is_ok());
        let named = ServerArgs {
            cluster_listen: Some("10.0.0.5:25672".parse().expect("addr")),
            cluster_secret: Some(warren_rpc::DEV_SECRET.into()),
            ..ServerArgs::default()
        };
        assert!(Config::resolve(named).is_err(), "the default secret given by value too");
        let loopback = ServerArgs {
            cluster_listen: Some("[::1]:25672".parse().expect("addr")),
            ..ServerArgs::default()
        };
        assert!(Config::resolve(loopback).is_ok());
    }

    #[test]
    fn the_advertised_address_is_the_bound_one_with_loopback_for_a_wildcard() {
        assert_eq!(
            advertise_for("127.0.0.1:40001".parse().expect("addr")),
            "127.0.0.1:40001"
        );
        assert_eq!(advertise_for("0.0.0.0:25672".parse().expect("addr")), "127.0.0.1:25672");
        assert_eq!(advertise_for("10.1.2.3:25672".parse().expect("addr")), "10.1.2.3:25672");
    }

    #[test]
    fn the_commented_example_file_parses_and_flags_win_over_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/warren.example.toml");
        let args = ServerArgs {
            config: Some(path),
            node_id: Some(7),
            ..ServerArgs::default()
        };
        let config = Config::resolve(args).expect("example config parses");
        assert_eq!(config.node_id, 7, "the flag wins over the file");
        assert_eq!(config.amqp_listen.port(), 5672);
        assert_eq!(config.default_user, "guest");
        assert_eq!(config.vhosts, ["/staging"]);
        assert_eq!(
            (
                config.raft_heartbeat_ms,
                config.raft_election_timeout_min_ms,
                config.raft_election_timeout_max_ms
            ),
            (100, 150, 300)
        );
        assert_eq!((config.node_down_after_ms, config.commit_timeout_ms), (3000, 10_000));
        assert_eq!(config.snapshot_every, 10_000);
        assert_eq!(config.snapshot_log_bytes, 64 << 20);
        assert_eq!(config.queued_bytes_high_watermark, 1 << 30);
        assert_eq!(config.disk_free_limit, 100_000_000);
    }

    #[test]
    fn the_default_disk_free_limit_is_rabbitmqs_50_mb() {
        let config = Config::resolve(ServerArgs::default()).expect("defaults resolve");
        assert_eq!(config.disk_free_limit, 50_000_000);
    }

    #[test]
    fn the_default_high_watermark_is_a_twentieth_of_the_memory_limit() {
        let config = Config::resolve(ServerArgs::default()).expect("defaults resolve");
        assert_eq!(
            config.queued_bytes_high_watermark,
            memory_limit() / HIGH_WATERMARK_DIVISOR
        );
        assert!(config.queued_bytes_high_watermark > 0);
        assert_eq!(
            mem_total_bytes("MemTotal:       24568320 kB\nMemFree: 1 kB\n"),
            Some(24_568_320 * 1024)
        );
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn the_node_id_is_the_hostname_ordinal_plus_one() {
        assert_eq!(node_id_from_hostname("warren-0").expect("ordinal"), 1);
        assert_eq!(node_id_from_hostname("warren-2").expect("ordinal"), 3);
        assert_eq!(node_id_from_hostname("my-broker-10").expect("ordinal"), 11);
        assert_eq!(
            node_id_from_hostname("warren-1.warren.default.svc.cluster.local").expect("ordinal"),
            2
        );
    }

    #[test]
    fn a_hostname_without_an_ordinal_is_an_error_that_says_so() {
        for bad in [
            "warren",
            "warren-",
            "warren-a",
            "warren-1a",
            "warren-+1",
            "",
            "0",
            "warren.example-1",
            "warren-99999999999999999999",
        ] {
            let error = node_id_from_hostname(bad).expect_err(bad).to_string();
            assert!(error.contains("node_id_from_hostname"), "{bad:?}: {error}");
        }
        let error = node_id_from_hostname("warren").expect_err("no ordinal").to_string();
        assert!(error.contains("does not end in -N"), "{error}");
    }

    #[test]
    fn the_node_id_from_the_hostname_excludes_an_explicit_node_id() {
        let args = ServerArgs {
            node_id: Some(2),
            node_id_from_hostname: true,
            ..ServerArgs::default()
        };
        let error = Config::resolve(args).expect_err("conflict").to_string();
        assert!(error.contains("give one of them"), "{error}");
    }

    #[test]
    fn the_node_id_from_the_hostname_is_off_by_default_and_settable_from_the_environment() {
        let args = ServerArgs::try_parse_from(["warren"]).expect("parses");
        assert!(!args.node_id_from_hostname);
        let args = ServerArgs::try_parse_from(["warren", "--node-id-from-hostname"]).expect("parses");
        assert!(args.node_id_from_hostname);
    }

    #[test]
    fn the_seed_is_the_first_entry_of_the_join_list() {
        let join = vec![
            " warren-0.warren.ns.svc.cluster.local:25672".to_owned(),
            "warren-1.warren.ns.svc.cluster.local:25672".to_owned(),
        ];
        assert!(is_seed(&join, "WARREN-0.warren.ns.svc.cluster.local:25672"));
        assert!(!is_seed(&join, "warren-1.warren.ns.svc.cluster.local:25672"));
        assert!(!is_seed(&[], "warren-0.warren.ns.svc.cluster.local:25672"));
        assert!(is_seed(&["".to_owned(), "a:1".to_owned()], "a:1"));
        assert!(!is_seed(&join, ""));
    }

    #[test]
    fn join_entries_naming_this_node_are_dropped() {
        let join = vec![
            "warren-0.warren.ns.svc.cluster.local:25672".to_owned(),
            " Warren-1.warren.ns.svc.cluster.local:25672".to_owned(),
            String::new(),
        ];
        assert_eq!(
            join_targets(&join, "warren-0.warren.ns.svc.cluster.local:25672"),
            [" Warren-1.warren.ns.svc.cluster.local:25672".trim()],
            "pod 0 asks only the others"
        );
        assert_eq!(
            join_targets(&join, "WARREN-1.warren.ns.svc.cluster.local:25672"),
            ["warren-0.warren.ns.svc.cluster.local:25672"]
        );
        assert!(
            join_targets(&join[..1], "warren-0.warren.ns.svc.cluster.local:25672").is_empty(),
            "pod 0 given only itself bootstraps"
        );
        assert_eq!(
            join_targets(&join[..1], "warren-0.warren.ns.svc.cluster.local:25673"),
            ["warren-0.warren.ns.svc.cluster.local:25672"],
            "another port is another node"
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").expect("write");
        let args = ServerArgs {
            config: Some(path),
            ..ServerArgs::default()
        };
        assert!(Config::resolve(args).is_err());
    }
}

#[cfg(test)]
mod auth_mechanism_tests {
    use warren_amqp::AuthMechanism;

    use super::auth_mechanisms;

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn mechanisms_default_to_rabbitmqs_and_keep_the_configured_order() {
        assert_eq!(auth_mechanisms(None).expect("default"), AuthMechanism::DEFAULT.to_vec());
        assert_eq!(
            auth_mechanisms(names(&["EXTERNAL", "PLAIN"])).expect("two"),
            vec![AuthMechanism::External, AuthMechanism::Plain]
        );
    }

    #[test]
    fn a_batch_larger_than_half_the_rpc_bound_stops_the_start() {
        let mib = 1024 * 1024;
        assert_eq!(
            super::checked_max_batch_bytes(96 * 1024, 16 * mib).expect("default"),
            96 * 1024
        );
        assert!(super::checked_max_batch_bytes(16 * mib, 16 * mib).is_ok());
        let error = super::checked_max_batch_bytes(16 * mib + 1, 16 * mib).expect_err("refused");
        assert!(error.to_string().contains("at most 16777216"), "{error}");
        assert!(
            super::checked_max_batch_bytes(64 * mib, 64 * mib).is_ok(),
            "follows max_message_size"
        );
    }

    #[test]
    fn unknown_repeated_or_no_mechanisms_stop_the_start() {
        for (list, says) in [
            (
                &["PLAIN", "CRAM-MD5"][..],
                "unknown authentication mechanism \"CRAM-MD5\"",
            ),
            (&["plain"][..], "unknown authentication mechanism \"plain\""),
            (&["PLAIN", "PLAIN"][..], "names PLAIN twice"),
            (&[][..], "no client could log in"),
        ] {
            let error = auth_mechanisms(names(list)).expect_err("refused").to_string();
            assert!(error.contains(says), "{list:?}: {error}");
        }
    }
}
