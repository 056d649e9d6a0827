//! A node that comes back on an empty data directory (a wiped or replaced
//! volume) is not the node that had the data (ADR 0022), with real
//! processes on loopback:
//!
//! - three nodes started at once, each given every member's address with
//!   the seed first, form one cluster (the seed bootstraps only after the
//!   others answered that they are in none);
//! - a wiped voter is refused, with a message that says to remove it, and
//!   the cluster goes on without it; once removed it joins as new;
//! - a wiped seed joins the cluster it finds instead of bootstrapping a
//!   second one — and is refused the same way while its id is a voter;
//! - a node started on another node's data directory, or on its own
//!   without the incarnation the membership recorded for it, does not
//!   start (ADR 0033); on its own directory it does.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use warren_e2e::load::publish_confirmed;
use warren_e2e::ops::{cluster_addr, cluster_status, ctl_ok, declare_durable_queue, list_queues};
use warren_e2e::{eventually, WarrenProcess};

/// Loopback addresses with ports free a moment ago, for nodes that must
/// know each other's address before any of them starts.
fn free_cluster_addrs(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Starts nodes 1..=3 at once, each listening on its address in `addrs`
/// and given all of them (node 1's first) as its join list.
async fn start_listed_cluster(addrs: &[SocketAddr]) -> anyhow::Result<Vec<WarrenProcess>> {
    let join = addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let starts: Vec<_> = addrs
        .iter()
        .zip(1u64..)
        .map(|(addr, node_id)| {
            let listen = addr.to_string();
            let join = join.clone();
            tokio::task::spawn_blocking(move || {
                WarrenProcess::start_cluster_node_with_args(node_id, &["--cluster-listen", &listen, "--join", &join])
            })
        })
        .collect();
    let mut nodes = Vec::new();
    for start in starts {
        nodes.push(start.await??);
    }
    Ok(nodes)
}

/// Restarts a stopped node on its (wiped) data directory and expects it to
/// exit refused, saying to remove it.
async fn expect_refused(node: WarrenProcess) -> anyhow::Result<WarrenProcess> {
    expect_refused_saying(node, "remove-node").await
}

/// Restarts a stopped node and expects it to exit refused with a reason
/// that contains `says`.
async fn expect_refused_saying(node: WarrenProcess, says: &'static str) -> anyhow::Result<WarrenProcess> {
    tokio::task::spawn_blocking(move || {
        let mut node = node;
        match node.restart_on_same_cluster_address() {
            Ok(()) => anyhow::bail!("the node started; its log:\n{}", node.log_tail(60)),
            Err(refused) => {
                let text = refused.to_string();
                anyhow::ensure!(
                    text.contains("refused by the cluster") && text.contains(says),
                    "the node did not start, but not because it was refused ({says:?}):\n{text}"
                );
                Ok(node)
            }
        }
    })
    .await?
}

/// Copies the directory tree `from` to `to` (which must not exist).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

async fn restart(node: WarrenProcess) -> anyhow::Result<WarrenProcess> {
    tokio::task::spawn_blocking(move || {
        let mut node = node;
        node.restart_on_same_cluster_address().map(|()| node)
    })
    .await?
}

/// Waits until the node at `server` lists `ready` messages in `queue`.
async fn expect_ready(server: SocketAddr, queue: &str, ready: u64) -> anyhow::Result<()> {
    eventually(
        &format!("{server} lists {ready} ready in {queue}"),
        Duration::from_secs(20),
        || async {
            let listing = list_queues(server, &[]).await?;
            Ok((listing.queue(queue).map(|q| q.ready) == Some(ready)).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_is_refused_until_removed_then_joins_as_new() -> anyhow::Result<()> {
    let addrs = free_cluster_addrs(3)?;
    let mut nodes = start_listed_cluster(&addrs).await?;
    let status = cluster_status(addrs[0]).await?;
    assert_eq!(status.voters(), [1, 2, 3], "one cluster of three: {status:?}");
    for addr in &addrs[1..] {
        assert_eq!(cluster_status(*addr).await?.voters(), [1, 2, 3]);
    }
    declare_durable_queue(&nodes[0].amqp_uri(), "kept").await?;
    assert_eq!(publish_confirmed(&nodes[0].amqp_uri(), "kept", 0..5).await?.len(), 5);

    // Node 3's volume is lost: it comes back empty and is refused.
    let mut node3 = nodes.pop().expect("three nodes");
    node3.kill9();
    node3.wipe_data_dir()?;
    let node3 = expect_refused(node3).await?;

    // The other two go on (a majority), and node 3 is still a voter.
    assert_eq!(publish_confirmed(&nodes[1].amqp_uri(), "kept", 5..6).await?.len(), 1);
    assert_eq!(cluster_status(addrs[0]).await?.voters(), [1, 2, 3]);

    // Removed, it starts again on its empty directory and joins as new.
    println!("{}", ctl_ok(addrs[1], &["remove-node", "3"]).await?);
    let node3 = restart(node3).await?;
    assert_eq!(cluster_addr(&node3)?, addrs[2]);
    expect_ready(addrs[2], "kept", 6).await?;
    assert_eq!(cluster_status(addrs[0]).await?.voters(), [1, 2, 3]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_seed_joins_the_cluster_it_finds_instead_of_bootstrapping_another() -> anyhow::Result<()> {
    let addrs = free_cluster_addrs(3)?;
    let mut nodes = start_listed_cluster(&addrs).await?;
    declare_durable_queue(&nodes[1].amqp_uri(), "kept").await?;
    assert_eq!(publish_confirmed(&nodes[1].amqp_uri(), "kept", 0..5).await?.len(), 5);

    // The seed's volume is lost. It asks the others, finds their cluster,
    // and asks to join it: refused, since node 1 is still a voter there.
    let mut seed = nodes.remove(0);
    seed.kill9();
    seed.wipe_data_dir()?;
    let seed = expect_refused(seed).await?;
    let status = cluster_status(addrs[1]).await?;
    assert_eq!(status.voters(), [1, 2, 3], "{status:?}");
    assert_eq!(publish_confirmed(&nodes[0].amqp_uri(), "kept", 5..6).await?.len(), 1);

    // Removed, the seed joins the existing cluster: no second cluster, the
    // messages are on its replica.
    println!("{}", ctl_ok(addrs[2], &["remove-node", "1"]).await?);
    let seed = restart(seed).await?;
    expect_ready(addrs[0], "kept", 6).await?;
    let status = cluster_status(addrs[0]).await?;
    assert_eq!(status.voters(), [1, 2, 3], "{status:?}");
    assert_ne!(status.leader, None);
    assert_eq!(status.leader, cluster_status(addrs[1]).await?.leader, "one leader");
    drop(seed);
    Ok(())
}

/// Two clusters that share a secret (issue 13 item 1): cluster B's node 2
/// at address P is gone and cluster A's new node 2 comes up on P, so B's
/// leader keeps sending its Raft messages (its log, its term) to a member
/// of A. Each cluster has its own id, carried by every cluster RPC; A's
/// node learned A's id from its join reply before it took any Raft
/// message, and refuses B's. A's node stays A's: its queues, its members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_cluster_at_a_reused_address_is_refused_by_the_cluster_id() -> anyhow::Result<()> {
    let reused = free_cluster_addrs(1)?[0].to_string();
    let a1 = tokio::task::spawn_blocking(|| WarrenProcess::start_cluster_node(1, None)).await??;
    let b1 = tokio::task::spawn_blocking(|| WarrenProcess::start_cluster_node(1, None)).await??;
    let (a1_addr, b1_addr) = (cluster_addr(&a1)?, cluster_addr(&b1)?);
    let b1_join = b1_addr.to_string();
    let at_reused = reused.clone();
    let mut b2 = tokio::task::spawn_blocking(move || {
        WarrenProcess::start_cluster_node_with_args(2, &["--cluster-listen", &at_reused, "--join", &b1_join])
    })
    .await??;
    declare_durable_queue(&b1.amqp_uri(), "only-in-b").await?;
    let b_id = cluster_status(b1_addr).await?.cluster_id.expect("B's id");
    b2.kill9();
    let a1_join = a1_addr.to_string();
    let a2 = tokio::task::spawn_blocking(move || {
        WarrenProcess::start_cluster_node_with_args(2, &["--cluster-listen", &reused, "--join", &a1_join])
    })
    .await??;
    declare_durable_queue(&a2.amqp_uri(), "only-in-a").await?;
    // B's leader has been calling the reused address all along (every
    // heartbeat, 100 ms); give it a while more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a_view = cluster_status(cluster_addr(&a2)?).await?;
    let a_id = a_view.cluster_id.clone().expect("A's id");
    assert_ne!(a_id, b_id, "two clusters, two ids");
    assert_eq!(a_view.voters(), [1, 2], "{a_view:?}");
    assert_eq!(
        std::fs::read_to_string(a2.data_dir().join("cluster-id"))?.trim(),
        a_id,
        "kept in the data directory"
    );
    let listing = list_queues(cluster_addr(&a2)?, &[]).await?;
    assert!(listing.queue("only-in-a").is_some(), "{listing:?}");
    assert!(
        listing.queue("only-in-b").is_none(),
        "B's log reached A's node: {listing:?}"
    );
    let b_log = b1.log_tail(400);
    assert!(
        b_log.contains(&format!(
            "the caller belongs to cluster {b_id}, this node to cluster {a_id}"
        )),
        "B's leader was not refused by the cluster id; its log:\n{b_log}"
    );
    Ok(())
}

/// A data directory is bound to its node and its incarnation (ADR 0033):
/// node 3 on a copy of node 2's directory does not start ("belongs to node
/// 2"), nor on its own directory once the incarnation file is gone (the
/// membership recorded one); with its own directory back it rejoins and
/// catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_only_on_its_own_data_directory() -> anyhow::Result<()> {
    let addrs = free_cluster_addrs(3)?;
    let mut nodes = start_listed_cluster(&addrs).await?;
    declare_durable_queue(&nodes[0].amqp_uri(), "kept").await?;
    assert_eq!(publish_confirmed(&nodes[0].amqp_uri(), "kept", 0..3).await?.len(), 3);
    let mut node3 = nodes.pop().expect("three nodes");
    let mut node2 = nodes.pop().expect("three nodes");
    node3.kill9();
    node2.kill9();
    let own = node3.data_dir().to_path_buf();
    let kept = own.with_extension("own");
    std::fs::rename(&own, &kept)?;
    copy_dir(node2.data_dir(), &own)?;
    let node3 = expect_refused_saying(node3, "belongs to node 2").await?;

    // Node 2 back (a majority again); node 3's own directory back, but
    // without its incarnation file.
    let node2 = restart(node2).await?;
    assert_eq!(publish_confirmed(&node2.amqp_uri(), "kept", 3..4).await?.len(), 1);
    std::fs::remove_dir_all(&own)?;
    std::fs::rename(&kept, &own)?;
    let incarnation_file = own.join("incarnation");
    let incarnation = std::fs::read_to_string(&incarnation_file)?;
    assert!(incarnation.starts_with("node 3 incarnation "), "{incarnation:?}");
    std::fs::remove_file(&incarnation_file)?;
    let node3 = expect_refused_saying(node3, "no incarnation file").await?;

    std::fs::write(&incarnation_file, &incarnation)?;
    let node3 = restart(node3).await?;
    expect_ready(cluster_addr(&node3)?, "kept", 4).await?;
    assert_eq!(cluster_status(addrs[0]).await?.voters(), [1, 2, 3]);
    Ok(())
}
