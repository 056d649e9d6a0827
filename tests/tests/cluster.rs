//! Three real `warren` processes on loopback: node 1 bootstraps, nodes 2 and
//! 3 join through it. A durable queue declared through one node, messages
//! published with confirms through another and consumed with manual acks
//! through the third arrive exactly once; after `kill -9` of the leader the
//! survivors elect a new one and serve a publish and a consume.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_e2e::{connect, ensure_warren_built, within, within_for, WarrenProcess};

/// Messages published through node 2 and consumed through node 3.
const MESSAGES: usize = 1000;

/// Unconfirmed publishes in flight at most.
const WINDOW: usize = 256;

/// Attempts of the publish + consume through a survivor after the kill.
const FAILOVER_ATTEMPTS: usize = 60;

const QUEUE: &str = "orders";

async fn start_node(node_id: u64, join: Option<std::net::SocketAddr>) -> anyhow::Result<WarrenProcess> {
    tokio::task::spawn_blocking(move || WarrenProcess::start_cluster_node(node_id, join)).await?
}

/// `warren ctl cluster-status` against `node`, parsed: the leader's id.
async fn leader_seen_by(node: &WarrenProcess) -> anyhow::Result<Option<u64>> {
    let binary = ensure_warren_built()?;
    let server = node
        .cluster_addr()
        .ok_or_else(|| anyhow::anyhow!("no cluster address"))?
        .to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["ctl", "--server", &server, "cluster-status"])
            .stdin(Stdio::null())
            .output()
    })
    .await??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "warren ctl failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let leader = text
        .lines()
        .find_map(|line| line.strip_prefix("leader: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok());
    Ok(leader)
}

/// Publishes `count` persistent messages (body = id) with confirms through
/// `uri`; returns the ids the broker confirmed.
async fn publish_confirmed(uri: &str, count: usize) -> anyhow::Result<BTreeSet<usize>> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut in_flight = VecDeque::new();
    let mut confirmed = BTreeSet::new();
    for id in 0..count {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                Default::default(),
                id.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        in_flight.push_back((id, confirm));
        while in_flight.len() >= WINDOW || (id + 1 == count && !in_flight.is_empty()) {
            let Some((oldest, confirm)) = in_flight.pop_front() else {
                break;
            };
            if within("publisher confirm", confirm).await?.is_ack() {
                confirmed.insert(oldest);
            }
        }
    }
    conn.close(200, "done".into()).await?;
    Ok(confirmed)
}

/// Consumes with manual acks through `uri` until `expected` messages came;
/// returns how often each id was delivered.
async fn consume_all(uri: &str, expected: usize) -> anyhow::Result<BTreeMap<usize, usize>> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", ch.basic_qos(100, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            QUEUE.into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut seen = BTreeMap::new();
    let mut total = 0;
    while total < expected {
        let delivery = match within_for(Duration::from_secs(20), "next delivery", async {
            consumer
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("consumer stream ended"))
        })
        .await?
        {
            Ok(delivery) => delivery,
            Err(e) => return Err(e.into()),
        };
        let id: usize = String::from_utf8_lossy(&delivery.data).parse()?;
        *seen.entry(id).or_insert(0) += 1;
        total += 1;
        within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
    }
    // Nothing beyond what was published is waiting.
    let extra = within_for(Duration::from_millis(300), "more deliveries", async {
        Ok::<_, anyhow::Error>(consumer.next().await)
    })
    .await;
    anyhow::ensure!(
        !matches!(extra, Ok(Some(_))),
        "a delivery beyond the published messages: {extra:?}"
    );
    conn.close(200, "done".into()).await?;
    Ok(seen)
}

/// One publish with a confirm through `publish_uri`, then a basic.get of it
/// through `get_uri`. `Ok(false)`: not yet (no leader, nack, refused).
async fn publish_and_get_once(publish_uri: &str, get_uri: &str, body: &str) -> anyhow::Result<bool> {
    let attempt = async {
        let conn = connect(publish_uri).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                Default::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        let _ = conn.close(200, "done".into()).await;
        if !confirm.is_ack() {
            return Ok(false);
        }
        let conn = connect(get_uri).await?;
        let ch = conn.create_channel().await?;
        for _ in 0..50 {
            match ch.basic_get(QUEUE.into(), BasicGetOptions { no_ack: true }).await? {
                Some(message) if message.delivery.data == body.as_bytes() => {
                    let _ = conn.close(200, "done".into()).await;
                    return Ok(true);
                }
                // A publish of an earlier attempt that was nacked but still
                // committed (its outcome was unknown): allowed, skip it.
                Some(message) if message.delivery.data.starts_with(b"after-kill-") => continue,
                Some(message) => anyhow::bail!(
                    "unexpected message {:?} on the queue",
                    String::from_utf8_lossy(&message.delivery.data)
                ),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        anyhow::bail!("a confirmed message never reached the other survivor")
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) if e.to_string().contains("never reached") || e.to_string().contains("unexpected message") => Err(e),
        Ok(Err(_)) | Err(_) => Ok(false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_a_queue_and_survive_the_leader_kill() -> anyhow::Result<()> {
    let first = start_node(1, None).await?;
    let via = first
        .cluster_addr()
        .ok_or_else(|| anyhow::anyhow!("node 1 printed no cluster address"))?;
    let second = start_node(2, Some(via)).await?;
    let third = start_node(3, Some(via)).await?;
    let mut nodes = [first, second, third];
    assert_eq!(
        leader_seen_by(&nodes[1]).await?,
        Some(1),
        "the bootstrapping node leads"
    );

    // Declare through node 1, publish through node 2, consume through node 3.
    {
        let conn = connect(&nodes[0].amqp_uri()).await?;
        let ch = within("channel.open", conn.create_channel()).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        within(
            "queue.declare",
            ch.queue_declare(QUEUE.into(), durable, FieldTable::default()),
        )
        .await?;
        conn.close(200, "done".into()).await?;
    }
    let confirmed = publish_confirmed(&nodes[1].amqp_uri(), MESSAGES).await?;
    assert_eq!(
        confirmed.len(),
        MESSAGES,
        "every publish through a follower is confirmed"
    );
    let seen = consume_all(&nodes[2].amqp_uri(), MESSAGES).await?;
    let lost: Vec<_> = confirmed.iter().filter(|id| !seen.contains_key(id)).collect();
    let duplicates: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(lost.is_empty(), "confirmed but never consumed: {lost:?}");
    assert!(duplicates.is_empty(), "delivered more than once: {duplicates:?}");

    // Kill the leader; the survivors elect a new one and keep serving.
    let leader = leader_seen_by(&nodes[1])
        .await?
        .ok_or_else(|| anyhow::anyhow!("no leader known"))?;
    let leader_index = usize::try_from(leader)?
        .checked_sub(1)
        .filter(|index| *index < nodes.len())
        .ok_or_else(|| anyhow::anyhow!("unexpected leader id {leader}"))?;
    nodes[leader_index].kill9();
    let killed_at = std::time::Instant::now();
    let survivors: Vec<&WarrenProcess> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader_index)
        .map(|(_, n)| n)
        .collect();
    let (publish_uri, get_uri) = (survivors[0].amqp_uri(), survivors[1].amqp_uri());
    let mut served = false;
    for attempt in 0..FAILOVER_ATTEMPTS {
        if publish_and_get_once(&publish_uri, &get_uri, &format!("after-kill-{attempt}")).await? {
            println!(
                "leader {leader} killed: publish confirmed and consumed through the survivors after {:?} ({} attempts)",
                killed_at.elapsed(),
                attempt + 1
            );
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        served,
        "no publish + consume through the survivors after killing leader {leader}"
    );
    let new_leader = leader_seen_by(survivors[0]).await?;
    assert!(
        new_leader.is_some() && new_leader != Some(leader),
        "new leader: {new_leader:?}"
    );
    Ok(())
}
