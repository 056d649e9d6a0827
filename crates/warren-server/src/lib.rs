//! `warren-server`: assembles a node from its configuration — the Raft node
//! (`warren-cluster`), the AMQP front end (`warren-amqp`) — and runs it
//! until a shutdown signal. `main` only parses flags and calls [`run`].

pub mod config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;
use warren_amqp::{password::hash_password, AmqpConfig, Frontend, Registry};
use warren_cluster::{Node, NodeConfig};
use warren_core::{Command, NodeId, Request, UserName, VHost};

pub use config::{Config, ServerArgs};

/// Runs a node: opens (or bootstraps) its Raft state in `config.data_dir`,
/// then serves AMQP on `amqp_listener` until `shutdown` completes.
///
/// Prints `warren: amqp listening on ADDR` on stdout once connections are
/// accepted; scripts and tests wait for that line.
///
/// # Errors
/// The data directory or the Raft node cannot be opened, or the first
/// commands (default user, node start) cannot be committed.
pub async fn run(config: Config, amqp_listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let boot: u64 = rand::random();
    let node_id = NodeId(config.node_id);
    let registry = Arc::new(Registry::new());

    let node_config = NodeConfig {
        node_id: config.node_id,
        data_dir: config.data_dir.clone(),
        cluster_addr: config.advertise.clone(),
        ..NodeConfig::default()
    };
    let node = Node::start(node_config, registry.clone())
        .await
        .context("starting the Raft node")?;
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
            let command = Command::DeclareVHost { vhost };
            proposer
                .submit(Request { origin: None, command })
                .await
                .context("proposing a vhost")?;
        }
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
        node.read(|broker| broker.has_users() && vhosts.iter().all(|v| broker.has_vhost(v)))
    })
    .await
    .context("the default user and vhosts were not committed in time")?;

    let amqp_config = AmqpConfig {
        frame_max: config.frame_max,
        heartbeat: Duration::from_secs(config.heartbeat_secs),
        max_message_size: config.max_message_size,
        loopback_users: config.loopback_users.clone(),
        ..AmqpConfig::default()
    };
    let frontend = Arc::new(Frontend::new(node_id, boot, node.clone(), registry, amqp_config));
    let addr = amqp_listener.local_addr()?;
    info!(node = node_id.0, %addr, data_dir = %config.data_dir.display(), "node ready");
    println!("warren: amqp listening on {addr}");
    warren_amqp::serve(amqp_listener, frontend, shutdown).await;

    info!("shutting down");
    node.shutdown().await.context("stopping the Raft node")?;
    Ok(())
}

async fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !ready() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
