//! Helpers for tests that run a cluster of real `warren` processes and
//! operate it with `warren ctl`, the way an operator would.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::{connect, ensure_warren_built, within, WarrenProcess};

/// Starts cluster node `node_id` (joining through `join`, or bootstrapping)
/// without blocking a runtime worker.
///
/// # Errors
/// See [`WarrenProcess::start`].
pub async fn start_node(node_id: u64, join: Option<SocketAddr>) -> anyhow::Result<WarrenProcess> {
    tokio::task::spawn_blocking(move || WarrenProcess::start_cluster_node(node_id, join)).await?
}

/// Node 1 bootstraps; nodes 2 and 3 join through it. Returns them in id order.
///
/// # Errors
/// A node did not start.
pub async fn start_three_nodes() -> anyhow::Result<Vec<WarrenProcess>> {
    start_three_nodes_with_config(None).await
}

/// [`start_three_nodes`], every node with the configuration file
/// `config_toml` when given.
///
/// # Errors
/// A node did not start.
pub async fn start_three_nodes_with_config(config_toml: Option<&str>) -> anyhow::Result<Vec<WarrenProcess>> {
    let config = config_toml.map(str::to_owned);
    let start = move |node_id: u64, join: Option<SocketAddr>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            WarrenProcess::start_cluster_node_with_config(node_id, join, config.as_deref())
        })
    };
    let first = start(1, None).await??;
    let via = cluster_addr(&first)?;
    let second = start(2, Some(via)).await??;
    let third = start(3, Some(via)).await??;
    Ok(vec![first, second, third])
}

/// The node's cluster (gRPC) address.
///
/// # Errors
/// The node printed none.
pub fn cluster_addr(node: &WarrenProcess) -> anyhow::Result<SocketAddr> {
    node.cluster_addr().context("the node printed no cluster address")
}

/// Restarts `node` (kill -9 if it runs) on its data directory and cluster
/// address, off the runtime; returns it once it serves AMQP again.
///
/// # Errors
/// See [`WarrenProcess::restart_on_same_cluster_address`].
pub async fn restart_node(node: WarrenProcess) -> anyhow::Result<WarrenProcess> {
    tokio::task::spawn_blocking(move || {
        let mut node = node;
        node.restart_on_same_cluster_address().map(|()| node)
    })
    .await?
}

/// What a `warren ctl` run printed.
#[derive(Clone, Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `warren ctl --server SERVER [--cluster-secret S] ARGS…`.
///
/// # Errors
/// The binary could not be built or run.
pub async fn ctl(server: SocketAddr, secret: Option<&str>, args: &[&str]) -> anyhow::Result<CtlOutput> {
    let binary = ensure_warren_built()?;
    let mut command = Command::new(binary);
    command.args(["ctl", "--server", &server.to_string()]);
    if let Some(secret) = secret {
        command.args(["--cluster-secret", secret]);
    }
    command
        .args(args)
        .env_remove("WARREN_CLUSTER_SECRET")
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok(CtlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// [`ctl`] with the default secret that must succeed; returns its stdout.
///
/// # Errors
/// It failed (the error carries its output).
pub async fn ctl_ok(server: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let output = ctl(server, None, args).await?;
    anyhow::ensure!(
        output.success,
        "warren ctl {args:?} failed:\n{}{}",
        output.stdout,
        output.stderr
    );
    Ok(output.stdout)
}

/// One member line of `warren ctl cluster-status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub node_id: u64,
    pub addr: String,
    pub voter: bool,
    pub leader: bool,
    pub applied: Option<u64>,
    pub reachable: bool,
}

/// `warren ctl cluster-status`, parsed.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// The cluster's id as the asked node knows it.
    pub cluster_id: Option<String>,
    pub leader: Option<u64>,
    pub members: Vec<MemberRow>,
}

impl ClusterView {
    pub fn member(&self, node_id: u64) -> Option<&MemberRow> {
        self.members.iter().find(|m| m.node_id == node_id)
    }

    pub fn voters(&self) -> Vec<u64> {
        self.members.iter().filter(|m| m.voter).map(|m| m.node_id).collect()
    }

    /// The applied index of the member that reports itself leader.
    pub fn leader_applied(&self) -> Option<u64> {
        self.members.iter().find(|m| m.leader).and_then(|m| m.applied)
    }
}

/// Parses the output of `warren ctl cluster-status`.
pub fn parse_cluster_status(text: &str) -> ClusterView {
    let mut view = ClusterView::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cluster: ") {
            view.cluster_id = Some(rest.trim().to_owned()).filter(|id| !id.starts_with('('));
            continue;
        }
        if let Some(rest) = line.strip_prefix("leader: ") {
            view.leader = rest.split_whitespace().next().and_then(|id| id.parse().ok());
            continue;
        }
        let cells: Vec<&str> = line.split_whitespace().collect();
        let Some(node_id) = cells.first().and_then(|c| c.parse::<u64>().ok()) else {
            continue;
        };
        if cells.len() < 8 {
            continue;
        }
        view.members.push(MemberRow {
            node_id,
            addr: cells[1].to_owned(),
            voter: cells[2] == "voter",
            leader: cells[3] == "leader",
            applied: cells[6].parse().ok(),
            reachable: cells[7] == "yes",
        });
    }
    view
}

/// `warren ctl cluster-status` against `server`, parsed.
///
/// # Errors
/// ctl failed.
pub async fn cluster_status(server: SocketAddr) -> anyhow::Result<ClusterView> {
    Ok(parse_cluster_status(&ctl_ok(server, &["cluster-status"]).await?))
}

/// One row of `warren ctl list-queues`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
}

/// `warren ctl list-queues`, parsed.
#[derive(Clone, Debug, Default)]
pub struct QueueListing {
    pub leader: Option<u64>,
    pub replicas: Vec<u64>,
    pub queues: Vec<QueueRow>,
}

impl QueueListing {
    pub fn queue(&self, name: &str) -> Option<&QueueRow> {
        self.queues.iter().find(|q| q.name == name)
    }
}

/// Parses the output of `warren ctl list-queues` (names without spaces).
pub fn parse_queue_listing(text: &str) -> QueueListing {
    let mut listing = QueueListing::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("leader: ") {
            let mut words = rest.split_whitespace();
            listing.leader = words.next().and_then(|id| id.parse().ok());
            if let (Some("replicas:"), Some(ids)) = (words.next(), words.next()) {
                listing.replicas = ids.split(',').filter_map(|id| id.parse().ok()).collect();
            }
            continue;
        }
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() != 8 || cells[0] == "vhost" {
            continue;
        }
        let number = |cell: &str| cell.parse().unwrap_or(u64::MAX);
        listing.queues.push(QueueRow {
            vhost: cells[0].to_owned(),
            name: cells[1].to_owned(),
            durable: cells[2] == "yes",
            exclusive: cells[3] == "yes",
            auto_delete: cells[4] == "yes",
            ready: number(cells[5]),
            unacked: number(cells[6]),
            consumers: number(cells[7]),
        });
    }
    listing
}

/// `warren ctl list-queues [ARGS…]` against `server`, parsed.
///
/// # Errors
/// ctl failed.
pub async fn list_queues(server: SocketAddr, args: &[&str]) -> anyhow::Result<QueueListing> {
    let mut all = vec!["list-queues"];
    all.extend_from_slice(args);
    Ok(parse_queue_listing(&ctl_ok(server, &all).await?))
}

/// Polls `cluster-status` through `server` until `node`'s applied index
/// reaches `index`; returns how long that took (for the report only).
///
/// # Errors
/// Not reached within `limit`, or ctl failed.
pub async fn wait_applied(server: SocketAddr, node: u64, index: u64, limit: Duration) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let view = cluster_status(server).await?;
        if view.member(node).and_then(|m| m.applied).is_some_and(|a| a >= index) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "node {node} did not apply up to {index} within {limit:?}: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Declares the durable queue `queue` through `uri`.
///
/// # Errors
/// The broker refused or did not answer.
pub async fn declare_durable_queue(uri: &str, queue: &str) -> anyhow::Result<()> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(
        &format!("queue.declare {queue}"),
        ch.queue_declare(queue.into(), durable, FieldTable::default()),
    )
    .await?;
    within("connection.close", conn.close(200, "done".into())).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_status_output_parses() {
        let text = "cluster: 5e1f\n\
leader: 1  term: 3\n\
node   address                  role     state      term   log        applied    reachable\n\
1      127.0.0.1:40001          voter    leader     3      57         57         yes\n\
3      127.0.0.1:40003          voter    -          -      -          -          no (status of 127.0.0.1:40003: timed out)\n";
        let view = parse_cluster_status(text);
        assert_eq!(view.cluster_id.as_deref(), Some("5e1f"));
        assert_eq!(view.leader, Some(1));
        assert_eq!(view.voters(), [1, 3]);
        assert_eq!(view.leader_applied(), Some(57));
        let third = view.member(3).expect("member 3");
        assert!(!third.reachable);
        assert_eq!(third.applied, None);
    }

    #[test]
    fn queue_listing_output_parses() {
        let text = "leader: 2  replicas: 1,2,3  (node 3 applied up to log index 9)\n\
vhost  name    durable  exclusive  auto_delete  ready  unacked  consumers\n\
/      orders  yes      no         no           12     2        1\n";
        let listing = parse_queue_listing(text);
        assert_eq!(listing.leader, Some(2));
        assert_eq!(listing.replicas, [1, 2, 3]);
        let orders = listing.queue("orders").expect("orders");
        assert!(orders.durable && !orders.exclusive);
        assert_eq!((orders.ready, orders.unacked, orders.consumers), (12, 2, 1));
    }
}
