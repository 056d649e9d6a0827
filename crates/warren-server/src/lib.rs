//! `warren-server`: assembles a node from its configuration — the Raft node
//! (`warren-cluster`), the inter-node gRPC (`warren-rpc`), the AMQP front end
//! (`warren-amqp`) — and runs it until a shutdown signal. `main` only parses
//! flags and calls [`run`].

pub mod admin;
pub mod config;
pub mod ctl;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::info;
use warren_amqp::{password::hash_password, AmqpConfig, Frontend, Registry};
use warren_cluster::{HandOver, Node, NodeConfig};
use warren_core::{Command, NodeId, Request, UserName, VHost};
use warren_rpc::{ClusterService, GrpcNetwork, NetworkConfig, ServiceConfig};

pub use config::{advertise_for, is_seed, join_targets, node_id_from_hostname, AmqpsConfig, Config, ServerArgs};

/// How long a stopping node waits for its AMQP connections to close (each
/// waits up to a second for the client's close-ok).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// How long a stopping leader tries to hand its leadership over, on top of
/// one lease (openraft's leader lease, `election_timeout_max`: a leader
/// elected less than a lease ago grants no vote until it is over, and
/// waits that out first).
const HAND_OVER_LIMIT: Duration = Duration::from_secs(3);

/// Runs a node: binds `config.cluster_listen` and serves the inter-node
/// gRPC there, opens its Raft state in `config.data_dir` (bootstrapping a
/// one-member cluster, or joining through `config.join`, when it is empty),
/// waits until the node has caught up with the leader, then serves AMQP on
/// `amqp_listener` until `shutdown` completes.
///
/// Prints `warren: cluster listening on ADDR` on stdout once the gRPC
/// listener is bound, then `warren: amqp listening on ADDR` once AMQP
/// connections are accepted; scripts and tests wait for these lines.
///
/// When `shutdown` completes the node drains: it stops accepting, closes
/// its AMQP connections with 320 CONNECTION_FORCED (reason 'shutdown') and
/// waits for their closes to be proposed, then stops Raft.
///
/// # Errors
/// The cluster address cannot be bound, the data directory or the Raft node
/// cannot be opened, joining failed, the first commands (default user,
/// node start) cannot be committed, or the Raft node stopped on a fatal
/// error while serving (a log write failed: disk full, I/O error).
pub async fn run(config: Config, amqp_listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started_at = std::time::Instant::now();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    // TLS files are read before anything starts: a bad one fails the start.
    let amqps = match &config.amqps {
        Some(amqps) => {
            let tls = tls::server_config(amqps).context("configuring AMQP over TLS")?;
            let listener = TcpListener::bind(amqps.listen)
                .await
                .with_context(|| format!("binding the AMQPS listener on {}", amqps.listen))?;
            Some((listener, tls))
        }
        None => None,
    };
    let boot: u64 = rand::random();
    let node_id = NodeId(config.node_id);
    let registry = Arc::new(Registry::new());

    let cluster_listener = TcpListener::bind(config.cluster_listen)
        .await
        .with_context(|| format!("binding the cluster listener on {}", config.cluster_listen))?;
    let cluster_addr = cluster_listener.local_addr()?;
    let advertise = config.advertise.clone().unwrap_or_else(|| advertise_for(cluster_addr));
    let join = join_targets(&config.join, &advertise);
    let seed = !join.is_empty() && is_seed(&config.join, &advertise);
    if join.len() < config.join.len() {
        info!(%advertise, ?join, "ignoring this node's own address in the join list");
    }
    // Filled once the node's state holds the cluster's id; its RPCs carry
    // it and its service refuses callers of another cluster (ADR 0022).
    let cluster_id = Arc::new(warren_cluster::ClusterIdCell::persisted_in(&config.data_dir));
    // Settled when the node opens its store; every RPC carries it, and the
    // membership records it when the node joins (ADR 0033).
    let incarnation = Arc::new(warren_cluster::IncarnationCell::persisted_in(&config.data_dir));
    let network = GrpcNetwork::new(NetworkConfig {
        secret: config.cluster_secret.clone(),
        tls: config.cluster_tls.clone(),
        cluster_id: cluster_id.clone(),
        node_id: config.node_id,
        incarnation: incarnation.clone(),
        max_message_bytes: warren_rpc::rpc_message_limit(config.max_message_size),
        ..NetworkConfig::default()
    });
    let node_config = NodeConfig {
        node_id: config.node_id,
        data_dir: config.data_dir.clone(),
        cluster_addr: advertise.clone(),
        join,
        seed,
        heartbeat_interval_ms: config.raft_heartbeat_ms,
        election_timeout_min_ms: config.raft_election_timeout_min_ms,
        election_timeout_max_ms: config.raft_election_timeout_max_ms,
        node_down_after_ms: config.node_down_after_ms,
        forward_timeout_ms: config.commit_timeout_ms,
        snapshot_every: config.snapshot_every,
        snapshot_log_bytes: config.snapshot_log_bytes,
        max_batch_bytes: config.max_batch_bytes,
        max_batches_in_flight: config.max_batches_in_flight,
        cluster_id: cluster_id.clone(),
        incarnation,
        ..NodeConfig::default()
    };
    let api_network = network.clone();
    let node = Node::open(node_config, network.clone(), Arc::new(network), registry.clone())
        .await
        .context("starting the Raft node")?;
    let admin = Arc::new(admin::Admin::default());
    let service = ClusterService::new(
        node.clone(),
        ServiceConfig {
            secret: config.cluster_secret.clone(),
            tls: config.cluster_tls.clone(),
            cluster_id,
            max_message_bytes: warren_rpc::rpc_message_limit(config.max_message_size),
            ..ServiceConfig::default()
        },
    )
    .with_admin(admin.clone());
    let (stop_cluster, cluster_stopped) = oneshot::channel::<()>();
    let cluster_server = tokio::spawn(warren_rpc::serve(cluster_listener, service, async {
        let _ = cluster_stopped.await;
    }));
    info!(node = node_id.0, %cluster_addr, %advertise, "cluster listening");
    println!("warren: cluster listening on {cluster_addr}");
    node.ready().await.context("waiting for the Raft node to be ready")?;
    let proposer = node.proposer();

    if !node.read(|broker| broker.has_users()) {
        info!(user = %config.default_user, "empty cluster: creating the default user");
        let command = Command::PutUser {
            name: UserName::new(config.default_user.clone()),
            password_hash: hash_password(&config.default_pass),
            tags: vec!["administrator".to_owned()],
        };
        proposer
            .submit(Request { origin: None, command })
            .await
            .context("proposing the default user")?;
    }
    for name in &config.vhosts {
        let vhost = VHost::new(name.clone());
        if !node.read(|broker| broker.has_vhost(&vhost)) {
            info!(%vhost, "creating configured vhost");
            // The default user may use the vhosts the configuration names
            // (as RabbitMQ's default user may use its default vhost).
            let grant = Command::SetPermissions {
                user: UserName::new(config.default_user.clone()),
                vhost: vhost.clone(),
                configure: ".*".to_owned(),
                write: ".*".to_owned(),
                read: ".*".to_owned(),
            };
            for command in [Command::DeclareVHost { vhost }, grant] {
                proposer
                    .submit(Request { origin: None, command })
                    .await
                    .context("proposing a vhost")?;
            }
        }
    }
    if node.read(|broker| broker.cluster_id().is_none()) {
        // A new cluster, or one from a build before cluster ids: every
        // node that finds none proposes one; the first applied names it.
        let id = format!("{:032x}", rand::random::<u128>());
        info!(%id, "the cluster has no id: proposing one");
        proposer
            .submit(Request {
                origin: None,
                command: Command::SetClusterId { id },
            })
            .await
            .context("proposing a cluster id")?;
    }
    if !node.read(|broker| broker.access().is_initialized()) {
        // A fresh cluster, or one written by a build without permissions,
        // where every user could do everything: they keep that.
        info!("initializing permissions: every user gets full access to every vhost");
        proposer
            .submit(Request {
                origin: None,
                command: Command::InitAccess,
            })
            .await
            .context("proposing the initial permissions")?;
    }
    // Removes what a restart of this node loses: connections, consumers and
    // exclusive queues of its earlier runs, its non-durable queues.
    let started = Command::NodeStarted { node: node_id, boot };
    proposer
        .submit(Request {
            origin: None,
            command: started,
        })
        .await
        .context("proposing node start")?;
    let vhosts: Vec<VHost> = config.vhosts.iter().map(|v| VHost::new(v.clone())).collect();
    wait_until(Duration::from_secs(30), || {
        node.read(|broker| {
            broker.has_users() && broker.access().is_initialized() && vhosts.iter().all(|v| broker.has_vhost(v))
        })
    })
    .await
    .context("the default user and vhosts were not committed in time")?;

    let amqp_config = AmqpConfig {
        frame_max: config.frame_max,
        heartbeat: Duration::from_secs(config.heartbeat_secs),
        max_message_size: config.max_message_size,
        loopback_users: config.loopback_users.clone(),
        auth_mechanisms: config.auth_mechanisms.clone(),
        ssl_cert_login_from: config.ssl_cert_login_from,
        queued_bytes_high_watermark: config.queued_bytes_high_watermark,
        disk_free_limit: config.disk_free_limit,
        data_dir: Some(config.data_dir.clone()),
        consumer_timeout: (config.consumer_timeout_ms != 0).then(|| Duration::from_millis(config.consumer_timeout_ms)),
        ..AmqpConfig::default()
    };
    let frontend = Arc::new(Frontend::new(node_id, boot, node.clone(), registry, amqp_config));
    admin.start(frontend.clone());
    // Several nodes on one host (tests, benchmarks, a laptop cluster) share
    // the default HTTP ports: the first gets them, the others run without.
    let metrics_listener = bind_or_warn(config.prometheus_listen, "Prometheus metrics").await;
    let api_listener = bind_or_warn(config.http_listen, "management API").await;
    let mut listeners = vec![
        ("amqp".to_owned(), amqp_listener.local_addr()?),
        ("clustering".to_owned(), cluster_addr),
    ];
    if let Some((listener, _)) = &amqps {
        listeners.push(("amqp/ssl".to_owned(), listener.local_addr()?));
    }
    for (protocol, listener) in [("prometheus", &metrics_listener), ("http", &api_listener)] {
        if let Some(listener) = listener {
            listeners.push((protocol.to_owned(), listener.local_addr()?));
        }
    }
    let sources = warren_http::Sources {
        frontend: frontend.clone(),
        data_dir: config.data_dir.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started: started_at,
        listeners,
        cluster: Some(api_network),
        rates: Arc::default(),
    };
    let mut stop_http = Vec::new();
    if let Some(listener) = metrics_listener {
        stop_http.push(spawn_http(
            warren_http::Endpoints::Prometheus,
            listener,
            sources.clone(),
            "warren: prometheus listening on",
        )?);
    }
    if let Some(listener) = api_listener {
        stop_http.push(spawn_http(
            warren_http::Endpoints::Api,
            listener,
            sources,
            "warren: http listening on",
        )?);
    }
    let mut stop_amqps = None;
    if let Some((listener, tls)) = amqps {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(warren_amqp::serve_tls(listener, tls, frontend.clone(), async {
            let _ = stopped.await;
        }));
        stop_amqps = Some(stop);
        info!(%addr, "AMQPS listening");
        println!("warren: amqps listening on {addr}");
    }
    let minority_watch = tokio::spawn(close_clients_while_cut_off(
        node.clone(),
        frontend.clone(),
        config.node_down_after_ms,
    ));
    let addr = amqp_listener.local_addr()?;
    info!(node = node_id.0, %addr, data_dir = %config.data_dir.display(), "node ready");
    println!("warren: amqp listening on {addr}");
    tokio::select! {
        () = warren_amqp::serve(amqp_listener, frontend.clone(), shutdown) => {}
        reason = node.fatal_error() => {
            // Nothing more can be made durable here: exit so that clients
            // reconnect elsewhere (their unconfirmed publishes were never
            // confirmed) and a supervisor restarts the node on what its
            // disk holds, instead of lingering as a member that nacks all.
            tracing::error!(%reason, "fatal: the Raft node stopped; exiting");
            let _ = stop_cluster.send(());
            anyhow::bail!("the Raft node stopped on a fatal error: {reason}");
        }
    }

    info!("shutting down");
    minority_watch.abort();
    if let Some(stop) = stop_amqps {
        let _ = stop.send(());
    }
    // Clients are told and reconnect elsewhere; their unacked messages are
    // requeued through Raft while this node is still a member.
    frontend
        .drain("broker forced connection closure with reason 'shutdown'", DRAIN_LIMIT)
        .await;
    for stop in stop_http {
        let _ = stop.send(());
    }
    // A leader hands over before it stops, so its followers need not wait
    // out an election timeout (ADR 0035); it stands for no election itself.
    node.allow_elections(false);
    // The node logs how it went; a failed hand-over leaves an election to
    // the others, as before.
    let lease = Duration::from_millis(config.raft_election_timeout_max_ms);
    let _: HandOver = node.hand_over_leadership(lease + HAND_OVER_LIMIT).await;
    node.shutdown().await.context("stopping the Raft node")?;
    let _ = stop_cluster.send(());
    if let Ok(Err(e)) = cluster_server.await {
        tracing::warn!(error = %e, "the cluster listener failed");
    }
    Ok(())
}

/// What a client of a node cut off from the majority is told.
pub const CUT_OFF_REASON: &str = "broker forced connection closure with reason \
     'this node lost contact with the majority of the cluster; reconnect to another node'";

/// Closes this node's client connections while it has been without the
/// majority for `node_down_after_ms`: by then the others have declared it
/// down, nothing its clients publish can be confirmed and what they
/// consume went to other consumers. Told with 320 (as for a stopping node),
/// clients reconnect, to another node if they know one, instead of waiting
/// `commit_timeout_ms` for a nack. Connections opened meanwhile are closed
/// at the next check (every 250 ms) until the node hears from a leader
/// again. (warren chaos: clients that had all drifted onto a node cut off
/// for 5.7 s saw no confirm for 8.55 s; ADR 0029.)
async fn close_clients_while_cut_off(
    node: warren_cluster::Node,
    frontend: std::sync::Arc<warren_amqp::Frontend>,
    node_down_after_ms: u64,
) {
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(250));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cut_off = false;
    loop {
        interval.tick().await;
        let silent = node.out_of_majority_ms().filter(|ms| *ms >= node_down_after_ms);
        match silent {
            Some(ms) => {
                let closed = frontend.registry.close_all_clients(CUT_OFF_REASON);
                if !cut_off || closed > 0 {
                    tracing::warn!(
                        without_majority_ms = ms,
                        closed,
                        "cut off from the majority: closing client connections"
                    );
                }
                cut_off = true;
            }
            None if cut_off => {
                tracing::info!("in touch with the majority again: clients are served");
                cut_off = false;
            }
            None => {}
        }
    }
}

/// Serves `endpoints` on `listener` in a task of its own; prints `line`
/// and the address (the tests read it). Returns what stops it.
fn spawn_http(
    endpoints: warren_http::Endpoints,
    listener: TcpListener,
    sources: warren_http::Sources,
    line: &str,
) -> anyhow::Result<oneshot::Sender<()>> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(e) = warren_http::serve(endpoints, listener, sources, stopped).await {
            tracing::warn!(?endpoints, error = %e, "an HTTP listener failed");
        }
    });
    info!(?endpoints, %addr, "HTTP listening");
    println!("{line} {addr}");
    Ok(stop)
}

/// Binds `addr`, or logs why not (`what` says which listener) and returns
/// `None`: the node runs on without it.
async fn bind_or_warn(addr: std::net::SocketAddr, what: &str) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "no {what}: cannot bind");
            None
        }
    }
}

async fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !ready() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
