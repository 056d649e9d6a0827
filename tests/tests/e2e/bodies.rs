//! Bodies on disk against the real binary (issue 9, ADR 0014): queued
//! bodies live in `bodies/` of the data directory, the snapshot holds only
//! their handles, a restart after kill -9 delivers every body intact, body
//! segments go once consumed, and a follower that was down while the leader
//! purged its log gets every body through the snapshot it installs.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_e2e::amqp::{self, declare_queue};
use warren_e2e::{connect, eventually, restart_broker, within, WarrenProcess};

const MESSAGES: usize = 2_000;
const BODY_BYTES: usize = 1024;
const WINDOW: usize = 256;

/// Snapshots after every 256 KiB of log, so a few happen within the test.
const SMALL_LOG: &str = "snapshot_log_bytes = 262144\n";

/// Body `i`: its number, then filler, `BODY_BYTES` in all.
fn body(i: usize) -> Vec<u8> {
    let mut bytes = format!("message {i:06} ").into_bytes();
    bytes.resize(BODY_BYTES, b'a' + u8::try_from(i % 26).unwrap_or(0));
    bytes
}

fn expected(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| String::from_utf8_lossy(&body(i)).into_owned()).collect()
}

/// Publishes bodies `range` to `queue` with confirms; all must be acked.
async fn publish_bodies(uri: &str, queue: &str, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    declare_queue(&ch, queue, QueueDeclareOptions::durable(), FieldTable::default()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut confirms = VecDeque::new();
    let mut acked = 0;
    let count = range.len();
    for i in range {
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                &body(i),
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await?;
        confirms.push_back(confirm);
        if confirms.len() >= WINDOW {
            if let Some(confirm) = confirms.pop_front() {
                acked += usize::from(within("publisher confirm", confirm).await?.is_ack());
            }
        }
    }
    for confirm in confirms {
        acked += usize::from(within("publisher confirm", confirm).await?.is_ack());
    }
    anyhow::ensure!(acked == count, "{acked} of {count} publishes confirmed");
    within("connection.close", conn.close(200, "bye".into())).await?;
    Ok(())
}

/// Drains `queue` through `uri` with gets; returns the bodies.
async fn drain(uri: &str, queue: &str) -> anyhow::Result<BTreeSet<String>> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let bodies = amqp::drain(&ch, queue).await?;
    let count = bodies.len();
    let set: BTreeSet<String> = bodies.into_iter().collect();
    anyhow::ensure!(set.len() == count, "a body came twice");
    within("connection.close", conn.close(200, "bye".into())).await?;
    Ok(set)
}

fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The value of the unlabelled gauge `name` on `broker`'s /metrics.
async fn gauge(broker: &WarrenProcess, name: &str) -> anyhow::Result<u64> {
    let addr = broker.prometheus_addr().context("no prometheus address")?;
    let reply = warren_e2e::http::get(addr, "/metrics", "").await?;
    anyhow::ensure!(reply.status == 200, "GET /metrics: {}", reply.status);
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {name} in /metrics"))
}

/// A backlog's records leave memory (issue 9, ADR 0019): past a head and a
/// tail of 1,024 messages each, a queue's ready messages are paged to disk,
/// which the node's gauges show; after kill -9 the restarted node pages
/// them again, and a consumer gets every message, in order, intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_paged_to_disk_and_consumed_in_order_after_kill_9() -> anyhow::Result<()> {
    const BACKLOG: usize = 6_000;
    let broker = warren_e2e::start_broker_with_config(SMALL_LOG).await?;
    publish_bodies(&broker.amqp_uri(), "deep", 0..BACKLOG).await?;
    let in_memory = gauge(&broker, "warren_ready_messages_in_memory").await?;
    let paged = gauge(&broker, "warren_ready_messages_paged").await?;
    assert_eq!(in_memory + paged, BACKLOG as u64);
    assert!(
        in_memory <= 2 * 1024 && paged >= (BACKLOG - 2 * 1024) as u64,
        "{in_memory} ready messages in memory, {paged} paged"
    );

    let broker = restart_broker(broker).await?;
    let paged = gauge(&broker, "warren_ready_messages_paged").await?;
    assert!(
        paged >= (BACKLOG - 2 * 1024) as u64,
        "paged again after the restart: {paged}"
    );
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let got = amqp::drain(&ch, "deep").await?;
    assert_eq!(got.len(), BACKLOG, "every confirmed message is back after kill -9");
    for (i, body_got) in got.iter().enumerate() {
        assert!(
            body_got.as_bytes() == body(i).as_slice(),
            "message {i} in its place, intact"
        );
    }
    assert_eq!(gauge(&broker, "warren_ready_messages_paged").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_bodies_live_in_the_body_store_survive_kill_9_and_go_once_consumed() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker_with_config(SMALL_LOG).await?;
    publish_bodies(&broker.amqp_uri(), "kept", 0..MESSAGES).await?;
    let payload = (MESSAGES * BODY_BYTES) as u64;
    let bodies_dir = broker.data_dir().join("bodies");
    assert!(
        bytes_under(&bodies_dir) >= payload,
        "the queued bodies are in bodies/: {} bytes",
        bytes_under(&bodies_dir)
    );
    let snapshot = broker.data_dir().join("snapshot");
    eventually("a snapshot", Duration::from_secs(30), || {
        let exists = snapshot.exists();
        async move { Ok(exists.then_some(())) }
    })
    .await?;
    let snapshot_bytes = std::fs::metadata(&snapshot)?.len();
    assert!(
        snapshot_bytes < payload / 4,
        "the snapshot holds handles, not {payload} bytes of bodies: {snapshot_bytes} bytes"
    );

    let broker = restart_broker(broker).await?;
    let got = drain(&broker.amqp_uri(), "kept").await?;
    assert_eq!(got.len(), MESSAGES, "every confirmed message is back after kill -9");
    assert!(got == expected(0..MESSAGES), "every body intact");

    // More log (published and consumed at once) brings more snapshots,
    // after which the drained bodies' segments are gone.
    let bodies_dir = broker.data_dir().join("bodies");
    for round in 0..20 {
        publish_bodies(&broker.amqp_uri(), "churn", 0..500).await?;
        drain(&broker.amqp_uri(), "churn").await?;
        if bytes_under(&bodies_dir) < payload / 2 {
            println!("consumed bodies deleted after {} churn rounds", round + 1);
            return Ok(());
        }
    }
    anyhow::bail!(
        "bodies/ still holds {} bytes after the queues were drained",
        bytes_under(&bodies_dir)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_from_the_dead_installs_a_snapshot_with_every_body() -> anyhow::Result<()> {
    let mut nodes = warren_e2e::ops::start_three_nodes_with_config(Some(SMALL_LOG)).await?;
    let mut third: WarrenProcess = nodes.pop().ok_or_else(|| anyhow::anyhow!("three nodes"))?;
    third.kill9();
    // The leader snapshots and purges its log while node 3 is down, so
    // node 3 can only catch up through a snapshot.
    publish_bodies(&nodes[0].amqp_uri(), "caught-up", 0..MESSAGES).await?;
    let leader_snapshot = nodes[0].data_dir().join("snapshot");
    eventually("a snapshot on the leader", Duration::from_secs(30), || {
        let exists = leader_snapshot.exists();
        async move { Ok(exists.then_some(())) }
    })
    .await?;
    let third = warren_e2e::ops::restart_node(third).await?;
    eventually("node 3 installed a snapshot", Duration::from_secs(60), || {
        let installed = third.log_tail(400).contains("snapshot installed");
        async move { Ok(installed.then_some(())) }
    })
    .await?;
    let payload = (MESSAGES * BODY_BYTES) as u64;
    assert!(
        bytes_under(&third.data_dir().join("bodies")) >= payload,
        "node 3 wrote the bodies it received to its own store"
    );
    // Deliveries on node 3 read bodies from node 3's store.
    let got = drain(&third.amqp_uri(), "caught-up").await?;
    assert_eq!(got.len(), MESSAGES, "every confirmed message, consumed through node 3");
    assert!(got == expected(0..MESSAGES), "every body intact");
    Ok(())
}
